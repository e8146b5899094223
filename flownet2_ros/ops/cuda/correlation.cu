// FlowNet correlation (cost volume) for CUDA, compiled at run time with NVRTC.
//
// Self-contained: no #include at all, so NVRTC compiles it without any CUDA headers (half precision is
// handled as raw 16-bit values converted with the PTX cvt instruction, not with <cuda_fp16.h>).
//
// Semantics (identical to flownet2_ros.ops.correlation.correlation): inputs NCHW (B, C, H, W), output
// (B, nd*nd, outH, outW), nd = 2*d + 1, d = max_displacement / stride2. Output pixel (y, x), displacement
// (i, j) in [-d, d]^2, window offset (a, b) in [-r, r]^2 (r = (kernel_size - 1) / 2):
//   in1 at (Y, X) = (y*stride1 + max_displacement - pad + a, x*stride1 + max_displacement - pad + b),
//   in2 at (Y + j*stride2, X + i*stride2), zero outside the image;
//   out[b, (j + d)*nd + (i + d), y, x] = scale * sum over a, b, c of in1 * in2, scale = corr_multiply / (k*k*C).
// Accumulation is always fp32.
//
// Entry points (extern "C"); arguments (in1, in2, out, C, H, W, outH, outW, pad, ksize, maxdisp, stride1,
// stride2, scale, chunk), the naive ones with the batch size B first:
//   correlation_tiled_{f32,f16}         any configuration (the general fast kernel)
//   correlation_pair_{f32,f16}          kernel_size == 1 and stride2 == 2*stride1 (FlowNetC): faster
//   correlation_naive_kernel_{f32,f16}  one thread per output, straight loops; for benchmarks only
//
// Fast kernels: one block per (32 or 64 output columns of one output row, one image, one vertical
// displacement j). Channels are processed in chunks: the block stages, for the chunk, the needed row
// segment of input 1 and the displaced row segment of input 2 in shared memory (zero-filled outside the
// image, converted to fp32), then each warp handles a group of horizontal displacements i, each lane one
// (tiled) or two (pair) output columns with all of its group's displacements accumulated in registers.
// The pair kernel gives each lane the columns x and x + 2, whose displacement windows overlap in input 2,
// so one shared-memory read serves two outputs; its shared layouts (input 1 in lane order, input 2 split
// by column parity with an odd row stride) make every shared read of a warp bank-conflict free.
//
// Launch: grid (ceil(outW / TX), outH, B * nd), block 32 * ceil(nd / IR) threads (at most 16 warps),
// dynamic shared memory chunk * (span1 + span2) floats (<= 48 KiB), as computed by
// flownet2_ros.ops.cuda_correlation.launch_config. test/test_cuda_kernel.py also compiles this file as
// plain C++ (CORRELATION_HOST_EMULATION) to run it on a CPU.

typedef unsigned short half_bits;

__device__ __forceinline__ float load_f32(const float *p) { return *p; }

__device__ __forceinline__ void store_f32(float *p, float v) { *p = v; }

#ifndef CORRELATION_HOST_EMULATION // the CPU emulation test (test/test_cuda_kernel.py) supplies its own
__device__ __forceinline__ float load_f32(const half_bits *p)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}

__device__ __forceinline__ void store_f32(half_bits *p, float v)
{
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}
#endif

// Shared arguments of every kernel.
#define CORR_ARGS                                                                                        \
    const T *__restrict__ in1, const T *__restrict__ in2, T *__restrict__ out, int C, int H, int W,      \
        int outH, int outW, int pad, int ksize, int maxdisp, int s1, int s2, float scale, int chunk

// Walks e = threadIdx.x + k * blockDim.x (k = 0, 1, ...) as e = c * span + L without a division per step:
// the staging loops' (channel, column) pairs.
struct StageIter {
    int c, L, dc, dl, span;
    __device__ StageIter(int span_) : span(span_)
    {
        c = threadIdx.x / span;
        L = threadIdx.x - c * span;
        dc = blockDim.x / span;
        dl = blockDim.x - dc * span;
    }
    __device__ void next()
    {
        c += dc;
        L += dl;
        if (L >= span) {
            L -= span;
            ++c;
        }
    }
};

#define TILED_TX 32 // output columns per block (one per lane)
#define TILED_IR 8  // horizontal displacements per warp
#define PAIR_TX 64  // output columns per block (two per lane)
#define PAIR_IR 7   // horizontal displacements per warp (21 = 3 warps for FlowNetC)
#define CORR_MAX_THREADS 512 // at most 16 warps (displacement groups) per block

template <typename T> __device__ __forceinline__ void correlation_tiled(CORR_ARGS)
{
    extern __shared__ float smem[];
    const int d = maxdisp / s2;
    const int nd = 2 * d + 1;
    const int r = (ksize - 1) / 2;
    const int groups = blockDim.x >> 5;
    const int lane = threadIdx.x & 31;
    const int ii0 = (threadIdx.x >> 5) * TILED_IR;
    const int tile0 = blockIdx.x * TILED_TX;
    const int y = blockIdx.y;
    const int batch = blockIdx.z / nd;
    const int jj = blockIdx.z - batch * nd;
    const int off = maxdisp - pad;

    const int span1 = (TILED_TX - 1) * s1 + ksize;
    const int span2 = span1 + (groups * TILED_IR - 1) * s2;
    float *s_in1 = smem;                 // [chunk][span1]
    float *s_in2 = smem + chunk * span1; // [chunk][span2]
    const int col1 = tile0 * s1 + off - r; // image column of s_in1[.][0]
    const int col2 = col1 - d * s2;         // image column of s_in2[.][0]

    const long long plane = (long long)H * W;
    const T *base1 = in1 + (long long)batch * C * plane;
    const T *base2 = in2 + (long long)batch * C * plane;

    float acc[TILED_IR];
#pragma unroll
    for (int n = 0; n < TILED_IR; ++n) acc[n] = 0.f;

    for (int a = 0; a < ksize; ++a) {
        const int row1 = y * s1 + off - r + a;
        const int row2 = row1 + (jj - d) * s2;
        // Uniform over the block: rows outside the image contribute zeros.
        if (row1 < 0 || row1 >= H || row2 < 0 || row2 >= H) continue;
        for (int c0 = 0; c0 < C; c0 += chunk) {
            const int cn = min(chunk, C - c0);
            __syncthreads(); // previous chunk consumed
            for (StageIter it(span1); it.c < cn; it.next()) {
                const int col = col1 + it.L;
                float v = 0.f;
                if (col >= 0 && col < W) v = load_f32(base1 + (c0 + it.c) * plane + (long long)row1 * W + col);
                s_in1[it.c * span1 + it.L] = v;
            }
            for (StageIter it(span2); it.c < cn; it.next()) {
                const int col = col2 + it.L;
                float v = 0.f;
                if (col >= 0 && col < W) v = load_f32(base2 + (c0 + it.c) * plane + (long long)row2 * W + col);
                s_in2[it.c * span2 + it.L] = v;
            }
            __syncthreads();
            for (int c = 0; c < cn; ++c) {
                const float *p1 = s_in1 + c * span1 + lane * s1;
                const float *p2 = s_in2 + c * span2 + lane * s1 + ii0 * s2;
                for (int b = 0; b < ksize; ++b) {
                    const float v1 = p1[b];
#pragma unroll
                    for (int n = 0; n < TILED_IR; ++n) acc[n] = fmaf(v1, p2[b + n * s2], acc[n]);
                }
            }
        }
    }

    const int x = tile0 + lane;
    if (x < outW) {
        T *dst = out + (((long long)batch * nd + jj) * nd * outH + y) * outW + x;
#pragma unroll
        for (int n = 0; n < TILED_IR; ++n)
            if (ii0 + n < nd) store_f32(dst + (long long)(ii0 + n) * outH * outW, acc[n] * scale);
    }
}

template <typename T> __device__ __forceinline__ void correlation_pair(CORR_ARGS)
{
    // Requires ksize == 1 and s2 == 2 * s1. Input 2 is only read at columns col2 + L * s1 (L >= 0); the
    // local column L of output column px (0..63 in the tile) and displacement index ii is px + 2 * ii.
    // Lane l = 2 * t + p handles px = 4 * t + p + 2 * m, m = 0, 1: for both, L has parity p and
    // L / 2 = 2 * t + m + ii, so its reads of input 2 are a sliding window over one parity row.
    extern __shared__ float smem[];
    const int d = maxdisp / s2;
    const int nd = 2 * d + 1;
    const int groups = blockDim.x >> 5;
    const int lane = threadIdx.x & 31;
    const int t = lane >> 1;
    const int p = lane & 1;
    const int ii0 = (threadIdx.x >> 5) * PAIR_IR;
    const int tile0 = blockIdx.x * PAIR_TX;
    const int y = blockIdx.y;
    const int batch = blockIdx.z / nd;
    const int jj = blockIdx.z - batch * nd;
    const int off = maxdisp - pad;

    const int span2 = PAIR_TX + 2 * (groups * PAIR_IR - 1); // local columns L of input 2
    const int half = ((span2 + 1) >> 1) | 1;                // odd row stride per parity: no bank conflicts
    const int stride2 = 2 * half;
    float *s_in1 = smem;                   // [chunk][64], lane order: [m * 32 + lane]
    float *s_in2 = smem + chunk * PAIR_TX; // [chunk][parity][half]
    const int col1 = tile0 * s1 + off;     // image column of local column 0
    const int col2 = col1 - d * s2;

    const long long plane = (long long)H * W;
    const T *base1 = in1 + (long long)batch * C * plane;
    const T *base2 = in2 + (long long)batch * C * plane;

    float acc[2][PAIR_IR];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int n = 0; n < PAIR_IR; ++n) acc[m][n] = 0.f;

    const int row1 = y * s1 + off;
    const int row2 = row1 + (jj - d) * s2;
    if (row1 >= 0 && row1 < H && row2 >= 0 && row2 < H) { // uniform over the block
        for (int c0 = 0; c0 < C; c0 += chunk) {
            const int cn = min(chunk, C - c0);
            __syncthreads();
            for (int e = threadIdx.x; e < cn * PAIR_TX; e += blockDim.x) {
                const int c = e / PAIR_TX;
                const int px = e - c * PAIR_TX;
                const int col = col1 + px * s1;
                float v = 0.f;
                if (col >= 0 && col < W) v = load_f32(base1 + (c0 + c) * plane + (long long)row1 * W + col);
                // px = 4t + p + 2m  ->  slot m * 32 + 2t + p
                s_in1[c * PAIR_TX + ((px >> 1) & 1) * 32 + ((px >> 2) << 1) + (px & 1)] = v;
            }
            for (StageIter it(span2); it.c < cn; it.next()) {
                const int L = it.L;
                const int col = col2 + L * s1;
                float v = 0.f;
                if (col >= 0 && col < W) v = load_f32(base2 + (c0 + it.c) * plane + (long long)row2 * W + col);
                s_in2[it.c * stride2 + (L & 1) * half + (L >> 1)] = v;
            }
            __syncthreads();
            const float *p1 = s_in1 + lane;
            const float *p2 = s_in2 + p * half + 2 * t + ii0;
#pragma unroll 2
            for (int c = 0; c < cn; ++c) {
                const float a0 = p1[c * PAIR_TX];
                const float a1 = p1[c * PAIR_TX + 32];
                float w[PAIR_IR + 1];
#pragma unroll
                for (int s = 0; s < PAIR_IR + 1; ++s) w[s] = p2[c * stride2 + s];
#pragma unroll
                for (int n = 0; n < PAIR_IR; ++n) {
                    acc[0][n] = fmaf(a0, w[n], acc[0][n]);
                    acc[1][n] = fmaf(a1, w[n + 1], acc[1][n]);
                }
            }
        }
    }

#pragma unroll
    for (int m = 0; m < 2; ++m) {
        const int x = tile0 + 4 * t + p + 2 * m;
        if (x < outW) {
            T *dst = out + (((long long)batch * nd + jj) * nd * outH + y) * outW + x;
#pragma unroll
            for (int n = 0; n < PAIR_IR; ++n)
                if (ii0 + n < nd) store_f32(dst + (long long)(ii0 + n) * outH * outW, acc[m][n] * scale);
        }
    }
}

template <typename T> __device__ __forceinline__ void correlation_naive(int B, CORR_ARGS)
{
    // One thread per output value, loops over the window and the channels reading global memory.
    const int d = maxdisp / s2;
    const int nd = 2 * d + 1;
    const int r = (ksize - 1) / 2;
    const long long total = (long long)B * nd * nd * outH * outW;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= total) return;
    const int x = (int)(index % outW);
    const int y = (int)((index / outW) % outH);
    const int ch = (int)((index / ((long long)outW * outH)) % (nd * nd));
    const int batch = (int)(index / ((long long)outW * outH * nd * nd));
    const int dy = (ch / nd - d) * s2;
    const int dx = (ch % nd - d) * s2;
    const long long plane = (long long)H * W;
    float sum = 0.f;
    for (int a = -r; a <= r; ++a) {
        for (int b = -r; b <= r; ++b) {
            const int y1 = y * s1 + maxdisp - pad + a;
            const int x1 = x * s1 + maxdisp - pad + b;
            const int y2 = y1 + dy;
            const int x2 = x1 + dx;
            if (y1 < 0 || y1 >= H || x1 < 0 || x1 >= W || y2 < 0 || y2 >= H || x2 < 0 || x2 >= W) continue;
            for (int c = 0; c < C; ++c) {
                const long long cbase = ((long long)batch * C + c) * plane;
                sum += load_f32(in1 + cbase + (long long)y1 * W + x1) * load_f32(in2 + cbase + (long long)y2 * W + x2);
            }
        }
    }
    store_f32(out + index, sum * scale);
}

#define CORR_PARAMS in1, in2, out, C, H, W, outH, outW, pad, ksize, maxdisp, s1, s2, scale, chunk

#define CORR_ENTRY(NAME, IMPL, TYPE)                                                                      \
    extern "C" __global__ void __launch_bounds__(CORR_MAX_THREADS)                                        \
        NAME(const TYPE *__restrict__ in1, const TYPE *__restrict__ in2, TYPE *__restrict__ out, int C,   \
             int H, int W, int outH, int outW, int pad, int ksize, int maxdisp, int s1, int s2,           \
             float scale, int chunk)                                                                      \
    {                                                                                                     \
        IMPL<TYPE>(CORR_PARAMS);                                                                          \
    }

CORR_ENTRY(correlation_tiled_f32, correlation_tiled, float)
CORR_ENTRY(correlation_tiled_f16, correlation_tiled, half_bits)
CORR_ENTRY(correlation_pair_f32, correlation_pair, float)
CORR_ENTRY(correlation_pair_f16, correlation_pair, half_bits)

// The naive kernels take the batch size first (they cover all outputs with a 1-D grid); chunk is unused.
#define NAIVE_ENTRY(NAME, TYPE)                                                                          \
    extern "C" __global__ void NAME(int B, const TYPE *__restrict__ in1, const TYPE *__restrict__ in2,   \
                                    TYPE *__restrict__ out, int C, int H, int W, int outH, int outW,     \
                                    int pad, int ksize, int maxdisp, int s1, int s2, float scale,       \
                                    int chunk)                                                           \
    {                                                                                                    \
        correlation_naive<TYPE>(B, CORR_PARAMS);                                                         \
    }

NAIVE_ENTRY(correlation_naive_kernel_f32, float)
NAIVE_ENTRY(correlation_naive_kernel_f16, half_bits)
