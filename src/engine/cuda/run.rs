//! Runs a [`GpuNet`] on batches of RGB8 images: a compute stream with cuBLAS
//! for every dense layer and the NVRTC kernels for the rest, and an upload
//! stream. Only the 8-bit pixels cross the bus in (150 KB per 224² image)
//! and the features come back.
//!
//! Batches are cut into chunks of at most [`CHUNK`] images so the device
//! memory the buffers take is bounded whatever `--batch` is. Pixels go
//! through two pinned (page-locked) staging buffers and two device input
//! buffers: while chunk j computes, the host copies chunk j+1 into the other
//! staging buffer and the upload stream sends it, so the compute stream
//! finds it on the device when chunk j is done.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};

use crate::error::{Error, Param, Result};
use crate::model::plan::{Head, Hw, Padding, Plan};

use super::dtype::GpuDtype;
use super::kernel_cache;
use super::lower::{lower, GpuDense, GpuLayer, GpuNet};
use super::nvrtc::Output;
use super::probe::Gpu;

/// Images per pass through the network: ~2 GB of f16 activations for
/// MobileNetV2 at 224², inside a T4's 16 GB with room for cuBLAS.
pub const CHUNK: usize = 256;

/// Output columns per thread of kernels.cu's depthwise2 (its DW_X).
const DW_X: usize = 4;

/// The kernels of one storage type.
struct Kernels {
    normalise: CudaFunction,
    im2col: CudaFunction,
    /// im2col when a pixel's values are whole 16-byte pieces.
    im2col16: CudaFunction,
    epilogue: CudaFunction,
    /// epilogue for an even column count, two values per thread.
    epilogue2: CudaFunction,
    depthwise: CudaFunction,
    /// depthwise for an even channel count: two channels × [`DW_X`] columns
    /// per thread.
    depthwise2: CudaFunction,
    mean_pool: CudaFunction,
    from_f32: CudaFunction,
    to_f32: CudaFunction,
}

/// Device buffers for `cap` images, grown on demand.
struct Buffers {
    cap: usize,
    /// Page-locked host copies of the pixels, and their device twins: two
    /// of each, so one chunk uploads while the other computes.
    staging: [PinnedHostSlice<u8>; 2],
    input: [CudaSlice<u8>; 2],
    act: [CudaSlice<u8>; 3],
    cols: CudaSlice<u8>,
    pooled: CudaSlice<f32>,
    small: CudaSlice<u8>,
    features: CudaSlice<f32>,
}

struct State {
    stream: Arc<CudaStream>,
    upload: Arc<CudaStream>,
    blas: CudaBlas,
    buffers: Option<Buffers>,
}

/// A network resident on one GPU.
pub struct GpuEngine {
    pub gpu: Arc<Gpu>,
    pub storage: GpuDtype,
    net: GpuNet,
    kernels: Kernels,
    state: Mutex<State>,
}

/// The zeros before each axis, one number for both: the kernels take one,
/// and the engine's inputs are square (`resolution`², and every layer
/// keeps them square).
fn square_pad(padding: Padding, kernel: usize, stride: usize, i: Hw) -> usize {
    debug_assert_eq!(i.h, i.w, "the CUDA engine runs square activations");
    padding.begin(kernel, stride, i.h)
}

fn dev_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda { action: what.to_string(), source: Box::new(e) }
}

impl GpuEngine {
    /// Compiles the kernels for this GPU and copies the plan's weights to it.
    pub fn new(gpu: Arc<Gpu>, plan: &Plan, storage: GpuDtype) -> Result<Self> {
        let (cubin, _) = kernel_cache::compiled(&gpu.info.arch(), Output::Cubin)?;
        let module = gpu
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(dev_err("loading the compiled kernels"))?;
        let f = |name: &str| {
            let full = format!("{name}_{}", storage.suffix());
            module
                .load_function(&full)
                .map_err(|e| Error::Cuda { action: format!("kernel {full}"), source: Box::new(e) })
        };
        let kernels = Kernels {
            normalise: f("normalise")?,
            im2col: f("im2col")?,
            im2col16: f("im2col16")?,
            epilogue: f("epilogue")?,
            epilogue2: f("epilogue2")?,
            depthwise: f("depthwise")?,
            depthwise2: f("depthwise2")?,
            mean_pool: f("mean_pool")?,
            from_f32: f("from_f32")?,
            to_f32: f("to_f32")?,
        };
        let stream = gpu.ctx.new_stream().map_err(dev_err("new stream"))?;
        let upload = gpu.ctx.new_stream().map_err(dev_err("new stream"))?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| Error::Cuda { action: "cuBLAS: create handle".into(), source: Box::new(e) })?;
        let net = lower(&stream, plan, storage)?;
        stream.synchronize().map_err(dev_err("copying the weights"))?;
        Ok(Self { gpu, storage, net, kernels, state: Mutex::new(State { stream, upload, blas, buffers: None }) })
    }

    pub fn feature_dim(&self) -> usize {
        self.net.head.n
    }

    /// `n × r × r × 3` RGB8 → `n × feature_dim` features.
    pub fn run(&self, rgb: &[u8]) -> Result<Vec<f32>> {
        let r = self.net.resolution;
        let px = r * r * 3;
        let fd = self.feature_dim();
        let chunks: Vec<&[u8]> = rgb.chunks(CHUNK * px).collect();
        let mut out = vec![0f32; rgb.len() / px * fd];
        let Some(first) = chunks.first() else { return Ok(out) };
        // A panic while holding the lock left the streams and buffers in an
        // unknown state: no more runs on this engine.
        let mut state = self.state.lock().map_err(|_| Error::Cuda {
            action: "the GPU engine is unusable".into(),
            source: "an earlier run panicked while holding it".into(),
        })?;
        self.ensure(&mut state, chunks.iter().map(|c| c.len() / px).max().unwrap_or(0))?;
        let mut uploaded = stage(&mut state, 0, first)?;
        for (j, (chunk, rows)) in chunks.iter().zip(out.chunks_mut(CHUNK * fd)).enumerate() {
            state.stream.wait(&uploaded).map_err(dev_err("waiting for the upload"))?;
            self.enqueue_chunk(&mut state, j % 2, chunk.len() / px)?;
            if let Some(next) = chunks.get(j + 1) {
                // Slot (j+1) % 2 last held chunk j-1, finished below in the
                // previous round: its staging and input buffers are free.
                uploaded = stage(&mut state, (j + 1) % 2, next)?;
            }
            let b = state.buffers.as_ref().expect("ensure() allocated the buffers");
            state
                .stream
                .memcpy_dtoh(&b.features.slice(..rows.len()), rows)
                .map_err(dev_err("copying features back"))?;
            state.stream.synchronize().map_err(dev_err("running the network"))?;
        }
        Ok(out)
    }

    fn ensure(&self, state: &mut State, images: usize) -> Result<()> {
        if state.buffers.as_ref().is_some_and(|b| b.cap >= images) {
            return Ok(());
        }
        let cap = images;
        state.buffers = None; // free the old ones before allocating bigger
        let (net, es) = (&self.net, self.storage.size());
        let alloc = |bytes: usize| -> Result<CudaSlice<u8>> {
            state.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| {
                let action = format!("cannot allocate {:.0} MB for a chunk of {cap} images", bytes as f64 / 1e6);
                Error::Cuda { action, source: Box::new(e) }
            })
        };
        let act = cap * net.max_activation * es;
        let px = cap * net.resolution * net.resolution * 3;
        let pinned = || {
            // SAFETY: plain bytes; written by the host before every upload.
            unsafe { state.stream.context().alloc_pinned::<u8>(px.max(1)) }.map_err(dev_err("pinned host memory"))
        };
        let buffers = Buffers {
            cap,
            staging: [pinned()?, pinned()?],
            input: [alloc(px)?, alloc(px)?],
            act: [alloc(act)?, alloc(act)?, alloc(act)?],
            cols: alloc(cap * net.max_cols * es)?,
            pooled: state.stream.alloc_zeros::<f32>(cap * net.head_in.max(net.head.n)).map_err(dev_err("alloc"))?,
            small: alloc(cap * (net.head_in + net.head.n) * es)?,
            features: state.stream.alloc_zeros::<f32>(cap * net.head.n).map_err(dev_err("alloc"))?,
        };
        // The buffers were allocated and zeroed in the compute stream's
        // order; the upload stream writes the first chunk into them next,
        // so they must exist before it does (an H200 run without this wait
        // lost the race: the zeroing landed after the pixels).
        state.stream.synchronize().map_err(dev_err("allocating the buffers"))?;
        state.buffers = Some(buffers);
        Ok(())
    }
}

/// A raw device address, as the kernels and cuBLAS take it.
fn addr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    // Event tracking is off (probe::open): the guard does nothing.
    s.device_ptr(stream).0
}

/// Grid-stride launch shape for `n` elements. The kernels index elements
/// with 32-bit integers (kernels.cu says why), so `n` must stay below 2^31:
/// a chunk of [`CHUNK`] images of the largest activation is far below it.
fn grid(n: usize, kernel: &str) -> Result<LaunchConfig> {
    if n > i32::MAX as usize {
        return Err(Error::invalid(
            Param::BatchSize,
            format!("gives {kernel} {n} elements in one launch, more than the kernels' 32-bit indices reach"),
        ));
    }
    let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
    Ok(LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
}

/// What follows a dense layer's GEMM.
#[derive(Clone, Copy)]
enum After {
    /// The epilogue kernel: bias, activation, and the residual if any.
    Epilogue { skip: Option<u64> },
    /// Nothing: the depthwise layer that follows applies the bias and the
    /// activation to each value it reads (kernels.cu, `pre_bias`).
    LeftToNext,
}

/// The addresses of one chunk's buffers.
#[derive(Clone, Copy)]
struct Addrs {
    input: u64,
    act: [u64; 3],
    cols: u64,
    pooled: u64,
    small: u64,
    features: u64,
}

impl GpuEngine {
    /// Enqueues the network on the compute stream for the chunk in input
    /// buffer `slot`; the features land in the features buffer.
    fn enqueue_chunk(&self, state: &mut State, slot: usize, images: usize) -> Result<()> {
        let stream = state.stream.clone();
        let b = state.buffers.as_ref().expect("ensure() allocated the buffers");
        let a = Addrs {
            input: addr(&b.input[slot], &stream),
            act: [addr(&b.act[0], &stream), addr(&b.act[1], &stream), addr(&b.act[2], &stream)],
            cols: addr(&b.cols, &stream),
            pooled: addr(&b.pooled, &stream),
            small: addr(&b.small, &stream),
            features: addr(&b.features, &stream),
        };
        self.forward(&stream, &state.blas, a, images)
    }

    fn forward(&self, stream: &Arc<CudaStream>, blas: &CudaBlas, a: Addrs, images: usize) -> Result<()> {
        let net = &self.net;
        let r = net.resolution;
        let n_in = (images * r * r * 3) as i64;
        let (scale, shift) = net.input.scale_shift();
        let mut l = stream.launch_builder(&self.kernels.normalise);
        l.arg(&a.input).arg(&a.act[0]).arg(&n_in);
        for v in scale.iter().chain(shift.iter()) {
            l.arg(v);
        }
        let cfg = grid(n_in as usize, "normalise")?;
        // SAFETY: the arguments match normalise_* in kernels.cu; both
        // buffers hold `images` whole images (ensure()).
        unsafe { l.launch(cfg) }.map_err(dev_err("normalise"))?;
        let (mut cur, mut hw, mut ch) = (0usize, Hw { h: r, w: r }, 3usize);
        // The bias and activation of a dense layer whose epilogue was left
        // to the depthwise layer after it.
        let mut pending: Option<(u64, i32)> = None;
        for block in &net.blocks {
            let input = cur;
            for (li, layer) in block.layers.iter().enumerate() {
                let dst = (0..3).find(|&x| x != cur && x != input).expect("three buffers");
                let skip = (li + 1 == block.layers.len() && block.skip).then_some(a.act[input]);
                match layer {
                    GpuLayer::Dense(d) => {
                        let next_is_depthwise = matches!(block.layers.get(li + 1), Some(GpuLayer::Depthwise(_)));
                        let after = if next_is_depthwise && skip.is_none() {
                            pending = Some((addr(&d.bias, stream), d.act));
                            After::LeftToNext
                        } else {
                            After::Epilogue { skip }
                        };
                        self.dense(stream, blas, d, a.act[cur], hw, images, after, a.act[dst], a.cols)?
                    }
                    GpuLayer::Depthwise(d) => {
                        self.depthwise(stream, d, a.act[cur], hw, images, skip, pending.take(), a.act[dst])?
                    }
                }
                (cur, hw, ch) = (dst, layer.out_hw(hw), layer.cout());
            }
        }
        self.head(stream, blas, a, cur, hw, ch, images)
    }

    #[allow(clippy::too_many_arguments)]
    fn head(
        &self,
        stream: &Arc<CudaStream>,
        blas: &CudaBlas,
        a: Addrs,
        cur: usize,
        hw: Hw,
        ch: usize,
        images: usize,
    ) -> Result<()> {
        let head = &self.net.head;
        let pixels = hw.h * hw.w;
        match self.net.head_order {
            Head::BeforePool => {
                let dst = (cur + 1) % 3;
                let after = After::Epilogue { skip: None };
                self.dense(stream, blas, head, a.act[cur], hw, images, after, a.act[dst], a.cols)?;
                self.mean_pool(stream, a.act[dst], a.features, images, pixels, head.n)
            }
            Head::AfterPool => {
                self.mean_pool(stream, a.act[cur], a.pooled, images, pixels, ch)?;
                let n = (images * ch) as i64;
                let (x, y) = (a.small, a.small + (images * ch * self.storage.size()) as u64);
                let mut l = stream.launch_builder(&self.kernels.from_f32);
                l.arg(&a.pooled).arg(&x).arg(&n);
                let cfg = grid(n as usize, "from_f32")?;
                // SAFETY: from_f32_*(const float*, T*, long long); `small` holds
                // images·(head_in + n) elements.
                unsafe { l.launch(cfg) }.map_err(dev_err("from_f32"))?;
                let after = After::Epilogue { skip: None };
                self.dense(stream, blas, head, x, Hw { h: 1, w: 1 }, images, after, y, a.cols)?;
                let m = (images * head.n) as i64;
                let mut l = stream.launch_builder(&self.kernels.to_f32);
                l.arg(&y).arg(&a.features).arg(&m);
                let cfg = grid(m as usize, "to_f32")?;
                // SAFETY: to_f32_*(const T*, float*, long long), sizes as above.
                unsafe { l.launch(cfg) }.map_err(dev_err("to_f32"))?;
                Ok(())
            }
        }
    }

    fn mean_pool(
        &self,
        stream: &Arc<CudaStream>,
        x: u64,
        out: u64,
        images: usize,
        pixels: usize,
        c: usize,
    ) -> Result<()> {
        let (b, p, cc) = (images as i32, pixels as i32, c as i32);
        let mut l = stream.launch_builder(&self.kernels.mean_pool);
        l.arg(&x).arg(&out).arg(&b).arg(&p).arg(&cc);
        let cfg = grid(images * c, "mean_pool")?;
        // SAFETY: mean_pool_*(const T*, float*, int, int, int); `x` holds
        // images·pixels·c values, `out` images·c.
        unsafe { l.launch(cfg) }.map_err(dev_err("mean_pool"))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn depthwise(
        &self,
        stream: &Arc<CudaStream>,
        d: &super::lower::GpuDepthwise,
        x: u64,
        i: Hw,
        images: usize,
        skip: Option<u64>,
        pre: Option<(u64, i32)>,
        y: u64,
    ) -> Result<()> {
        let o = i.conv(d.kernel, d.stride, d.padding);
        let (w, bias, skip) = (addr(&d.weight, stream), addr(&d.bias, stream), skip.unwrap_or(0));
        let (pre_bias, pre_act) = pre.unwrap_or((0, 0));
        let pad = square_pad(d.padding, d.kernel, d.stride, i);
        let ints = [images, i.h, i.w, d.channels, o.h, o.w, d.kernel, d.stride, pad].map(|v| v as i32);
        let (kernel, threads) = if d.channels.is_multiple_of(2) {
            (&self.kernels.depthwise2, images * o.h * o.w.div_ceil(DW_X) * (d.channels / 2))
        } else {
            (&self.kernels.depthwise, images * o.h * o.w * d.channels)
        };
        let mut l = stream.launch_builder(kernel);
        l.arg(&x).arg(&y).arg(&w).arg(&bias).arg(&skip).arg(&pre_bias).arg(&pre_act);
        for v in &ints {
            l.arg(v);
        }
        l.arg(&d.act);
        let cfg = grid(threads, "depthwise")?;
        // SAFETY: the arguments follow depthwise_* and depthwise2_* (the same
        // list) in kernels.cu; the buffers hold the shapes the plan computed
        // (lower()); pre_bias, when set, holds the input's channels.
        unsafe { l.launch(cfg) }.map_err(dev_err("depthwise"))?;
        Ok(())
    }

    /// A dense convolution: (im2col) → cuBLAS → bias, activation, skip
    /// (or those left to the next layer).
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        stream: &Arc<CudaStream>,
        blas: &CudaBlas,
        d: &GpuDense,
        x: u64,
        i: Hw,
        images: usize,
        after: After,
        y: u64,
        cols: u64,
    ) -> Result<()> {
        let o = d.out_hw(i);
        let rows = images * o.h * o.w;
        let a = if d.is_plain_gemm() {
            x
        } else {
            self.im2col(stream, d, x, i, images, cols)?;
            cols
        };
        self.gemm(stream, blas, d, a, rows, y)?;
        let After::Epilogue { skip } = after else { return Ok(()) };
        let (bias, skip, total, n) = (addr(&d.bias, stream), skip.unwrap_or(0), (rows * d.n) as i64, d.n as i32);
        let (kernel, threads) = if d.n.is_multiple_of(2) {
            (&self.kernels.epilogue2, total as usize / 2)
        } else {
            (&self.kernels.epilogue, total as usize)
        };
        let mut l = stream.launch_builder(kernel);
        l.arg(&y).arg(&bias).arg(&skip).arg(&total).arg(&n).arg(&d.act);
        let cfg = grid(threads, "epilogue")?;
        // SAFETY: epilogue_* and epilogue2_*(T*, const float*, const T*,
        // long long, int, int).
        unsafe { l.launch(cfg) }.map_err(dev_err("epilogue"))?;
        Ok(())
    }

    /// The patch matrix of a k×k (or strided) convolution into `cols`.
    fn im2col(&self, stream: &Arc<CudaStream>, d: &GpuDense, x: u64, i: Hw, images: usize, cols: u64) -> Result<()> {
        let o = d.out_hw(i);
        let rows = images * o.h * o.w;
        grid(rows * d.k, "im2col")?; // the 32-bit bound on the whole matrix
        let per_piece = 16 / self.storage.size();
        let whole_pieces = d.cin.is_multiple_of(per_piece) && d.k.is_multiple_of(per_piece);
        let (kernel, cfg) = if whole_pieces {
            (&self.kernels.im2col16, grid(rows * d.k / per_piece, "im2col")?)
        } else {
            let threads = d.k.next_multiple_of(32).min(256) as u32;
            let blocks = rows.clamp(1, 1 << 16) as u32;
            (
                &self.kernels.im2col,
                LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 },
            )
        };
        let pad = square_pad(d.padding, d.kernel, d.stride, i);
        let ints = [images, i.h, i.w, d.cin, o.h, o.w, d.kernel, d.stride, pad, d.k].map(|v| v as i32);
        let mut l = stream.launch_builder(kernel);
        l.arg(&x).arg(&cols);
        for v in &ints {
            l.arg(v);
        }
        // SAFETY: im2col_* and im2col16_*(const T*, T*, 10 ints); `cols`
        // holds max_cols per image (lower()); im2col16 only where cin and k
        // are whole 16-byte pieces, so its 16-byte accesses are aligned.
        unsafe { l.launch(cfg) }.map_err(dev_err("im2col"))?;
        Ok(())
    }

    /// `y[rows][n] = a[rows][k] · w[k][n]`, row-major, as cuBLAS's
    /// column-major `yᵀ = wᵀ · aᵀ`: f32 accumulation in both storage types
    /// (tensor cores for f16).
    fn gemm(&self, stream: &CudaStream, blas: &CudaBlas, d: &GpuDense, a: u64, rows: usize, y: u64) -> Result<()> {
        let (one, zero) = (1f32, 0f32);
        let ty = self.storage.cuda_type();
        let w = addr(&d.weight, stream);
        // SAFETY: w is [k][n], a is [rows][k], y is [rows][n], all on the
        // handle's stream; alpha/beta are host f32 as COMPUTE_32F expects.
        unsafe {
            blas::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                d.n as i32,
                rows as i32,
                d.k as i32,
                &one as *const f32 as *const _,
                w as *const _,
                ty,
                d.n as i32,
                a as *const _,
                ty,
                d.k as i32,
                &zero as *const f32 as *const _,
                y as *mut _,
                ty,
                d.n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cuda { action: format!("cuBLAS GEMM ({rows}×{}×{})", d.k, d.n), source: Box::new(e) })
    }
}

/// Copies `chunk` into staging buffer `slot` and sends it to input buffer
/// `slot` on the upload stream; the event marks its arrival.
fn stage(state: &mut State, slot: usize, chunk: &[u8]) -> Result<CudaEvent> {
    let State { upload, buffers, .. } = state;
    let b = buffers.as_mut().expect("ensure() allocated the buffers");
    // Waits for this buffer's previous copy, if cudarc recorded one.
    let host = b.staging[slot].as_mut_slice().map_err(dev_err("pinned host memory"))?;
    host[..chunk.len()].copy_from_slice(chunk);
    // From page-locked memory the copy is asynchronous: the caller keeps the
    // slot untouched until the chunk it holds has been computed.
    upload
        .memcpy_htod(&host[..chunk.len()], &mut b.input[slot].slice_mut(..chunk.len()))
        .map_err(dev_err("copying pixels"))?;
    upload.record_event(None).map_err(dev_err("recording the upload"))
}
