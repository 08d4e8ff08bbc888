//! The element type of activations and dense weights on the GPU.

/// How activations and dense weights are stored on the GPU (arithmetic and
/// accumulation are f32 in both). No bf16: a T4 (sm_75) has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuDtype {
    F32,
    F16,
}

impl GpuDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            GpuDtype::F32 => 4,
            GpuDtype::F16 => 2,
        }
    }

    /// The suffix of the kernels instantiated for this type in kernels.cu.
    pub fn suffix(self) -> &'static str {
        match self {
            GpuDtype::F32 => "f32",
            GpuDtype::F16 => "f16",
        }
    }

    pub fn cuda_type(self) -> cudarc::cublas::sys::cudaDataType {
        match self {
            GpuDtype::F32 => cudarc::cublas::sys::cudaDataType::CUDA_R_32F,
            GpuDtype::F16 => cudarc::cublas::sys::cudaDataType::CUDA_R_16F,
        }
    }

    /// `v` as the bytes the device reads (little-endian, like every CUDA host).
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            GpuDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GpuDtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        }
    }
}
