// ANCHOR: gemv
// y (n, out) = x (n, in) · wᵀ for the few rows of a small decode batch (n ≤ GEMV_MAX_N), where a
// GEMM library's tiles would mostly multiply padding. Decode is memory-bound: the one thing that
// matters is streaming every weight once at full bandwidth. One warp per output row; each lane
// reads 16 bytes of the row per load, 4 loads in flight, and multiplies them against the n
// activation rows (small enough to stay in L1). w: (out, in) T row-major; in % (16/sizeof(T)) == 0.
// Grid: ⌈out / 8⌉ blocks of 256 threads. GEMV_MAX_N comes from the Rust side (kernels.rs's
// constant, passed as -DGEMV_MAX_N=...), so the two can never disagree.
#ifndef GEMV_MAX_N
#error "GEMV_MAX_N must be defined by the host (kernels.rs compiles gemv.cu with -DGEMV_MAX_N=...)"
#endif
#define GV (16 / (int)sizeof(T))
#define GU 4
extern "C" __global__ void __launch_bounds__(256) gemv(const T* __restrict__ w, const T* __restrict__ x,
                                                      T* __restrict__ y, int n, int in, int out) {
    const int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= out) return;
    const T* wr = w + (size_t)row * in;
    float acc[GEMV_MAX_N];
    #pragma unroll
    for (int j = 0; j < GEMV_MAX_N; j++) acc[j] = 0.0f;
    for (int k0 = lane * GV; k0 < in; k0 += 32 * GV * GU) {
        uint4 wv[GU];
        #pragma unroll
        for (int u = 0; u < GU; u++) {
            const int k = k0 + u * 32 * GV;
            wv[u] = k < in ? *reinterpret_cast<const uint4*>(wr + k) : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < GU; u++) {
            const int k = k0 + u * 32 * GV;
            if (k >= in) break;
            const T* wt = reinterpret_cast<const T*>(&wv[u]);
            #pragma unroll
            for (int j = 0; j < GEMV_MAX_N; j++) {
                if (j >= n) break;
                const uint4 xv = *reinterpret_cast<const uint4*>(x + (size_t)j * in + k);
                const T* xt = reinterpret_cast<const T*>(&xv);
                #pragma unroll
                for (int e = 0; e < GV; e++) acc[j] += to_f(wt[e]) * to_f(xt[e]);
            }
        }
    }
    #pragma unroll
    for (int j = 0; j < GEMV_MAX_N; j++) {
        if (j >= n) break;
        const float s = warp_sum(acc[j]);
        if (lane == 0) y[(size_t)j * out + row] = from_f<T>(s);
    }
}
// ANCHOR_END: gemv
