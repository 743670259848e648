// PagedAttention on the GPU: every query token attends over its sequence's K/V, found through the
// block table. One kernel serves decode (one query per sequence) and prefill (one query per prompt
// token, each with its own causal context length), including cached prefix blocks: the step's
// K/V is already in the cache (rope_cache ran first), so every token just reads positions 0..ctx.
//
// Compile-time shape (defined by the Rust side): HEAD_DIM (16, 32, 64, 128 or 256), GROUP (query
// heads per thread block that share one K/V head: each K/V row is read once for all of them) and
// PART (context positions per thread block: long contexts are split over several blocks, vLLM's
// "v2" idea, and paged_attention_reduce merges the partial softmaxes).
#ifndef PART
#define PART 256
#endif
#define NT (HEAD_DIM > 128 ? HEAD_DIM : 128)      // threads per block
#define VEC (16 / (int)sizeof(T))                 // elements per 16-byte load
#define TPR ((HEAD_DIM / VEC) > 32 ? 32 : (HEAD_DIM / VEC))  // threads reading one K row
#define EPT (HEAD_DIM / TPR)                      // elements of a K row per thread
#define RPP (NT / TPR)                            // K rows read per pass of the block
#define NG (NT / HEAD_DIM)                        // token groups in the V pass
#define UNROLL 4                                  // K rows in flight per thread

// ANCHOR: kernel
// q: (n_q, heads, HEAD_DIM) T. k_cache, v_cache: (num_blocks · block_size, kv_heads, HEAD_DIM) T.
// tables: (rows, max_blocks) block ids; rows[i]: query i's table; ctx_lens[i]: positions it sees
// (0 = padding). part_o: (n_q, heads, max_parts, HEAD_DIM) f32 unnormalised outputs;
// part_ml: (n_q, heads, max_parts, 2) f32 running max and sum of each partition.
// Grid: (n_q, kv_heads · group / GROUP, max_parts), NT threads.
extern "C" __global__ void __launch_bounds__(NT) paged_attention(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ rows, const int* __restrict__ ctx_lens,
    float* __restrict__ part_o, float* __restrict__ part_ml,
    int heads, int kv_heads, int block_size, int max_blocks, int max_parts, float scale) {
    __shared__ float qs[GROUP][HEAD_DIM];
    __shared__ float sc[GROUP][PART];
    __shared__ float scratch[32];
    __shared__ float red[NG > 1 ? NG * GROUP * HEAD_DIM : 1];

    const int i = blockIdx.x, part = blockIdx.z, tid = threadIdx.x;
    const int group = heads / kv_heads, chunks = group / GROUP;
    const int kvh = blockIdx.y / chunks, h0 = kvh * group + (blockIdx.y % chunks) * GROUP;
    const int ctx = ctx_lens[i], t0 = part * PART;
    if (t0 >= ctx) return;
    const int n = min(ctx - t0, PART);
    const int* table = tables + (size_t)rows[i] * max_blocks;
    const size_t row_stride = (size_t)kv_heads * HEAD_DIM;  // one position's K (or V) row
    // Where position t0 + t of this sequence lives in the cache, for this K/V head.
    #define KV_OFFSET(t) (((size_t)table[(t0 + (t)) / block_size] * block_size + (t0 + (t)) % block_size) * row_stride + (size_t)kvh * HEAD_DIM)

    for (int e = tid; e < GROUP * HEAD_DIM; e += NT)
        qs[e / HEAD_DIM][e % HEAD_DIM] = to_f(q[((size_t)i * heads + h0) * HEAD_DIM + e]) * scale;
    __syncthreads();

    // 1. Scores: TPR threads read one K row with 16-byte loads and reduce its dot products with
    //    every query head of the group by shuffles; UNROLL rows are in flight per thread.
    const int lane_r = tid % TPR, r = tid / TPR;
    float qr[GROUP][EPT];
    #pragma unroll
    for (int g = 0; g < GROUP; g++)
        #pragma unroll
        for (int e = 0; e < EPT; e++) qr[g][e] = qs[g][lane_r * EPT + e];
    for (int tb = 0; tb < n; tb += RPP * UNROLL) {
        uint4 raw[UNROLL][EPT / VEC];
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = tb + u * RPP + r;
            #pragma unroll
            for (int c = 0; c < EPT / VEC; c++)
                raw[u][c] = t < n ? *reinterpret_cast<const uint4*>(k_cache + KV_OFFSET(t) + lane_r * EPT + c * VEC)
                                  : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const T* k = reinterpret_cast<const T*>(raw[u]);
            float acc[GROUP];
            #pragma unroll
            for (int g = 0; g < GROUP; g++) {
                acc[g] = 0.0f;
                #pragma unroll
                for (int e = 0; e < EPT; e++) acc[g] += qr[g][e] * to_f(k[e]);
                #pragma unroll
                for (int o = TPR / 2; o > 0; o >>= 1) acc[g] += __shfl_xor_sync(0xffffffffu, acc[g], o);
            }
            const int t = tb + u * RPP + r;
            if (t < n && lane_r == 0)
                #pragma unroll
                for (int g = 0; g < GROUP; g++) sc[g][t] = acc[g];
        }
    }
    __syncthreads();

    // 2. Softmax of the partition (max-subtracted; the reduce kernel rescales across partitions).
    float m[GROUP], l[GROUP];
    #pragma unroll
    for (int g = 0; g < GROUP; g++) {
        float v = -INFINITY;
        for (int t = tid; t < n; t += NT) v = fmaxf(v, sc[g][t]);
        m[g] = block_max(v, scratch);
        float s = 0.0f;
        for (int t = tid; t < n; t += NT) {
            const float p = expf(sc[g][t] - m[g]);
            sc[g][t] = p;
            s += p;
        }
        l[g] = block_sum(s, scratch);
    }
    __syncthreads();

    // 3. Weighted sum of V rows: thread `dim` of token group `grp` walks every NG-th position.
    const int dim = tid % HEAD_DIM, grp = tid / HEAD_DIM;
    float o[GROUP];
    #pragma unroll
    for (int g = 0; g < GROUP; g++) o[g] = 0.0f;
    #pragma unroll 8
    for (int t = grp; t < n; t += NG) {
        const float v = to_f(v_cache[KV_OFFSET(t) + dim]);
        #pragma unroll
        for (int g = 0; g < GROUP; g++) o[g] += sc[g][t] * v;
    }
    if (NG > 1) {
        #pragma unroll
        for (int g = 0; g < GROUP; g++) red[(grp * GROUP + g) * HEAD_DIM + dim] = o[g];
        __syncthreads();
        if (grp == 0)
            for (int k = 1; k < NG; k++)
                #pragma unroll
                for (int g = 0; g < GROUP; g++) o[g] += red[(k * GROUP + g) * HEAD_DIM + dim];
    }
    if (grp == 0) {
        #pragma unroll
        for (int g = 0; g < GROUP; g++) {
            const size_t at = ((size_t)i * heads + h0 + g) * max_parts + part;
            part_o[at * HEAD_DIM + dim] = o[g];
            if (dim == 0) { part_ml[at * 2] = m[g]; part_ml[at * 2 + 1] = l[g]; }
        }
    }
    #undef KV_OFFSET
}
// ANCHOR_END: kernel

// ANCHOR: reduce
// Merges the partitions of each (query, head): rescale each partition's sum by exp(m_p − M),
// M the largest running max, and divide by the rescaled total. out: (n_q, heads, HEAD_DIM) T.
// Grid: (n_q, heads), HEAD_DIM threads.
extern "C" __global__ void paged_attention_reduce(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                  const int* __restrict__ ctx_lens, T* __restrict__ out,
                                                  int heads, int max_parts) {
    const int i = blockIdx.x, h = blockIdx.y, dim = threadIdx.x;
    T* o = out + ((size_t)i * heads + h) * HEAD_DIM;
    const int ctx = ctx_lens[i];
    if (ctx <= 0) { o[dim] = from_f<T>(0.0f); return; }
    const int parts = (ctx + PART - 1) / PART;
    const size_t base = ((size_t)i * heads + h) * max_parts;
    float M = -INFINITY;
    for (int p = 0; p < parts; p++) M = fmaxf(M, part_ml[(base + p) * 2]);
    float L = 0.0f, acc = 0.0f;
    for (int p = 0; p < parts; p++) {
        const float w = expf(part_ml[(base + p) * 2] - M);
        L += w * part_ml[(base + p) * 2 + 1];
        acc += w * part_o[(base + p) * HEAD_DIM + dim];
    }
    o[dim] = from_f<T>(acc / L);
}
// ANCHOR_END: reduce
