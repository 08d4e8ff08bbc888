//! MobileNetV2, as timm's `mobilenetv2_100` (an `EfficientNet` in timm).
//!
//! - Paper: <https://arxiv.org/abs/1801.04381>
//! - Reference: timm `_gen_mobilenet_v2` in `timm/models/efficientnet.py`.
//!
//! Tensor prefixes follow the checkpoint exactly: `conv_stem`, `bn1`,
//! `blocks.{stage}.{block}.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}`,
//! `conv_head`, `bn2`. The output is the 1280-d pooled vector before
//! `classifier` (timm's `forward_head(pre_logits=True)`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{global_avg_pool, Act, ConvBn, ConvSpec};
use super::plan;

pub const FEATURES: usize = 1280;
const STEM: usize = 32;
const ACT: Act = Act::Relu6;

/// Inverted-residual stages after the first (depthwise-separable) block:
/// (expansion, out channels, blocks, stride of the first block).
#[rustfmt::skip]
const STAGES: [(usize, usize, usize, usize); 6] = [
    (6,  24, 2, 2),
    (6,  32, 3, 2),
    (6,  64, 4, 2),
    (6,  96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

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

pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
}

impl MobileNetV2 {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::load(vb.pp("conv_stem"), vb.pp("bn1"), ConvSpec::dense(3, STEM, 3, 2, ACT))?;
        let vbb = vb.pp("blocks");
        let b0 = vbb.pp(0).pp(0);
        let mut blocks = vec![Block::Separable {
            dw: ConvBn::load(b0.pp("conv_dw"), b0.pp("bn1"), ConvSpec::depthwise(STEM, 3, 1, ACT))?,
            pw: ConvBn::load(b0.pp("conv_pw"), b0.pp("bn2"), ConvSpec::pointwise(STEM, 16, Act::None))?,
        }];
        let mut cin = 16;
        for (i, &(e, cout, n, stride)) in STAGES.iter().enumerate() {
            for j in 0..n {
                let vb = vbb.pp(i + 1).pp(j);
                let s = if j == 0 { stride } else { 1 };
                let mid = cin * e;
                blocks.push(Block::Inverted {
                    pw: ConvBn::load(vb.pp("conv_pw"), vb.pp("bn1"), ConvSpec::pointwise(cin, mid, ACT))?,
                    dw: ConvBn::load(vb.pp("conv_dw"), vb.pp("bn2"), ConvSpec::depthwise(mid, 3, s, ACT))?,
                    pwl: ConvBn::load(vb.pp("conv_pwl"), vb.pp("bn3"), ConvSpec::pointwise(mid, cout, Act::None))?,
                    skip: s == 1 && cin == cout,
                });
                cin = cout;
            }
        }
        let head = ConvBn::load(vb.pp("conv_head"), vb.pp("bn2"), ConvSpec::pointwise(cin, FEATURES, ACT))?;
        Ok(Self { stem, blocks, head })
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
        Ok(plan::Plan { resolution, blocks, head: self.head.lower_dense_layer()?, head_order: plan::Head::BeforePool })
    }
}

impl Module for MobileNetV2 {
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
