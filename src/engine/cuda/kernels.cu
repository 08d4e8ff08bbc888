// The CUDA engine's kernels, compiled at run time by NVRTC for the GPU found
// (src/gpu/nvrtc.rs). cuBLAS does the matrix products; these kernels do the
// rest of the lowered plan (src/model/engine): input normalisation, im2col,
// the GEMM epilogue, the depthwise convolutions and the pooling.
//
// Activations are NHWC, stored as `float` or as IEEE half (`half_t`, raw
// bits: no cuda_fp16.h, so NVRTC needs no include path); arithmetic is f32.
// Every kernel is a grid-stride loop, so any grid size covers any tensor.
// Element indices and their division into (image, y, x, channel) are 32-bit:
// a 64-bit division is a long software routine on the GPU and made these
// memory-bound kernels compute-bound (measured on an H200); the engine
// refuses a launch of 2^31 elements or more (engine.rs, grid()), and memory
// offsets stay 64-bit. Each name below is instantiated for both storage
// types with the suffix _f32 or _f16.

typedef unsigned short half_t;

__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ float load(half_t x) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(x));
    return f;
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(half_t* p, float v) {
    half_t h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(v));
    *p = h;
}

// Two adjacent values (channels c and c+1, c even, so 4- or 8-byte aligned):
// one memory instruction where two were.
struct alignas(8) float_pair { float x, y; };
__device__ __forceinline__ void load2(const float* p, float& a, float& b) {
    float_pair v = *(const float_pair*)p;
    a = v.x;
    b = v.y;
}
__device__ __forceinline__ void load2(const half_t* p, float& a, float& b) {
    unsigned int v = *(const unsigned int*)p;
    a = load((half_t)(v & 0xffffu));
    b = load((half_t)(v >> 16));
}
__device__ __forceinline__ void store2(float* p, float a, float b) {
    float_pair v = {a, b};
    *(float_pair*)p = v;
}
__device__ __forceinline__ void store2(half_t* p, float a, float b) {
    half_t x, y;
    store(&x, a);
    store(&y, b);
    *(unsigned int*)p = (unsigned int)x | ((unsigned int)y << 16);
}

// The activations of model::engine::act::Act: 0 none, 1 ReLU, 2 ReLU6.
__device__ __forceinline__ float activate(float x, int act) {
    if (act == 1) return fmaxf(x, 0.0f);
    if (act == 2) return fminf(fmaxf(x, 0.0f), 6.0f);
    return x;
}

// i + stride stays below 2^32: n < 2^31 and the grid is at most 2^24 threads.
#define FOR_EACH(i, n) \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(n); i += gridDim.x * blockDim.x)

// RGB8 pixels (what crosses the bus: 3 bytes per pixel) → x * scale - shift.
template <typename T>
__device__ void normalise(const unsigned char* rgb, T* out, long long n, float s0, float s1, float s2, float t0,
                          float t1, float t2) {
    FOR_EACH(i, n) {
        unsigned c = i % 3u;
        float s = c == 0 ? s0 : (c == 1 ? s1 : s2);
        float t = c == 0 ? t0 : (c == 1 ? t1 : t2);
        store(out + i, (float)rgb[i] * s - t);
    }
}

// Output pixel p of a batch of oh×ow images → its image b and row/column.
struct Pixel {
    int b, y, x;
};
__device__ __forceinline__ Pixel pixel(unsigned p, int oh, int ow) {
    unsigned q = p / (unsigned)ow;
    return Pixel{(int)(q / (unsigned)oh), (int)(q % (unsigned)oh), (int)(p % (unsigned)ow)};
}

// Where column j of output pixel o's patch row reads its input ((ky, kx, ci)
// order), or -1 for a zero: outside the image, or a padding column.
__device__ __forceinline__ long long patch_source(Pixel o, int j, int h, int w, int cin, int k, int stride, int pad) {
    if (j >= k * k * cin) return -1;
    int ci = j % cin;
    int kx = (j / cin) % k;
    int ky = j / (cin * k);
    int iy = o.y * stride + ky - pad;
    int ix = o.x * stride + kx - pad;
    if (iy < 0 || iy >= h || ix < 0 || ix >= w) return -1;
    return (((long long)o.b * h + iy) * w + ix) * cin + ci;
}

// Patch rows of a k×k convolution, one per output pixel of every image:
// `cols` is [images·oh·ow][kp], (ky, kx, ci) order, zero outside the image
// and in the padding columns up to kp. A block per output pixel (block-
// stride), its threads over the row's kp columns: the pixel's position is
// worked out once per row, not once per value.
template <typename T>
__device__ void im2col(const T* in, T* cols, int images, int h, int w, int cin, int oh, int ow, int k, int stride,
                       int pad, int kp) {
    unsigned rows = (unsigned)images * oh * ow;
    for (unsigned p = blockIdx.x; p < rows; p += gridDim.x) {
        Pixel o = pixel(p, oh, ow);
        for (int j = threadIdx.x; j < kp; j += blockDim.x) {
            long long src = patch_source(o, j, h, w, cin, k, stride, pad);
            store(cols + (long long)p * kp + j, src < 0 ? 0.0f : load(in[src]));
        }
    }
}

// The same when a pixel's cin values are whole 16-byte pieces (cin a
// multiple of 8 halves or 4 floats, and so kp): each thread copies one piece,
// a quarter or an eighth of the position arithmetic per value.
struct alignas(16) piece16 {
    unsigned a, b, c, d;
};
template <typename T>
__device__ void im2col16(const T* in, T* cols, int images, int h, int w, int cin, int oh, int ow, int k, int stride,
                         int pad, int kp) {
    const int per = 16 / (int)sizeof(T);
    unsigned pieces = (unsigned)(kp / per);
    long long n = (long long)images * oh * ow * pieces;
    FOR_EACH(i, n) {
        int j = (int)(i % pieces) * per;
        unsigned p = i / pieces;
        long long src = patch_source(pixel(p, oh, ow), j, h, w, cin, k, stride, pad);
        piece16 v = {0u, 0u, 0u, 0u};
        if (src >= 0) v = *(const piece16*)(in + src);
        *(piece16*)(cols + (long long)p * kp + j) = v;
    }
}

// After a GEMM into `out` ([rows][n]): out = act(out + bias) (+ skip).
template <typename T>
__device__ void epilogue(T* out, const float* bias, const T* skip, long long total, int n, int act) {
    FOR_EACH(i, total) {
        float v = activate(load(out[i]) + bias[i % (unsigned)n], act);
        if (skip) v += load(skip[i]);
        store(out + i, v);
    }
}

// The same for an even n, two adjacent values per thread.
template <typename T>
__device__ void epilogue2(T* out, const float* bias, const T* skip, long long total, int n, int act) {
    FOR_EACH(i, total / 2) {
        unsigned e = 2 * i;
        unsigned c = e % (unsigned)n;
        float a, b;
        load2(out + e, a, b);
        a = activate(a + bias[c], act);
        b = activate(b + bias[c + 1], act);
        if (skip) {
            float s, t;
            load2(skip + e, s, t);
            a += s;
            b += t;
        }
        store2(out + e, a, b);
    }
}

// Depthwise k×k convolution with folded BatchNorm: weight [ky][kx][c],
// bias [c]; one thread per output value, consecutive threads on consecutive
// channels (coalesced in NHWC). With `pre_bias`, the input is a GEMM's raw
// output whose epilogue was left to this kernel: each value read becomes
// activate(x + pre_bias[c], pre_act), saving the epilogue's pass over the
// widest tensors of the network (the expansions). Taps outside the image
// still add nothing, as the padded activated tensor's zeros would.
template <typename T>
__device__ void depthwise(const T* in, T* out, const float* weight, const float* bias, const T* skip,
                          const float* pre_bias, int pre_act, int images, int h, int w, int c, int oh, int ow, int k,
                          int stride, int pad, int act) {
    long long n = (long long)images * oh * ow * c;
    FOR_EACH(i, n) {
        int ch = (int)(i % (unsigned)c);
        Pixel o = pixel(i / (unsigned)c, oh, ow);
        int b = o.b, oy = o.y, ox = o.x;
        float acc = bias[ch];
        float pb = pre_bias ? pre_bias[ch] : 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = ox * stride + kx - pad;
                if (ix < 0 || ix >= w) continue;
                float x = load(in[(((long long)b * h + iy) * w + ix) * c + ch]);
                if (pre_bias) x = activate(x + pb, pre_act);
                acc += x * weight[(ky * k + kx) * c + ch];
            }
        }
        float v = activate(acc, act);
        if (skip) v += load(skip[i]);
        store(out + i, v);
    }
}

// The same for an even channel count: each thread makes DW_X consecutive
// output columns of two adjacent channels, so the position arithmetic, the
// weights and the bias are loaded once for 2·DW_X outputs and each input
// load brings two channels. Same summation order as depthwise().
#define DW_X 4
template <typename T>
__device__ void depthwise2(const T* in, T* out, const float* weight, const float* bias, const T* skip,
                           const float* pre_bias, int pre_act, int images, int h, int w, int c, int oh, int ow, int k,
                           int stride, int pad, int act) {
    unsigned pairs = (unsigned)c / 2u;
    unsigned tiles = ((unsigned)ow + DW_X - 1) / DW_X;
    long long n = (long long)images * oh * tiles * pairs;
    FOR_EACH(i, n) {
        int ch = (int)(i % pairs) * 2;
        Pixel o = pixel(i / pairs, oh, (int)tiles);  // x: the tile of DW_X columns
        int b = o.b, oy = o.y, ox0 = o.x * DW_X;
        float a0[DW_X], a1[DW_X];
        float b0 = bias[ch], b1 = bias[ch + 1];
        float p0 = pre_bias ? pre_bias[ch] : 0.0f, p1 = pre_bias ? pre_bias[ch + 1] : 0.0f;
#pragma unroll
        for (int t = 0; t < DW_X; t++) {
            a0[t] = b0;
            a1[t] = b1;
        }
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h) continue;
            const T* row = in + ((long long)b * h + iy) * w * c + ch;
            for (int kx = 0; kx < k; kx++) {
                float w0 = weight[(ky * k + kx) * c + ch], w1 = weight[(ky * k + kx) * c + ch + 1];
#pragma unroll
                for (int t = 0; t < DW_X; t++) {
                    int ix = (ox0 + t) * stride + kx - pad;
                    if (ix >= 0 && ix < w) {
                        float x0, x1;
                        load2(row + (long long)ix * c, x0, x1);
                        if (pre_bias) {
                            x0 = activate(x0 + p0, pre_act);
                            x1 = activate(x1 + p1, pre_act);
                        }
                        a0[t] += x0 * w0;
                        a1[t] += x1 * w1;
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < DW_X; t++) {
            if (ox0 + t >= ow) break;
            long long o = (((long long)b * oh + oy) * ow + ox0 + t) * c + ch;
            float v0 = activate(a0[t], act), v1 = activate(a1[t], act);
            if (skip) {
                float s0, s1;
                load2(skip + o, s0, s1);
                v0 += s0;
                v1 += s1;
            }
            store2(out + o, v0, v1);
        }
    }
}

// Global average pooling: [images][pixels][c] → f32 [images][c].
template <typename T>
__device__ void mean_pool(const T* in, float* out, int images, int pixels, int c) {
    long long n = (long long)images * c;
    FOR_EACH(i, n) {
        int ch = (int)(i % (unsigned)c);
        long long b = i / (unsigned)c;
        const T* x = in + b * pixels * c + ch;
        float acc = 0.0f;
        for (int p = 0; p < pixels; p++) acc += load(x[(long long)p * c]);
        out[i] = acc / (float)pixels;
    }
}

// f32 → storage type (the pooled vector before a head that runs after pooling).
template <typename T>
__device__ void from_f32(const float* in, T* out, long long n) {
    FOR_EACH(i, n) store(out + i, in[i]);
}

// Storage type → f32 (the features the host reads back).
template <typename T>
__device__ void to_f32(const T* in, float* out, long long n) {
    FOR_EACH(i, n) out[i] = load(in[i]);
}

#define INSTANTIATE(T, S)                                                                                          \
    extern "C" __global__ void normalise_##S(const unsigned char* rgb, T* out, long long n, float s0, float s1,    \
                                             float s2, float t0, float t1, float t2) {                             \
        normalise(rgb, out, n, s0, s1, s2, t0, t1, t2);                                                            \
    }                                                                                                              \
    extern "C" __global__ void im2col_##S(const T* in, T* cols, int images, int h, int w, int cin, int oh, int ow, \
                                          int k, int stride, int pad, int kp) {                                     \
        im2col(in, cols, images, h, w, cin, oh, ow, k, stride, pad, kp);                                           \
    }                                                                                                              \
    extern "C" __global__ void im2col16_##S(const T* in, T* cols, int images, int h, int w, int cin, int oh,       \
                                            int ow, int k, int stride, int pad, int kp) {                          \
        im2col16(in, cols, images, h, w, cin, oh, ow, k, stride, pad, kp);                                         \
    }                                                                                                              \
    extern "C" __global__ void epilogue_##S(T* out, const float* bias, const T* skip, long long total, int n,      \
                                            int act) {                                                             \
        epilogue(out, bias, skip, total, n, act);                                                                  \
    }                                                                                                              \
    extern "C" __global__ void epilogue2_##S(T* out, const float* bias, const T* skip, long long total, int n,     \
                                             int act) {                                                            \
        epilogue2(out, bias, skip, total, n, act);                                                                 \
    }                                                                                                              \
    extern "C" __global__ void depthwise2_##S(const T* in, T* out, const float* weight, const float* bias,         \
                                              const T* skip, const float* pre_bias, int pre_act, int images, int h, \
                                              int w, int c, int oh, int ow, int k, int stride, int pad, int act) {  \
        depthwise2(in, out, weight, bias, skip, pre_bias, pre_act, images, h, w, c, oh, ow, k, stride, pad, act);  \
    }                                                                                                              \
    extern "C" __global__ void depthwise_##S(const T* in, T* out, const float* weight, const float* bias,          \
                                             const T* skip, const float* pre_bias, int pre_act, int images, int h,  \
                                             int w, int c, int oh, int ow, int k, int stride, int pad, int act) {   \
        depthwise(in, out, weight, bias, skip, pre_bias, pre_act, images, h, w, c, oh, ow, k, stride, pad, act);   \
    }                                                                                                              \
    extern "C" __global__ void mean_pool_##S(const T* in, float* out, int images, int pixels, int c) {             \
        mean_pool(in, out, images, pixels, c);                                                                     \
    }                                                                                                              \
    extern "C" __global__ void from_f32_##S(const float* in, T* out, long long n) { from_f32(in, out, n); }       \
    extern "C" __global__ void to_f32_##S(const T* in, float* out, long long n) { to_f32(in, out, n); }

INSTANTIATE(float, f32)
INSTANTIATE(half_t, f16)
