// ANCHOR: rope_cache
// RoPE fused with reshape-and-cache. qkv: (n, (heads + 2 kv_heads) · D) T, the fused projection's
// output [q | k | v]. Writes q rotated into q_out (n, heads · D), and k rotated plus v into the
// paged cache at the token's slot: k_cache, v_cache (num_blocks · block_size, kv_heads, D) T,
// slot = block · block_size + offset from the block table. slot < 0 is a padding row: no write.
// Rotate-half pairs (i, i + D/2), angle = pos · inv_freq[i], as in Hugging Face's Llama.
// Grid: (n, heads + kv_heads), one block per q or k head (a k head's block also copies its v
// head), D/2 threads rounded up to a warp: a decode step's few tokens still spread over the SMs.
extern "C" __global__ void rope_cache(const T* __restrict__ qkv, T* __restrict__ q_out,
                                      T* __restrict__ k_cache, T* __restrict__ v_cache,
                                      const int* __restrict__ pos, const int* __restrict__ slot,
                                      const float* __restrict__ inv_freq, int heads, int kv_heads, int D) {
    PDL_ENTER();
    const int t = blockIdx.x, h = blockIdx.y, half = D / 2;
    const long long s = slot[t];
    if (h >= heads && s < 0) return;
    const T* row = qkv + (size_t)t * (heads + 2 * kv_heads) * D;
    const float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float sn, cs;
        sincosf(p * inv_freq[i], &sn, &cs);
        const float a = to_f(row[h * D + i]), b = to_f(row[h * D + i + half]);
        const T ra = from_f<T>(a * cs - b * sn), rb = from_f<T>(b * cs + a * sn);
        if (h < heads) {
            q_out[((size_t)t * heads + h) * D + i] = ra;
            q_out[((size_t)t * heads + h) * D + i + half] = rb;
        } else {
            const int kh = h - heads;
            T* k = k_cache + (s * kv_heads + kh) * D;
            k[i] = ra;
            k[i + half] = rb;
            const T* v = row + (heads + kv_heads + kh) * D;
            T* vc = v_cache + (s * kv_heads + kh) * D;
            vc[i] = v[i];
            vc[i + half] = v[i + half];
        }
    }
}
// ANCHOR_END: rope_cache

// Copy-on-write: whole blocks src[i] -> dst[i] of one layer's cache. block_elems = block_size ·
// kv_heads · D. Grid: (copies, 2): y = 0 copies K, y = 1 copies V.
extern "C" __global__ void copy_blocks(T* __restrict__ k_cache, T* __restrict__ v_cache,
                                       const int* __restrict__ src, const int* __restrict__ dst, long long block_elems) {
    T* c = blockIdx.y == 0 ? k_cache : v_cache;
    const T* from = c + src[blockIdx.x] * block_elems;
    T* to = c + dst[blockIdx.x] * block_elems;
    for (long long j = threadIdx.x; j < block_elems; j += blockDim.x) to[j] = from[j];
}
