// Deterministic pseudo-random weights on the device, for benchmark models too big to build on
// the host (a 7B shape): uniform in [-scale, scale] from a hash of (seed, index).
extern "C" __global__ void fill_uniform(T* __restrict__ w, long long n, unsigned long long seed, float scale) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
        unsigned long long z = seed * 0x9E3779B97F4A7C15ull + (unsigned long long)e;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = (float)(z >> 40) / (float)(1ull << 24);  // [0, 1)
        w[e] = from_f<T>((2.0f * u - 1.0f) * scale);
    }
}

extern "C" __global__ void fill_const(T* __restrict__ w, long long n, float value) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x)
        w[e] = from_f<T>(value);
}
