// Prefill attention over the paged KV cache: many query rows per sequence (a prompt, a chunk of
// one, or the rows after a cached prefix), each attending causally to every position up to its
// own. Two versions of one algorithm, FlashAttention's: a thread block takes a tile of a
// sequence's query rows for one head, walks that sequence's K/V in tiles found through the block
// table, and keeps a running (online) softmax, so the scores never go to device memory.
//   prefill_attention_simple  CUDA cores, f32 arithmetic: the algorithm as plainly as it goes;
//   prefill_attention_tc      tensor cores (mma.sync m16n8k16, f16/bf16 in, f32 accumulate),
//                             K/V tiles copied asynchronously (cp.async) one tile ahead.
// Their CPU reference is `prefill::reference` in prefill.rs; tests/prefill.rs checks both against it.
//
// Shared layout (both kernels). A pass holds `seqs` sequences; sequence s owns query rows
// seq_start[s] .. seq_start[s + 1] of q, and its rows sit at consecutive positions starting at
// pos[seq_start[s]] (the cached prefix before them: chunked prefill and prefix-cache hits).
// Row j of sequence s is at position p0 + j and sees positions 0 ..= p0 + j.
//   q, out: (n, heads, HEAD_DIM) T       k_cache, v_cache: (slots, kv_heads, HEAD_DIM) T
//   tables: (seqs, max_blocks) i32       slot of position p: tables[s][p / block_size] · block_size + p % block_size
// Grid: (query tiles of the longest sequence, heads, seqs); tile x is counted from the end, so the
// tiles with the most causal work start first. GQA: head h reads K/V head h / (heads / kv_heads).
#if !defined(HEAD_DIM)
#error "HEAD_DIM must be defined by the host (prefill.rs passes it as -D...)"
#endif

// ANCHOR: simple
// ---- 1. The simple version: CUDA cores, every number in f32. ----------------------------------
// SQ query rows per block, SK keys per tile, TPQ threads per query row (128 threads in all).
// Thread (r, c) scores keys c, c + TPQ, … of each tile for row r, and owns dims c·DPT .. of its
// output row.
#define SQ (HEAD_DIM > 128 ? 16 : 32)
#define SK (HEAD_DIM > 128 ? 8 : HEAD_DIM > 64 ? 16 : 32)
#define TPQ (128 / SQ)
#define DPT (HEAD_DIM / TPQ)
extern "C" __global__ void __launch_bounds__(128) prefill_attention_simple(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ seq_start, const int* __restrict__ pos,
    T* __restrict__ out, int heads, int kv_heads, int block_size, int max_blocks, float scale) {
    __shared__ float qs[SQ][HEAD_DIM];
    __shared__ float ks[SK][HEAD_DIM + 1];  // +1: rows read down a column land in different banks
    __shared__ float vs[SK][HEAD_DIM];
    __shared__ float ps[SQ][SK];            // this tile's probabilities

    const int s = blockIdx.z, h = blockIdx.y, tid = threadIdx.x;
    const int q0 = seq_start[s], q_len = seq_start[s + 1] - q0;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * SQ;  // first row of this tile
    if (r0 >= q_len) return;
    const int p0 = pos[q0], kvh = h / (heads / kv_heads);
    const int r = tid / TPQ, c = tid % TPQ, row = r0 + r;
    const int my_pos = p0 + row;                       // row r sees keys 0 ..= my_pos
    const int kv_end = p0 + min(q_len, r0 + SQ);       // keys the tile's last row sees
    const int* table = tables + (size_t)s * max_blocks;
    const size_t kv_row = (size_t)kv_heads * HEAD_DIM;

    for (int e = tid; e < SQ * HEAD_DIM; e += 128) {
        const int rr = e / HEAD_DIM, d = e % HEAD_DIM;
        qs[rr][d] = r0 + rr < q_len ? to_f(q[((size_t)(q0 + r0 + rr) * heads + h) * HEAD_DIM + d]) * scale : 0.0f;
    }
    float m = -INFINITY, l = 0.0f, acc[DPT];
    #pragma unroll
    for (int e = 0; e < DPT; e++) acc[e] = 0.0f;

    for (int k0 = 0; k0 < kv_end; k0 += SK) {
        __syncthreads();  // the previous tile is used up (and, the first time, qs is written)
        // K and V of positions k0 .. k0 + SK, through the block table (0 past the end).
        for (int e = tid; e < SK * HEAD_DIM; e += 128) {
            const int j = e / HEAD_DIM, d = e % HEAD_DIM, p = k0 + j;
            float kx = 0.0f, vx = 0.0f;
            if (p < kv_end) {
                const size_t at = ((size_t)table[p / block_size] * block_size + p % block_size) * kv_row + kvh * HEAD_DIM + d;
                kx = to_f(k_cache[at]);
                vx = to_f(v_cache[at]);
            }
            ks[j][d] = kx;
            vs[j][d] = vx;
        }
        __syncthreads();
        // Scores of row r against this thread's keys; causal: keys after my_pos get −∞.
        float sc[SK / TPQ], tile_max = -INFINITY;
        #pragma unroll
        for (int jj = 0; jj < SK / TPQ; jj++) {
            const int j = c + jj * TPQ;
            float dot = 0.0f;
            #pragma unroll 8
            for (int d = 0; d < HEAD_DIM; d++) dot += qs[r][d] * ks[j][d];
            sc[jj] = k0 + j <= my_pos ? dot : -INFINITY;
            tile_max = fmaxf(tile_max, sc[jj]);
        }
        // Online softmax: the row's TPQ threads are neighbouring lanes of one warp.
        #pragma unroll
        for (int o = TPQ / 2; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
        const float m_new = fmaxf(m, tile_max);     // finite: key 0 is in every row's first tile
        const float alpha = expf(m - m_new);        // rescales what was summed under the old max
        float sum = 0.0f;
        #pragma unroll
        for (int jj = 0; jj < SK / TPQ; jj++) {
            const float p = expf(sc[jj] - m_new);
            ps[r][c + jj * TPQ] = p;
            sum += p;
        }
        #pragma unroll
        for (int o = TPQ / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        l = l * alpha + sum;
        m = m_new;
        __syncwarp();  // ps[r] was written by this row's threads, all in this warp
        #pragma unroll
        for (int e = 0; e < DPT; e++) {
            float a = acc[e] * alpha;
            for (int j = 0; j < SK; j++) a += ps[r][j] * vs[j][c * DPT + e];
            acc[e] = a;
        }
    }
    if (row < q_len) {
        T* o = out + ((size_t)(q0 + row) * heads + h) * HEAD_DIM + c * DPT;
        #pragma unroll
        for (int e = 0; e < DPT; e++) o[e] = from_f<T>(acc[e] / l);
    }
}
// ANCHOR_END: simple

#ifdef TENSOR_CORES
// ANCHOR: tc_helpers
// ---- 2. The tensor-core version. --------------------------------------------------------------
// NWARPS warps, each owning MT × 16 query rows (BQ rows per block); BK keys per tile. Shared memory
// rows are padded by 16 bytes, so the 8 row addresses of one ldmatrix hit 8 different bank groups.
#ifndef NWARPS
#define NWARPS 4
#endif
#ifndef MT
#define MT 1  // 16-row m-tiles per warp
#endif
#define BQ (NWARPS * 16 * MT)
#ifndef BK
#define BK 64  // keys per tile
#endif
#define DP (HEAD_DIM + 8)
#define TC_THREADS (NWARPS * 32)

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// 16 bytes global → shared without passing through registers; `valid` false writes 16 zero bytes.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::); }
// Four 8×8 matrices of 16-bit elements from shared memory; lane l gives the address of row l % 8
// of matrix l / 8. `trans` hands each lane the transposed elements (for V, whose rows are keys).
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
// c (16×8 f32) += a (16×16) · b (16×8). Fragments, g = lane / 4, t = lane % 4:
//   a: {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}   b: {(k 2t.., n g), (k 2t+8.., n g)}
//   c: {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}
__device__ __forceinline__ void mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1, f16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1, bf16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ unsigned pack2(float lo, float hi, f16) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}
__device__ __forceinline__ unsigned pack2(float lo, float hi, bf16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}
// ANCHOR_END: tc_helpers

// ANCHOR: tc
// Dynamic shared memory: Q tile (BQ × DP), then K and V tiles, two of each (BK × DP).
// `scale_log2` = log2(e) / √HEAD_DIM: scores are kept in base 2, so exp is one exp2f.
// Each warp owns MT m-tiles of 16 rows: every K or V fragment read from shared memory feeds MT
// tensor-core instructions (with MT = 2 the Q fragments are re-read per tile instead of held,
// which keeps the registers under 255).
extern "C" __global__ void __launch_bounds__(TC_THREADS) prefill_attention_tc(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ seq_start, const int* __restrict__ pos,
    T* __restrict__ out, int heads, int kv_heads, int block_size, int max_blocks, float scale_log2) {
    extern __shared__ __align__(16) unsigned char smem[];
    T* qs = reinterpret_cast<T*>(smem);
    T* ks = qs + BQ * DP;
    T* vs = ks + 2 * BK * DP;

    const int s = blockIdx.z, h = blockIdx.y, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int q0 = seq_start[s], q_len = seq_start[s + 1] - q0;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * BQ;
    if (r0 >= q_len) return;
    const int p0 = pos[q0], kvh = h / (heads / kv_heads);
    const int kv_end = p0 + min(q_len, r0 + BQ);
    const int n_tiles = (kv_end + BK - 1) / BK;
    const int* table = tables + (size_t)s * max_blocks;
    const size_t kv_row = (size_t)kv_heads * HEAD_DIM;
    constexpr int CPR = HEAD_DIM / 8;  // 16-byte chunks per row

    // Q tile (rows past the sequence: zeros), then K/V tile 0, as one group of async copies.
    for (int c = tid; c < BQ * CPR; c += TC_THREADS) {
        const int r = c / CPR, col = (c % CPR) * 8;
        const bool ok = r0 + r < q_len;
        cp_async16(qs + r * DP + col, q + ((size_t)(q0 + (ok ? r0 + r : 0)) * heads + h) * HEAD_DIM + col, ok);
    }
    auto load_kv = [&](int tile, int buf) {
        for (int c = tid; c < BK * CPR; c += TC_THREADS) {
            const int r = c / CPR, col = (c % CPR) * 8, p = tile * BK + r;
            const bool ok = p < kv_end;
            const size_t slot = ok ? (size_t)table[p / block_size] * block_size + p % block_size : 0;
            const size_t at = slot * kv_row + kvh * HEAD_DIM + col;
            cp_async16(ks + (buf * BK + r) * DP + col, k_cache + at, ok);
            cp_async16(vs + (buf * BK + r) * DP + col, v_cache + at, ok);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    const int g = lane / 4, t4 = lane % 4, mat = lane / 8;
    const int w0 = r0 + warp * 16 * MT;  // this warp's first row
    const bool warp_live = w0 < q_len;
#if MT == 1
    unsigned qf[HEAD_DIM / 16][4];  // Q as A fragments, loaded once
#endif
    float o[MT][HEAD_DIM / 8][4];   // output accumulators, 16·MT × HEAD_DIM per warp
    float m[MT][2], l[MT][2];       // running max and (this lane's share of the) sum of each row
    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
        #pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    }

    for (int j = 0; j < n_tiles; j++) {
        const int buf = j & 1;
        if (j + 1 < n_tiles) load_kv(j + 1, buf ^ 1);  // the next tile flies while this one computes
        cp_async_commit();
        cp_async_wait_1();                             // everything but the newest group has landed
        __syncthreads();
        // A warp whose last row precedes the tile's first key has nothing to do in it.
        if (warp_live && p0 + w0 + 16 * MT - 1 >= j * BK) {
#if MT == 1
            if (j == 0) {
                #pragma unroll
                for (int kk = 0; kk < HEAD_DIM / 16; kk++)
                    ldmatrix_x4(qf[kk], qs + (warp * 16 + (mat % 2) * 8 + lane % 8) * DP + kk * 16 + (mat / 2) * 8);
            }
#endif
            // S = Q Kᵀ: 16·MT rows × BK keys per warp. K's rows (keys) are B's columns, as stored.
            const T* kb = ks + buf * BK * DP;
            float sc[MT][BK / 8][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++)
                #pragma unroll
                for (int n = 0; n < BK / 8; n++) sc[mt][n][0] = sc[mt][n][1] = sc[mt][n][2] = sc[mt][n][3] = 0.0f;
            #pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
#if MT == 1
                const unsigned* a0 = qf[kk];
#else
                unsigned a[MT][4];
                #pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    ldmatrix_x4(a[mt], qs + ((warp * MT + mt) * 16 + (mat % 2) * 8 + lane % 8) * DP + kk * 16 + (mat / 2) * 8);
#endif
                #pragma unroll
                for (int nn = 0; nn < BK / 16; nn++) {
                    unsigned b[4];
                    ldmatrix_x4(b, kb + (nn * 16 + (mat / 2) * 8 + lane % 8) * DP + kk * 16 + (mat % 2) * 8);
                    #pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
#if MT == 1
                        const unsigned* af = a0;
#else
                        const unsigned* af = a[mt];
#endif
                        mma(sc[mt][2 * nn], af, b[0], b[1], T());
                        mma(sc[mt][2 * nn + 1], af, b[2], b[3], T());
                    }
                }
            }
            unsigned pf[MT][BK / 16][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                // Scale into base 2; causal mask only where the tile crosses the m-tile's diagonal.
                const int pos_a = p0 + w0 + mt * 16 + g, pos_b = pos_a + 8;  // this lane's two rows
                const bool diag = j * BK + BK - 1 > pos_a - g;
                float mx[2] = {m[mt][0], m[mt][1]};
                #pragma unroll
                for (int n = 0; n < BK / 8; n++) {
                    #pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int kp = j * BK + n * 8 + 2 * t4 + (e & 1);
                        float v = sc[mt][n][e] * scale_log2;
                        if (diag && kp > (e < 2 ? pos_a : pos_b)) v = -INFINITY;
                        sc[mt][n][e] = v;
                    }
                    mx[0] = fmaxf(mx[0], fmaxf(sc[mt][n][0], sc[mt][n][1]));
                    mx[1] = fmaxf(mx[1], fmaxf(sc[mt][n][2], sc[mt][n][3]));
                }
                // Online softmax; a row's scores live in the 4 lanes of a quad.
                float alpha[2], rs[2] = {0.0f, 0.0f};
                #pragma unroll
                for (int i = 0; i < 2; i++) {
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                    alpha[i] = exp2f(m[mt][i] - mx[i]);  // finite mx: key 0 is in every row's first tile
                    m[mt][i] = mx[i];
                }
                // P = exp2(S − m), rounded to T, becomes the A operand of P·V straight from
                // registers: the accumulator layout of two n-tiles is the A layout of one k-step.
                #pragma unroll
                for (int n = 0; n < BK / 8; n++) {
                    const float e0 = exp2f(sc[mt][n][0] - mx[0]), e1 = exp2f(sc[mt][n][1] - mx[0]);
                    const float e2 = exp2f(sc[mt][n][2] - mx[1]), e3 = exp2f(sc[mt][n][3] - mx[1]);
                    rs[0] += e0 + e1;
                    rs[1] += e2 + e3;
                    pf[mt][n / 2][(n % 2) * 2] = pack2(e0, e1, T());
                    pf[mt][n / 2][(n % 2) * 2 + 1] = pack2(e2, e3, T());
                }
                l[mt][0] = l[mt][0] * alpha[0] + rs[0];  // quads add their shares at the end
                l[mt][1] = l[mt][1] * alpha[1] + rs[1];
                #pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; n++) {
                    o[mt][n][0] *= alpha[0];
                    o[mt][n][1] *= alpha[0];
                    o[mt][n][2] *= alpha[1];
                    o[mt][n][3] *= alpha[1];
                }
            }
            // O += P V: V's rows are keys (B's k), so ldmatrix transposes them into B fragments.
            const T* vb = vs + buf * BK * DP;
            #pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                #pragma unroll
                for (int dn = 0; dn < HEAD_DIM / 16; dn++) {
                    unsigned b[4];
                    ldmatrix_x4_trans(b, vb + (kk * 16 + (mat % 2) * 8 + lane % 8) * DP + dn * 16 + (mat / 2) * 8);
                    #pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma(o[mt][2 * dn], pf[mt][kk], b[0], b[1], T());
                        mma(o[mt][2 * dn + 1], pf[mt][kk], b[2], b[3], T());
                    }
                }
            }
        }
        __syncthreads();  // every warp is done with `buf` before the next iteration refills it
    }
    if (!warp_live) return;
    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        #pragma unroll
        for (int i = 0; i < 2; i++) {
            l[mt][i] += __shfl_xor_sync(0xffffffffu, l[mt][i], 1);
            l[mt][i] += __shfl_xor_sync(0xffffffffu, l[mt][i], 2);
            l[mt][i] = 1.0f / l[mt][i];
        }
        const int ra = w0 + mt * 16 + g, rb = ra + 8;
        #pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) {
            const int d = n * 8 + 2 * t4;
            if (ra < q_len)
                *reinterpret_cast<unsigned*>(out + ((size_t)(q0 + ra) * heads + h) * HEAD_DIM + d) =
                    pack2(o[mt][n][0] * l[mt][0], o[mt][n][1] * l[mt][0], T());
            if (rb < q_len)
                *reinterpret_cast<unsigned*>(out + ((size_t)(q0 + rb) * heads + h) * HEAD_DIM + d) =
                    pack2(o[mt][n][2] * l[mt][1], o[mt][n][3] * l[mt][1], T());
        }
    }
}
// ANCHOR_END: tc
#endif
