//! The inverted-residual networks timm builds with its `EfficientNet` class
//! (`timm/models/efficientnet.py`): MobileNetV2 and EfficientNet-Lite differ
//! only in their stage table, their kernels and how they were trained.
//!
//! - `mobilenetv2_100`: MobileNetV2, <https://arxiv.org/abs/1801.04381>,
//!   timm `_gen_mobilenet_v2`; trained in PyTorch (timm's checkpoints).
//! - `tf_efficientnet_lite0`: EfficientNet-Lite0, Google's mobile variant of
//!   EfficientNet-B0 (ReLU6, no squeeze-excite, fixed stem and head; <https://
//!   github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite>),
//!   timm `_gen_efficientnet_lite`; trained in TensorFlow, so SAME padding,
//!   BatchNorm epsilon 1e-3 and inputs in [-1, 1], as timm's `tf_` port.
//!
//! Tensor prefixes follow timm's checkpoints exactly: `conv_stem`, `bn1`,
//! `blocks.0.0.{conv_dw,bn1,conv_pw,bn2}` (the depthwise-separable first
//! block), `blocks.{stage}.{block}.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}`,
//! `conv_head`, `bn2`. The output is the 1280-d pooled vector before
//! `classifier` (timm's `forward_head(pre_logits=True)`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{global_avg_pool, Act, ConvBn, ConvSpec};
use super::plan::{self, InputNorm};

pub const FEATURES: usize = 1280;
const STEM: usize = 32;
const FIRST_OUT: usize = 16;
const ACT: Act = Act::Relu6;

/// One network of the family.
pub struct Arch {
    /// Inverted-residual stages after the first (depthwise-separable)
    /// block: (expansion, out channels, blocks, stride of the first block,
    /// depthwise kernel).
    pub stages: &'static [(usize, usize, usize, usize, usize)],
    /// Trained in TensorFlow: SAME padding and BatchNorm epsilon 1e-3.
    pub tf: bool,
    pub input: InputNorm,
}

/// timm `mobilenetv2_100`.
#[rustfmt::skip]
pub const MOBILENETV2: Arch = Arch {
    stages: &[
        (6,  24, 2, 2, 3),
        (6,  32, 3, 2, 3),
        (6,  64, 4, 2, 3),
        (6,  96, 3, 1, 3),
        (6, 160, 3, 2, 3),
        (6, 320, 1, 1, 3),
    ],
    tf: false,
    input: InputNorm::IMAGENET,
};

/// timm `tf_efficientnet_lite0` (`ir_r2_k5_s2_e6_c40` and so on).
#[rustfmt::skip]
pub const EFFICIENTNET_LITE0: Arch = Arch {
    stages: &[
        (6,  24, 2, 2, 3),
        (6,  40, 2, 2, 5),
        (6,  80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    ],
    tf: true,
    input: InputNorm::INCEPTION,
};

enum Block {
    /// `ds` block: depthwise 3×3 then pointwise, no skip (32 → 16).
    Separable {
        dw: ConvBn,
        pw: ConvBn,
    },
    Inverted {
        pw: ConvBn,
        dw: ConvBn,
        pwl: ConvBn,
        skip: bool,
    },
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Separable { dw, pw } => pw.forward(&dw.forward(x)?),
            Block::Inverted { pw, dw, pwl, skip } => {
                let y = pwl.forward(&dw.forward(&pw.forward(x)?)?)?;
                if *skip {
                    y + x
                } else {
                    Ok(y)
                }
            }
        }
    }
}

pub struct EfficientNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    input: InputNorm,
}

impl EfficientNet {
    pub fn load(vb: VarBuilder, arch: &Arch) -> Result<Self> {
        let spec = |s: ConvSpec| if arch.tf { s.tf() } else { s };
        let stem = ConvBn::load(vb.pp("conv_stem"), vb.pp("bn1"), spec(ConvSpec::dense(3, STEM, 3, 2, ACT)))?;
        let vbb = vb.pp("blocks");
        let b0 = vbb.pp(0).pp(0);
        let mut blocks = vec![Block::Separable {
            dw: ConvBn::load(b0.pp("conv_dw"), b0.pp("bn1"), spec(ConvSpec::depthwise(STEM, 3, 1, ACT)))?,
            pw: ConvBn::load(b0.pp("conv_pw"), b0.pp("bn2"), spec(ConvSpec::pointwise(STEM, FIRST_OUT, Act::None)))?,
        }];
        let mut cin = FIRST_OUT;
        for (i, &(e, cout, n, stride, k)) in arch.stages.iter().enumerate() {
            for j in 0..n {
                let vb = vbb.pp(i + 1).pp(j);
                let s = if j == 0 { stride } else { 1 };
                let mid = cin * e;
                blocks.push(Block::Inverted {
                    pw: ConvBn::load(vb.pp("conv_pw"), vb.pp("bn1"), spec(ConvSpec::pointwise(cin, mid, ACT)))?,
                    dw: ConvBn::load(vb.pp("conv_dw"), vb.pp("bn2"), spec(ConvSpec::depthwise(mid, k, s, ACT)))?,
                    pwl: ConvBn::load(
                        vb.pp("conv_pwl"),
                        vb.pp("bn3"),
                        spec(ConvSpec::pointwise(mid, cout, Act::None)),
                    )?,
                    skip: s == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        let head = ConvBn::load(vb.pp("conv_head"), vb.pp("bn2"), spec(ConvSpec::pointwise(cin, FEATURES, ACT)))?;
        Ok(Self { stem, blocks, head, input: arch.input })
    }

    /// The same network as the engines' plan.
    pub fn plan(&self, resolution: usize) -> Result<plan::Plan> {
        let mut blocks = vec![plan::Block { layers: vec![self.stem.lower()?], skip: false }];
        for b in &self.blocks {
            blocks.push(match b {
                Block::Separable { dw, pw } => plan::Block { layers: vec![dw.lower()?, pw.lower()?], skip: false },
                Block::Inverted { pw, dw, pwl, skip } => {
                    plan::Block { layers: vec![pw.lower()?, dw.lower()?, pwl.lower()?], skip: *skip }
                }
            });
        }
        Ok(plan::Plan {
            resolution,
            input: self.input,
            blocks,
            head: self.head.lower_dense_layer()?,
            head_order: plan::Head::BeforePool,
        })
    }
}

impl Module for EfficientNet {
    /// (n, 3, 224, 224) normalised images → (n, 1280) features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        // EfficientNet-style head: conv_head + bn2 + act *before* pooling.
        global_avg_pool(&self.head.forward(&x)?)
    }
}
