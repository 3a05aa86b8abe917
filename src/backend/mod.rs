//! Backends that run the model. `cpu` is the f32 reference; the CUDA backend (real GPU and
//! interpret mode) comes on top of the device layer.
pub mod cpu;
pub mod cuda;
