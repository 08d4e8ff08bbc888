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
    pub fn conv(self, kernel: usize, stride: usize, padding: Padding) -> Hw {
        let o = |x: usize| {
            let (begin, end) = padding.around(kernel, stride, x);
            (x + begin + end - kernel) / stride + 1
        };
        Hw { h: o(self.h), w: o(self.w) }
    }
}

/// The zeros a convolution adds around its input, on each spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `p` zeros before and after: PyTorch's (and timm's) padding.
    Symmetric(usize),
    /// TensorFlow's "SAME": `ceil(x / stride)` outputs, the zeros that needs
    /// split with the odd one after (0 before and 1 after for a 3×3 stride-2
    /// convolution of an even side). Networks trained in TensorFlow need it:
    /// timm's `tf_*` models pad so (`Conv2dSame`).
    Same,
}

impl Padding {
    /// Zeros (before, after) an axis of `x` pixels.
    pub fn around(self, kernel: usize, stride: usize, x: usize) -> (usize, usize) {
        match self {
            Padding::Symmetric(p) => (p, p),
            Padding::Same => {
                let total = ((x.div_ceil(stride) - 1) * stride + kernel).saturating_sub(x);
                (total / 2, total - total / 2)
            }
        }
    }

    /// Zeros before an axis of `x` pixels: where the first tap of the first
    /// output lands, `-begin`. The kernels need only this; the zeros after
    /// show in the output's size.
    pub fn begin(self, kernel: usize, stride: usize, x: usize) -> usize {
        self.around(kernel, stride, x).0
    }
}

/// A k×k convolution (k = 1 included) over all input channels.
#[derive(Debug, Clone)]
pub struct Dense {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
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
    pub padding: Padding,
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

/// How an RGB8 pixel becomes the network's input, per channel:
/// `(x / 255 - mean) / std`, the normalisation the network was trained on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl InputNorm {
    /// ImageNet's channel statistics: what timm's PyTorch-trained models use.
    pub const IMAGENET: InputNorm = InputNorm { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    /// `[-1, 1]`: what Google's TensorFlow-trained MobileNets and
    /// EfficientNet-Lite use (timm's `tf_efficientnet_lite*` configs).
    pub const INCEPTION: InputNorm = InputNorm { mean: [0.5; 3], std: [0.5; 3] };

    /// The same as one multiply-add per channel: `x * scale - shift`.
    pub fn scale_shift(&self) -> ([f32; 3], [f32; 3]) {
        (std::array::from_fn(|c| 1.0 / (255.0 * self.std[c])), std::array::from_fn(|c| self.mean[c] / self.std[c]))
    }
}

/// A whole network, input to features.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Input side in pixels (square), 3 channels.
    pub resolution: usize,
    pub input: InputNorm,
    pub blocks: Vec<Block>,
    pub head: Dense,
    pub head_order: Head,
}

impl Plan {
    pub fn feature_dim(&self) -> usize {
        self.head.cout
    }

    /// Multiply-adds one image takes in its convolutions (dense, depthwise
    /// and the head): the work the FMA units do, as timm's model cards
    /// count "GMACs". Bias, activations and pooling are left out.
    pub fn macs(&self) -> u64 {
        self.block_macs().iter().map(|(_, m)| m).sum()
    }

    /// Each block's multiply-adds for one image, with what the block is
    /// ("1×1 16→96, dw3×3/2, 1×1 96→24, out 56×56"), then the head's.
    pub fn block_macs(&self) -> Vec<(String, u64)> {
        let mut hw = Hw { h: self.resolution, w: self.resolution };
        let mut out = Vec::with_capacity(self.blocks.len() + 1);
        for block in &self.blocks {
            let (mut macs, mut what) = (0u64, Vec::new());
            for layer in &block.layers {
                let (o, per_pixel) = match layer {
                    Layer::Dense(d) => {
                        what.push(format!("{}×{}{} {}→{}", d.kernel, d.kernel, stride(d.stride), d.cin, d.cout));
                        (hw.conv(d.kernel, d.stride, d.padding), d.k() * d.cout)
                    }
                    Layer::Depthwise(d) => {
                        what.push(format!("dw{}×{}{}", d.kernel, d.kernel, stride(d.stride)));
                        (hw.conv(d.kernel, d.stride, d.padding), d.kernel * d.kernel * d.channels)
                    }
                };
                macs += (o.h * o.w * per_pixel) as u64;
                hw = o;
            }
            out.push((format!("{}, out {}×{}", what.join(", "), hw.h, hw.w), macs));
        }
        let head_pixels = match self.head_order {
            Head::BeforePool => hw.h * hw.w,
            Head::AfterPool => 1,
        };
        let head = format!("head 1×1 {}→{}", self.head.cin, self.head.cout);
        out.push((head, (head_pixels * self.head.k() * self.head.cout) as u64));
        out
    }
}

/// "/2" for a stride of 2, nothing for 1.
fn stride(s: usize) -> String {
    if s == 1 {
        String::new()
    } else {
        format!("/{s}")
    }
}
