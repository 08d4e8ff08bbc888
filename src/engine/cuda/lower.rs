//! The lowered plan ([`Plan`]: fused dense and depthwise layers, BatchNorm
//! folded) copied to a GPU: dense weights as `[k][n]` matrices in the
//! storage type for cuBLAS, depthwise weights and every bias in f32 for the
//! kernels, with the shapes each layer sees. The CPU engine runs the same
//! plan, so the parity tests compare like with like.

use cudarc::driver::{CudaSlice, CudaStream};

use crate::error::{Error, Result};
use crate::model::plan::{Act, Dense, Head, Hw, InputNorm, Layer, Padding, Plan};

use super::dtype::GpuDtype;

/// A dense convolution on the GPU: `weight` is `[k][n]` in the storage
/// type, `k` = kernel² · cin rounded up to 8 for k×k kernels (tensor cores
/// want multiples of 8; im2col writes zeros there).
pub struct GpuDense {
    pub cin: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub act: i32,
    pub k: usize,
    pub n: usize,
    pub weight: CudaSlice<u8>,
    pub bias: CudaSlice<f32>,
}

impl GpuDense {
    /// A 1×1 stride-1 convolution: its input rows are already the GEMM's.
    pub fn is_plain_gemm(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.k == self.cin
    }
    pub fn out_hw(&self, i: Hw) -> Hw {
        i.conv(self.kernel, self.stride, self.padding)
    }
}

pub struct GpuDepthwise {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
    pub act: i32,
    pub weight: CudaSlice<f32>,
    pub bias: CudaSlice<f32>,
}

pub enum GpuLayer {
    Dense(GpuDense),
    Depthwise(GpuDepthwise),
}

impl GpuLayer {
    pub fn out_hw(&self, i: Hw) -> Hw {
        match self {
            GpuLayer::Dense(d) => d.out_hw(i),
            GpuLayer::Depthwise(d) => i.conv(d.kernel, d.stride, d.padding),
        }
    }
    pub fn cout(&self) -> usize {
        match self {
            GpuLayer::Dense(d) => d.n,
            GpuLayer::Depthwise(d) => d.channels,
        }
    }
}

pub struct GpuBlock {
    pub layers: Vec<GpuLayer>,
    pub skip: bool,
}

/// The whole network on the device, with the per-image sizes the buffers need.
pub struct GpuNet {
    pub resolution: usize,
    pub input: InputNorm,
    pub blocks: Vec<GpuBlock>,
    pub head: GpuDense,
    pub head_order: Head,
    /// Elements of the largest activation of one image (input included).
    pub max_activation: usize,
    /// Elements of the largest im2col matrix of one image.
    pub max_cols: usize,
    /// Channels entering the head.
    pub head_in: usize,
}

fn act_code(a: Act) -> i32 {
    match a {
        Act::None => 0,
        Act::Relu => 1,
        Act::Relu6 => 2,
    }
}

fn upload<T: cudarc::driver::DeviceRepr>(
    stream: &std::sync::Arc<CudaStream>,
    what: &str,
    v: &[T],
) -> Result<CudaSlice<T>> {
    stream
        .clone_htod(v)
        .map_err(|e| Error::Cuda { action: format!("cannot copy {what} to the GPU"), source: Box::new(e) })
}

fn dense(stream: &std::sync::Arc<CudaStream>, d: &Dense, storage: GpuDtype, name: &str) -> Result<GpuDense> {
    let (rows, bias) = (&d.weight, &d.bias);
    let n = d.cout;
    let real_k = d.k();
    let k = if d.kernel == 1 && d.stride == 1 { d.cin } else { real_k.div_ceil(8) * 8 };
    // Rows past the real reduction length are zero, like im2col's padding.
    let mut w = vec![0f32; k * n];
    w[..real_k * n].copy_from_slice(&rows[..real_k * n]);
    Ok(GpuDense {
        cin: d.cin,
        kernel: d.kernel,
        stride: d.stride,
        padding: d.padding,
        act: act_code(d.act),
        k,
        n,
        weight: upload(stream, name, &storage.encode(&w))?,
        bias: upload(stream, name, bias)?,
    })
}

/// Copies `plan` to the device in `storage`.
pub fn lower(stream: &std::sync::Arc<CudaStream>, plan: &Plan, storage: GpuDtype) -> Result<GpuNet> {
    let r = plan.resolution;
    let mut hw = Hw { h: r, w: r };
    let (mut max_activation, mut max_cols, mut ch) = (r * r * 3, 0, 3);
    let mut blocks = Vec::with_capacity(plan.blocks.len());
    for (bi, block) in plan.blocks.iter().enumerate() {
        let mut layers = Vec::with_capacity(block.layers.len());
        for (li, layer) in block.layers.iter().enumerate() {
            let name = format!("block {bi} layer {li}");
            let gl = match layer {
                Layer::Dense(d) => GpuLayer::Dense(dense(stream, d, storage, &name)?),
                Layer::Depthwise(d) => GpuLayer::Depthwise(GpuDepthwise {
                    channels: d.channels,
                    kernel: d.kernel,
                    stride: d.stride,
                    padding: d.padding,
                    act: act_code(d.act),
                    weight: upload(stream, &name, &d.weight)?,
                    bias: upload(stream, &name, &d.bias)?,
                }),
            };
            let o = gl.out_hw(hw);
            if let GpuLayer::Dense(d) = &gl {
                if !d.is_plain_gemm() {
                    max_cols = max_cols.max(o.h * o.w * d.k);
                }
            }
            max_activation = max_activation.max(o.h * o.w * gl.cout());
            hw = o;
            ch = gl.cout();
            layers.push(gl);
        }
        blocks.push(GpuBlock { layers, skip: block.skip });
    }
    let head = dense(stream, &plan.head, storage, "head")?;
    if plan.head_order == Head::BeforePool {
        max_activation = max_activation.max(hw.h * hw.w * head.n);
    }
    Ok(GpuNet {
        resolution: r,
        input: plan.input,
        blocks,
        head,
        head_order: plan.head_order,
        max_activation,
        max_cols,
        head_in: ch,
    })
}
