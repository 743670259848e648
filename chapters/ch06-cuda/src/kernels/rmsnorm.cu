// ANCHOR: add_rmsnorm
// Residual add fused with the next RMSNorm: x += delta (when delta is given), then
// out = x / sqrt(mean(x²) + eps) · w. One pass over the row instead of three.
// x: (n, hidden) f32, the residual stream; delta, out: (n, hidden) T; w: (hidden) T. Grid: n blocks.
// At decode batch sizes a step runs this with a handful of blocks, so its time is latency, not
// bandwidth: each thread keeps its first RN elements (and their norm weights, loaded before the
// reduction) in registers, so the row costs one round trip to memory instead of two.
#define RN 8
extern "C" __global__ void add_rmsnorm(float* __restrict__ x, const T* __restrict__ delta,
                                       const T* __restrict__ w, T* __restrict__ out, int hidden, float eps) {
    PDL_ENTER();
    __shared__ float scratch[32];
    float* xr = x + (size_t)blockIdx.x * hidden;
    const T* dr = delta ? delta + (size_t)blockIdx.x * hidden : nullptr;
    float v[RN], wv[RN], ss = 0.0f;
    #pragma unroll
    for (int r = 0; r < RN; r++) {
        const int j = threadIdx.x + r * blockDim.x;
        v[r] = j < hidden ? xr[j] + (dr ? to_f(dr[j]) : 0.0f) : 0.0f;
        wv[r] = j < hidden ? to_f(w[j]) : 0.0f;
    }
    #pragma unroll
    for (int r = 0; r < RN; r++) {
        const int j = threadIdx.x + r * blockDim.x;
        if (dr && j < hidden) xr[j] = v[r];
        ss += v[r] * v[r];
    }
    // rows wider than RN · blockDim
    for (int j = threadIdx.x + RN * blockDim.x; j < hidden; j += blockDim.x) {
        float e = xr[j];
        if (dr) { e += to_f(dr[j]); xr[j] = e; }
        ss += e * e;
    }
    const float scale = 1.0f / sqrtf(block_sum(ss, scratch) / hidden + eps);
    T* o = out + (size_t)blockIdx.x * hidden;
    #pragma unroll
    for (int r = 0; r < RN; r++) {
        const int j = threadIdx.x + r * blockDim.x;
        if (j < hidden) o[j] = from_f<T>(v[r] * scale * wv[r]);
    }
    for (int j = threadIdx.x + RN * blockDim.x; j < hidden; j += blockDim.x)
        o[j] = from_f<T>(xr[j] * scale * to_f(w[j]));
}
// ANCHOR_END: add_rmsnorm
