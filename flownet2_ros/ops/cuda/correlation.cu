// FlowNet correlation (cost volume) for CUDA, compiled at run time with NVRTC.
//
// Self-contained: no #include at all, so NVRTC compiles it without any CUDA headers (half precision is
// handled as raw 16-bit values converted with the PTX cvt instruction, not with <cuda_fp16.h>).
//
// Semantics (identical to flownet2_ros.ops.correlation.correlation): inputs (B, C, H, W), output
// (B, nd*nd, outH, outW), nd = 2*d + 1, d = max_displacement / stride2. Output pixel (y, x), displacement
// (i, j) in [-d, d]^2, window offset (a, b) in [-r, r]^2 (r = (kernel_size - 1) / 2):
//   in1 at (Y, X) = (y*stride1 + max_displacement - pad + a, x*stride1 + max_displacement - pad + b),
//   in2 at (Y + j*stride2, X + i*stride2), zero outside the image;
//   out[b, (j + d)*nd + (i + d), y, x] = scale * sum over a, b, c of in1 * in2, scale = corr_multiply / (k*k*C).
// Accumulation is always fp32.
//
// Memory layout: every tensor is addressed through element strides (batch, channel, row, column), one
// set shared by both inputs (isb, isc, ish, isw) and one for the output (osb, osc, osh, osw), so NCHW and
// channels-last (NHWC) tensors are read and written in place. The offset of an element inside one image
// must fit in an int (the batch offset is 64-bit); the launcher checks it. The layout only picks the
// access order, never the result: inputs whose channel stride is below their column stride (NHWC) are
// staged with the channel index fastest, so consecutive threads read consecutive addresses, others with
// the column index fastest; an output whose channel stride is below its column stride (NHWC) is written
// through shared memory as runs of nd consecutive channels, others straight from the registers.
//
// Entry points (extern "C"); arguments (in1, in2, out, C, H, W, outH, outW, pad, ksize, maxdisp, stride1,
// stride2, scale, chunk, isb, isc, ish, isw, osb, osc, osh, osw), the naive ones with the batch size B first:
//   correlation_tiled_{f32,f16}         any configuration (the general fast kernel)
//   correlation_pair_{f32,f16}          kernel_size == 1 and stride2 == 2*stride1 (FlowNetC): faster
//   correlation_naive_kernel_{f32,f16}  one thread per output, straight loops; for benchmarks only
//
// Fast kernels: one block per (32 or 64 output columns of one output row, one image, one vertical
// displacement j). Channels are processed in chunks: the block stages, for the chunk, the needed row
// segment of input 1 and the displaced row segment of input 2 in shared memory (zero-filled outside the
// image, converted to fp32; one row of floats per channel, rows 2 mod 4 floats apart so that the
// channel-fastest staging of NHWC inputs spreads over the banks), then each warp handles a group of
// horizontal displacements i, each lane one (tiled) or two (pair) output columns with all of its group's
// displacements accumulated in registers. The pair kernel gives each lane the columns x and x + 2, whose
// displacement windows overlap in input 2, so one shared-memory read serves two outputs; its shared
// layouts (input 1 in lane order, input 2 split by column parity with an odd row stride) make every
// shared read of a warp bank-conflict free.
//
// Launch: grid (ceil(outW / TX), outH, B * nd), block 32 * ceil(nd / IR) threads (at most 16 warps),
// dynamic shared memory chunk * (row1 + row2) floats (<= 48 KiB), and at least TX * nd floats for an NHWC
// output, as computed by flownet2_ros.ops.cuda_correlation.launch_config. test/test_cuda_kernel.py also
// compiles this file as plain C++ (CORRELATION_HOST_EMULATION) to run it on a CPU, in both layouts.

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
        int outH, int outW, int pad, int ksize, int maxdisp, int s1, int s2, float scale, int chunk,     \
        int isb, int isc, int ish, int isw, int osb, int osc, int osh, int osw

// Walks e = threadIdx.x + k * blockDim.x (k = 0, 1, ...) as e = o * n + i (0 <= i < n) without a division
// per step: the (outer, inner) index pairs of the staging and output loops.
struct StageIter {
    int o, i, d_o, d_i, n;
    __device__ StageIter(int n_) : n(n_)
    {
        o = threadIdx.x / n;
        i = threadIdx.x - o * n;
        d_o = blockDim.x / n;
        d_i = blockDim.x - d_o * n;
    }
    __device__ void next()
    {
        o += d_o;
        i += d_i;
        if (i >= n) {
            i -= n;
            ++o;
        }
    }
};

// Stages cn channels x span columns of one image row into shared memory: local column L of channel c reads
// src[c * sc + col * sw], col = col0 + L * step (0 outside [0, W)), and is stored by put(c, L, value).
// Channel-fastest order when channels are closer in memory than columns (NHWC), else column-fastest.
template <typename T, typename Put>
__device__ __forceinline__ void stage_row(const T *src, int sc, int sw, int cn, int span, int col0, int step,
                                          int W, Put put)
{
    if (sc < sw) {
        for (StageIter it(cn); it.o < span; it.next()) {
            const int col = col0 + it.o * step;
            float v = 0.f;
            if (col >= 0 && col < W) v = load_f32(src + it.i * sc + col * sw);
            put(it.i, it.o, v);
        }
    } else {
        for (StageIter it(span); it.o < cn; it.next()) {
            const int col = col0 + it.i * step;
            float v = 0.f;
            if (col >= 0 && col < W) v = load_f32(src + it.o * sc + col * sw);
            put(it.o, it.i, v);
        }
    }
}

// Writes a block's staged NHWC output: s_out[xl * nd + i] goes to dst[xl * osw + i * osc] for the ncols
// output columns xl of the tile and the nd horizontal displacements i (consecutive threads, consecutive
// channels).
template <typename T>
__device__ __forceinline__ void store_tile_nhwc(T *dst, const float *s_out, int ncols, int nd, int osc,
                                                int osw)
{
    for (StageIter it(nd); it.o < ncols; it.next())
        store_f32(dst + it.o * osw + it.i * osc, s_out[it.o * nd + it.i]);
}

// Shared-memory row stride (floats) of a row of span floats: the least ld >= span with ld % 4 == 2. Then 16
// channels of one column fall in 16 distinct banks of one parity, the next column in the other parity, so
// the channel-fastest staging of NHWC inputs is bank-conflict free for full chunks.
__device__ __forceinline__ int shared_ld(int span) { return ((span + 1) & ~3) + 2; }

#define TILED_TX 32 // output columns per block (one per lane)
#define TILED_IR 8  // horizontal displacements per warp
#define PAIR_TX 64  // output columns per block (two per lane)
#define PAIR_LD1 66 // shared row stride of input 1 in the pair kernel (shared_ld(PAIR_TX))
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
    const int ld1 = shared_ld(span1), ld2 = shared_ld(span2);
    float *s_in1 = smem;               // [chunk][ld1]
    float *s_in2 = smem + chunk * ld1; // [chunk][ld2]
    const int col1 = tile0 * s1 + off - r; // image column of s_in1[.][0]
    const int col2 = col1 - d * s2;         // image column of s_in2[.][0]

    const T *img1 = in1 + (long long)batch * isb;
    const T *img2 = in2 + (long long)batch * isb;

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
            stage_row(img1 + c0 * isc + row1 * ish, isc, isw, cn, span1, col1, 1, W,
                      [&](int c, int L, float v) { s_in1[c * ld1 + L] = v; });
            stage_row(img2 + c0 * isc + row2 * ish, isc, isw, cn, span2, col2, 1, W,
                      [&](int c, int L, float v) { s_in2[c * ld2 + L] = v; });
            __syncthreads();
            for (int c = 0; c < cn; ++c) {
                const float *p1 = s_in1 + c * ld1 + lane * s1;
                const float *p2 = s_in2 + c * ld2 + lane * s1 + ii0 * s2;
                for (int b = 0; b < ksize; ++b) {
                    const float v1 = p1[b];
#pragma unroll
                    for (int n = 0; n < TILED_IR; ++n) acc[n] = fmaf(v1, p2[b + n * s2], acc[n]);
                }
            }
        }
    }

    T *dst = out + (long long)batch * osb + (jj * nd) * osc + y * osh + tile0 * osw; // (ii = 0, x = tile0)
    if (osc < osw) { // NHWC output: through shared memory, nd consecutive channels per column
        float *s_out = smem; // [TILED_TX][nd]
        __syncthreads();     // every warp is done with the staged inputs
#pragma unroll
        for (int n = 0; n < TILED_IR; ++n)
            if (ii0 + n < nd) s_out[lane * nd + ii0 + n] = acc[n] * scale;
        __syncthreads();
        store_tile_nhwc(dst, s_out, min(TILED_TX, outW - tile0), nd, osc, osw);
    } else if (tile0 + lane < outW) {
#pragma unroll
        for (int n = 0; n < TILED_IR; ++n)
            if (ii0 + n < nd) store_f32(dst + (ii0 + n) * osc + lane * osw, acc[n] * scale);
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
    const int ld2 = 2 * half;
    float *s_in1 = smem;                    // [chunk][PAIR_LD1], lane order: [m * 32 + lane]
    float *s_in2 = smem + chunk * PAIR_LD1; // [chunk][parity][half]
    const int col1 = tile0 * s1 + off;      // image column of local column 0
    const int col2 = col1 - d * s2;

    const T *img1 = in1 + (long long)batch * isb;
    const T *img2 = in2 + (long long)batch * isb;

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
            // px = 4t + p + 2m  ->  slot m * 32 + 2t + p
            stage_row(img1 + c0 * isc + row1 * ish, isc, isw, cn, PAIR_TX, col1, s1, W,
                      [&](int c, int px, float v) {
                          s_in1[c * PAIR_LD1 + ((px >> 1) & 1) * 32 + ((px >> 2) << 1) + (px & 1)] = v;
                      });
            stage_row(img2 + c0 * isc + row2 * ish, isc, isw, cn, span2, col2, s1, W,
                      [&](int c, int L, float v) { s_in2[c * ld2 + (L & 1) * half + (L >> 1)] = v; });
            __syncthreads();
            const float *p1 = s_in1 + lane;
            const float *p2 = s_in2 + p * half + 2 * t + ii0;
#pragma unroll 2
            for (int c = 0; c < cn; ++c) {
                const float a0 = p1[c * PAIR_LD1];
                const float a1 = p1[c * PAIR_LD1 + 32];
                float w[PAIR_IR + 1];
#pragma unroll
                for (int s = 0; s < PAIR_IR + 1; ++s) w[s] = p2[c * ld2 + s];
#pragma unroll
                for (int n = 0; n < PAIR_IR; ++n) {
                    acc[0][n] = fmaf(a0, w[n], acc[0][n]);
                    acc[1][n] = fmaf(a1, w[n + 1], acc[1][n]);
                }
            }
        }
    }

    T *dst = out + (long long)batch * osb + (jj * nd) * osc + y * osh + tile0 * osw; // (ii = 0, x = tile0)
    if (osc < osw) { // NHWC output: through shared memory, nd consecutive channels per column
        float *s_out = smem; // [PAIR_TX][nd]
        __syncthreads();     // every warp is done with the staged inputs
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
            for (int n = 0; n < PAIR_IR; ++n)
                if (ii0 + n < nd) s_out[(4 * t + p + 2 * m) * nd + ii0 + n] = acc[m][n] * scale;
        __syncthreads();
        store_tile_nhwc(dst, s_out, min(PAIR_TX, outW - tile0), nd, osc, osw);
    } else {
#pragma unroll
        for (int m = 0; m < 2; ++m) {
            const int px = 4 * t + p + 2 * m;
            if (tile0 + px < outW) {
#pragma unroll
                for (int n = 0; n < PAIR_IR; ++n)
                    if (ii0 + n < nd) store_f32(dst + (ii0 + n) * osc + px * osw, acc[m][n] * scale);
            }
        }
    }
}

template <typename T> __device__ __forceinline__ void correlation_naive(int B, CORR_ARGS)
{
    // One thread per output value, loops over the window and the channels reading global memory.
    // Consecutive threads take consecutive output addresses: x fastest for NCHW, the channel for NHWC.
    const int d = maxdisp / s2;
    const int nd = 2 * d + 1;
    const int nch = nd * nd;
    const int r = (ksize - 1) / 2;
    const long long total = (long long)B * nch * outH * outW;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= total) return;
    int x, y, ch, batch;
    long long q;
    if (osc < osw) { // index = ((batch * outH + y) * outW + x) * nch + ch
        ch = (int)(index % nch);
        q = index / nch;
        x = (int)(q % outW);
        q /= outW;
        y = (int)(q % outH);
        batch = (int)(q / outH);
    } else { // index = ((batch * nch + ch) * outH + y) * outW + x
        x = (int)(index % outW);
        q = index / outW;
        y = (int)(q % outH);
        q /= outH;
        ch = (int)(q % nch);
        batch = (int)(q / nch);
    }
    const int dy = (ch / nd - d) * s2;
    const int dx = (ch % nd - d) * s2;
    const T *img1 = in1 + (long long)batch * isb;
    const T *img2 = in2 + (long long)batch * isb;
    float sum = 0.f;
    for (int a = -r; a <= r; ++a) {
        for (int b = -r; b <= r; ++b) {
            const int y1 = y * s1 + maxdisp - pad + a;
            const int x1 = x * s1 + maxdisp - pad + b;
            const int y2 = y1 + dy;
            const int x2 = x1 + dx;
            if (y1 < 0 || y1 >= H || x1 < 0 || x1 >= W || y2 < 0 || y2 >= H || x2 < 0 || x2 >= W) continue;
            const T *p1 = img1 + y1 * ish + x1 * isw;
            const T *p2 = img2 + y2 * ish + x2 * isw;
            for (int c = 0; c < C; ++c) sum += load_f32(p1 + c * isc) * load_f32(p2 + c * isc);
        }
    }
    store_f32(out + (long long)batch * osb + ch * osc + y * osh + x * osw, sum * scale);
}

#define CORR_PARAMS                                                                                     \
    in1, in2, out, C, H, W, outH, outW, pad, ksize, maxdisp, s1, s2, scale, chunk, isb, isc, ish, isw,  \
        osb, osc, osh, osw

#define CORR_ENTRY(NAME, IMPL, TYPE)                                                                      \
    extern "C" __global__ void __launch_bounds__(CORR_MAX_THREADS)                                        \
        NAME(const TYPE *__restrict__ in1, const TYPE *__restrict__ in2, TYPE *__restrict__ out, int C,   \
             int H, int W, int outH, int outW, int pad, int ksize, int maxdisp, int s1, int s2,           \
             float scale, int chunk, int isb, int isc, int ish, int isw, int osb, int osc, int osh,       \
             int osw)                                                                                     \
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
                                    int chunk, int isb, int isc, int ish, int isw, int osb, int osc,     \
                                    int osh, int osw)                                                    \
    {                                                                                                    \
        correlation_naive<TYPE>(B, CORR_PARAMS);                                                         \
    }

NAIVE_ENTRY(correlation_naive_kernel_f32, float)
NAIVE_ENTRY(correlation_naive_kernel_f16, half_bits)
