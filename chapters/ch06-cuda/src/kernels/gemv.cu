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

extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv(const T* __restrict__ w, const T* __restrict__ x, T* __restrict__ y, int n, int in, int out) {
    pdl_launch_dependents();
    const int row0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * GEMV_RPW;
    if (row0 >= out) return;
    float acc[GEMV_RPW][GEMV_MAX_N];
    gemv_rows<GEMV_RPW>(w, x, n, in, out, row0, acc);
    if (threadIdx.x % 32 != 0) return;
    #pragma unroll
    for (int r = 0; r < GEMV_RPW; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++)
            if (j < n && row0 + r < out) y[(size_t)j * out + row0 + r] = from_f<T>(acc[r][j]);
}
// ANCHOR_END: gemv

// ANCHOR: gemv_swiglu
// The gate/up projection fused with SwiGLU: act (n, I) = silu(x · gateᵀ) · (x · upᵀ), with the
// gate and up rows interleaved in w (2I, in): row 2i is gate i, row 2i + 1 is up i (weights.rs
// lays them out so), so one warp computes both rows of a pair and writes only their product: the
// (n, 2I) intermediate is never written or read back, and silu_mul's launch is gone. Both sums are
// rounded to T first, so the result is bit for bit gemv followed by silu_mul.
// Grid: ⌈I / GEMV_WARPS⌉ blocks of 32 · GEMV_WARPS threads.
extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS)
gemv_swiglu(const T* __restrict__ w, const T* __restrict__ x, T* __restrict__ act, int n, int in, int inter) {
    pdl_launch_dependents();
    const int pair = blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (pair >= inter) return;
    float acc[2][GEMV_MAX_N];
    gemv_rows<2>(w, x, n, in, 2 * inter, 2 * pair, acc);
    if (threadIdx.x % 32 != 0) return;
    #pragma unroll
    for (int j = 0; j < GEMV_MAX_N; j++) {
        if (j >= n) break;
        // each sum rounded as gemv stores it
        const float gate = to_f(from_f<T>(acc[0][j])), up = to_f(from_f<T>(acc[1][j]));
        act[(size_t)j * inter + pair] = from_f<T>(silu_mul1(gate, up));
    }
}
// ANCHOR_END: gemv_swiglu
