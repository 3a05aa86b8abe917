//! The block manager of the paged KV cache: fixed-size blocks handed out from a free list,
//! reference-counted so that several sequences can share a prompt's blocks later on.
//! A sequence's *block table* maps its logical block i (positions i·B .. i·B+B−1) to a
//! physical block index.

use anyhow::{bail, Result};

pub struct BlockAllocator {
    block_size: usize,
    free: Vec<u32>,
    refcount: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        // Reversed so that blocks come out in increasing order (easier to read in a debugger).
        BlockAllocator { block_size, free: (0..num_blocks as u32).rev().collect(), refcount: vec![0; num_blocks] }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }
    pub fn num_free(&self) -> usize {
        self.free.len()
    }
    pub fn num_blocks(&self) -> usize {
        self.refcount.len()
    }

    pub fn allocate(&mut self) -> Result<u32> {
        let Some(b) = self.free.pop() else {
            bail!("KV cache is full ({} blocks of {} tokens)", self.num_blocks(), self.block_size)
        };
        self.refcount[b as usize] = 1;
        Ok(b)
    }

    /// One more sequence uses block `b`.
    pub fn retain(&mut self, b: u32) {
        assert!(self.refcount[b as usize] > 0, "retain of free block {b}");
        self.refcount[b as usize] += 1;
    }

    /// One sequence stops using block `b`; it is freed when nobody does.
    pub fn release(&mut self, b: u32) {
        let rc = &mut self.refcount[b as usize];
        assert!(*rc > 0, "double release of block {b}");
        *rc -= 1;
        if *rc == 0 {
            self.free.push(b);
        }
    }

    /// Grows `table` until it covers `len` tokens. On failure the table is left as it was.
    pub fn ensure_capacity(&mut self, table: &mut Vec<u32>, len: usize) -> Result<()> {
        let need = len.div_ceil(self.block_size);
        if need > table.len() + self.free.len() {
            bail!(
                "KV cache is full: a sequence of {len} tokens needs {need} blocks of {}, {} free",
                self.block_size,
                self.free.len()
            );
        }
        while table.len() < need {
            table.push(self.allocate()?);
        }
        Ok(())
    }

    pub fn release_table(&mut self, table: &mut Vec<u32>) {
        for b in table.drain(..) {
            self.release(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_until_full_and_reuses_freed_blocks() {
        let mut a = BlockAllocator::new(3, 16);
        let mut t = Vec::new();
        a.ensure_capacity(&mut t, 33).unwrap();
        assert_eq!(t, vec![0, 1, 2]);
        assert!(a.ensure_capacity(&mut t, 49).is_err());
        assert_eq!(t.len(), 3, "failed growth must not change the table");
        a.retain(t[0]);
        a.release_table(&mut t);
        assert_eq!(a.num_free(), 2, "a shared block stays allocated");
        a.release(0);
        assert_eq!(a.num_free(), 3);
    }
}
