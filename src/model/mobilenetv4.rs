//! MobileNetV4-Conv-Small, as timm's `mobilenetv4_conv_small`.
//!
//! - Paper: <https://arxiv.org/abs/2404.10518>
//! - Reference: timm `_gen_mobilenet_v4` in `timm/models/mobilenetv3.py`,
//!   `UniversalInvertedResidual` in `timm/models/_efficientnet_blocks.py`.
//!
//! Candle's `candle_transformers::models::mobilenetv4` has the same layout,
//! but its blocks are private, run depthwise convs through grouped
//! `conv2d` and keep BatchNorm unfolded, and `mobilenetv4_no_final_layer`
//! stops at the 960-d pooled vector. timm's embedding is the 1280-d vector
//! after `conv_head`, `norm_head` and ReLU, applied *after* pooling; that is
//! what [`MobileNetV4::forward`] returns.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{global_avg_pool, Act, ConvBn, ConvSpec};
use super::plan::{self, InputNorm};

pub const FEATURES: usize = 1280;
const STEM: usize = 32;
const BODY_OUT: usize = 960;
const ACT: Act = Act::Relu;
/// timm's checkpoints were trained on ImageNet-normalised inputs.
pub const INPUT: InputNorm = InputNorm::IMAGENET;

#[derive(Clone, Copy)]
enum Spec {
    /// `cn`: conv (k, stride) + bn1 + ReLU.
    Conv { k: usize, s: usize, c: usize },
    /// `uir`: optional depthwise at start, expand, optional depthwise in the
    /// middle, project. (start kernel, mid kernel, stride, expansion ×10, out).
    Uir { start: Option<usize>, mid: Option<usize>, s: usize, e10: usize, c: usize },
}
use Spec::{Conv, Uir};

#[rustfmt::skip]
const STAGES: [&[Spec]; 5] = [
    &[Conv { k: 3, s: 2, c: 32 }, Conv { k: 1, s: 1, c: 32 }],
    &[Conv { k: 3, s: 2, c: 96 }, Conv { k: 1, s: 1, c: 64 }],
    &[
        Uir { start: Some(5), mid: Some(5), s: 2, e10: 30, c: 96 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 20, c: 96 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 20, c: 96 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 20, c: 96 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 20, c: 96 },
        Uir { start: Some(3), mid: None,    s: 1, e10: 40, c: 96 },
    ],
    &[
        Uir { start: Some(3), mid: Some(3), s: 2, e10: 60, c: 128 },
        Uir { start: Some(5), mid: Some(5), s: 1, e10: 40, c: 128 },
        Uir { start: None,    mid: Some(5), s: 1, e10: 40, c: 128 },
        Uir { start: None,    mid: Some(5), s: 1, e10: 30, c: 128 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 40, c: 128 },
        Uir { start: None,    mid: Some(3), s: 1, e10: 40, c: 128 },
    ],
    &[Conv { k: 1, s: 1, c: BODY_OUT }],
];

/// timm's `make_divisible(v, 8)`: round to the nearest multiple of 8, never
/// more than 10% below `v`.
fn make_divisible(v: f64) -> usize {
    let d = 8.0;
    let mut n = ((v + d / 2.0) / d).floor() * d;
    n = n.max(d);
    if n < 0.9 * v {
        n += d;
    }
    n as usize
}

enum Block {
    Conv(ConvBn),
    Uir { layers: Vec<ConvBn>, skip: bool },
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Conv(c) => c.forward(x),
            Block::Uir { layers, skip } => {
                let mut y = x.clone();
                for l in layers {
                    y = l.forward(&y)?;
                }
                if *skip {
                    y + x
                } else {
                    Ok(y)
                }
            }
        }
    }
}

pub struct MobileNetV4 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
}

impl MobileNetV4 {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::load(vb.pp("conv_stem"), vb.pp("bn1"), ConvSpec::dense(3, STEM, 3, 2, ACT))?;
        let mut blocks = Vec::new();
        let mut cin = STEM;
        for (i, stage) in STAGES.iter().enumerate() {
            for (j, spec) in stage.iter().enumerate() {
                let vb = vb.pp("blocks").pp(i).pp(j);
                match *spec {
                    Conv { k, s, c } => {
                        let spec = ConvSpec::dense(cin, c, k, s, ACT);
                        blocks.push(Block::Conv(ConvBn::load(vb.pp("conv"), vb.pp("bn1"), spec)?));
                        cin = c;
                    }
                    Uir { start, mid, s, e10, c } => {
                        let hidden = make_divisible(cin as f64 * e10 as f64 / 10.0);
                        let mut layers = Vec::new();
                        if let Some(k) = start {
                            // The stride sits on the middle depthwise when there is one.
                            let stride = if mid.is_some() { 1 } else { s };
                            let spec = ConvSpec::depthwise(cin, k, stride, Act::None);
                            layers.push(ConvBn::load(vb.pp("dw_start.conv"), vb.pp("dw_start.bn"), spec)?);
                        }
                        let spec = ConvSpec::pointwise(cin, hidden, ACT);
                        layers.push(ConvBn::load(vb.pp("pw_exp.conv"), vb.pp("pw_exp.bn"), spec)?);
                        if let Some(k) = mid {
                            let spec = ConvSpec::depthwise(hidden, k, s, ACT);
                            layers.push(ConvBn::load(vb.pp("dw_mid.conv"), vb.pp("dw_mid.bn"), spec)?);
                        }
                        let spec = ConvSpec::pointwise(hidden, c, Act::None);
                        layers.push(ConvBn::load(vb.pp("pw_proj.conv"), vb.pp("pw_proj.bn"), spec)?);
                        blocks.push(Block::Uir { layers, skip: s == 1 && cin == c });
                        cin = c;
                    }
                }
            }
        }
        let head = ConvBn::load(vb.pp("conv_head"), vb.pp("norm_head"), ConvSpec::pointwise(BODY_OUT, FEATURES, ACT))?;
        Ok(Self { stem, blocks, head })
    }

    /// The same network as the engines' plan.
    pub fn plan(&self, resolution: usize) -> Result<plan::Plan> {
        let mut blocks = vec![plan::Block { layers: vec![self.stem.lower()?], skip: false }];
        for b in &self.blocks {
            blocks.push(match b {
                Block::Conv(c) => plan::Block { layers: vec![c.lower()?], skip: false },
                Block::Uir { layers, skip } => {
                    plan::Block { layers: layers.iter().map(ConvBn::lower).collect::<Result<_>>()?, skip: *skip }
                }
            });
        }
        Ok(plan::Plan {
            resolution,
            input: INPUT,
            blocks,
            head: self.head.lower_dense_layer()?,
            head_order: plan::Head::AfterPool,
        })
    }
}

impl Module for MobileNetV4 {
    /// (n, 3, 224, 224) normalised images → (n, 1280) features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        // MobileNetV3-style head: pool first, then the 1×1 conv_head.
        let pooled = global_avg_pool(&x)?;
        let n = pooled.dim(0)?;
        let y = self.head.forward(&pooled.reshape((n, BODY_OUT, 1, 1))?)?;
        y.reshape((n, FEATURES))
    }
}
