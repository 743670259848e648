// ANCHOR: silu_mul
// SwiGLU's elementwise half: out = silu(gate) · up, from the fused gate/up product.
// gu: (n, 2 · I) T with gate j and up j interleaved (columns 2j and 2j + 1, from weights.rs's row
// order); out: (n, I) T. Grid-stride. The decode path fuses this into the GEMV (gemv_swiglu).
extern "C" __global__ void silu_mul(const T* __restrict__ gu, T* __restrict__ out, int n, int I) {
    PDL_ENTER();
    const long long total = (long long)n * I;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        const long long t = e / I, j = e % I;
        out[e] = from_f<T>(silu_mul1(to_f(gu[t * 2 * I + 2 * j]), to_f(gu[t * 2 * I + 2 * j + 1])));
    }
}
// ANCHOR_END: silu_mul
