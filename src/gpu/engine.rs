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

use crate::error::{Error, Result};
use crate::model::engine::depthwise::Hw;
use crate::model::engine::{Head, Plan};

use super::lower::{lower, GpuDense, GpuLayer, GpuNet};
use super::nvrtc::{self, Output};
use super::probe::Gpu;
use super::storage::Storage;

/// Images per pass through the network: ~2 GB of f16 activations for
/// MobileNetV2 at 224², inside a T4's 16 GB with room for cuBLAS.
pub const CHUNK: usize = 256;

/// The kernels of one storage type.
struct Kernels {
    normalise: CudaFunction,
    im2col: CudaFunction,
    epilogue: CudaFunction,
    depthwise: CudaFunction,
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
    pub storage: Storage,
    net: GpuNet,
    kernels: Kernels,
    state: Mutex<State>,
}

fn dev_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("CUDA: {what}: {e}"))
}

impl GpuEngine {
    /// Compiles the kernels for this GPU and copies the plan's weights to it.
    pub fn new(gpu: Arc<Gpu>, plan: &Plan<f32>, storage: Storage) -> Result<Self> {
        let cubin = nvrtc::compile(&gpu.info.arch(), Output::Cubin)?;
        let module = gpu
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(dev_err("loading the compiled kernels"))?;
        let f = |name: &str| {
            let full = format!("{name}_{}", storage.suffix());
            module.load_function(&full).map_err(|e| Error::Device(format!("CUDA: kernel {full}: {e}")))
        };
        let kernels = Kernels {
            normalise: f("normalise")?,
            im2col: f("im2col")?,
            epilogue: f("epilogue")?,
            depthwise: f("depthwise")?,
            mean_pool: f("mean_pool")?,
            from_f32: f("from_f32")?,
            to_f32: f("to_f32")?,
        };
        let stream = gpu.ctx.new_stream().map_err(dev_err("new stream"))?;
        let upload = gpu.ctx.new_stream().map_err(dev_err("new stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::Device(format!("cuBLAS: create handle: {e:?}")))?;
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
        let mut state = self.state.lock().map_err(|_| Error::Device("the GPU engine's lock is poisoned".into()))?;
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
                Error::Device(format!(
                    "CUDA: cannot allocate {:.0} MB for a chunk of {cap} images: {e}",
                    bytes as f64 / 1e6
                ))
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
        state.buffers = Some(buffers);
        Ok(())
    }
}

/// A raw device address, as the kernels and cuBLAS take it.
fn addr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    // Event tracking is off (probe::open): the guard does nothing.
    s.device_ptr(stream).0
}

/// Grid-stride launch shape for `n` elements.
fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
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
        let (scale, shift) = crate::image::normaliser();
        let mut l = stream.launch_builder(&self.kernels.normalise);
        l.arg(&a.input).arg(&a.act[0]).arg(&n_in);
        for v in scale.iter().chain(shift.iter()) {
            l.arg(v);
        }
        // SAFETY: the arguments match normalise_* in kernels.cu; both
        // buffers hold `images` whole images (ensure()).
        unsafe { l.launch(grid(n_in as usize)) }.map_err(dev_err("normalise"))?;
        let (mut cur, mut hw, mut ch) = (0usize, Hw { h: r, w: r }, 3usize);
        for block in &net.blocks {
            let input = cur;
            for (li, layer) in block.layers.iter().enumerate() {
                let dst = (0..3).find(|&x| x != cur && x != input).expect("three buffers");
                let skip = (li + 1 == block.layers.len() && block.skip).then_some(a.act[input]);
                match layer {
                    GpuLayer::Dense(d) => {
                        self.dense(stream, blas, d, a.act[cur], hw, images, skip, a.act[dst], a.cols)?
                    }
                    GpuLayer::Depthwise(d) => self.depthwise(stream, d, a.act[cur], hw, images, skip, a.act[dst])?,
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
                self.dense(stream, blas, head, a.act[cur], hw, images, None, a.act[dst], a.cols)?;
                self.mean_pool(stream, a.act[dst], a.features, images, pixels, head.n)
            }
            Head::AfterPool => {
                self.mean_pool(stream, a.act[cur], a.pooled, images, pixels, ch)?;
                let n = (images * ch) as i64;
                let (x, y) = (a.small, a.small + (images * ch * self.storage.size()) as u64);
                let mut l = stream.launch_builder(&self.kernels.from_f32);
                l.arg(&a.pooled).arg(&x).arg(&n);
                // SAFETY: from_f32_*(const float*, T*, long long); `small` holds
                // images·(head_in + n) elements.
                unsafe { l.launch(grid(n as usize)) }.map_err(dev_err("from_f32"))?;
                self.dense(stream, blas, head, x, Hw { h: 1, w: 1 }, images, None, y, a.cols)?;
                let m = (images * head.n) as i64;
                let mut l = stream.launch_builder(&self.kernels.to_f32);
                l.arg(&y).arg(&a.features).arg(&m);
                // SAFETY: to_f32_*(const T*, float*, long long), sizes as above.
                unsafe { l.launch(grid(m as usize)) }.map_err(dev_err("to_f32"))?;
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
        // SAFETY: mean_pool_*(const T*, float*, int, int, int); `x` holds
        // images·pixels·c values, `out` images·c.
        unsafe { l.launch(grid(images * c)) }.map_err(dev_err("mean_pool"))?;
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
        y: u64,
    ) -> Result<()> {
        let o = i.conv(d.kernel, d.stride, d.pad);
        let (w, bias, skip) = (addr(&d.weight, stream), addr(&d.bias, stream), skip.unwrap_or(0));
        let ints = [images, i.h, i.w, d.channels, o.h, o.w, d.kernel, d.stride, d.pad].map(|v| v as i32);
        let mut l = stream.launch_builder(&self.kernels.depthwise);
        l.arg(&x).arg(&y).arg(&w).arg(&bias).arg(&skip);
        for v in &ints {
            l.arg(v);
        }
        l.arg(&d.act);
        // SAFETY: the arguments follow depthwise_* in kernels.cu; the
        // buffers hold the shapes the plan computed (lower()).
        unsafe { l.launch(grid(images * o.h * o.w * d.channels)) }.map_err(dev_err("depthwise"))?;
        Ok(())
    }

    /// A dense convolution: (im2col) → cuBLAS → bias, activation, skip.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        stream: &Arc<CudaStream>,
        blas: &CudaBlas,
        d: &GpuDense,
        x: u64,
        i: Hw,
        images: usize,
        skip: Option<u64>,
        y: u64,
        cols: u64,
    ) -> Result<()> {
        let o = d.out_hw(i);
        let rows = images * o.h * o.w;
        let a = if d.is_plain_gemm() {
            x
        } else {
            let ints = [images, i.h, i.w, d.cin, o.h, o.w, d.kernel, d.stride, d.pad, d.k].map(|v| v as i32);
            let mut l = stream.launch_builder(&self.kernels.im2col);
            l.arg(&x).arg(&cols);
            for v in &ints {
                l.arg(v);
            }
            // SAFETY: im2col_*(const T*, T*, 10 ints); `cols` holds max_cols
            // per image (lower()).
            unsafe { l.launch(grid(rows * d.k)) }.map_err(dev_err("im2col"))?;
            cols
        };
        self.gemm(stream, blas, d, a, rows, y)?;
        let (bias, skip, total, n) = (addr(&d.bias, stream), skip.unwrap_or(0), (rows * d.n) as i64, d.n as i32);
        let mut l = stream.launch_builder(&self.kernels.epilogue);
        l.arg(&y).arg(&bias).arg(&skip).arg(&total).arg(&n).arg(&d.act);
        // SAFETY: epilogue_*(T*, const float*, const T*, long long, int, int).
        unsafe { l.launch(grid(total as usize)) }.map_err(dev_err("epilogue"))?;
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
        .map_err(|e| Error::Device(format!("cuBLAS GEMM ({rows}×{}×{}): {e:?}", d.k, d.n)))
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
