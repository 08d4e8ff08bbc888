//! The activations a fused layer applies to its output, as the engine's
//! kernels know them (Candle's side lives in `model::layers`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    #[inline(always)]
    pub fn apply_one(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}
