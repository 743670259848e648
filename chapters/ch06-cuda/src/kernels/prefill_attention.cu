// Prefill attention over the paged KV cache: many query rows per sequence (a prompt, a chunk of
// one, or the rows after a cached prefix), each attending causally to every position up to its
// own. Three versions of one algorithm, FlashAttention's: a thread block takes a tile of a
// sequence's query rows for one head, walks that sequence's K/V in tiles found through the block
// table, and keeps a running (online) softmax, so the scores never go to device memory.
//   prefill_attention_simple  CUDA cores, f32 arithmetic: the algorithm as plainly as it goes;
//   prefill_attention_tc      tensor cores (mma.sync m16n8k16, f16/bf16 in, f32 accumulate),
//                             K/V tiles copied asynchronously (cp.async) one tile ahead;
//   prefill_attention_wgmma   Hopper only (sm_90a): warpgroup-wide wgmma, operands read by the
//                             tensor cores straight from swizzled shared memory.
// Their CPU reference is `prefill::reference` in prefill.rs; tests/prefill.rs checks each against it.
//
// Shared layout (all three). A pass holds `seqs` sequences; sequence s owns query rows
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

#if defined(TENSOR_CORES) || defined(WGMMA)
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
// mma(c, a, b0, b1, T()) and pack2(lo, hi, T()): common.cuh (decode attention uses them too).
// ANCHOR_END: tc_helpers
#endif

#ifdef TENSOR_CORES
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

#ifdef WGMMA
// ANCHOR: wgmma_helpers
// ---- 3. The Hopper version (sm_90a only): wgmma. ----------------------------------------------
// mma.sync is a warp's instruction and takes its operands from registers, so every K/V fragment
// passes through ldmatrix first; on Hopper that path reaches well under half of the tensor cores'
// rate. wgmma is a warpgroup's (4 warps, 128 threads): one instruction multiplies 64 rows by N
// columns, reads B (and here A for Q·Kᵀ) straight from shared memory through a 64-bit matrix
// descriptor, and runs asynchronously: it is issued, committed as a group, and waited for later,
// so the softmax of one tile can run while the tensor cores work on another.
// NWG warpgroups each own 64 query rows (WBQ rows per block); WBK keys per K/V tile; STAGES
// tiles in shared memory. With OVERLAP (FlashAttention-3's intra-warpgroup pipelining) tile j's
// P·V is issued right after tile j+1's Q·Kᵀ, and the softmax of j+1 runs while it computes.
// Measured on an H200 (7B shape, f16): 3 warpgroups × 64 keys without OVERLAP was fastest, about
// 0.6× PyTorch SDPA (FlashAttention-3-class kernels); what is left is mostly that every warp also
// copies K/V and runs the softmax in turn with the others, where FlashAttention-3 gives copying
// to a producer warp (TMA) and ping-pongs two warpgroups' softmax under each other's products.
#ifndef NWG
#define NWG 2
#endif
#ifndef WBK
#define WBK 128
#endif
#ifndef STAGES
#define STAGES 3
#endif
#ifndef OVERLAP
#define OVERLAP 1
#endif
#define WBQ (NWG * 64)
#define WG_THREADS (NWG * 128)
#define LAG (OVERLAP ? 2 : 1)  // a tile's buffer is free LAG iterations after it was first used
#if (HEAD_DIM != 64 && HEAD_DIM != 128) || (WBK != 64 && WBK != 128) || STAGES <= LAG
#error "prefill_attention_wgmma: HEAD_DIM and WBK are 64 or 128, STAGES > LAG"
#endif
typedef unsigned long long u64;

// ANCHOR: wgmma_smem
// Shared-memory tiles are in the 128-byte-swizzle layout the descriptors describe: a tile of R
// rows × HEAD_DIM is HEAD_DIM / 64 column blocks of R rows × 128 bytes, and in each group of 8
// rows (1024 bytes, 1024-aligned) the 16-byte chunk c of row r sits at chunk c ^ (r % 8), so the
// 8 rows of one chunk column are in 8 different bank groups.
__device__ __forceinline__ unsigned swz(int rows, int r, int c) {
    return (c / 8) * rows * 128 + r * 128 + (((c % 8) ^ (r % 8)) << 4);
}
// The descriptor: start address, leading-dimension byte offset (LBO), stride byte offset (SBO,
// 1024: the next group of 8 rows), swizzle mode 1 (128 bytes), addresses in 16-byte units.
// K-major operands (Q, K: the k index runs along a row) ignore LBO; for V, read N-major (its
// rows are keys, k; head dims, n, run along them), LBO is the step to the next 64 columns.
__device__ __forceinline__ u64 sw128_desc(unsigned addr, unsigned lbo) {
    return (u64)((addr & 0x3FFFF) >> 4)        // bits 0-13: start address
         | (u64)((lbo & 0x3FFFF) >> 4) << 16   // bits 16-29: leading-dimension byte offset
         | (u64)(1024 >> 4) << 32              // bits 32-45: stride byte offset
         | 1ull << 62;                         // bits 62-63: 128-byte swizzle
}
// ANCHOR_END: wgmma_smem
__device__ __forceinline__ void cp_async16_s(unsigned dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
// What cp.async (the generic proxy) wrote must be made visible to wgmma (the async proxy).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Registers a wgmma in flight writes must not be read (or moved) before its wait: this ties them
// to the program order of the asm statements.
template <int N> __device__ __forceinline__ void reg_fence(float (&r)[N]) {
    #pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}

#define WG_R32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WG_R64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
               "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WG_A8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_A32(d) WG_A8(d, 0), WG_A8(d, 8), WG_A8(d, 16), WG_A8(d, 24)
#define WG_A64(d) WG_A32(d), WG_A8(d, 32), WG_A8(d, 40), WG_A8(d, 48), WG_A8(d, 56)
// d (64 × N f32, N/2 per thread) (+)= A (64 × 16, shared, K-major) · B (16 × N, shared, K-major);
// `acc` 0 ignores d's old value (the first k-step of S = Q·Kᵀ).
#define WG_SS(N, REGS, IA, IB, IS, TY, ACC) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IS ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS \
                 ", %" IA ", %" IB ", p, 1, 1, 0, 0;\n}\n" : ACC : "l"(a), "l"(b), "r"(acc))
// d += A (64 × 16, registers: the mma.sync A fragment layout, per warp 16 rows) · B (shared, N-major).
#define WG_RS(N, REGS, A, IB, IS, TY, ACC) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IS ", 0;\nwgmma.mma_async.sync.aligned.m64n" N "k16.f32." TY "." TY " " REGS \
                 ", {" A "}, %" IB ", p, 1, 1, 1;\n}\n" : ACC : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1))
#if WBK == 64
__device__ __forceinline__ void wgmma_qk(float (&d)[32], u64 a, u64 b, int acc, f16) { WG_SS("64", WG_R32, "32", "33", "34", "f16", WG_A32(d)); }
__device__ __forceinline__ void wgmma_qk(float (&d)[32], u64 a, u64 b, int acc, bf16) { WG_SS("64", WG_R32, "32", "33", "34", "bf16", WG_A32(d)); }
#else
__device__ __forceinline__ void wgmma_qk(float (&d)[64], u64 a, u64 b, int acc, f16) { WG_SS("128", WG_R64, "64", "65", "66", "f16", WG_A64(d)); }
__device__ __forceinline__ void wgmma_qk(float (&d)[64], u64 a, u64 b, int acc, bf16) { WG_SS("128", WG_R64, "64", "65", "66", "bf16", WG_A64(d)); }
#endif
#if HEAD_DIM == 64
__device__ __forceinline__ void wgmma_pv(float (&d)[32], const unsigned a[4], u64 b, f16) { WG_RS("64", WG_R32, "%32,%33,%34,%35", "36", "37", "f16", WG_A32(d)); }
__device__ __forceinline__ void wgmma_pv(float (&d)[32], const unsigned a[4], u64 b, bf16) { WG_RS("64", WG_R32, "%32,%33,%34,%35", "36", "37", "bf16", WG_A32(d)); }
#else
__device__ __forceinline__ void wgmma_pv(float (&d)[64], const unsigned a[4], u64 b, f16) { WG_RS("128", WG_R64, "%64,%65,%66,%67", "68", "69", "f16", WG_A64(d)); }
__device__ __forceinline__ void wgmma_pv(float (&d)[64], const unsigned a[4], u64 b, bf16) { WG_RS("128", WG_R64, "%64,%65,%66,%67", "68", "69", "bf16", WG_A64(d)); }
#endif
__device__ __forceinline__ float fast_exp2(float x) {  // ex2.approx: 2^-inf = 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
// ANCHOR_END: wgmma_helpers

// ANCHOR: wgmma
// Dynamic shared memory (1024-aligned; the host asks for 1 KiB more): the Q tile (WBQ rows),
// STAGES K tiles, STAGES V tiles (WBK rows each), all swizzled as above.
// Warpgroup w's accumulators: S (64 × WBK) and O (64 × HEAD_DIM), f32; thread (warp, g = lane / 4,
// t = lane % 4) holds, per 8 columns n, (row 16·warp + g, cols 8n + 2t, +1) and (row + 8, same) —
// the mma.sync accumulator layout, so P's A fragments come out of S exactly as in version 2.
extern "C" __global__ void __launch_bounds__(WG_THREADS, 1) prefill_attention_wgmma(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ tables, const int* __restrict__ seq_start, const int* __restrict__ pos,
    T* __restrict__ out, int heads, int kv_heads, int block_size, int max_blocks, float scale_log2) {
    extern __shared__ __align__(1024) unsigned char wsmem[];
    const unsigned qs = (smem_addr(wsmem) + 1023) & ~1023u;
    constexpr unsigned TILE = WBK * HEAD_DIM * 2;  // bytes of one K or V tile
    const unsigned ks = qs + WBQ * HEAD_DIM * 2, vs = ks + STAGES * TILE;

    const int s = blockIdx.z, h = blockIdx.y, tid = threadIdx.x;
    const int q0 = seq_start[s], q_len = seq_start[s + 1] - q0;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * WBQ;
    if (r0 >= q_len) return;
    const int p0 = pos[q0], kvh = h / (heads / kv_heads);
    const int kv_end = p0 + min(q_len, r0 + WBQ);
    const int n_tiles = (kv_end + WBK - 1) / WBK;
    const int* table = tables + (size_t)s * max_blocks;
    const size_t kv_row = (size_t)kv_heads * HEAD_DIM;
    constexpr int CPR = HEAD_DIM / 8;  // 16-byte chunks per row

    for (int c = tid; c < WBQ * CPR; c += WG_THREADS) {
        const int r = c / CPR, ch = c % CPR;
        const bool ok = r0 + r < q_len;
        cp_async16_s(qs + swz(WBQ, r, ch), q + ((size_t)(q0 + (ok ? r0 + r : 0)) * heads + h) * HEAD_DIM + ch * 8, ok);
    }
    // K/V tiles come through the block table. Address arithmetic on the copying threads is what
    // this loop can least afford (a division by block_size per row would cost more instructions
    // than the softmax), so thread r < WBK works out row r's cache slot once per tile, one tile
    // ahead, into slots[tile & 1]: its table read is issued at the top of an iteration and
    // stored at the bottom, so its latency hides behind the tile's arithmetic. Each thread then
    // copies 16-byte chunk lch of rows lr, lr + ROW_STEP, … (ROW_STEP is a multiple of 8, so every
    // row of one thread has the same swizzle).
    __shared__ int slots[2][WBK];
    constexpr int ROW_STEP = WG_THREADS / CPR, KV_ITERS = (WBK + ROW_STEP - 1) / ROW_STEP;
    static_assert(ROW_STEP % 8 == 0, "a thread's rows must share their swizzle");
    const int lr = tid / CPR, lch = tid % CPR;
    auto fetch_page = [&](int tile) {  // the table entry of row tid of `tile` (−1: none)
        const int p = tile * WBK + tid;
        return tid < WBK && p < kv_end ? table[p / block_size] : -1;
    };
    auto store_slot = [&](int tile, int page) {
        if (tid < WBK) slots[tile & 1][tid] = page < 0 ? -1 : page * block_size + (tile * WBK + tid) % block_size;
    };
    auto load_kv = [&](int tile) {  // tile `tile` → buffer tile % STAGES (zeros past kv_end)
        const unsigned off = (tile % STAGES) * TILE + swz(WBK, lr, lch);
        #pragma unroll
        for (int i = 0; i < KV_ITERS; i++) {
            const int r = lr + i * ROW_STEP;
            if (r < WBK) {
                const int slot = slots[tile & 1][r];
                const size_t at = slot >= 0 ? (size_t)slot * kv_row + kvh * HEAD_DIM + lch * 8 : 0;
                cp_async16_s(ks + off + r * 128 - lr * 128, k_cache + at, slot >= 0);
                cp_async16_s(vs + off + r * 128 - lr * 128, v_cache + at, slot >= 0);
            }
        }
    };
    // Q and the first STAGES − LAG tiles; one commit group per tile (Q rides with tile 0).
    #pragma unroll
    for (int t = 0; t < STAGES - LAG; t++) {
        store_slot(t, fetch_page(t));
        __syncthreads();
        if (t < n_tiles) load_kv(t);
        cp_async_commit();
    }
    store_slot(STAGES - LAG, fetch_page(STAGES - LAG));

    const int wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int w0 = r0 + wg * 64;  // this warpgroup's first row
    // Tiles this warpgroup needs: up to the last key its last row sees (none past the sequence).
    const int n_mine = w0 >= q_len ? 0 : (p0 + min(w0 + 64, q_len) - 1) / WBK + 1;
    const int pos_a = p0 + w0 + warp * 16 + g, pos_b = pos_a + 8;  // this thread's two rows
    const u64 q_desc = sw128_desc(qs + wg * 64 * 128, 16);
    float o[HEAD_DIM / 2], sc[WBK / 2], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    unsigned pf[WBK / 16][4];  // P as wgmma A fragments, one per 16 keys
    #pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; i++) o[i] = 0.0f;
    #pragma unroll
    for (int i = 0; i < WBK / 16; i++) pf[i][0] = pf[i][1] = pf[i][2] = pf[i][3] = 0u;

    // ANCHOR: wgmma_pv_issue
    auto issue_pv = [&](int tile) {  // O += P · V of `tile` (P from registers)
        const u64 v_desc = sw128_desc(vs + (tile % STAGES) * TILE, WBK * 128);
        #pragma unroll
        for (int kk = 0; kk < WBK / 16; kk++)  // 16 keys per instruction
            wgmma_pv(o, pf[kk], v_desc + ((kk * 16 * 128) >> 4), T());
        wgmma_commit();
    };
    // ANCHOR_END: wgmma_pv_issue
    for (int j = 0; j < n_tiles; j++) {
        cp_async_wait<STAGES - LAG - 1>();  // this thread's copies of tile j have landed,
        fence_proxy_async();                // are visible to the tensor cores,
        __syncthreads();                    // and everyone's; tile j − LAG's buffer is free
        if (j + STAGES - LAG < n_tiles) load_kv(j + STAGES - LAG);
        cp_async_commit();
        const int next_page = fetch_page(j + STAGES - LAG + 1);  // stored at the bottom
        if (j < n_mine) {
            // ANCHOR: wgmma_qk_issue
            // S = Q Kᵀ over HEAD_DIM in k-steps of 16: 64-element column blocks, then 32 bytes
            // within one.
            const u64 k_desc = sw128_desc(ks + (j % STAGES) * TILE, 16);
            wgmma_fence();
            #pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++)
                wgmma_qk(sc, q_desc + (((kk / 4) * WBQ * 128 + (kk % 4) * 32) >> 4),
                         k_desc + (((kk / 4) * WBK * 128 + (kk % 4) * 32) >> 4), kk > 0, T());
            wgmma_commit();
            // ANCHOR_END: wgmma_qk_issue
#if OVERLAP
            // The previous tile's P · V runs while this tile's softmax does. At tile 0 it is
            // P = 0 times V of tile 0 (finite data): issuing it unconditionally keeps every wgmma
            // group in flight on one path; across a branch ptxas serializes them all (C7520).
            issue_pv(j > 0 ? j - 1 : 0);
            wgmma_wait<1>();  // S (the older group) is done
#else
            wgmma_wait<0>();
#endif
            reg_fence(sc);
            // Causal mask only on tiles that cross this warpgroup's diagonal; scores stay raw
            // (unscaled) and exp2(s · scale_log2 − m · scale_log2) is one FMA and one ex2.
            const bool diag = (j + 1) * WBK - 1 > p0 + w0;
            float mx[2] = {m[0], m[1]};
            #pragma unroll
            for (int n = 0; n < WBK / 8; n++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int kp = j * WBK + n * 8 + 2 * t4 + (e & 1);
                    if (diag && kp > (e < 2 ? pos_a : pos_b)) sc[n * 4 + e] = -INFINITY;
                }
                mx[0] = fmaxf(mx[0], fmaxf(sc[n * 4], sc[n * 4 + 1]));
                mx[1] = fmaxf(mx[1], fmaxf(sc[n * 4 + 2], sc[n * 4 + 3]));
            }
            float alpha[2], ms[2], rs[2] = {0.0f, 0.0f};
            #pragma unroll
            for (int i = 0; i < 2; i++) {  // a row's scores live in the 4 threads of a quad
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                alpha[i] = fast_exp2((m[i] - mx[i]) * scale_log2);  // finite mx: key 0 is in tile 0
                m[i] = mx[i];
                ms[i] = mx[i] * scale_log2;
            }
            #pragma unroll
            for (int n = 0; n < WBK / 8; n++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float p = fast_exp2(fmaf(sc[n * 4 + e], scale_log2, -ms[e / 2]));
                    sc[n * 4 + e] = p;
                    rs[e / 2] += p;
                }
            }
            l[0] = l[0] * alpha[0] + rs[0];  // quads add their shares at the end
            l[1] = l[1] * alpha[1] + rs[1];
#if OVERLAP
            wgmma_wait<0>();  // the previous P · V is done: O may be rescaled, pf rewritten
#endif
            reg_fence(o);
            #pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; n++) {
                o[n * 4] *= alpha[0];
                o[n * 4 + 1] *= alpha[0];
                o[n * 4 + 2] *= alpha[1];
                o[n * 4 + 3] *= alpha[1];
            }
            #pragma unroll
            for (int n = 0; n < WBK / 8; n++) {
                pf[n / 2][(n % 2) * 2] = pack2(sc[n * 4], sc[n * 4 + 1], T());
                pf[n / 2][(n % 2) * 2 + 1] = pack2(sc[n * 4 + 2], sc[n * 4 + 3], T());
            }
#if !OVERLAP
            wgmma_fence();
            issue_pv(j);
            wgmma_wait<0>();
            reg_fence(o);
#endif
        }
#if OVERLAP
        else if (j == n_mine && j > 0) {  // this warpgroup's last P · V
            wgmma_fence();
            issue_pv(j - 1);
            wgmma_wait<0>();
            reg_fence(o);
        }
#endif
        store_slot(j + STAGES - LAG + 1, next_page);  // read after the next iteration's barrier
    }
#if OVERLAP
    if (n_mine == n_tiles && n_mine > 0) {
        wgmma_fence();
        issue_pv(n_tiles - 1);
        wgmma_wait<0>();
        reg_fence(o);
    }
#endif
    if (n_mine == 0) return;
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        l[i] = 1.0f / l[i];
    }
    const int ra = w0 + warp * 16 + g, rb = ra + 8;
    #pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) {
        const int d = n * 8 + 2 * t4;
        if (ra < q_len)
            *reinterpret_cast<unsigned*>(out + ((size_t)(q0 + ra) * heads + h) * HEAD_DIM + d) = pack2(o[n * 4] * l[0], o[n * 4 + 1] * l[0], T());
        if (rb < q_len)
            *reinterpret_cast<unsigned*>(out + ((size_t)(q0 + rb) * heads + h) * HEAD_DIM + d) = pack2(o[n * 4 + 2] * l[1], o[n * 4 + 3] * l[1], T());
    }
}
// ANCHOR_END: wgmma
#endif
