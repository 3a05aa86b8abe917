//! KV storage of the CPU backend (block bookkeeping lives in `kv`): per layer, K and V as `[num_blocks, block_size, kv_heads, head_dim]`
//! f32 arrays. A token at position p of a sequence lives in physical block `table[p / B]`, slot
//! `p % B`; its K (or V) vector for KV head h starts at `((block·B + slot)·kv_heads + h)·head_dim`.

pub struct KvCache {
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub k: Vec<Vec<f32>>, // per layer
    pub v: Vec<Vec<f32>>, // per layer
}

impl KvCache {
    pub fn new(num_layers: usize, num_blocks: usize, block_size: usize, num_kv_heads: usize, head_dim: usize) -> Self {
        let n = num_blocks * block_size * num_kv_heads * head_dim;
        KvCache {
            block_size,
            num_kv_heads,
            head_dim,
            k: (0..num_layers).map(|_| vec![0.0; n]).collect(),
            v: (0..num_layers).map(|_| vec![0.0; n]).collect(),
        }
    }

    /// Index of the first element of position `pos` (all KV heads) in a layer's K or V array.
    #[inline]
    pub fn token_offset(&self, table: &[u32], pos: usize) -> usize {
        let block = table[pos / self.block_size] as usize;
        (block * self.block_size + pos % self.block_size) * self.num_kv_heads * self.head_dim
    }

    /// Stores the K and V rows (`kv_heads · head_dim` each) of position `pos`.
    pub fn write(&mut self, layer: usize, table: &[u32], pos: usize, k: &[f32], v: &[f32]) {
        let o = self.token_offset(table, pos);
        let n = k.len();
        self.k[layer][o..o + n].copy_from_slice(k);
        self.v[layer][o..o + n].copy_from_slice(v);
    }

    /// Bytes of K and V per token over all layers (the number that sizes the cache).
    pub fn bytes_per_token(&self) -> usize {
        2 * self.k.len() * self.num_kv_heads * self.head_dim * std::mem::size_of::<f32>()
    }
}
