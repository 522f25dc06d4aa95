// Flash attention backward, float32 on CUDA cores. With p = softmax(scale q k^T + mask) recomputed
// from the forward's lse (p_ij = exp(scale q_i.k_j - lse_i)) and delta_i = do_i . o_i:
//   dv_j = sum_i p_ij do_i
//   ds_ij = p_ij (do_i . v_j - delta_i)
//   dq_i = scale sum_j ds_ij k_j,     dk_j = scale sum_i ds_ij q_i
// Shapes as in attention_forward.cu; the causal rule is the same (query i sees key j iff
// j <= i + Tk - Tq). Cost: ~10 B H Tq Tk D FLOPs here (p and dp recomputed in both passes),
// B H Tq Tk exps twice; bytes O(B H (Tq + Tk) D): no Tq x Tk matrix is ever stored.
//
// Fast version: three kernels, no atomics, so the result does not depend on scheduling:
//   1. delta_i = do_i . o_i, one warp per query row;
//   2. dq: one warp per query, tiles of 32 keys (k and v staged in shared memory), lane j
//      computes ds_ij and the warp adds sum_j ds_ij k_j into its registers (the forward's loop);
//   3. dk, dv: one warp per key, tiles of 32 queries (q, do, lse and delta staged), lane i
//      computes p_ij and ds_ij and the warp adds p_ij do_i and ds_ij q_i into its registers.
// Recomputing p in both passes costs FLOPs but keeps every accumulator private to one warp.
#include <cmath>

#include "attention.cuh"
#include "attention_tiles.cuh"
#include "check.cuh"

constexpr int ROWS_PER_BLOCK = 8;  // warps per block, one query (or key) each
constexpr int DELTA_WARPS = 8;

__global__ void attention_delta_kernel(const float* __restrict__ d_out, const float* __restrict__ o,
                                       float* __restrict__ delta, int64_t rows, int depth) {
    int64_t row = int64_t(blockIdx.x) * DELTA_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float total = 0.0f;
    for (int d = lane; d < depth; d += 32) total = fmaf(d_out[row * depth + d], o[row * depth + d], total);
    total = warp_sum(total);
    if (lane == 0) delta[row] = total;
}

__device__ __forceinline__ void store_row(float* row, const float (&values)[DEPTH_PER_LANE], float factor,
                                          int lane, int depth) {
#pragma unroll
    for (int c = 0; c < DEPTH_PER_LANE; c++) {
        if (lane + 32 * c < depth) row[lane + 32 * c] = factor * values[c];
    }
}

__global__ void __launch_bounds__(ROWS_PER_BLOCK * 32)
attention_dq_kernel(const float* __restrict__ d_out, const float* __restrict__ q, const float* __restrict__ k,
                    const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, int n_queries, int n_keys, int depth, bool causal, float scale) {
    __shared__ float k_tile[ROW_TILE][ROW_PITCH];
    __shared__ float v_tile[ROW_TILE][ROW_PITCH];
    __shared__ float q_rows[ROWS_PER_BLOCK][ATTENTION_MAX_DEPTH];
    __shared__ float do_rows[ROWS_PER_BLOCK][ATTENTION_MAX_DEPTH];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t head = blockIdx.y;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int first_query = blockIdx.x * ROWS_PER_BLOCK;
    int query = first_query + warp;
    bool active = query < n_queries;
    int64_t row = head * n_queries + query;
    int offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + ROWS_PER_BLOCK) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    float row_lse = 0.0f, row_delta = 0.0f;
    if (active) {
        load_row(q_rows[warp], q + row * depth, lane, depth);
        load_row(do_rows[warp], d_out + row * depth, lane, depth);
        row_lse = lse[row];
        row_delta = delta[row];
    }

    float grad[DEPTH_PER_LANE] = {};
    for (int first_key = 0; first_key < key_end; first_key += ROW_TILE) {
        __syncthreads();
        load_rows(k_tile, k, first_key, n_keys, depth);
        load_rows(v_tile, v, first_key, n_keys, depth);
        __syncthreads();
        if (!active) continue;
        int key = first_key + lane;
        bool visible = key < n_keys && (!causal || key <= query + offset);
        float p = visible ? expf(scale * dot_with_lane_row(q_rows[warp], k_tile, lane, depth) - row_lse) : 0.0f;
        float dp = dot_with_lane_row(do_rows[warp], v_tile, lane, depth);
        add_weighted_rows(grad, p * (dp - row_delta), k_tile, lane, depth);
    }
    if (active) store_row(dq + row * depth, grad, scale, lane, depth);
}

__global__ void __launch_bounds__(ROWS_PER_BLOCK * 32)
attention_dkv_kernel(const float* __restrict__ d_out, const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dk, float* __restrict__ dv, int n_queries, int n_keys, int depth,
                     bool causal, float scale) {
    __shared__ float q_tile[ROW_TILE][ROW_PITCH];
    __shared__ float do_tile[ROW_TILE][ROW_PITCH];
    __shared__ float k_rows[ROWS_PER_BLOCK][ATTENTION_MAX_DEPTH];
    __shared__ float v_rows[ROWS_PER_BLOCK][ATTENTION_MAX_DEPTH];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    d_out += head * n_queries * depth;
    lse += head * n_queries;
    delta += head * n_queries;
    int first_key = blockIdx.x * ROWS_PER_BLOCK;
    int key = first_key + warp;
    bool active = key < n_keys;
    int64_t row = head * n_keys + key;
    int offset = n_keys - n_queries;
    // Causal: key j is seen by queries i >= j - offset; start at the tile holding the first one.
    int query_start = causal ? max(0, first_key - offset) / ROW_TILE * ROW_TILE : 0;
    if (active) {
        load_row(k_rows[warp], k + row * depth, lane, depth);
        load_row(v_rows[warp], v + row * depth, lane, depth);
    }

    float grad_k[DEPTH_PER_LANE] = {}, grad_v[DEPTH_PER_LANE] = {};
    for (int first_query = query_start; first_query < n_queries; first_query += ROW_TILE) {
        __syncthreads();
        load_rows(q_tile, q, first_query, n_queries, depth);
        load_rows(do_tile, d_out, first_query, n_queries, depth);
        __syncthreads();
        if (!active) continue;
        int query = first_query + lane;
        bool visible = query < n_queries && (!causal || key <= query + offset);
        float p = visible ? expf(scale * dot_with_lane_row(k_rows[warp], q_tile, lane, depth) - lse[query]) : 0.0f;
        float dp = dot_with_lane_row(v_rows[warp], do_tile, lane, depth);
        float ds = visible ? p * (dp - delta[query]) : 0.0f;
        add_weighted_rows(grad_v, p, do_tile, lane, depth);
        add_weighted_rows(grad_k, ds, q_tile, lane, depth);
    }
    if (!active) return;
    store_row(dk + row * depth, grad_k, scale, lane, depth);
    store_row(dv + row * depth, grad_v, 1.0f, lane, depth);
}

void attention_backward(const float* d_out, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, float* delta, float* dq, float* dk, float* dv,
                        int heads, int n_queries, int n_keys, int depth, bool causal, float scale,
                        cudaStream_t stream) {
    if (heads == 0 || n_queries == 0 || n_keys == 0) return;
    int64_t rows = int64_t(heads) * n_queries;
    attention_delta_kernel<<<(rows + DELTA_WARPS - 1) / DELTA_WARPS, DELTA_WARPS * 32, 0, stream>>>(
        d_out, o, delta, rows, depth);
    CUDA_CHECK(cudaGetLastError());
    dim3 query_grid((n_queries + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, heads);
    attention_dq_kernel<<<query_grid, ROWS_PER_BLOCK * 32, 0, stream>>>(d_out, q, k, v, lse, delta, dq, n_queries,
                                                                       n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
    dim3 key_grid((n_keys + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK, heads);
    attention_dkv_kernel<<<key_grid, ROWS_PER_BLOCK * 32, 0, stream>>>(d_out, q, k, v, lse, delta, dk, dv,
                                                                      n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
}
