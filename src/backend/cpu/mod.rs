//! The CPU backend: plain, readable f32 Rust (rayon for threads). It is the reference every
//! CUDA kernel is checked against, and it runs the embedded default on machines with no GPU.
pub mod attention;
pub mod gemm;
pub mod matmul;
pub mod ops;
pub mod backward;
