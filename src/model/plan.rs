//! The lowered plan: a network as a flat list of fused layers, BatchNorm
//! folded into weights and bias, laid out for NHWC, in f32. The builders
//! (`mobilenetv2`, `mobilenetv4`) make it; every engine takes it and lays
//! the weights out its own way (the CPU engine packs them for its GEMM and
//! stores activations as f32 or bf16, the CUDA engine copies them to the
//! device as f32 or f16). No engine code here: `engine` depends on this
//! file, never the reverse.

/// The activations a fused layer applies to its output, as the engines'
/// kernels know them (Candle's side lives in `layers`).
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

/// Spatial shape of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hw {
    pub h: usize,
    pub w: usize,
}

impl Hw {
    /// The output shape of a k×k convolution with this stride and padding.
    pub fn conv(self, kernel: usize, stride: usize, pad: usize) -> Hw {
        let o = |x: usize| (x + 2 * pad - kernel) / stride + 1;
        Hw { h: o(self.h), w: o(self.w) }
    }
}

/// A k×k convolution (k = 1 included) over all input channels.
#[derive(Debug, Clone)]
pub struct Dense {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub act: Act,
    /// Row-major `[k][cout]` with `k = kernel² · cin` in reduction order
    /// `(ky, kx, ci)`: the order an NHWC im2col row has.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    /// The reduction length, `kernel² · cin`.
    pub fn k(&self) -> usize {
        self.kernel * self.kernel * self.cin
    }
}

/// A depthwise k×k convolution: one filter per channel.
#[derive(Debug, Clone)]
pub struct Depthwise {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub act: Act,
    /// `[ky][kx][c]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone)]
pub enum Layer {
    Dense(Dense),
    Depthwise(Depthwise),
}

/// Layers run in order; with `skip`, the block's input is added to the last
/// layer's output (after its activation, as timm does).
#[derive(Debug, Clone)]
pub struct Block {
    pub layers: Vec<Layer>,
    pub skip: bool,
}

/// Where the 1×1 head sits relative to global average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// EfficientNet / MobileNetV2: conv_head on every pixel, then pool.
    BeforePool,
    /// MobileNetV3 / V4: pool, then conv_head on the pooled vector.
    AfterPool,
}

/// A whole network, input to features.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Input side in pixels (square), 3 channels.
    pub resolution: usize,
    pub blocks: Vec<Block>,
    pub head: Dense,
    pub head_order: Head,
}

impl Plan {
    pub fn feature_dim(&self) -> usize {
        self.head.cout
    }
}
