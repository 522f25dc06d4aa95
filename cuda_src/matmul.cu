// SGEMM with a fused epilogue, float32 on CUDA cores:
//   C = activation(op(A) @ op(B) + bias)     op(A) (M, K), op(B) (K, N), bias (N,), C (M, N)
// A and B are row-major and may be stored transposed; activation is none, leaky_relu, relu,
// sigmoid, tanh or gelu (tanh approximation).
//
// Cost: 2 M N K FLOPs; at least 4 (M K + K N + M N) bytes. At 4096^3 that is 137 GFLOP against
// 200 MB, ~700 FLOP/byte: compute-bound, so the kernel is about keeping the FMA units fed.
//
// Fast version (the classic 128 x 128 x 8 CUDA-core SGEMM, as in siboehm's and llm.c's notes):
//   - block tiling: each block of 256 threads owns a BLOCK_M x BLOCK_N tile of C and walks K in
//     slices of BLOCK_K, staging op(A) and op(B) slices in shared memory, both k-major
//     (a_tile[k][m], b_tile[k][n]) so that the inner loop reads rows of 4 floats;
//   - register blocking: each thread keeps an 8 x 8 tile of C in registers, as two 4-row and two
//     4-column strips 64 apart, so a warp's shared-memory reads are float4 broadcasts without
//     bank conflicts, and 16 floats from shared memory feed 64 FMAs;
//   - warp tiling falls out of the thread layout (tx = thread % 16 picks columns, ty = thread / 16
//     rows): a warp's 32 threads are 2 values of ty and all 16 of tx, so it covers 8 rows x 64
//     columns of each 64 x 64 quadrant, reading 2 float4 of a (broadcast) and 16 consecutive
//     float4 of b per k;
//   - vectorised loads: each thread loads 4 consecutive floats of each operand per slice with one
//     16-byte load when the row is aligned and whole, else 4 bounds-checked scalar loads (zeros
//     past the edges, so ragged M, N, K need no separate kernel);
//   - double buffering: two shared-memory slices; the next slice is loaded from global memory
//     into registers while the current one is multiplied, so there is one __syncthreads per slice;
//   - the epilogue adds the bias and applies the activation to the registers before the one store.
// The transposes only change how a thread's 4 loaded floats go into shared memory: along k
// (scattered into 4 rows) or along m/n (one float4 store).
#include "check.cuh"
#include "epilogue.cuh"
#include "matmul.cuh"

constexpr int BLOCK_M = 128;
constexpr int BLOCK_N = 128;
constexpr int BLOCK_K = 8;
constexpr int THREAD_M = 8;  // C rows per thread: two strips of 4, BLOCK_M / 2 apart
constexpr int THREAD_N = 8;
constexpr int THREADS = (BLOCK_M / THREAD_M) * (BLOCK_N / THREAD_N);  // 256
static_assert(BLOCK_M == BLOCK_N && THREADS == 256, "the slice loaders assume 256 threads and square tiles");

struct Tile {
    float a[2][BLOCK_K][BLOCK_M];
    float b[2][BLOCK_K][BLOCK_N];
};

// Four consecutive floats of a row-major (rows, cols) matrix at (row, col..col+3), zero outside.
// `vector_ok`: rows start 16-byte aligned (pointer and leading dimension), so a whole group of
// four can be one float4 load.
__device__ __forceinline__ float4 load4(const float* matrix, int rows, int cols, int row, int col,
                                        bool vector_ok) {
    if (row >= rows) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const float* p = matrix + int64_t(row) * cols + col;
    if (vector_ok && col + 3 < cols) return *reinterpret_cast<const float4*>(p);
    float v[4];
    for (int i = 0; i < 4; i++) v[i] = col + i < cols ? p[i] : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
}

// The operand slice starting at depth k0 that this thread loads: 4 floats of op(X)'s tile.
// along_k: the 4 floats run along k (X stored with k as its column index), else along m/n.
// The tile is `extent` (128) wide in m/n and BLOCK_K deep.
template <bool along_k>
__device__ __forceinline__ float4 load_slice(const float* x, int stored_rows, int stored_cols,
                                             int tile_start, int k0, bool vector_ok) {
    int t = threadIdx.x;
    if (along_k) {  // stored (mn, k): thread t loads row t / 2, k offset (t % 2) * 4
        return load4(x, stored_rows, stored_cols, tile_start + t / 2, k0 + (t % 2) * 4, vector_ok);
    }
    // stored (k, mn): thread t loads k row t / 32, columns (t % 32) * 4
    return load4(x, stored_rows, stored_cols, k0 + t / 32, tile_start + (t % 32) * 4, vector_ok);
}

template <bool along_k>
__device__ __forceinline__ void store_slice(float (*tile)[BLOCK_M], float4 value) {
    int t = threadIdx.x;
    if (along_k) {
        int mn = t / 2, k = (t % 2) * 4;
        tile[k][mn] = value.x;
        tile[k + 1][mn] = value.y;
        tile[k + 2][mn] = value.z;
        tile[k + 3][mn] = value.w;
    } else {
        *reinterpret_cast<float4*>(&tile[t / 32][(t % 32) * 4]) = value;
    }
}

// Bias, activation and the store of this thread's 8 x 8 tile of C at (row0, col0) strips.
__device__ void store_tile(float (&acc)[THREAD_M][THREAD_N], const float* bias, float* c, int m,
                           int n, int row0, int col0, int activation, float alpha) {
    bool vector_ok = n % 4 == 0 && reinterpret_cast<uintptr_t>(c) % 16 == 0;
    for (int i = 0; i < THREAD_M; i++) {
        int row = row0 + (i / 4) * (BLOCK_M / 2) + i % 4;
        if (row >= m) continue;
        for (int half = 0; half < 2; half++) {
            int col = col0 + half * (BLOCK_N / 2);
            float v[4];
            for (int j = 0; j < 4; j++) {
                float bias_j = bias != nullptr && col + j < n ? bias[col + j] : 0.0f;
                v[j] = activate(acc[i][half * 4 + j] + bias_j, activation, alpha);
            }
            float* out = c + int64_t(row) * n + col;
            if (vector_ok && col + 3 < n) {
                *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
                for (int j = 0; j < 4 && col + j < n; j++) out[j] = v[j];
            }
        }
    }
}

// One slice of the product: acc += a_tile^T b_tile for this thread's rows and columns.
__device__ __forceinline__ void multiply_slice(const float (*a)[BLOCK_M], const float (*b)[BLOCK_N],
                                               float (&acc)[THREAD_M][THREAD_N], int ty, int tx) {
#pragma unroll
    for (int k = 0; k < BLOCK_K; k++) {
        float4 a0 = *reinterpret_cast<const float4*>(&a[k][ty * 4]);
        float4 a1 = *reinterpret_cast<const float4*>(&a[k][BLOCK_M / 2 + ty * 4]);
        float4 b0 = *reinterpret_cast<const float4*>(&b[k][tx * 4]);
        float4 b1 = *reinterpret_cast<const float4*>(&b[k][BLOCK_N / 2 + tx * 4]);
        float ar[THREAD_M] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        float br[THREAD_N] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < THREAD_M; i++) {
#pragma unroll
            for (int j = 0; j < THREAD_N; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
        }
    }
}

template <bool transpose_a, bool transpose_b>
__global__ void __launch_bounds__(THREADS)
sgemm_kernel(const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ bias,
             float* __restrict__ c, int m, int n, int k, bool a_vector_ok, bool b_vector_ok,
             int activation, float alpha) {
    __shared__ __align__(16) Tile tile;
    // a stored (m, k) has k along its rows; stored (k, m) when transposed. Likewise b.
    constexpr bool a_along_k = !transpose_a;
    constexpr bool b_along_k = transpose_b;
    int a_rows = transpose_a ? k : m, a_cols = transpose_a ? m : k;
    int b_rows = transpose_b ? n : k, b_cols = transpose_b ? k : n;
    int row_start = blockIdx.y * BLOCK_M, col_start = blockIdx.x * BLOCK_N;
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

    float acc[THREAD_M][THREAD_N] = {};
    float4 a_next = load_slice<a_along_k>(a, a_rows, a_cols, row_start, 0, a_vector_ok);
    float4 b_next = load_slice<b_along_k>(b, b_rows, b_cols, col_start, 0, b_vector_ok);
    store_slice<a_along_k>(tile.a[0], a_next);
    store_slice<b_along_k>(tile.b[0], b_next);
    __syncthreads();

    int slices = (k + BLOCK_K - 1) / BLOCK_K;
    for (int s = 0; s < slices; s++) {
        int current = s % 2;
        bool more = s + 1 < slices;
        if (more) {
            a_next = load_slice<a_along_k>(a, a_rows, a_cols, row_start, (s + 1) * BLOCK_K, a_vector_ok);
            b_next = load_slice<b_along_k>(b, b_rows, b_cols, col_start, (s + 1) * BLOCK_K, b_vector_ok);
        }
        multiply_slice(tile.a[current], tile.b[current], acc, ty, tx);
        if (more) {  // the other buffer was last read before the previous barrier
            store_slice<a_along_k>(tile.a[1 - current], a_next);
            store_slice<b_along_k>(tile.b[1 - current], b_next);
        }
        __syncthreads();
    }
    store_tile(acc, bias, c, m, n, row_start + ty * 4, col_start + tx * 4, activation, alpha);
}

static bool rows_aligned16(const float* x, int leading_dimension) {
    return reinterpret_cast<uintptr_t>(x) % 16 == 0 && leading_dimension % 4 == 0;
}

void matmul_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                    bool transpose_a, bool transpose_b, int activation, float alpha,
                    cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    dim3 grid((n + BLOCK_N - 1) / BLOCK_N, (m + BLOCK_M - 1) / BLOCK_M);
    bool a_ok = rows_aligned16(a, transpose_a ? m : k);
    bool b_ok = rows_aligned16(b, transpose_b ? k : n);
    if (!transpose_a && !transpose_b) {
        sgemm_kernel<false, false><<<grid, THREADS, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok, activation, alpha);
    } else if (!transpose_a && transpose_b) {
        sgemm_kernel<false, true><<<grid, THREADS, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok, activation, alpha);
    } else if (transpose_a && !transpose_b) {
        sgemm_kernel<true, false><<<grid, THREADS, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok, activation, alpha);
    } else {
        sgemm_kernel<true, true><<<grid, THREADS, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok, activation, alpha);
    }
    CUDA_CHECK(cudaGetLastError());
}
