//! Building blocks shared by the MobileNets: a convolution with its
//! BatchNorm folded in at load time, and the activations.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{fixed_order, plan};

/// timm's BatchNorm2d epsilon (PyTorch's default), for the MobileNets.
pub const BN_EPS: f64 = 1e-5;
/// TensorFlow's (Keras') BatchNorm epsilon, which networks trained there
/// keep: timm's `tf_*` models set it (`BN_EPS_TF_DEFAULT`).
pub const BN_EPS_TF: f64 = 1e-3;

/// Typical BatchNorm scale, relative to 1, of a layer with no activation
/// after it; used only to initialise random weights.
pub const BRANCH_END_SCALE: f64 = 0.25;

pub use super::plan::Act;

/// `act` on a Candle tensor (the Candle path; the engine's kernels apply it
/// in their epilogues).
pub fn apply_act(act: Act, x: &Tensor) -> Result<Tensor> {
    match act {
        Act::None => Ok(x.clone()),
        Act::Relu => x.relu(),
        Act::Relu6 => x.clamp(0f32, 6f32),
    }
}

/// What a convolution is, as the checkpoint describes it.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    /// `groups == cin == cout`.
    pub depthwise: bool,
    pub act: Act,
    /// Trained in TensorFlow: SAME padding and BatchNorm's epsilon
    /// [`BN_EPS_TF`] (else timm's symmetric padding and [`BN_EPS`]).
    pub tf: bool,
}

impl ConvSpec {
    pub fn dense(cin: usize, cout: usize, kernel: usize, stride: usize, act: Act) -> Self {
        Self { cin, cout, kernel, stride, depthwise: false, act, tf: false }
    }
    pub fn pointwise(cin: usize, cout: usize, act: Act) -> Self {
        Self::dense(cin, cout, 1, 1, act)
    }
    pub fn depthwise(ch: usize, kernel: usize, stride: usize, act: Act) -> Self {
        Self { cin: ch, cout: ch, kernel, stride, depthwise: true, act, tf: false }
    }
    /// The same layer of a network trained in TensorFlow (timm's `tf_*`).
    pub fn tf(self) -> Self {
        Self { tf: true, ..self }
    }
    /// timm's symmetric padding for these kernels, ((s - 1) + (k - 1)) / 2,
    /// or TensorFlow's SAME.
    pub fn padding(&self) -> plan::Padding {
        if self.tf {
            plan::Padding::Same
        } else {
            plan::Padding::Symmetric(((self.stride - 1) + (self.kernel - 1)) / 2)
        }
    }
    fn bn_eps(&self) -> f64 {
        if self.tf {
            BN_EPS_TF
        } else {
            BN_EPS
        }
    }
}

/// Convolution + BatchNorm (folded) + activation, the unit every MobileNet
/// layer is made of. Folding: `w' = w * γ/√(σ²+ε)`, `b' = β - μ·γ/√(σ²+ε)`.
#[derive(Debug, Clone)]
pub struct ConvBn {
    spec: ConvSpec,
    /// The BatchNorm's tensor prefix, e.g. `blocks.1.0.bn2`.
    bn_name: String,
    /// (cout, cin/groups, k, k); for a pointwise conv, (cout, cin).
    weight: Tensor,
    /// (cout,)
    bias: Tensor,
}

impl ConvBn {
    /// Reads `<conv>.weight` and `<bn>.{weight,bias,running_mean,running_var}`.
    pub fn load(conv: VarBuilder, bn: VarBuilder, spec: ConvSpec) -> Result<Self> {
        let in_per_group = if spec.depthwise { 1 } else { spec.cin };
        let w = conv.get((spec.cout, in_per_group, spec.kernel, spec.kernel), "weight")?;
        // The hint only reaches the random initialiser (`init.rs`): a BatchNorm
        // with no activation after it ends a residual branch or feeds one, and
        // gets a smaller scale there, as in trained MobileNets. Real weights
        // ignore it.
        let gamma_hint = if spec.act == Act::None { BRANCH_END_SCALE } else { 1.0 };
        let gamma = bn.get_with_hints(spec.cout, "weight", candle_nn::Init::Const(gamma_hint))?;
        let beta = bn.get(spec.cout, "bias")?;
        let mean = bn.get(spec.cout, "running_mean")?;
        let var = bn.get(spec.cout, "running_var")?;
        // Fold in f64 so the fold itself adds no rounding error to speak of.
        let dt = w.dtype();
        let scale = (gamma.to_dtype(candle_core::DType::F64)?
            / (var.to_dtype(candle_core::DType::F64)? + spec.bn_eps())?.sqrt()?)?;
        let weight =
            w.to_dtype(candle_core::DType::F64)?.broadcast_mul(&scale.reshape((spec.cout, 1, 1, 1))?)?.to_dtype(dt)?;
        let bias = (beta.to_dtype(candle_core::DType::F64)? - (mean.to_dtype(candle_core::DType::F64)? * &scale)?)?
            .to_dtype(dt)?;
        let weight = if spec.kernel == 1 && !spec.depthwise { weight.reshape((spec.cout, spec.cin))? } else { weight };
        Ok(Self { spec, bn_name: bn.prefix(), weight, bias })
    }
}

impl ConvBn {
    /// The same layer for the engines' plan: weights copied out, laid out
    /// for NHWC (`[ky][kx][c]` depthwise, `[(ky, kx, ci)][cout]` dense).
    pub fn lower(&self) -> Result<plan::Layer> {
        let s = &self.spec;
        let w: Vec<f32> = self.weight.flatten_all()?.to_vec1()?;
        let bias: Vec<f32> = self.bias.to_vec1()?;
        let k = s.kernel;
        if s.depthwise {
            // (c, 1, k, k) → [ky][kx][c]
            let mut weight = vec![0f32; k * k * s.cout];
            for c in 0..s.cout {
                for t in 0..k * k {
                    weight[t * s.cout + c] = w[c * k * k + t];
                }
            }
            return Ok(plan::Layer::Depthwise(plan::Depthwise {
                channels: s.cout,
                kernel: k,
                stride: s.stride,
                padding: s.padding(),
                act: s.act,
                weight,
                bias,
            }));
        }
        // (cout, cin, k, k) → [(ky, kx, ci)][cout]
        let kdim = k * k * s.cin;
        let mut wt = vec![0f32; kdim * s.cout];
        for co in 0..s.cout {
            for ci in 0..s.cin {
                for t in 0..k * k {
                    wt[(t * s.cin + ci) * s.cout + co] = w[(co * s.cin + ci) * k * k + t];
                }
            }
        }
        Ok(plan::Layer::Dense(plan::Dense {
            cin: s.cin,
            cout: s.cout,
            kernel: s.kernel,
            stride: s.stride,
            padding: s.padding(),
            act: s.act,
            weight: wt,
            bias,
        }))
    }

    /// [`ConvBn::lower`] for a layer known to be dense (a head).
    pub fn lower_dense_layer(&self) -> Result<plan::Dense> {
        match self.lower()? {
            plan::Layer::Dense(d) => Ok(d),
            plan::Layer::Depthwise(_) => candle_core::bail!("{} is depthwise, not dense", self.bn_name),
        }
    }
}

/// Rewrites one layer's pre-activation output during calibration:
/// `(BatchNorm prefix, its epsilon, output) -> replacement`.
pub type Calibrator = Box<dyn FnMut(&str, f64, &Tensor) -> Result<Tensor>>;

thread_local! {
    static CALIBRATOR: std::cell::RefCell<Option<Calibrator>> = const { std::cell::RefCell::new(None) };
}

/// Runs `body` with `calibrator` seeing (and replacing) every layer's
/// pre-activation output, in forward order, on this thread; the layers then
/// convolve and pool by [`fixed_order`], whose results are the same on every
/// CPU. Only the random initialiser uses it, to give BatchNorm the
/// statistics a trained network would have (`init.rs`); outside it a layer
/// pays one thread-local read.
pub fn with_calibrator<R>(calibrator: Calibrator, body: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            CALIBRATOR.with(|c| *c.borrow_mut() = None);
        }
    }
    CALIBRATOR.with(|c| *c.borrow_mut() = Some(calibrator));
    let _clear = Clear;
    body()
}

fn calibrating() -> bool {
    CALIBRATOR.with(|c| c.borrow().is_some())
}

impl ConvBn {
    /// The convolution (BatchNorm folded, no activation) by
    /// [`fixed_order::conv2d`]: what calibration runs, so that its result
    /// does not depend on the CPU.
    fn conv_fixed_order(&self, x: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        let (n, c, h, w) = x.dims4()?;
        let conv = fixed_order::Conv {
            cout: s.cout,
            kernel: s.kernel,
            stride: s.stride,
            padding: s.padding(),
            depthwise: s.depthwise,
        };
        let (y, shape) = fixed_order::conv2d(
            &x.flatten_all()?.to_vec1::<f32>()?,
            [n, c, h, w],
            &self.weight.flatten_all()?.to_vec1::<f32>()?,
            &self.bias.to_vec1::<f32>()?,
            conv,
        );
        Tensor::from_vec(y, shape.to_vec(), x.device())
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = &self.spec;
        if calibrating() {
            // The calibrator rewrites the output (BatchNorm statistics); the
            // activation after it is element-wise (max/min), exact anywhere.
            let y = self.conv_fixed_order(x)?;
            let y = CALIBRATOR
                .with(|c| c.borrow_mut().as_mut().map_or(Ok(y.clone()), |f| f(&self.bn_name, s.bn_eps(), &y)))?;
            return apply_act(s.act, &y);
        }
        let y = if s.kernel == 1 && s.stride == 1 && !s.depthwise {
            // A 1×1 convolution is one GEMM per image: (cout, cin) × (cin, h·w).
            let (n, c, h, w) = x.dims4()?;
            let y = self.weight.broadcast_matmul(&x.reshape((n, c, h * w))?)?;
            y.broadcast_add(&self.bias.reshape((s.cout, 1))?)?.reshape((n, s.cout, h, w))?
        } else {
            let groups = if s.depthwise { s.cin } else { 1 };
            let y = match s.padding() {
                plan::Padding::Symmetric(p) => x.conv2d(&self.weight, p, s.stride, 1, groups)?,
                same => {
                    // Candle pads symmetrically only: the zeros first, as
                    // timm's `pad_same` does.
                    let (_, _, h, w) = x.dims4()?;
                    let (top, bottom) = same.around(s.kernel, s.stride, h);
                    let (left, right) = same.around(s.kernel, s.stride, w);
                    let x = x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?;
                    x.conv2d(&self.weight, 0, s.stride, 1, groups)?
                }
            };
            y.broadcast_add(&self.bias.reshape((s.cout, 1, 1))?)?
        };
        apply_act(s.act, &y)
    }
}

/// Global average pooling, (n, c, h, w) → (n, c).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if calibrating() {
        // MobileNetV4 calibrates `norm_head` after this pooling.
        let (n, c, h, w) = x.dims4()?;
        let pooled = fixed_order::mean_pool(&x.flatten_all()?.to_vec1::<f32>()?, [n, c, h, w]);
        return Tensor::from_vec(pooled, (n, c), x.device());
    }
    x.mean(D::Minus1)?.mean(D::Minus1)
}
