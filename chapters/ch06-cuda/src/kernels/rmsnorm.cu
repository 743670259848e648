// ANCHOR: add_rmsnorm
// Residual add fused with the next RMSNorm: x += delta (when delta is given), then
// out = x / sqrt(mean(x²) + eps) · w. One pass over the row instead of three.
// x: (n, hidden) f32, the residual stream; delta, out: (n, hidden) T; w: (hidden) T. Grid: n blocks.
extern "C" __global__ void add_rmsnorm(float* __restrict__ x, const T* __restrict__ delta,
                                       const T* __restrict__ w, T* __restrict__ out, int hidden, float eps) {
    __shared__ float scratch[32];
    float* xr = x + (size_t)blockIdx.x * hidden;
    const T* dr = delta ? delta + (size_t)blockIdx.x * hidden : nullptr;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v = xr[j];
        if (dr) { v += to_f(dr[j]); xr[j] = v; }
        ss += v * v;
    }
    const float scale = 1.0f / sqrtf(block_sum(ss, scratch) / hidden + eps);
    T* o = out + (size_t)blockIdx.x * hidden;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) o[j] = from_f<T>(xr[j] * scale * to_f(w[j]));
}
// ANCHOR_END: add_rmsnorm
