// ANCHOR: argmax
// Greedy decoding on the device: the index of each row's largest logit (the lowest index on a
// tie, like the CPU's argmax), so only one u32 per sequence crosses PCIe.
// logits: (n, vocab) T; out: (n). Grid: n blocks of 1024 threads.
extern "C" __global__ void argmax(const T* __restrict__ logits, unsigned* __restrict__ out, int vocab) {
    PDL_ENTER();
    __shared__ float best_v[32];
    __shared__ int best_i[32];
    const T* row = logits + (size_t)blockIdx.x * vocab;
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float x = to_f(row[j]);
        if (x > v) { v = x; i = j; }  // j ascends: the first maximum of this thread wins
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) { best_v[warp] = v; best_i[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? best_v[lane] : -INFINITY;
        i = lane < blockDim.x / 32 ? best_i[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, v, o);
            const int oi = __shfl_xor_sync(0xffffffffu, i, o);
            if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
        }
        if (lane == 0) out[blockIdx.x] = i == 0x7fffffff ? 0u : (unsigned)i;
    }
}
// ANCHOR_END: argmax
