// ANCHOR: gemv
// y (n, out) = x (n, in) · wᵀ for the few rows of a small decode batch (n ≤ GEMV_MAX_N), where a
// GEMM library's tiles would mostly multiply padding. Decode is memory-bound: the one thing that
// matters is streaming every weight once at full bandwidth. Each warp owns GEMV_RPW output rows;
// each lane reads 16 bytes of each row per load, GU loads per row in flight, and multiplies them
// against the n activation rows (small enough to stay in L1). w: (out, in) T row-major;
// in % (16/sizeof(T)) == 0. Grid: ⌈out / (GEMV_WARPS · GEMV_RPW)⌉ blocks of 32 · GEMV_WARPS
// threads. The shape constants come from the Rust side (kernels.rs passes -DGEMV_MAX_N=... and
// the rest), so the launch and the kernel can never disagree.
#if !defined(GEMV_MAX_N) || !defined(GEMV_WARPS) || !defined(GEMV_RPW) || !defined(GU)
#error "kernels.rs compiles gemv.cu with -DGEMV_MAX_N=, -DGEMV_WARPS=, -DGEMV_RPW= and -DGU="
#endif
#define GV (16 / (int)sizeof(T))

// A 16-byte weight load that bypasses L1: each weight is read once per step, so keep L1 for x.
__device__ __forceinline__ uint4 load_stream(const T* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// The R output rows row0 … row0 + R of one warp: acc[r][j] = row0 + r of w · row j of x, summed
// over the warp (every lane ends with the sums). Rows past `out` read the last row, unused.
template <int R>
__device__ __forceinline__ void gemv_rows(const T* __restrict__ w, const T* __restrict__ x, int n, int in,
                                          int out, int row0, float (&acc)[R][GEMV_MAX_N]) {
    const int lane = threadIdx.x % 32;
    #pragma unroll
    for (int r = 0; r < R; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++) acc[r][j] = 0.0f;
    bool waited = false;
    for (int k0 = lane * GV; k0 < in; k0 += 32 * GV * GU) {
        uint4 wv[R][GU];  // every load of this round issued before any is used
        #pragma unroll
        for (int r = 0; r < R; r++)
            #pragma unroll
            for (int u = 0; u < GU; u++) {
                const int k = k0 + u * 32 * GV, row = min(row0 + r, out - 1);
                wv[r][u] = k < in ? load_stream(w + (size_t)row * in + k) : make_uint4(0, 0, 0, 0);
            }
        if (!waited) {  // the first weights are on their way while the previous kernel finishes
            pdl_wait();
            waited = true;
        }
        #pragma unroll
        for (int u = 0; u < GU; u++) {
            const int k = k0 + u * 32 * GV;
            if (k >= in) break;
            #pragma unroll
            for (int j = 0; j < GEMV_MAX_N; j++) {
                if (j >= n) break;
                const uint4 xv = *reinterpret_cast<const uint4*>(x + (size_t)j * in + k);
                const T* xt = reinterpret_cast<const T*>(&xv);
                #pragma unroll
                for (int r = 0; r < R; r++) {
                    const T* wt = reinterpret_cast<const T*>(&wv[r][u]);
                    #pragma unroll
                    for (int e = 0; e < GV; e++) acc[r][j] += to_f(wt[e]) * to_f(xt[e]);
                }
            }
        }
    }
    if (!waited) pdl_wait();  // a lane with no columns still must not write early
    #pragma unroll
    for (int r = 0; r < R; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++) acc[r][j] = warp_sum(acc[r][j]);
}

// Lane 0 of each warp stores its rows' sums.
__device__ __forceinline__ void store_rows(const float (&acc)[GEMV_RPW][GEMV_MAX_N], T* __restrict__ y, int n,
                                           int out, int row0) {
    if (threadIdx.x % 32 != 0) return;
    #pragma unroll
    for (int r = 0; r < GEMV_RPW; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++)
            if (j < n && row0 + r < out) y[(size_t)j * out + row0 + r] = from_f<T>(acc[r][j]);
}

extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv(const T* __restrict__ w, const T* __restrict__ x, T* __restrict__ y, int n, int in, int out) {
    pdl_launch_dependents();
    const int row0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * GEMV_RPW;
    if (row0 >= out) return;
    float acc[GEMV_RPW][GEMV_MAX_N];
    gemv_rows<GEMV_RPW>(w, x, n, in, out, row0, acc);
    store_rows(acc, y, n, out, row0);
}
// ANCHOR_END: gemv

// ANCHOR: gemv_swiglu
// The gate/up projection fused with SwiGLU: act (n, I) = silu(x · gateᵀ) · (x · upᵀ), with the
// gate and up rows interleaved in w (2I, in): row 2i is gate i, row 2i + 1 is up i (weights.rs
// lays them out so), so one warp computes both rows of a pair and writes only their product: the
// (n, 2I) intermediate is never written or read back, and silu_mul's launch is gone.
// Grid: ⌈I / GEMV_WARPS⌉ blocks of 32 · GEMV_WARPS threads.
// Lane 0 of each warp stores silu(gate) · up of its pair, each sum rounded to T as gemv stores it,
// so the result is bit for bit gemv followed by silu_mul.
__device__ __forceinline__ void store_swiglu(const float (&acc)[2][GEMV_MAX_N], T* __restrict__ act, int n,
                                             int inter, int pair) {
    if (threadIdx.x % 32 != 0) return;
    #pragma unroll
    for (int j = 0; j < GEMV_MAX_N; j++) {
        if (j >= n) break;
        const float gate = to_f(from_f<T>(acc[0][j])), up = to_f(from_f<T>(acc[1][j]));
        act[(size_t)j * inter + pair] = from_f<T>(silu_mul1(gate, up));
    }
}

extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv_swiglu(const T* __restrict__ w, const T* __restrict__ x, T* __restrict__ act, int n, int in, int inter) {
    pdl_launch_dependents();
    const int pair = blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (pair >= inter) return;
    float acc[2][GEMV_MAX_N];
    gemv_rows<2>(w, x, n, in, 2 * inter, 2 * pair, acc);
    store_swiglu(acc, act, n, inter, pair);
}
// ANCHOR_END: gemv_swiglu

// ANCHOR: gemv_norm
// The residual add and RMSNorm folded into the GEMV that reads their output, for decode batches:
// add_rmsnorm's launch, twice a layer, is gone. Every block computes the n normed rows
// h = rmsnorm(x_in + delta) · nw itself, into shared memory (n · in T), from inputs that sit in
// L2; block 0 also stores x_in + delta to x_out. The residual stream is double-buffered (the
// model swaps x_in and x_out after each add), so no block reads what another writes. delta null:
// the rows of x_in as they are, x_out untouched. The formula is add_rmsnorm's; only the order of
// the sum of squares differs (this block's threads), so h may differ from it in the last bit.
extern __shared__ __align__(16) unsigned char gemv_smem[];

__device__ const T* norm_rows(const float* __restrict__ x_in, const T* __restrict__ delta,
                              const T* __restrict__ nw, float* __restrict__ x_out, float eps, int n, int in) {
    __shared__ float scratch[32];
    T* h = reinterpret_cast<T*>(gemv_smem);
    for (int j = 0; j < n; j++) {
        const float* xr = x_in + (size_t)j * in;
        const T* dr = delta ? delta + (size_t)j * in : nullptr;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < in; i += blockDim.x) {
            const float v = xr[i] + (dr ? to_f(dr[i]) : 0.0f);
            ss += v * v;
        }
        const float scale = 1.0f / sqrtf(block_sum(ss, scratch) / in + eps);
        for (int i = threadIdx.x; i < in; i += blockDim.x) {
            const float v = xr[i] + (dr ? to_f(dr[i]) : 0.0f);
            if (dr && blockIdx.x == 0) x_out[(size_t)j * in + i] = v;
            h[(size_t)j * in + i] = from_f<T>(v * scale * to_f(nw[i]));
        }
    }
    __syncthreads();
    return h;
}

// The first GU loads of each of a warp's rows, asked into L2 while the previous kernel drains
// (the norm must wait for it, so the loads cannot be held in registers across it as gemv does).
__device__ __forceinline__ void prefetch_rows(const T* w, int in, int out, int row0, int rows) {
    const int lane = threadIdx.x % 32;
    for (int r = 0; r < rows; r++) {
        const T* row = w + (size_t)min(row0 + r, out - 1) * in;
        #pragma unroll
        for (int u = 0; u < GU; u++) {
            const int k = lane * GV + u * 32 * GV;
            if (k < in) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + k));
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv_norm(const T* __restrict__ w, const float* __restrict__ x_in, const T* __restrict__ delta,
          const T* __restrict__ nw, float* __restrict__ x_out, float eps, T* __restrict__ y, int n, int in,
          int out) {
    pdl_launch_dependents();
    const int row0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * GEMV_RPW;
    prefetch_rows(w, in, out, row0, GEMV_RPW);
    pdl_wait();
    const T* h = norm_rows(x_in, delta, nw, x_out, eps, n, in);  // the whole block, before any exit
    if (row0 >= out) return;
    float acc[GEMV_RPW][GEMV_MAX_N];
    gemv_rows<GEMV_RPW>(w, h, n, in, out, row0, acc);
    store_rows(acc, y, n, out, row0);
}

// gemv_swiglu with the same prologue.
extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv_swiglu_norm(const T* __restrict__ w, const float* __restrict__ x_in, const T* __restrict__ delta,
                 const T* __restrict__ nw, float* __restrict__ x_out, float eps, T* __restrict__ act, int n,
                 int in, int inter) {
    pdl_launch_dependents();
    const int pair = blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    prefetch_rows(w, in, 2 * inter, 2 * pair, 2);
    pdl_wait();
    const T* h = norm_rows(x_in, delta, nw, x_out, eps, n, in);
    if (pair >= inter) return;
    float acc[2][GEMV_MAX_N];
    gemv_rows<2>(w, h, n, in, 2 * inter, 2 * pair, acc);
    store_swiglu(acc, act, n, inter, pair);
}
// ANCHOR_END: gemv_norm
