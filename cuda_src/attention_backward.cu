// Flash attention backward, float32 on CUDA cores. With p = softmax(scale q k^T + mask) recomputed
// from the forward's lse (p_ij = exp(scale q_i.k_j - lse_i)) and delta_i = do_i . o_i:
//   dv_j = sum_i p_ij do_i
//   ds_ij = p_ij (do_i . v_j - delta_i)
//   dq_i = scale sum_j ds_ij k_j,     dk_j = scale sum_i ds_ij q_i
// Shapes as in attention_forward.cu; the causal rule is the same (query i sees key j iff
// j <= i + Tk - Tq). Cost: 14 B H Tq Tk D FLOPs (about half causal): the dk/dv pass does four
// Tq x Tk x D products (s, dp, dv, dk), the dq pass three (s, dp, dq); 2 B H Tq Tk exps. Bytes:
// O(B H (Tq + Tk) D) from memory, no Tq x Tk matrix ever stored; each staged tile is read from
// L2 once per block that uses it.
//
// FlashAttention-2's form, with dq in a separate pass instead of atomics (5 products instead
// of 7, but a result that depends on the order the blocks add in); here no atomics at all, so
// the result is the same on every run:
//   1. delta_i = do_i . o_i, one warp per query row;
//   2. dk, dv: a block owns ROWS keys (64 for D <= 64, 32 up to D 128: the static 48 KiB of
//      shared memory), k and v staged once, transposed (k_t[d][key]); it walks the tiles of
//      TILE (32) queries that see any of its keys (causal: whole tiles before the first are
//      skipped). Per tile, the query-side rows pass through one shared buffer three times:
//        q_t:  s = k q^T, thread (key group ty, query group tx) a 4 x 4 micro-tile from two
//              float4 loads per d (16 FMAs per 2 shared loads); p = exp(scale s - lse);
//        do_t: dp = v do^T the same way, ds = p (dp - delta); dv += p do;
//        q_t:  dk += ds q.
//      The accumulations read float4s of 4 queries of one column of the staged tile, with p or
//      ds broadcast from the thread that holds them by shuffle (16 FMAs per load). A thread
//      keeps 4 keys x D/8 columns of dk and dv in registers.
//   3. dq: the same with the roles swapped: a block owns ROWS queries (q and do staged once),
//      walks the key tiles up to its last visible key (causal), staging k_t, v_t, k_t; dq in
//      registers.
// The staged tiles are swizzled (the float4 group of 4 rows xor the column mod 8) so that the
// float4 reads of both phases fall in distinct banks.
#include <cmath>

#include "attention.cuh"
#include "check.cuh"
#include "reduce.cuh"

constexpr int DELTA_WARPS = 8;
constexpr int TILE = 32;                  // staged rows per step: queries (dk, dv) or keys (dq)
constexpr int MICRO = 4;                  // a thread's micro-tile: 4 own rows x 4 staged rows
constexpr int GROUPS = TILE / MICRO;      // 8 threads, consecutive lanes, share 4 own rows

template <int MAX_DEPTH>
struct Blocking {
    static constexpr int ROWS = MAX_DEPTH <= 64 ? 64 : 32;   // rows a block owns
    static constexpr int THREADS = ROWS / MICRO * GROUPS;
    static constexpr int COLUMNS = MAX_DEPTH / GROUPS;       // accumulator columns per thread
};

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

// Where staged row r, column d lives: rows in float4 groups, the group xor (d mod 8).
__device__ __forceinline__ int staged_index(int d, int r) { return d * TILE + ((r / 4 ^ d % GROUPS) * 4) + r % 4; }

// own_t[d * ROWS + r] = rows[first + r][d] (zero past n_rows), by all threads of the block.
template <int ROWS>
__device__ void load_own(float* own_t, const float* rows, int first, int n_rows, int depth) {
    for (int i = threadIdx.x; i < ROWS * depth; i += blockDim.x) {
        int r = i / depth, d = i % depth;
        own_t[d * ROWS + r] = first + r < n_rows ? rows[int64_t(first + r) * depth + d] : 0.0f;
    }
}

// staged[staged_index(d, r)] = rows[first + r][d] for r < TILE (zero past n_rows).
__device__ void load_staged(float* staged, const float* rows, int first, int n_rows, int depth) {
    for (int i = threadIdx.x; i < TILE * depth; i += blockDim.x) {
        int r = i / depth, d = i % depth;
        staged[staged_index(d, r)] = first + r < n_rows ? rows[int64_t(first + r) * depth + d] : 0.0f;
    }
}

// s[i][j] = own row (4 ty + i) . staged row (4 tx + j)
template <int ROWS>
__device__ __forceinline__ void micro_products(float (&s)[MICRO][MICRO], const float* own_t, const float* staged,
                                               int ty, int tx, int depth) {
    for (int i = 0; i < MICRO; i++)
        for (int j = 0; j < MICRO; j++) s[i][j] = 0.0f;
    for (int d = 0; d < depth; d++) {
        float4 a4 = *reinterpret_cast<const float4*>(&own_t[d * ROWS + ty * MICRO]);
        float4 b4 = *reinterpret_cast<const float4*>(&staged[staged_index(d, tx * MICRO)]);
        float as[MICRO] = {a4.x, a4.y, a4.z, a4.w}, bs[MICRO] = {b4.x, b4.y, b4.z, b4.w};
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) s[i][j] = fmaf(as[i], bs[j], s[i][j]);
    }
}

// sum[i][c] += sum_r w(4 ty + i, r) staged[r][tx + 8 c] over the TILE staged rows, where w(., r)
// is held as `weights` by the thread of this row group with query (or key) group r / 4.
template <int COLUMNS>
__device__ __forceinline__ void add_weighted(float (&sum)[MICRO][COLUMNS], const float (&weights)[MICRO][MICRO],
                                             const float* staged, int tx, int depth) {
    int lane = threadIdx.x % 32;
    for (int group = 0; group < GROUPS; group++) {
        int owner = (lane & ~(GROUPS - 1)) | group;
        float w[MICRO][MICRO];
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) w[i][j] = __shfl_sync(0xffffffffu, weights[i][j], owner);
        for (int c = 0; c < COLUMNS; c++) {
            int column = tx + GROUPS * c;
            if (column >= depth) break;
            float4 x4 = *reinterpret_cast<const float4*>(&staged[staged_index(column, group * MICRO)]);
            for (int i = 0; i < MICRO; i++) {
                float total = fmaf(w[i][0], x4.x, sum[i][c]);
                total = fmaf(w[i][1], x4.y, total);
                total = fmaf(w[i][2], x4.z, total);
                sum[i][c] = fmaf(w[i][3], x4.w, total);
            }
        }
    }
}

// p = exp(scale s - lse) of query and key if the query sees the key (and both exist), else 0.
__device__ __forceinline__ float probability(float s, float lse, int query, int key, int n_queries, int n_keys,
                                             bool causal, float scale) {
    bool visible = key < n_keys && query < n_queries && (!causal || key <= query + n_keys - n_queries);
    return visible ? expf(scale * s - lse) : 0.0f;
}

// rows[first + 4 ty + i][tx + 8 c] = factor * sum[i][c] inside (n_rows, depth)
template <int COLUMNS>
__device__ void store_rows(float* rows, const float (&sum)[MICRO][COLUMNS], float factor, int first, int n_rows,
                           int ty, int tx, int depth) {
    for (int i = 0; i < MICRO; i++) {
        int row = first + ty * MICRO + i;
        if (row >= n_rows) break;
        for (int c = 0; c < COLUMNS; c++) {
            int column = tx + GROUPS * c;
            if (column < depth) rows[int64_t(row) * depth + column] = factor * sum[i][c];
        }
    }
}

template <int MAX_DEPTH>
__global__ void __launch_bounds__(Blocking<MAX_DEPTH>::THREADS)
attention_dkv_kernel(const float* __restrict__ d_out, const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                     float* __restrict__ dk, float* __restrict__ dv, int n_queries, int n_keys, int depth,
                     bool causal, float scale) {
    using B = Blocking<MAX_DEPTH>;
    __shared__ __align__(16) float k_t[MAX_DEPTH * B::ROWS];
    __shared__ __align__(16) float v_t[MAX_DEPTH * B::ROWS];
    __shared__ __align__(16) float staged[MAX_DEPTH * TILE];
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    d_out += head * n_queries * depth;
    lse += head * n_queries;
    delta += head * n_queries;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    dk += head * n_keys * depth;
    dv += head * n_keys * depth;
    int ty = threadIdx.x / GROUPS, tx = threadIdx.x % GROUPS;
    int first_key = blockIdx.x * B::ROWS, offset = n_keys - n_queries;
    // Causal: key j is seen by queries i >= j - offset; start at the first query seeing the first key.
    int query_start = causal ? max(0, first_key - offset) : 0;
    load_own<B::ROWS>(k_t, k, first_key, n_keys, depth);
    load_own<B::ROWS>(v_t, v, first_key, n_keys, depth);

    float grad_k[MICRO][B::COLUMNS] = {}, grad_v[MICRO][B::COLUMNS] = {};
    for (int first_query = query_start; first_query < n_queries; first_query += TILE) {
        __syncthreads();  // the previous tile's q is no longer read (and k_t, v_t are complete)
        load_staged(staged, q, first_query, n_queries, depth);
        __syncthreads();
        float p[MICRO][MICRO], ds[MICRO][MICRO], query_lse[MICRO], query_delta[MICRO];
        micro_products<B::ROWS>(p, k_t, staged, ty, tx, depth);
        for (int j = 0; j < MICRO; j++) {
            int query = first_query + tx * MICRO + j;
            query_lse[j] = query < n_queries ? lse[query] : 0.0f;
            query_delta[j] = query < n_queries ? delta[query] : 0.0f;
        }
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) {
                int key = first_key + ty * MICRO + i, query = first_query + tx * MICRO + j;
                p[i][j] = probability(p[i][j], query_lse[j], query, key, n_queries, n_keys, causal, scale);
            }
        __syncthreads();  // q is no longer read
        load_staged(staged, d_out, first_query, n_queries, depth);
        __syncthreads();
        micro_products<B::ROWS>(ds, v_t, staged, ty, tx, depth);
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) ds[i][j] = p[i][j] * (ds[i][j] - query_delta[j]);
        add_weighted(grad_v, p, staged, tx, depth);
        __syncthreads();  // do is no longer read
        load_staged(staged, q, first_query, n_queries, depth);
        __syncthreads();
        add_weighted(grad_k, ds, staged, tx, depth);
    }
    store_rows(dk, grad_k, scale, first_key, n_keys, ty, tx, depth);
    store_rows(dv, grad_v, 1.0f, first_key, n_keys, ty, tx, depth);
}

template <int MAX_DEPTH>
__global__ void __launch_bounds__(Blocking<MAX_DEPTH>::THREADS)
attention_dq_kernel(const float* __restrict__ d_out, const float* __restrict__ q, const float* __restrict__ k,
                    const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, int n_queries, int n_keys, int depth, bool causal, float scale) {
    using B = Blocking<MAX_DEPTH>;
    __shared__ __align__(16) float q_t[MAX_DEPTH * B::ROWS];
    __shared__ __align__(16) float do_t[MAX_DEPTH * B::ROWS];
    __shared__ __align__(16) float staged[MAX_DEPTH * TILE];
    int64_t head = blockIdx.y;
    q += head * n_queries * depth;
    d_out += head * n_queries * depth;
    dq += head * n_queries * depth;
    lse += head * n_queries;
    delta += head * n_queries;
    k += head * n_keys * depth;
    v += head * n_keys * depth;
    int ty = threadIdx.x / GROUPS, tx = threadIdx.x % GROUPS;
    int first_query = blockIdx.x * B::ROWS, offset = n_keys - n_queries;
    int last_query = min(n_queries, first_query + B::ROWS) - 1;
    int key_end = causal ? min(n_keys, last_query + offset + 1) : n_keys;
    load_own<B::ROWS>(q_t, q, first_query, n_queries, depth);
    load_own<B::ROWS>(do_t, d_out, first_query, n_queries, depth);
    float query_lse[MICRO], query_delta[MICRO];
    for (int i = 0; i < MICRO; i++) {
        int query = first_query + ty * MICRO + i;
        query_lse[i] = query < n_queries ? lse[query] : 0.0f;
        query_delta[i] = query < n_queries ? delta[query] : 0.0f;
    }

    float grad_q[MICRO][B::COLUMNS] = {};
    for (int first_key = 0; first_key < key_end; first_key += TILE) {
        __syncthreads();  // the previous tile's k is no longer read (and q_t, do_t are complete)
        load_staged(staged, k, first_key, n_keys, depth);
        __syncthreads();
        float p[MICRO][MICRO], ds[MICRO][MICRO];
        micro_products<B::ROWS>(p, q_t, staged, ty, tx, depth);
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) {
                int query = first_query + ty * MICRO + i, key = first_key + tx * MICRO + j;
                p[i][j] = probability(p[i][j], query_lse[i], query, key, n_queries, n_keys, causal, scale);
            }
        __syncthreads();  // k is no longer read
        load_staged(staged, v, first_key, n_keys, depth);
        __syncthreads();
        micro_products<B::ROWS>(ds, do_t, staged, ty, tx, depth);
        for (int i = 0; i < MICRO; i++)
            for (int j = 0; j < MICRO; j++) ds[i][j] = p[i][j] * (ds[i][j] - query_delta[i]);
        __syncthreads();  // v is no longer read
        load_staged(staged, k, first_key, n_keys, depth);
        __syncthreads();
        add_weighted(grad_q, ds, staged, tx, depth);
    }
    store_rows(dq, grad_q, scale, first_query, n_queries, ty, tx, depth);
}

template <int MAX_DEPTH>
void launch_gradients(const float* d_out, const float* q, const float* k, const float* v, const float* lse,
                      const float* delta, float* dq, float* dk, float* dv, int heads, int n_queries, int n_keys,
                      int depth, bool causal, float scale, cudaStream_t stream) {
    using B = Blocking<MAX_DEPTH>;
    dim3 key_grid((n_keys + B::ROWS - 1) / B::ROWS, heads);
    attention_dkv_kernel<MAX_DEPTH><<<key_grid, B::THREADS, 0, stream>>>(d_out, q, k, v, lse, delta, dk, dv,
                                                                        n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
    dim3 query_grid((n_queries + B::ROWS - 1) / B::ROWS, heads);
    attention_dq_kernel<MAX_DEPTH><<<query_grid, B::THREADS, 0, stream>>>(d_out, q, k, v, lse, delta, dq,
                                                                         n_queries, n_keys, depth, causal, scale);
    CUDA_CHECK(cudaGetLastError());
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
    if (depth <= 64) {
        launch_gradients<64>(d_out, q, k, v, lse, delta, dq, dk, dv, heads, n_queries, n_keys, depth, causal, scale,
                             stream);
    } else {
        launch_gradients<ATTENTION_MAX_DEPTH>(d_out, q, k, v, lse, delta, dq, dk, dv, heads, n_queries, n_keys,
                                              depth, causal, scale, stream);
    }
}
