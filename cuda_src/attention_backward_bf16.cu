// Flash attention backward on BF16 tensor cores (sm_80+): do, q, k, v, o, dq, dk, dv bfloat16; lse
// (from attention_forward_bf16) and delta float32. The formulas are attention_backward.cu's:
//   p_ij = exp(scale q_i.k_j - lse_i),  delta_i = do_i . o_i,  ds_ij = p_ij (do_i . v_j - delta_i)
//   dv_j = sum_i p_ij do_i,  dk_j = scale sum_i ds_ij q_i,  dq_i = scale sum_j ds_ij k_j
// Products are summed in float32 from exact bf16 values; p and ds are rounded to bf16 before
// they multiply (as FlashAttention-2 does), the gradients to bf16 at the end.
// Cost: 14 B H Tq Tk D FLOPs on tensor cores (about half causal): the dk/dv pass does four
// Tq x Tk x D products (s, dp, dv, dk), the dq pass three (s, dp, dq); 2 B H Tq Tk exps.
//
// Fast version (first cut, through the WMMA API), no atomics, so the result is the same on
// every run:
//   1. delta_i = do_i . o_i, one warp per query row, float32 sums;
//   2. dk, dv: a block of 4 warps owns 64 keys (16 per warp). It stages their k and v once and
//      each warp keeps its rows as a-fragments in registers; the shared memory then serves the
//      tiles of 32 queries that see any of the block's keys (causal: tiles before the first are
//      skipped): q and do staged, then per warp
//        s^T = k q^T and dp^T = v do^T (16 x 32, through shared memory), p^T and
//        ds^T = p^T (dp^T - delta) by two lanes per key row, stored as bf16;
//        dv += p^T do, dk += ds^T q into D/16 accumulator fragments each.
//      No rescaling is ever needed (p is final given lse), so the accumulators stay in the
//      tensor cores' registers for the whole pass.
//   3. dq: the same with the roles swapped: a block owns 64 queries (q and do as fragments),
//      walks the key tiles up to its last visible key staging k and v; dq += ds k.
// 40 KiB of static shared memory per block: the staged own rows share it with the tiles.
// Not yet: mma.sync with register-level p and ds, cp.async double buffering.
#include <cmath>

#include "attention_bf16.cuh"
#include "check.cuh"
#include "reduce.cuh"

using namespace nvcuda;

constexpr int GRADIENT_WARPS = 4;
constexpr int OWN_ROWS = GRADIENT_WARPS * FRAGMENT;   // keys (dk, dv) or queries (dq) per block
constexpr int DELTA_ROWS = 8;                          // query rows per block of the delta kernel

struct Bf16GradientTiles {
    union {
        __nv_bfloat16 own[2][OWN_ROWS][BF16_PITCH];   // (k, v) or (q, do) of the block, until in fragments
        struct {
            __nv_bfloat16 staged[2][BF16_TILE][BF16_PITCH];   // (q, do) or (k, v) of the tile
            float scores[OWN_ROWS][SCORE_PITCH];              // a warp's 16 rows of s, then dp; at the end, gradients
            __nv_bfloat16 weights[2][OWN_ROWS][WEIGHT_PITCH]; // p and ds
            float lse[BF16_TILE], delta[BF16_TILE];           // of the staged queries (dk, dv pass)
        } step;
    };
};

__global__ void attention_delta_bf16_kernel(const __nv_bfloat16* __restrict__ d_out,
                                            const __nv_bfloat16* __restrict__ o, float* __restrict__ delta,
                                            int64_t rows, int depth) {
    int64_t row = int64_t(blockIdx.x) * DELTA_ROWS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float total = 0.0f;
    for (int d = lane; d < depth; d += 32)
        total = fmaf(__bfloat162float(d_out[row * depth + d]), __bfloat162float(o[row * depth + d]), total);
    total = warp_sum(total);
    if (lane == 0) delta[row] = total;
}

// fragments[f] = the warp's 16 rows of `own`, columns 16 f ... 16 f + 15.
__device__ __forceinline__ void load_own_fragments(RowsFragment (&fragments)[DEPTH_FRAGMENTS],
                                                   const __nv_bfloat16 (*own)[BF16_PITCH], int warp,
                                                   int padded_depth) {
#pragma unroll
    for (int f = 0; f < DEPTH_FRAGMENTS; f++) {
        if (f * FRAGMENT >= padded_depth) break;
        wmma::load_matrix_sync(fragments[f], &own[warp * FRAGMENT][f * FRAGMENT], BF16_PITCH);
    }
}

// scores[16 warp + i][j] = own row i . staged row j, for the 32 staged rows, by one warp.
__device__ __forceinline__ void warp_products(float (*scores)[SCORE_PITCH],
                                              const RowsFragment (&own)[DEPTH_FRAGMENTS],
                                              const __nv_bfloat16 (*staged)[BF16_PITCH], int warp,
                                              int padded_depth) {
    SumFragment products[BF16_TILE / FRAGMENT];
    for (int j = 0; j < BF16_TILE / FRAGMENT; j++) wmma::fill_fragment(products[j], 0.0f);
#pragma unroll
    for (int f = 0; f < DEPTH_FRAGMENTS; f++) {
        if (f * FRAGMENT >= padded_depth) break;
        for (int j = 0; j < BF16_TILE / FRAGMENT; j++) {
            TransposedFragment rows;
            wmma::load_matrix_sync(rows, &staged[j * FRAGMENT][f * FRAGMENT], BF16_PITCH);
            wmma::mma_sync(products[j], own[f], rows, products[j]);
        }
    }
    for (int j = 0; j < BF16_TILE / FRAGMENT; j++)
        wmma::store_matrix_sync(&scores[warp * FRAGMENT][j * FRAGMENT], products[j], SCORE_PITCH,
                                wmma::mem_row_major);
}

// sums[f] += weights (the warp's 16 rows x 32) @ staged (32 rows x columns 16 f ...), by one warp.
__device__ __forceinline__ void add_products(SumFragment (&sums)[DEPTH_FRAGMENTS],
                                             const __nv_bfloat16 (*weights)[WEIGHT_PITCH],
                                             const __nv_bfloat16 (*staged)[BF16_PITCH], int warp,
                                             int padded_depth) {
    for (int j = 0; j < BF16_TILE / FRAGMENT; j++) {
        RowsFragment w;
        wmma::load_matrix_sync(w, &weights[warp * FRAGMENT][j * FRAGMENT], WEIGHT_PITCH);
#pragma unroll
        for (int f = 0; f < DEPTH_FRAGMENTS; f++) {
            if (f * FRAGMENT >= padded_depth) break;
            ColumnsFragment columns;
            wmma::load_matrix_sync(columns, &staged[j * FRAGMENT][f * FRAGMENT], BF16_PITCH);
            wmma::mma_sync(sums[f], w, columns, sums[f]);
        }
    }
}

__device__ __forceinline__ void clear(SumFragment (&sums)[DEPTH_FRAGMENTS]) {
#pragma unroll
    for (int f = 0; f < DEPTH_FRAGMENTS; f++) wmma::fill_fragment(sums[f], 0.0f);
}

__global__ void __launch_bounds__(GRADIENT_WARPS * 32)
attention_dkv_bf16_kernel(const __nv_bfloat16* __restrict__ d_out, const __nv_bfloat16* __restrict__ q,
                          const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                          const float* __restrict__ lse, const float* __restrict__ delta,
                          __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv, int n_queries, int n_keys,
                          int depth, bool causal, float scale) {
    __shared__ __align__(32) Bf16GradientTiles tiles;
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    d_out += head * n_queries * depth;
    lse += head * n_queries;
    delta += head * n_queries;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int first_key = blockIdx.x * OWN_ROWS, offset = n_keys - n_queries;
    int padded_depth = (depth + FRAGMENT - 1) / FRAGMENT * FRAGMENT;
    // Each lane owns half of one key row of its warp: row 16 warp + lane / 2, queries 16 (lane % 2) + j.
    int row = warp * FRAGMENT + lane / 2, half = lane % 2 * FRAGMENT, key = first_key + row;
    load_bf16_rows(tiles.own[0], OWN_ROWS, k + head * n_keys * depth, first_key, n_keys, depth, padded_depth);
    load_bf16_rows(tiles.own[1], OWN_ROWS, v + head * n_keys * depth, first_key, n_keys, depth, padded_depth);
    __syncthreads();
    RowsFragment keys[DEPTH_FRAGMENTS], values[DEPTH_FRAGMENTS];
    load_own_fragments(keys, tiles.own[0], warp, padded_depth);
    load_own_fragments(values, tiles.own[1], warp, padded_depth);
    SumFragment grad_k[DEPTH_FRAGMENTS], grad_v[DEPTH_FRAGMENTS];
    clear(grad_k);
    clear(grad_v);

    // Causal: key j is seen by queries i >= j - offset; start at the first query seeing the first key.
    int query_start = causal ? max(0, first_key - offset) : 0;
    for (int first_query = query_start; first_query < n_queries; first_query += BF16_TILE) {
        __syncthreads();  // the own rows (first tile) or the previous q, do tile are no longer read
        load_bf16_rows(tiles.step.staged[0], BF16_TILE, q, first_query, n_queries, depth, padded_depth);
        load_bf16_rows(tiles.step.staged[1], BF16_TILE, d_out, first_query, n_queries, depth, padded_depth);
        for (int i = threadIdx.x; i < BF16_TILE; i += blockDim.x) {
            bool inside = first_query + i < n_queries;
            tiles.step.lse[i] = inside ? lse[first_query + i] : 0.0f;
            tiles.step.delta[i] = inside ? delta[first_query + i] : 0.0f;
        }
        __syncthreads();
        float p[FRAGMENT];
        warp_products(tiles.step.scores, keys, tiles.step.staged[0], warp, padded_depth);
        __syncwarp();
        for (int j = 0; j < FRAGMENT; j++) {
            int query = first_query + half + j;
            bool visible = key < n_keys && query < n_queries && (!causal || key <= query + offset);
            p[j] = visible ? expf(scale * tiles.step.scores[row][half + j] - tiles.step.lse[half + j]) : 0.0f;
            tiles.step.weights[0][row][half + j] = __float2bfloat16(p[j]);
        }
        __syncwarp();  // s is read before dp overwrites it
        warp_products(tiles.step.scores, values, tiles.step.staged[1], warp, padded_depth);
        __syncwarp();
        for (int j = 0; j < FRAGMENT; j++) {
            float ds = p[j] * (tiles.step.scores[row][half + j] - tiles.step.delta[half + j]);
            tiles.step.weights[1][row][half + j] = __float2bfloat16(ds);
        }
        __syncwarp();  // p and ds are complete for the warp's mma
        add_products(grad_v, tiles.step.weights[0], tiles.step.staged[1], warp, padded_depth);
        add_products(grad_k, tiles.step.weights[1], tiles.step.staged[0], warp, padded_depth);
    }
    __nv_bfloat16* dk_row = key < n_keys ? dk + (head * n_keys + key) * depth : nullptr;
    __nv_bfloat16* dv_row = key < n_keys ? dv + (head * n_keys + key) * depth : nullptr;
    store_bf16_row(dk_row, grad_k, scale, &tiles.step.scores[warp * FRAGMENT], depth, padded_depth);
    store_bf16_row(dv_row, grad_v, 1.0f, &tiles.step.scores[warp * FRAGMENT], depth, padded_depth);
}

__global__ void __launch_bounds__(GRADIENT_WARPS * 32)
attention_dq_bf16_kernel(const __nv_bfloat16* __restrict__ d_out, const __nv_bfloat16* __restrict__ q,
                         const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                         const float* __restrict__ lse, const float* __restrict__ delta,
                         __nv_bfloat16* __restrict__ dq, int n_queries, int n_keys, int depth, bool causal,
                         float scale) {
    __shared__ __align__(32) Bf16GradientTiles tiles;
    int64_t head = blockIdx.y;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int first_query = blockIdx.x * OWN_ROWS, offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + OWN_ROWS) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    int padded_depth = (depth + FRAGMENT - 1) / FRAGMENT * FRAGMENT;
    // Each lane owns half of one query row of its warp: row 16 warp + lane / 2, keys 16 (lane % 2) + j.
    int row = warp * FRAGMENT + lane / 2, half = lane % 2 * FRAGMENT, query = first_query + row;
    bool live = query < n_queries;
    float row_lse = live ? lse[head * n_queries + query] : 0.0f;
    float row_delta = live ? delta[head * n_queries + query] : 0.0f;
    load_bf16_rows(tiles.own[0], OWN_ROWS, q + head * n_queries * depth, first_query, n_queries, depth,
                   padded_depth);
    load_bf16_rows(tiles.own[1], OWN_ROWS, d_out + head * n_queries * depth, first_query, n_queries, depth,
                   padded_depth);
    __syncthreads();
    RowsFragment queries[DEPTH_FRAGMENTS], grad_out[DEPTH_FRAGMENTS];
    load_own_fragments(queries, tiles.own[0], warp, padded_depth);
    load_own_fragments(grad_out, tiles.own[1], warp, padded_depth);
    SumFragment grad_q[DEPTH_FRAGMENTS];
    clear(grad_q);

    for (int first_key = 0; first_key < key_end; first_key += BF16_TILE) {
        __syncthreads();  // the own rows (first tile) or the previous k, v tile are no longer read
        load_bf16_rows(tiles.step.staged[0], BF16_TILE, k, first_key, n_keys, depth, padded_depth);
        load_bf16_rows(tiles.step.staged[1], BF16_TILE, v, first_key, n_keys, depth, padded_depth);
        __syncthreads();
        float p[FRAGMENT];
        warp_products(tiles.step.scores, queries, tiles.step.staged[0], warp, padded_depth);
        __syncwarp();
        for (int j = 0; j < FRAGMENT; j++) {
            int key = first_key + half + j;
            bool visible = live && key < n_keys && (!causal || key <= query + offset);
            p[j] = visible ? expf(scale * tiles.step.scores[row][half + j] - row_lse) : 0.0f;
        }
        __syncwarp();  // s is read before dp overwrites it
        warp_products(tiles.step.scores, grad_out, tiles.step.staged[1], warp, padded_depth);
        __syncwarp();
        for (int j = 0; j < FRAGMENT; j++) {
            float ds = p[j] * (tiles.step.scores[row][half + j] - row_delta);
            tiles.step.weights[1][row][half + j] = __float2bfloat16(ds);
        }
        __syncwarp();  // ds is complete for the warp's mma
        add_products(grad_q, tiles.step.weights[1], tiles.step.staged[0], warp, padded_depth);
    }
    __nv_bfloat16* dq_row = live ? dq + (head * n_queries + query) * depth : nullptr;
    store_bf16_row(dq_row, grad_q, scale, &tiles.step.scores[warp * FRAGMENT], depth, padded_depth);
}

void attention_backward_bf16(const __nv_bfloat16* d_out, const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, const __nv_bfloat16* o, const float* lse, float* delta,
                             __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, int heads, int n_queries,
                             int n_keys, int depth, bool causal, float scale, cudaStream_t stream) {
    if (heads == 0 || n_queries == 0 || n_keys == 0) return;
    int64_t rows = int64_t(heads) * n_queries;
    attention_delta_bf16_kernel<<<(rows + DELTA_ROWS - 1) / DELTA_ROWS, DELTA_ROWS * 32, 0, stream>>>(
        d_out, o, delta, rows, depth);
    CUDA_CHECK(cudaGetLastError());
    dim3 key_grid((n_keys + OWN_ROWS - 1) / OWN_ROWS, heads);
    attention_dkv_bf16_kernel<<<key_grid, GRADIENT_WARPS * 32, 0, stream>>>(d_out, q, k, v, lse, delta, dk, dv,
                                                                           n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
    dim3 query_grid((n_queries + OWN_ROWS - 1) / OWN_ROWS, heads);
    attention_dq_bf16_kernel<<<query_grid, GRADIENT_WARPS * 32, 0, stream>>>(d_out, q, k, v, lse, delta, dq,
                                                                            n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
}
