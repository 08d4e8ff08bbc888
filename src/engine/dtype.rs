//! `--dtype`: what the network's activations are stored as, on any engine.

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Dtype {
    F32,
    /// bfloat16 activations: the CPU engine (AVX512-BF16 where the CPU has it).
    Bf16,
    /// IEEE half activations with f32 accumulation: the CUDA engine (tensor cores).
    F16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
