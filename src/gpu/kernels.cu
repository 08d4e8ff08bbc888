// The CUDA engine's kernels, compiled at run time by NVRTC for the GPU found
// (src/gpu/nvrtc.rs). cuBLAS does the matrix products; these kernels do the
// rest of the lowered plan (src/model/engine): input normalisation, im2col,
// the GEMM epilogue, the depthwise convolutions and the pooling.
//
// Activations are NHWC, stored as `float` or as IEEE half (`half_t`, raw
// bits: no cuda_fp16.h, so NVRTC needs no include path); arithmetic is f32.
// Every kernel is a grid-stride loop over 64-bit indices, so any grid size
// covers any tensor. Each name below is instantiated for both storage types
// with the suffix _f32 or _f16.

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

// The activations of model::engine::act::Act: 0 none, 1 ReLU, 2 ReLU6.
__device__ __forceinline__ float activate(float x, int act) {
    if (act == 1) return fmaxf(x, 0.0f);
    if (act == 2) return fminf(fmaxf(x, 0.0f), 6.0f);
    return x;
}

#define FOR_EACH(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

// RGB8 pixels (what crosses the bus: 3 bytes per pixel) → x * scale - shift.
template <typename T>
__device__ void normalise(const unsigned char* rgb, T* out, long long n, float s0, float s1, float s2, float t0,
                          float t1, float t2) {
    FOR_EACH(i, n) {
        int c = (int)(i % 3);
        float s = c == 0 ? s0 : (c == 1 ? s1 : s2);
        float t = c == 0 ? t0 : (c == 1 ? t1 : t2);
        store(out + i, (float)rgb[i] * s - t);
    }
}

// Patch rows of a k×k convolution, one per output pixel of every image:
// `cols` is [images·oh·ow][kp], (ky, kx, ci) order, zero outside the image
// and in the padding columns up to kp.
template <typename T>
__device__ void im2col(const T* in, T* cols, int images, int h, int w, int cin, int oh, int ow, int k, int stride,
                       int pad, int kp) {
    long long n = (long long)images * oh * ow * kp;
    FOR_EACH(i, n) {
        int j = (int)(i % kp);
        long long p = i / kp;
        int ox = (int)(p % ow);
        long long q = p / ow;
        int oy = (int)(q % oh);
        int b = (int)(q / oh);
        float v = 0.0f;
        if (j < k * k * cin) {
            int ci = j % cin;
            int kx = (j / cin) % k;
            int ky = j / (cin * k);
            int iy = oy * stride + ky - pad;
            int ix = ox * stride + kx - pad;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = load(in[(((long long)b * h + iy) * w + ix) * cin + ci]);
        }
        store(cols + i, v);
    }
}

// After a GEMM into `out` ([rows][n]): out = act(out + bias) (+ skip).
template <typename T>
__device__ void epilogue(T* out, const float* bias, const T* skip, long long total, int n, int act) {
    FOR_EACH(i, total) {
        float v = activate(load(out[i]) + bias[i % n], act);
        if (skip) v += load(skip[i]);
        store(out + i, v);
    }
}

// Depthwise k×k convolution with folded BatchNorm: weight [ky][kx][c],
// bias [c]; one thread per output value, consecutive threads on consecutive
// channels (coalesced in NHWC).
template <typename T>
__device__ void depthwise(const T* in, T* out, const float* weight, const float* bias, const T* skip, int images,
                          int h, int w, int c, int oh, int ow, int k, int stride, int pad, int act) {
    long long n = (long long)images * oh * ow * c;
    FOR_EACH(i, n) {
        int ch = (int)(i % c);
        long long p = i / c;
        int ox = (int)(p % ow);
        long long q = p / ow;
        int oy = (int)(q % oh);
        int b = (int)(q / oh);
        float acc = bias[ch];
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; kx++) {
                int ix = ox * stride + kx - pad;
                if (ix < 0 || ix >= w) continue;
                acc += load(in[(((long long)b * h + iy) * w + ix) * c + ch]) * weight[(ky * k + kx) * c + ch];
            }
        }
        float v = activate(acc, act);
        if (skip) v += load(skip[i]);
        store(out + i, v);
    }
}

// Global average pooling: [images][pixels][c] → f32 [images][c].
template <typename T>
__device__ void mean_pool(const T* in, float* out, int images, int pixels, int c) {
    long long n = (long long)images * c;
    FOR_EACH(i, n) {
        int ch = (int)(i % c);
        long long b = i / c;
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
    extern "C" __global__ void epilogue_##S(T* out, const float* bias, const T* skip, long long total, int n,      \
                                            int act) {                                                             \
        epilogue(out, bias, skip, total, n, act);                                                                  \
    }                                                                                                              \
    extern "C" __global__ void depthwise_##S(const T* in, T* out, const float* weight, const float* bias,          \
                                             const T* skip, int images, int h, int w, int c, int oh, int ow, int k,  \
                                             int stride, int pad, int act) {                                        \
        depthwise(in, out, weight, bias, skip, images, h, w, c, oh, ow, k, stride, pad, act);                      \
    }                                                                                                              \
    extern "C" __global__ void mean_pool_##S(const T* in, float* out, int images, int pixels, int c) {             \
        mean_pool(in, out, images, pixels, c);                                                                     \
    }                                                                                                              \
    extern "C" __global__ void from_f32_##S(const float* in, T* out, long long n) { from_f32(in, out, n); }       \
    extern "C" __global__ void to_f32_##S(const T* in, float* out, long long n) { to_f32(in, out, n); }

INSTANTIATE(float, f32)
INSTANTIATE(half_t, f16)
