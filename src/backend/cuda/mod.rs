//! The CUDA backend: bf16 weights and activations in device memory, the hand-written kernels of
//! `kernels/*.cu` launched by name, `Device::gemm_bf16_nt` for the linear layers. It is written
//! once on the device layer (src/device/), so interpret mode (`--device interpret`: the kernels
//! compiled by g++ and run on the CPU with CUDA semantics) exercises the launch code, buffer
//! management and kernels that a GPU runs.
pub mod attention;
pub mod attention_decode;
pub mod attention_prefill;
pub mod generate;
pub mod kernels;
pub mod model;

pub use model::{sequence_logits, CudaModel, DeviceKvCache};
