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

extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) gemv(const T* __restrict__ w, const T* __restrict__ x,
                                                                  T* __restrict__ y, int n, int in, int out) {
    const int row0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / 32) * GEMV_RPW, lane = threadIdx.x % 32;
    if (row0 >= out) return;
    float acc[GEMV_RPW][GEMV_MAX_N];
    #pragma unroll
    for (int r = 0; r < GEMV_RPW; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++) acc[r][j] = 0.0f;
    for (int k0 = lane * GV; k0 < in; k0 += 32 * GV * GU) {
        uint4 wv[GEMV_RPW][GU];  // every load of this round issued before any is used
        #pragma unroll
        for (int r = 0; r < GEMV_RPW; r++)
            #pragma unroll
            for (int u = 0; u < GU; u++) {
                const int k = k0 + u * 32 * GV, row = min(row0 + r, out - 1);
                wv[r][u] = k < in ? load_stream(w + (size_t)row * in + k) : make_uint4(0, 0, 0, 0);
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
                for (int r = 0; r < GEMV_RPW; r++) {
                    const T* wt = reinterpret_cast<const T*>(&wv[r][u]);
                    #pragma unroll
                    for (int e = 0; e < GV; e++) acc[r][j] += to_f(wt[e]) * to_f(xt[e]);
                }
            }
        }
    }
    #pragma unroll
    for (int r = 0; r < GEMV_RPW; r++)
        #pragma unroll
        for (int j = 0; j < GEMV_MAX_N; j++) {
            if (j >= n) break;
            const float s = warp_sum(acc[r][j]);
            if (lane == 0 && row0 + r < out) y[(size_t)j * out + row0 + r] = from_f<T>(s);
        }
}
// ANCHOR_END: gemv
