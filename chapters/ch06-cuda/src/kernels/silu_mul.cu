// ANCHOR: silu_mul
// SwiGLU's elementwise half: out = silu(gate) · up, from the fused gate/up product.
// gu: (n, 2 · I) T with gate in columns 0..I and up in I..2I; out: (n, I) T. Grid-stride.
extern "C" __global__ void silu_mul(const T* __restrict__ gu, T* __restrict__ out, int n, int I) {
    const long long total = (long long)n * I;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        const long long t = e / I, j = e % I;
        const float g = to_f(gu[t * 2 * I + j]), u = to_f(gu[t * 2 * I + I + j]);
        out[e] = from_f<T>(g / (1.0f + expf(-g)) * u);
    }
}
// ANCHOR_END: silu_mul
