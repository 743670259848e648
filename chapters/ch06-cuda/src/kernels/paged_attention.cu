// PagedAttention on the GPU: every query token attends over its sequence's K/V, found through the
// block table. One kernel serves decode (one query per sequence) and prefill (one query per prompt
// token, each with its own causal context length), including cached prefix blocks: the step's
// K/V is already in the cache (rope_cache ran first), so every token just reads positions 0..ctx.
//
// Compile-time shape (defined by the Rust side): HEAD_DIM (16, 32, 64, 128 or 256), GROUP (query
// heads per thread block that share one K/V head: each K/V row is read once for all of them) and
// PART (the most context positions per thread block: long contexts are split over several blocks,
// vLLM's "v2" idea, and paged_attention_reduce merges the partial softmaxes). The partition length
// itself, part_len ≤ PART, is a launch argument: a small batch cuts its contexts finer so that
// the grid fills the GPU (kernels.rs partition_split).
#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(PART)
#error "HEAD_DIM, GROUP and PART must be defined by the host (kernels.rs passes them as -D...)"
#endif
#define NT (HEAD_DIM > 128 ? HEAD_DIM : 128)      // threads per block
#define VEC (16 / (int)sizeof(T))                 // elements per 16-byte load
#define TPR ((HEAD_DIM / VEC) > 32 ? 32 : (HEAD_DIM / VEC))  // threads reading one K row
#define EPT (HEAD_DIM / TPR)                      // elements of a K row per thread
#define RPP (NT / TPR)                            // K rows read per pass of the block
#ifndef UNROLL
#define UNROLL 8                                  // K or V rows in flight per thread
#endif

// ANCHOR: merge
// One output element of a (query, head) from its partitions: rescale each partition's sum by
// exp(m_p − M), M the largest running max, and divide by the rescaled total. base: the first
// partition's index. Reads through L2 (__ldcg): other SMs wrote the partials.
__device__ __forceinline__ float merge_one(const float* part_o, const float* part_ml, size_t base, int parts,
                                           int d) {
    float M = -INFINITY;
    for (int p = 0; p < parts; p++) M = fmaxf(M, __ldcg(part_ml + (base + p) * 2));
    float L = 0.0f, acc = 0.0f;
    for (int p = 0; p < parts; p++) {
        const float w = expf(__ldcg(part_ml + (base + p) * 2) - M);
        L += w * __ldcg(part_ml + (base + p) * 2 + 1);
        acc += w * __ldcg(part_o + (base + p) * HEAD_DIM + d);
    }
    return acc / L;
}
// ANCHOR_END: merge

// ANCHOR: fold
// The merge folded into the attention launch (done != nullptr), so a step has no reduce launch per
// layer: the last partition block of each (query, head group) to finish merges them all. Every
// block publishes its partials (__threadfence) and then takes a ticket from done[], one counter per
// (query, head group), zero between launches (the last block puts it back); the block with the
// last ticket writes the GROUP heads' outputs. Called by the whole block after its partials.
__device__ void fold_partitions(const float* part_o, const float* part_ml, T* __restrict__ out, int* done,
                                int i, int h0, int heads, int max_parts, int parts) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* ticket = done + (size_t)i * gridDim.y + blockIdx.y;
        last = atomicAdd(ticket, 1) == parts - 1;
        if (last) *ticket = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int idx = threadIdx.x; idx < GROUP * HEAD_DIM; idx += blockDim.x) {
        const int g = idx / HEAD_DIM, d = idx % HEAD_DIM;
        const size_t base = ((size_t)i * heads + h0 + g) * max_parts;
        const float o = merge_one(part_o, part_ml, base, parts, d);
        out[((size_t)i * heads + h0 + g) * HEAD_DIM + d] = from_f<T>(o);
    }
}

// A padding query (ctx 0) runs no partition: with the merge folded, partition 0's block writes its
// zeros (paged_attention_reduce does otherwise).
__device__ __forceinline__ void zero_heads(T* __restrict__ out, int i, int h0, int heads) {
    for (int idx = threadIdx.x; idx < GROUP * HEAD_DIM; idx += blockDim.x)
        out[((size_t)i * heads + h0) * HEAD_DIM + idx] = from_f<T>(0.0f);
}
// ANCHOR_END: fold

// ANCHOR: kernel
// q: (n_q, heads, HEAD_DIM) T. k_cache, v_cache: (num_blocks · block_size, kv_heads, HEAD_DIM) T.
// tables: (rows, max_blocks) block ids; rows[i]: query i's table; ctx_lens[i]: positions it sees
// (0 = padding); partition p covers positions p · part_len … + part_len (part_len ≤ PART).
// part_o: (n_q, heads, max_parts, HEAD_DIM) f32 unnormalised outputs;
// part_ml: (n_q, heads, max_parts, 2) f32 running max and sum of each partition.
// out: (n_q, heads, HEAD_DIM) T, written here when done (n_q, gridDim.y counters) is given.
// Grid: (n_q, kv_heads · group / GROUP, max_parts), NT threads.
extern "C" __global__ void __launch_bounds__(NT) paged_attention(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ rows, const int* __restrict__ ctx_lens,
    float* __restrict__ part_o, float* __restrict__ part_ml,
    int heads, int kv_heads, int block_size, int max_blocks, int max_parts, int part_len, float scale,
    T* __restrict__ out, int* __restrict__ done) {
    PDL_ENTER();
    __shared__ float qs[GROUP][HEAD_DIM];
    __shared__ float sc[GROUP][PART];
    __shared__ long long row_at[PART];  // element offset of each position's K/V row for this head
    __shared__ float ms[GROUP], ls[GROUP];  // each head's running max and sum
    __shared__ float red[NT / 32][GROUP][HEAD_DIM];

    const int i = blockIdx.x, part = blockIdx.z, tid = threadIdx.x;
    const int group = heads / kv_heads, chunks = group / GROUP;
    const int kvh = blockIdx.y / chunks, h0 = kvh * group + (blockIdx.y % chunks) * GROUP;
    const int ctx = ctx_lens[i], t0 = part * part_len;
    if (t0 >= ctx) {
        if (done && ctx <= 0 && part == 0) zero_heads(out, i, h0, heads);
        return;
    }
    const int n = min(ctx - t0, part_len);

    // 0. Walk the block table once: where each position of the partition lives.
    const int* table = tables + (size_t)rows[i] * max_blocks;
    for (int t = tid; t < n; t += NT) {
        const int pos = t0 + t;
        row_at[t] = ((long long)table[pos / block_size] * block_size + pos % block_size) * kv_heads * HEAD_DIM + (long long)kvh * HEAD_DIM;
    }
    for (int e = tid; e < GROUP * HEAD_DIM; e += NT)
        qs[e / HEAD_DIM][e % HEAD_DIM] = to_f(q[((size_t)i * heads + h0) * HEAD_DIM + e]) * scale;
    __syncthreads();

    // 1. Scores: TPR threads read one K row with 16-byte loads and reduce its dot products with
    //    every query head of the group by shuffles; UNROLL rows are in flight per thread.
    const int lane_r = tid % TPR, r = tid / TPR;
    {
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
                    raw[u][c] = t < n ? *reinterpret_cast<const uint4*>(k_cache + row_at[t] + lane_r * EPT + c * VEC)
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
    }
    __syncthreads();

    // 2. Softmax of the partition (max-subtracted; the reduce kernel rescales across partitions).
    //    Warp w takes heads w, w + NT/32, …: no block-wide barrier per head.
    const int warp = tid / 32, lane = tid % 32;
    for (int g = warp; g < GROUP; g += NT / 32) {
        float v = -INFINITY;
        for (int t = lane; t < n; t += 32) v = fmaxf(v, sc[g][t]);
        v = warp_max(v);
        float s = 0.0f;
        for (int t = lane; t < n; t += 32) {
            const float p = expf(sc[g][t] - v);
            sc[g][t] = p;
            s += p;
        }
        s = warp_sum(s);
        if (lane == 0) { ms[g] = v; ls[g] = s; }
    }
    __syncthreads();

    // 3. Weighted sum of V rows, read like K: TPR threads per row, 16 bytes each, UNROLL rows in
    //    flight; then the row groups' partial sums are added (shuffles within a warp, then
    //    shared memory across warps).
    float acc[GROUP][EPT];
    #pragma unroll
    for (int g = 0; g < GROUP; g++)
        #pragma unroll
        for (int e = 0; e < EPT; e++) acc[g][e] = 0.0f;
    for (int tb = 0; tb < n; tb += RPP * UNROLL) {
        uint4 raw[UNROLL][EPT / VEC];
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = tb + u * RPP + r;
            #pragma unroll
            for (int c = 0; c < EPT / VEC; c++)
                raw[u][c] = t < n ? *reinterpret_cast<const uint4*>(v_cache + row_at[t] + lane_r * EPT + c * VEC)
                                  : make_uint4(0, 0, 0, 0);
        }
        #pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int t = tb + u * RPP + r;
            if (t < n) {
                const T* v = reinterpret_cast<const T*>(raw[u]);
                #pragma unroll
                for (int g = 0; g < GROUP; g++) {
                    const float p = sc[g][t];
                    #pragma unroll
                    for (int e = 0; e < EPT; e++) acc[g][e] += p * to_f(v[e]);
                }
            }
        }
    }
    #pragma unroll
    for (int g = 0; g < GROUP; g++)
        #pragma unroll
        for (int e = 0; e < EPT; e++)
            #pragma unroll
            for (int o = 16; o >= TPR; o >>= 1) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    if (lane < TPR)
        #pragma unroll
        for (int g = 0; g < GROUP; g++)
            #pragma unroll
            for (int e = 0; e < EPT; e++) red[warp][g][lane * EPT + e] = acc[g][e];
    __syncthreads();
    for (int idx = tid; idx < GROUP * HEAD_DIM; idx += NT) {
        const int g = idx / HEAD_DIM, d = idx % HEAD_DIM;
        float s = 0.0f;
        #pragma unroll
        for (int w = 0; w < NT / 32; w++) s += red[w][g][d];
        const size_t at = ((size_t)i * heads + h0 + g) * max_parts + part;
        part_o[at * HEAD_DIM + d] = s;
    }
    if (tid < GROUP) {
        const size_t at = ((size_t)i * heads + h0 + tid) * max_parts + part;
        part_ml[at * 2] = ms[tid];
        part_ml[at * 2 + 1] = ls[tid];
    }
    if (done) fold_partitions(part_o, part_ml, out, done, i, h0, heads, max_parts, (ctx + part_len - 1) / part_len);
}
// ANCHOR_END: kernel

#ifdef DECODE_TC
// ANCHOR: kernel_tc
// The same kernel on tensor cores, for grouped-query attention: the GROUP query heads that share a
// K/V head become the rows of one m16n8k16 tile (rows ≥ GROUP are zero), so each K/V row is read
// once and multiplied by all of them without an f16 → f32 conversion per element per head, which is
// what bounds the CUDA-core version at GQA ratios ≥ 4. Same arguments, grid and outputs as
// paged_attention; f16/bf16, HEAD_DIM % 64 == 0, GROUP ≤ 8.
// Both products read their operands straight from global memory into mma fragments, with no
// shared-memory staging: a dot product's terms may be summed in any order, so each lane loads 16
// contiguous bytes and the Q fragment uses the same permutation of head dims; for P·V the output
// dims are permuted instead (π below) and pairs of keys are packed with byte permutes.
#if HEAD_DIM % 64 != 0 || GROUP > 8
#error "paged_attention_tc: HEAD_DIM % 64 == 0 and GROUP <= 8"
#endif
#ifndef KU
#define KU 4  // 8-key tiles in flight per warp (scores)
#endif
#ifndef TC_MIN_BLOCKS
#define TC_MIN_BLOCKS 1  // blocks per SM the register budget must allow
#endif
extern "C" __global__ void __launch_bounds__(128, TC_MIN_BLOCKS) paged_attention_tc(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ rows, const int* __restrict__ ctx_lens,
    float* __restrict__ part_o, float* __restrict__ part_ml,
    int heads, int kv_heads, int block_size, int max_blocks, int max_parts, int part_len, float scale,
    T* __restrict__ out, int* __restrict__ done) {
    PDL_ENTER();
    __shared__ float sc[GROUP][PART];
    __shared__ long long row_at[PART];
    __shared__ float ms[GROUP], ls[GROUP];
    __shared__ float red[4][GROUP][HEAD_DIM];

    const int i = blockIdx.x, part = blockIdx.z, tid = threadIdx.x;
    const int group = heads / kv_heads, chunks = group / GROUP;
    const int kvh = blockIdx.y / chunks, h0 = kvh * group + (blockIdx.y % chunks) * GROUP;
    const int ctx = ctx_lens[i], t0 = part * part_len;
    if (t0 >= ctx) {
        if (done && ctx <= 0 && part == 0) zero_heads(out, i, h0, heads);
        return;
    }
    const int n = min(ctx - t0, part_len);
    const int* table = tables + (size_t)rows[i] * max_blocks;
    for (int t = tid; t < n; t += 128) {
        const int pos = t0 + t;
        row_at[t] = ((long long)table[pos / block_size] * block_size + pos % block_size) * kv_heads * HEAD_DIM + (long long)kvh * HEAD_DIM;
    }
    __syncthreads();
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, tq = lane % 4;
    const uint4 zero = make_uint4(0, 0, 0, 0);

    // 1. S (GROUP × n) = Q Kᵀ. Lane (g, tq) holds Q's dims 32j + 8tq … + 8 of head g and loads the
    //    same dims of key g of each 8-key tile: halves 0–3 feed k-tile 2j, halves 4–7 k-tile 2j + 1.
    {
        uint4 qa[HEAD_DIM / 32];
        #pragma unroll
        for (int j = 0; j < HEAD_DIM / 32; j++)
            qa[j] = g < GROUP ? *reinterpret_cast<const uint4*>(q + ((size_t)i * heads + h0 + g) * HEAD_DIM + 32 * j + 8 * tq) : zero;
        const int tiles = (n + 7) / 8;
        for (int tb = warp; tb < tiles; tb += 4 * KU) {
            uint4 kr[KU][HEAD_DIM / 32];
            #pragma unroll
            for (int u = 0; u < KU; u++) {
                const int key = (tb + 4 * u) * 8 + g;
                #pragma unroll
                for (int j = 0; j < HEAD_DIM / 32; j++)
                    kr[u][j] = key < n ? *reinterpret_cast<const uint4*>(k_cache + row_at[key] + 32 * j + 8 * tq) : zero;
            }
            #pragma unroll
            for (int u = 0; u < KU; u++) {
                const int tile = tb + 4 * u;
                if (tile >= tiles) break;
                float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                #pragma unroll
                for (int j = 0; j < HEAD_DIM / 32; j++) {
                    const unsigned a0[4] = {qa[j].x, 0u, qa[j].y, 0u}, a1[4] = {qa[j].z, 0u, qa[j].w, 0u};
                    mma(c, a0, kr[u][j].x, kr[u][j].y, T());
                    mma(c, a1, kr[u][j].z, kr[u][j].w, T());
                }
                const int key = tile * 8 + 2 * tq;  // c[0], c[1]: head g, keys key and key + 1
                if (g < GROUP) {
                    if (key < n) sc[g][key] = c[0] * scale;
                    if (key + 1 < n) sc[g][key + 1] = c[1] * scale;
                }
            }
        }
    }
    __syncthreads();

    // 2. Softmax of the partition, as in paged_attention.
    for (int h = warp; h < GROUP; h += 4) {
        float v = -INFINITY;
        for (int t = lane; t < n; t += 32) v = fmaxf(v, sc[h][t]);
        v = warp_max(v);
        float s = 0.0f;
        for (int t = lane; t < n; t += 32) {
            const float p = expf(sc[h][t] - v);
            sc[h][t] = p;
            s += p;
        }
        s = warp_sum(s);
        if (lane == 0) { ms[h] = v; ls[h] = s; }
    }
    __syncthreads();

    // 3. O (GROUP × HEAD_DIM) = P V over 16-key tiles. Lane (g, tq) loads 16 bytes (dims 8c … 8c + 8,
    //    c = g + 8m) of keys 2tq, 2tq + 1, 2tq + 8, 2tq + 9 and packs same-dim pairs into B
    //    fragments: column g of n-tile 8m + e is dim π(8m + e, g) = 64m + 8g + e.
    constexpr int NM = HEAD_DIM / 64, NJ = HEAD_DIM / 8;
    float o[NJ][4];
    #pragma unroll
    for (int j = 0; j < NJ; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    const int ktiles = (n + 15) / 16;
    for (int kt = warp; kt < ktiles; kt += 4) {
        const int k0 = kt * 16 + 2 * tq;
        const int key[4] = {k0, k0 + 1, k0 + 8, k0 + 9};
        uint4 vr[4][NM];
        #pragma unroll
        for (int r = 0; r < 4; r++)
            #pragma unroll
            for (int m = 0; m < NM; m++)
                vr[r][m] = key[r] < n ? *reinterpret_cast<const uint4*>(v_cache + row_at[key[r]] + 64 * m + 8 * g) : zero;
        const float p0 = g < GROUP && key[0] < n ? sc[g][key[0]] : 0.0f, p1 = g < GROUP && key[1] < n ? sc[g][key[1]] : 0.0f;
        const float p2 = g < GROUP && key[2] < n ? sc[g][key[2]] : 0.0f, p3 = g < GROUP && key[3] < n ? sc[g][key[3]] : 0.0f;
        const unsigned pa[4] = {pack2(p0, p1, T()), 0u, pack2(p2, p3, T()), 0u};
        #pragma unroll
        for (int m = 0; m < NM; m++) {
            const unsigned* a = reinterpret_cast<const unsigned*>(&vr[0][m]);
            const unsigned* b = reinterpret_cast<const unsigned*>(&vr[1][m]);
            const unsigned* c = reinterpret_cast<const unsigned*>(&vr[2][m]);
            const unsigned* d = reinterpret_cast<const unsigned*>(&vr[3][m]);
            #pragma unroll
            for (int w = 0; w < 4; w++) {  // halves 2w, 2w + 1 of each load: n-tiles 8m + 2w, 8m + 2w + 1
                mma(o[8 * m + 2 * w], pa, __byte_perm(a[w], b[w], 0x5410), __byte_perm(c[w], d[w], 0x5410), T());
                mma(o[8 * m + 2 * w + 1], pa, __byte_perm(a[w], b[w], 0x7632), __byte_perm(c[w], d[w], 0x7632), T());
            }
        }
    }
    // o[j][0..1]: head g, columns 2tq and 2tq + 1 of n-tile j = 8m + e, i.e. dims π(j, 2tq), π(j, 2tq + 1).
    if (g < GROUP)
        #pragma unroll
        for (int j = 0; j < NJ; j++) {
            const int m = j / 8, e = j % 8;
            red[warp][g][64 * m + 8 * (2 * tq) + e] = o[j][0];
            red[warp][g][64 * m + 8 * (2 * tq + 1) + e] = o[j][1];
        }
    __syncthreads();
    for (int idx = tid; idx < GROUP * HEAD_DIM; idx += 128) {
        const int h = idx / HEAD_DIM, d = idx % HEAD_DIM;
        const size_t at = ((size_t)i * heads + h0 + h) * max_parts + part;
        part_o[at * HEAD_DIM + d] = red[0][h][d] + red[1][h][d] + red[2][h][d] + red[3][h][d];
    }
    if (tid < GROUP) {
        const size_t at = ((size_t)i * heads + h0 + tid) * max_parts + part;
        part_ml[at * 2] = ms[tid];
        part_ml[at * 2 + 1] = ls[tid];
    }
    if (done) fold_partitions(part_o, part_ml, out, done, i, h0, heads, max_parts, (ctx + part_len - 1) / part_len);
}
// ANCHOR_END: kernel_tc
#endif

// ANCHOR: reduce
// Merges the partitions of each (query, head) (merge_one) when the attention launch did not.
// out: (n_q, heads, HEAD_DIM) T. Grid: (n_q, heads), HEAD_DIM threads.
extern "C" __global__ void paged_attention_reduce(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                  const int* __restrict__ ctx_lens, T* __restrict__ out,
                                                  int heads, int max_parts, int part_len) {
    PDL_ENTER();
    const int i = blockIdx.x, h = blockIdx.y, dim = threadIdx.x;
    T* o = out + ((size_t)i * heads + h) * HEAD_DIM;
    const int ctx = ctx_lens[i];
    if (ctx <= 0) { o[dim] = from_f<T>(0.0f); return; }
    const int parts = (ctx + part_len - 1) / part_len;
    o[dim] = from_f<T>(merge_one(part_o, part_ml, ((size_t)i * heads + h) * max_parts, parts, dim));
}
// ANCHOR_END: reduce
