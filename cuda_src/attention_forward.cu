// Flash attention forward, float32 on CUDA cores:
//   o = softmax(scale q k^T + mask) v,   lse_i = log sum_j exp(scale q_i.k_j)  (natural log)
// q, o (B, H, Tq, D); k, v (B, H, Tk, D); lse (B, H, Tq). Causal: query i sees key j iff
// j <= i + (Tk - Tq) (bottom-right aligned, as FlashAttention-2 and pyai's CPU kernel).
// Cost: 4 B H Tq Tk D FLOPs (about half causal) and B H Tq Tk exps; at best
// 4 B H (2 Tq + 2 Tk) D bytes: the Tq x Tk scores never reach memory.
//
// Fast version (FlashAttention-2's loop order and register tiling):
//   a block of 128 threads holds BLOCK_QUERIES (64) query rows of one (batch, head), q staged
//   in shared memory transposed (q_t[d][row]); for each tile of KEY_TILE (32) keys, up to the
//   block's last visible key:
//     S = q k^T for the tile: thread (row group ty, key group tx) computes a 4 x 4 micro-tile
//     from two float4 loads per d (q_t[d][4 rows], k_t[d][4 keys]): 16 FMAs per 2 shared loads;
//     each row's max and sum of exps go across the 8 threads that share the row (shuffles),
//     with the online rescaling of the running sum and of o;
//     o += P v: the block reloads the shared buffer with the v tile; each thread adds to its
//     4 rows x D/8 columns of o, p_ij broadcast from the thread that holds it by shuffle.
//   o = o / sum, lse = max + log(sum).
// Each k and v tile read from memory serves 64 queries; q, k and v share 48 KiB of static
// shared memory (k and v take turns in one buffer).
#include <cmath>

#include "attention.cuh"
#include "check.cuh"

constexpr int BLOCK_QUERIES = 64;
constexpr int KEY_TILE = 32;
constexpr int THREADS = 128;                              // 16 row groups x 8 key groups
constexpr int ROWS_PER_THREAD = 4;
constexpr int KEY_GROUPS = KEY_TILE / 4;                  // 8 threads share a row
constexpr int COLUMN_GROUPS = ATTENTION_MAX_DEPTH / 32;   // o columns per thread: 4 x this
static_assert(THREADS == (BLOCK_QUERIES / ROWS_PER_THREAD) * KEY_GROUPS, "one thread per 4 x 4 micro-tile");

// tile[d * width + r] = rows[(first + r) * depth + d] for r < width (zero past n_rows): transposed,
// so that a thread's 4 consecutive rows (or keys) at one d are one float4.
__device__ __forceinline__ void load_transposed(float* tile, int width, const float* rows, int first, int n_rows,
                                                int depth) {
    for (int i = threadIdx.x; i < width * depth; i += THREADS) {
        int r = i / depth, d = i % depth;
        tile[d * width + r] = first + r < n_rows ? rows[int64_t(first + r) * depth + d] : 0.0f;
    }
}

// tile[j * ATTENTION_MAX_DEPTH + d] = rows[(first + j) * depth + d] for j < KEY_TILE (zero past n_rows).
__device__ __forceinline__ void load_rows(float* tile, const float* rows, int first, int n_rows, int depth) {
    for (int i = threadIdx.x; i < KEY_TILE * depth; i += THREADS) {
        int j = i / depth, d = i % depth;
        tile[j * ATTENTION_MAX_DEPTH + d] = first + j < n_rows ? rows[int64_t(first + j) * depth + d] : 0.0f;
    }
}

__device__ __forceinline__ float group_max(float x) {  // over the 8 threads of a row
    for (int offset = 1; offset < KEY_GROUPS; offset *= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

__device__ __forceinline__ float group_sum(float x) {
    for (int offset = 1; offset < KEY_GROUPS; offset *= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__global__ void __launch_bounds__(THREADS)
attention_forward_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         float* __restrict__ o, float* __restrict__ lse, int n_queries, int n_keys, int depth,
                         bool causal, float scale) {
    __shared__ __align__(16) float q_t[ATTENTION_MAX_DEPTH * BLOCK_QUERIES];
    __shared__ __align__(16) float kv[ATTENTION_MAX_DEPTH * KEY_TILE];   // k_t[d][key], then v[key][d]
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int ty = threadIdx.x / KEY_GROUPS, tx = threadIdx.x % KEY_GROUPS, lane = threadIdx.x % 32;
    int first_query = blockIdx.x * BLOCK_QUERIES;
    int offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + BLOCK_QUERIES) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    load_transposed(q_t, BLOCK_QUERIES, q, first_query, n_queries, depth);

    float row_max[ROWS_PER_THREAD], row_sum[ROWS_PER_THREAD], out[ROWS_PER_THREAD][4 * COLUMN_GROUPS] = {};
    for (int i = 0; i < ROWS_PER_THREAD; i++) row_max[i] = -INFINITY, row_sum[i] = 0.0f;
    for (int first_key = 0; first_key < key_end; first_key += KEY_TILE) {
        __syncthreads();  // the previous v tile is no longer read (and q_t is complete)
        load_transposed(kv, KEY_TILE, k, first_key, n_keys, depth);
        __syncthreads();
        float s[ROWS_PER_THREAD][4] = {};
        for (int d = 0; d < depth; d++) {
            float4 q4 = *reinterpret_cast<const float4*>(&q_t[d * BLOCK_QUERIES + ty * 4]);
            float4 k4 = *reinterpret_cast<const float4*>(&kv[d * KEY_TILE + tx * 4]);
            float qs[4] = {q4.x, q4.y, q4.z, q4.w}, ks[4] = {k4.x, k4.y, k4.z, k4.w};
            for (int i = 0; i < ROWS_PER_THREAD; i++)
                for (int j = 0; j < 4; j++) s[i][j] = fmaf(qs[i], ks[j], s[i][j]);
        }
        for (int i = 0; i < ROWS_PER_THREAD; i++) {
            int query = first_query + ty * 4 + i;
            float tile_max = -INFINITY;
            for (int j = 0; j < 4; j++) {
                int key = first_key + tx * 4 + j;
                bool visible = key < n_keys && (!causal || key <= query + offset);
                s[i][j] = visible ? scale * s[i][j] : -INFINITY;
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            // The first tile holds key 0, which every query sees, so new_max is finite from then on.
            float new_max = fmaxf(row_max[i], group_max(tile_max));
            float correction = expf(row_max[i] - new_max), tile_sum = 0.0f;
            for (int j = 0; j < 4; j++) {
                s[i][j] = expf(s[i][j] - new_max);
                tile_sum += s[i][j];
            }
            row_sum[i] = row_sum[i] * correction + group_sum(tile_sum);
            row_max[i] = new_max;
            for (int c = 0; c < 4 * COLUMN_GROUPS; c++) out[i][c] *= correction;
        }
        __syncthreads();  // k_t is no longer read
        load_rows(kv, v, first_key, n_keys, depth);
        __syncthreads();
#pragma unroll  // key % 4 must be a constant: s stays in registers
        for (int key = 0; key < KEY_TILE; key++) {
            int owner = (lane & ~(KEY_GROUPS - 1)) | (key / 4);   // the thread of this row group holding p[.][key]
            for (int i = 0; i < ROWS_PER_THREAD; i++) {
                float p = __shfl_sync(0xffffffffu, s[i][key % 4], owner);
                for (int c = 0; c < COLUMN_GROUPS; c++) {
                    if (32 * c >= depth) break;
                    float4 v4 = *reinterpret_cast<const float4*>(&kv[key * ATTENTION_MAX_DEPTH + 32 * c + tx * 4]);
                    out[i][4 * c] = fmaf(p, v4.x, out[i][4 * c]);
                    out[i][4 * c + 1] = fmaf(p, v4.y, out[i][4 * c + 1]);
                    out[i][4 * c + 2] = fmaf(p, v4.z, out[i][4 * c + 2]);
                    out[i][4 * c + 3] = fmaf(p, v4.w, out[i][4 * c + 3]);
                }
            }
        }
    }
    for (int i = 0; i < ROWS_PER_THREAD; i++) {
        int query = first_query + ty * 4 + i;
        if (query >= n_queries) break;
        float* o_row = o + (head * n_queries + query) * depth;
        for (int c = 0; c < COLUMN_GROUPS; c++) {
            for (int e = 0; e < 4; e++) {
                int column = 32 * c + tx * 4 + e;
                if (column < depth) o_row[column] = out[i][4 * c + e] / row_sum[i];
            }
        }
        if (tx == 0) lse[head * n_queries + query] = row_max[i] + logf(row_sum[i]);
    }
}

void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int heads,
                       int n_queries, int n_keys, int depth, bool causal, float scale,
                       cudaStream_t stream) {
    if (heads == 0 || n_queries == 0) return;
    dim3 grid((n_queries + BLOCK_QUERIES - 1) / BLOCK_QUERIES, heads);
    attention_forward_kernel<<<grid, THREADS, 0, stream>>>(q, k, v, o, lse, n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
}
