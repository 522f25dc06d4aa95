// Flash attention forward on BF16 tensor cores (sm_80+): q, k, v and o bfloat16, lse float32,
//   o = softmax(scale q k^T + mask) v,   lse_i = log sum_j exp(scale q_i.k_j)  (natural log)
// with the same shapes and causal rule as attention_forward.cu. The products q.k and p v are
// summed in float32 from the exact bf16 values (the tensor cores' products of bf16 are exact);
// the softmax statistics (row max, sum of exps, lse) are float32; p is rounded to bf16 before
// p v, and o to bf16 at the end: o is within ~1e-2 relative of the float64 attention of the
// bf16 inputs.
// Cost: 6 B H Tq Tk D FLOPs on tensor cores (q k^T twice, see below; about half causal),
// B H Tq Tk exps; at best 2 B H (2 Tq + 2 Tk) D + 4 B H Tq bytes.
//
// Fast version (first cut, through the WMMA API, whose fragments the host emulation models):
//   a block of 4 warps holds BF16_QUERIES (64) query rows of one (batch, head) in shared memory,
//   16 rows per warp, and walks the tiles of BF16_KEYS (32) keys up to its last visible key:
//     s = q k^T per warp: 16 x 32 from 2 accumulator fragments, D/16 mma steps each;
//   WMMA's fragment layout is opaque, so a fragment cannot be rescaled row by row as
//   FlashAttention-2's online softmax rescales o. Instead two sweeps over the keys:
//     1. s per tile, stored to shared memory; two lanes per row keep the row's running max;
//     2. s again, p = exp(scale s - max) with the final max (no rescaling ever), the row sums in
//        float32, p stored as bf16; then the block stages the v tile and each warp adds p v into
//        its D/16 accumulator fragments (o stays in registers for the whole sweep).
//   The accumulators pass through shared memory once at the end, divided by the row sums.
// The extra q k^T (3 products instead of 2) buys accumulators that never leave the tensor cores'
// registers. q, k (or v), s and p share 43 KiB of static shared memory.
// Not yet: mma.sync with register-level softmax (one sweep), cp.async double buffering.
#include <cmath>

#include "attention_bf16.cuh"
#include "check.cuh"

using namespace nvcuda;

constexpr int BF16_QUERIES = 64;
constexpr int BF16_KEYS = BF16_TILE;
constexpr int BF16_WARPS = 4;                                 // 16 query rows each

struct Bf16AttentionTiles {
    __nv_bfloat16 q[BF16_QUERIES][BF16_PITCH];
    __nv_bfloat16 kv[BF16_KEYS][BF16_PITCH];   // the k tile, then the v tile
    float s[BF16_QUERIES][SCORE_PITCH];        // a warp's 16 rows of s; at the end, of o
    __nv_bfloat16 p[BF16_QUERIES][WEIGHT_PITCH];
};

// tiles.s[16 warp + i][j] = q_(16 warp + i) . k_j over the staged key tile, by one warp.
__device__ void warp_scores(Bf16AttentionTiles& tiles, int warp, int padded_depth) {
    SumFragment scores[BF16_KEYS / FRAGMENT];
    for (int j = 0; j < BF16_KEYS / FRAGMENT; j++) wmma::fill_fragment(scores[j], 0.0f);
    for (int d = 0; d < padded_depth; d += FRAGMENT) {
        RowsFragment q;
        wmma::load_matrix_sync(q, &tiles.q[warp * FRAGMENT][d], BF16_PITCH);
        for (int j = 0; j < BF16_KEYS / FRAGMENT; j++) {
            TransposedFragment k;
            wmma::load_matrix_sync(k, &tiles.kv[j * FRAGMENT][d], BF16_PITCH);
            wmma::mma_sync(scores[j], q, k, scores[j]);
        }
    }
    for (int j = 0; j < BF16_KEYS / FRAGMENT; j++)
        wmma::store_matrix_sync(&tiles.s[warp * FRAGMENT][j * FRAGMENT], scores[j], SCORE_PITCH, wmma::mem_row_major);
}

// The block stages the key tile at first_key; then each warp scores its rows against it (tiles.s).
__device__ void score_key_tile(Bf16AttentionTiles& tiles, const __nv_bfloat16* k, int first_key, int n_keys,
                               int depth, int padded_depth, int warp) {
    __syncthreads();  // the previous k or v tile is no longer read (and q is complete)
    load_bf16_rows(tiles.kv, BF16_KEYS, k, first_key, n_keys, depth, padded_depth);
    __syncthreads();
    warp_scores(tiles, warp, padded_depth);
    __syncwarp();     // s is complete for every lane of the warp
}

__global__ void __launch_bounds__(BF16_WARPS * 32)
attention_forward_bf16_kernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o,
                              float* __restrict__ lse, int n_queries, int n_keys, int depth, bool causal,
                              float scale) {
    __shared__ __align__(32) Bf16AttentionTiles tiles;
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int first_query = blockIdx.x * BF16_QUERIES, offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + BF16_QUERIES) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    int padded_depth = (depth + FRAGMENT - 1) / FRAGMENT * FRAGMENT;
    // Each lane owns half of one row of its warp's s: row 16 warp + lane / 2, keys 16 (lane % 2) + j.
    int row = warp * FRAGMENT + lane / 2, half = lane % 2 * FRAGMENT, query = first_query + row;
    load_bf16_rows(tiles.q, BF16_QUERIES, q, first_query, n_queries, depth, padded_depth);

    float row_max = -INFINITY;
    for (int first_key = 0; first_key < key_end; first_key += BF16_KEYS) {
        score_key_tile(tiles, k, first_key, n_keys, depth, padded_depth, warp);
        for (int j = 0; j < FRAGMENT; j++) {
            int key = first_key + half + j;
            bool visible = key < n_keys && (!causal || key <= query + offset);
            if (visible) row_max = fmaxf(row_max, scale * tiles.s[row][half + j]);
        }
    }
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
    bool live = query < n_queries;   // rows past the end have no visible key (row_max -inf)

    float row_sum = 0.0f;
    SumFragment out[DEPTH_FRAGMENTS];
#pragma unroll
    for (int f = 0; f < DEPTH_FRAGMENTS; f++) wmma::fill_fragment(out[f], 0.0f);
    for (int first_key = 0; first_key < key_end; first_key += BF16_KEYS) {
        score_key_tile(tiles, k, first_key, n_keys, depth, padded_depth, warp);
        for (int j = 0; j < FRAGMENT; j++) {
            int key = first_key + half + j;
            bool visible = live && key < n_keys && (!causal || key <= query + offset);
            float p = visible ? expf(scale * tiles.s[row][half + j] - row_max) : 0.0f;
            row_sum += p;
            tiles.p[row][half + j] = __float2bfloat16(p);
        }
        __syncthreads();  // the k tile is no longer read; p is complete
        load_bf16_rows(tiles.kv, BF16_KEYS, v, first_key, n_keys, depth, padded_depth);
        __syncthreads();
        for (int j = 0; j < BF16_KEYS; j += FRAGMENT) {
            RowsFragment p;
            wmma::load_matrix_sync(p, &tiles.p[warp * FRAGMENT][j], WEIGHT_PITCH);
#pragma unroll
            for (int f = 0; f < DEPTH_FRAGMENTS; f++) {
                if (f * FRAGMENT >= padded_depth) break;
                ColumnsFragment values;
                wmma::load_matrix_sync(values, &tiles.kv[j][f * FRAGMENT], BF16_PITCH);
                wmma::mma_sync(out[f], p, values, out[f]);
            }
        }
    }
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);

    __nv_bfloat16* o_row = live ? o + (head * n_queries + query) * depth : nullptr;
    store_bf16_row(o_row, out, 1.0f / row_sum, &tiles.s[warp * FRAGMENT], depth, padded_depth);
    if (live && half == 0) lse[head * n_queries + query] = row_max + logf(row_sum);
}

void attention_forward_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                            __nv_bfloat16* o, float* lse, int heads, int n_queries, int n_keys, int depth,
                            bool causal, float scale, cudaStream_t stream) {
    if (heads == 0 || n_queries == 0) return;
    dim3 grid((n_queries + BF16_QUERIES - 1) / BF16_QUERIES, heads);
    attention_forward_bf16_kernel<<<grid, BF16_WARPS * 32, 0, stream>>>(q, k, v, o, lse, n_queries, n_keys, depth,
                                                                         causal, scale);
    CUDA_CHECK(cudaGetLastError());
}
