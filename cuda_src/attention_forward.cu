// Flash attention forward, float32 on CUDA cores:
//   o = softmax(scale q k^T + mask) v,   lse_i = log sum_j exp(scale q_i.k_j)  (natural log)
// q, o (B, H, Tq, D); k, v (B, H, Tk, D); lse (B, H, Tq). Causal: query i sees key j iff
// j <= i + (Tk - Tq) (bottom-right aligned, as FlashAttention-2 and pyai's CPU kernel).
// Cost: 4 B H Tq Tk D FLOPs (about half causal) and B H Tq Tk exps; at best
// 4 B H (2 Tq + 2 Tk) D bytes: the Tq x Tk scores never reach memory.
//
// Fast version (FlashAttention-2's loop order, one warp per query):
//   a block holds QUERIES_PER_BLOCK queries of one (batch, head), one per warp, each query row
//   in shared memory; for each tile of 32 keys (up to the block's last visible key):
//     the block stages the k and v tiles in shared memory (padded rows: no bank conflicts);
//     lane j computes the score of key j; the warp takes the tile's max and the new running
//     max with shuffles; lane j holds p_j = exp(s_j - max);
//     the running sum and o are rescaled by exp(old max - new max), and o += sum_j p_j v_j,
//     each lane owning D/32 columns of o in registers and p_j broadcast by shuffle.
//   o = o / sum, lse = max + log(sum).
// Each k and v tile read from memory serves QUERIES_PER_BLOCK queries.
#include <cmath>

#include "attention.cuh"
#include "attention_tiles.cuh"
#include "check.cuh"

constexpr int QUERIES_PER_BLOCK = 16;  // warps per block, one query each

__global__ void __launch_bounds__(QUERIES_PER_BLOCK * 32)
attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         float* __restrict__ o, float* __restrict__ lse, int n_queries, int n_keys, int depth,
                         bool causal, float scale) {
    __shared__ float k_tile[ROW_TILE][ROW_PITCH];
    __shared__ float v_tile[ROW_TILE][ROW_PITCH];
    __shared__ float q_rows[QUERIES_PER_BLOCK][ATTENTION_MAX_DEPTH];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int first_query = blockIdx.x * QUERIES_PER_BLOCK;
    int query = first_query + warp;
    bool active = query < n_queries;  // idle warps still help load tiles and meet the barriers
    int offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + QUERIES_PER_BLOCK) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    if (active) load_row(q_rows[warp], q + int64_t(query) * depth, lane, depth);

    float row_max = -INFINITY, row_sum = 0.0f;
    float out[DEPTH_PER_LANE] = {};
    for (int first_key = 0; first_key < key_end; first_key += ROW_TILE) {
        __syncthreads();  // the previous tiles are no longer read
        load_rows(k_tile, k, first_key, n_keys, depth);
        load_rows(v_tile, v, first_key, n_keys, depth);
        __syncthreads();
        if (!active) continue;
        int key = first_key + lane;
        bool visible = key < n_keys && (!causal || key <= query + offset);
        float score = visible ? scale * dot_with_lane_row(q_rows[warp], k_tile, lane, depth) : -INFINITY;
        // The first tile holds key 0, which every query sees, so new_max is finite from then on.
        float new_max = fmaxf(row_max, warp_max(score));
        float p = expf(score - new_max);
        float correction = expf(row_max - new_max);
        row_sum = row_sum * correction + warp_sum(p);
#pragma unroll
        for (int c = 0; c < DEPTH_PER_LANE; c++) out[c] *= correction;
        add_weighted_rows(out, p, v_tile, lane, depth);
        row_max = new_max;
    }
    if (!active) return;
    float* o_row = o + (head * n_queries + query) * depth;
#pragma unroll
    for (int c = 0; c < DEPTH_PER_LANE; c++) {
        if (lane + 32 * c < depth) o_row[lane + 32 * c] = out[c] / row_sum;
    }
    if (lane == 0) lse[head * n_queries + query] = row_max + logf(row_sum);
}

void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int heads,
                       int n_queries, int n_keys, int depth, bool causal, float scale,
                       cudaStream_t stream) {
    if (heads == 0 || n_queries == 0) return;
    dim3 grid((n_queries + QUERIES_PER_BLOCK - 1) / QUERIES_PER_BLOCK, heads);
    attention_forward_kernel<<<grid, QUERIES_PER_BLOCK * 32, 0, stream>>>(q, k, v, o, lse, n_queries, n_keys,
                                                                         depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
}
