// SGEMM with a fused epilogue, float32 on CUDA cores:
//   C = activation(op(A) @ op(B) + bias)     op(A) (M, K), op(B) (K, N), bias (N,), C (M, N)
// A and B are row-major and may be stored transposed; activation is none, leaky_relu, relu,
// sigmoid, tanh or gelu (tanh approximation).
//
// Cost: 2 M N K FLOPs; at least 4 (M K + K N + M N) bytes. At 4096^3 that is 137 GFLOP against
// 200 MB, ~700 FLOP/byte: compute-bound, so the kernel is about keeping the FMA units fed.
//
// Fast version (a CUDA-core SGEMM in the style of siboehm's and CUTLASS's SIMT kernels):
//   - block tiling: each block owns a BLOCK_M x BLOCK_N tile of C and walks K in slices of
//     BLOCK_K = 16, staging op(A) m-major (a[m][k]) and op(B) k-major (b[k][n]) in shared memory;
//   - a STAGES = 3 deep cp.async pipeline: while slice s is multiplied, slices s + 1 and s + 2 are
//     on their way from global to shared memory without passing through registers; one
//     __syncthreads per slice (after each thread's wait for its own copies of slice s) both
//     publishes slice s and frees the stage that slice s + 2 is then copied into. 3 stages of a
//     128 x 128 tile are 48 KiB, the most static shared memory a block may have;
//   - register blocking: each thread keeps an 8 x 8 tile of C in registers, as 2 x 2 blocks of
//     4 x 4 that lie BLOCK_M / 2 rows and BLOCK_N / 2 columns apart; per 4 steps of k it reads
//     8 float4 of a (4 k of each of its 8 rows) and 8 float4 of b (8 columns at each k), 16 loads
//     for 256 FMAs;
//   - warp layout: thread t has tx = t % (BLOCK_N / 8) (its columns tx*4.. and BLOCK_N/2 + tx*4..)
//     and ty = t / (BLOCK_N / 8) (rows ty*4.. and BLOCK_M/2 + ty*4..). A float4 load from shared
//     memory is served in 4 phases of 8 lanes; the 8 lanes of a phase share ty, so they read one
//     float4 of a (a broadcast) and 8 consecutive float4 of b (128 bytes): no bank conflicts.
//     With BLOCK_N = 128 a warp is 2 values of ty and 16 of tx: 8 rows (4 in each half of the
//     tile) by 128 columns (64 in each half);
//   - copies: 16-byte cp.async where 4 floats run along the tile's contiguous dimension in memory
//     (A stored (M, K), B stored (K, N)) and the row is aligned and whole; 4-byte cp.async
//     otherwise (transposed operands scatter into the tile; ragged edges); zeros are stored past
//     the edges, so ragged M, N, K need no separate kernel;
//   - a CTA swizzle (gemm_launch.cuh): the 1-D grid is rasterized in groups of SWIZZLE_ROWS row tiles,
//     going down a group's row tiles before moving right, so blocks resident together share A and
//     B tiles in L2;
//   - tile configurations chosen per shape: 128 x 128 (256 threads), 128 x 64 (128) and 64 x 64
//     (64); the largest whose grid still gives each SM of a large GPU (TARGET_BLOCKS) a block;
//   - the epilogue adds the bias and applies the activation to the registers before the one store.
// A result of few tiles over a deep K (a convolution's weight gradient: 512 x 64 over 12544 rows,
// 8 blocks of 64 x 64 for 132 SMs) is cut in depth (matmul_split_depth): blockIdx.y is a run of
// whole BLOCK_K slices, whose sum goes to a page of its own; then sum_splits adds the pages, in
// order, so the same bits on every run and every GPU (the count depends on the shape only).
#include <cuda_pipeline.h>

#include <algorithm>

#include "check.cuh"
#include "epilogue.cuh"
#include "matmul.cuh"
#include "gemm_launch.cuh"

constexpr int BLOCK_K = 16;
constexpr int STAGES = 3;
constexpr int THREAD_TILE = 8;    // C is 8 x 8 per thread: 2 x 2 blocks of 4 x 4
constexpr int TARGET_BLOCKS = 132;  // the SMs of an H100 SXM: fewer blocks leave SMs idle
constexpr int RESIDENT_THREADS = 512;  // per SM, asked of the register allocator: <= 128 registers a thread

template <int BLOCK_M, int BLOCK_N>
struct Stages {
    float a[STAGES][BLOCK_M][BLOCK_K];  // op(A)[m][k]
    float b[STAGES][BLOCK_K][BLOCK_N];  // op(B)[k][n]
};

// The asynchronous copy of 4 consecutive floats of a row-major (rows, cols) matrix at
// (row, col..col+3) to `to`, `to + stride`, ..: one 16-byte copy when they land contiguous
// (stride 1) and the row is aligned (`vector_ok`: pointer and leading dimension) and whole,
// else one 4-byte copy per float inside the matrix and a zero stored for each outside.
__device__ __forceinline__ void copy4_async(float* to, int stride, const float* matrix, int rows, int cols, int row,
                                            int col, bool vector_ok) {
    if (row < rows && stride == 1 && vector_ok && col + 3 < cols) {
        __pipeline_memcpy_async(to, matrix + int64_t(row) * cols + col, 16);
        return;
    }
    for (int i = 0; i < 4; i++) {
        if (row < rows && col + i < cols) __pipeline_memcpy_async(to + i * stride, matrix + int64_t(row) * cols + col + i, 4);
        else to[i * stride] = 0.0f;
    }
}

// Starts the copies of the slice of op(A) at depth k0 into a[m][k]: A stored (m, k) has 4 k
// contiguous, stored (k, m) 4 m (scattered down a column of the tile).
template <int BLOCK_M, int THREADS, bool transpose_a>
__device__ void copy_a_slice(float (*tile)[BLOCK_K], const float* a, int m, int k, int row_start, int k0,
                             bool vector_ok) {
    for (int group = threadIdx.x; group < BLOCK_M * BLOCK_K / 4; group += THREADS) {
        if (transpose_a) {
            int kk = group / (BLOCK_M / 4), r = (group % (BLOCK_M / 4)) * 4;
            copy4_async(&tile[r][kk], BLOCK_K, a, k, m, k0 + kk, row_start + r, vector_ok);
        } else {
            int r = group / (BLOCK_K / 4), kk = (group % (BLOCK_K / 4)) * 4;
            copy4_async(&tile[r][kk], 1, a, m, k, row_start + r, k0 + kk, vector_ok);
        }
    }
}

// The same for op(B) into b[k][n]: B stored (k, n) has 4 n contiguous, stored (n, k) 4 k.
template <int BLOCK_N, int THREADS, bool transpose_b>
__device__ void copy_b_slice(float (*tile)[BLOCK_N], const float* b, int n, int k, int col_start, int k0,
                             bool vector_ok) {
    for (int group = threadIdx.x; group < BLOCK_N * BLOCK_K / 4; group += THREADS) {
        if (transpose_b) {
            int c = group / (BLOCK_K / 4), kk = (group % (BLOCK_K / 4)) * 4;
            copy4_async(&tile[kk][c], BLOCK_N, b, n, k, col_start + c, k0 + kk, vector_ok);
        } else {
            int kk = group / (BLOCK_N / 4), c = (group % (BLOCK_N / 4)) * 4;
            copy4_async(&tile[kk][c], 1, b, k, n, k0 + kk, col_start + c, vector_ok);
        }
    }
}

// One slice of the product: acc += a_tile b_tile for this thread's rows and columns.
template <int BLOCK_M, int BLOCK_N>
__device__ __forceinline__ void multiply_slice(const float (*a)[BLOCK_K], const float (*b)[BLOCK_N],
                                               float (&acc)[THREAD_TILE][THREAD_TILE], int ty, int tx) {
#pragma unroll
    for (int k = 0; k < BLOCK_K; k += 4) {
        float4 a_rows[THREAD_TILE];  // 4 k of each of the thread's 8 rows
#pragma unroll
        for (int i = 0; i < THREAD_TILE; i++) {
            a_rows[i] = *reinterpret_cast<const float4*>(&a[(i / 4) * (BLOCK_M / 2) + ty * 4 + i % 4][k]);
        }
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            float4 b0 = *reinterpret_cast<const float4*>(&b[k + kk][tx * 4]);
            float4 b1 = *reinterpret_cast<const float4*>(&b[k + kk][BLOCK_N / 2 + tx * 4]);
            float br[THREAD_TILE] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < THREAD_TILE; i++) {
                float ai = reinterpret_cast<const float*>(&a_rows[i])[kk];
#pragma unroll
                for (int j = 0; j < THREAD_TILE; j++) acc[i][j] = fmaf(ai, br[j], acc[i][j]);
            }
        }
    }
}

// Bias, activation and the store of this thread's 8 x 8 tile of C (rows row0.. and
// row0 + BLOCK_M / 2.., columns col0.. and col0 + BLOCK_N / 2..).
template <int BLOCK_M, int BLOCK_N>
__device__ void store_tile(float (&acc)[THREAD_TILE][THREAD_TILE], const float* bias, float* c, int m, int n,
                           int row0, int col0, int activation, float alpha) {
    bool vector_ok = n % 4 == 0 && reinterpret_cast<uintptr_t>(c) % 16 == 0;
#pragma unroll  // unrolled, acc is indexed by constants and stays in registers
    for (int i = 0; i < THREAD_TILE; i++) {
        int row = row0 + (i / 4) * (BLOCK_M / 2) + i % 4;
        if (row >= m) continue;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int col = col0 + half * (BLOCK_N / 2);
            float v[4];
#pragma unroll
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

// SPLIT (a^T @ b only: a stored (k, m), b (k, n)): blockIdx.y is a run of split_slices slices of
// K, the product of its rows of a and b, to page blockIdx.y (c + blockIdx.y m n); the same loop as
// the unsplit kernel's over pointers moved to the run, so the same registers
template <int BLOCK_M, int BLOCK_N, bool transpose_a, bool transpose_b, bool SPLIT = false>
__global__ void __launch_bounds__(BLOCK_M * BLOCK_N / (THREAD_TILE * THREAD_TILE),
                                  RESIDENT_THREADS * THREAD_TILE * THREAD_TILE / (BLOCK_M * BLOCK_N))
sgemm_kernel(const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ bias,
             float* __restrict__ c, int m, int n, int k, bool a_vector_ok, bool b_vector_ok,
             int activation, float alpha, int split_slices) {
    static_assert(!SPLIT || (transpose_a && !transpose_b), "a run of K is a run of rows of a and b");
    constexpr int THREADS = BLOCK_M * BLOCK_N / (THREAD_TILE * THREAD_TILE);
    __shared__ __align__(16) Stages<BLOCK_M, BLOCK_N> stages;
    if (SPLIT) {
        int run_start = int(blockIdx.y) * split_slices * BLOCK_K;
        a += int64_t(run_start) * m;
        b += int64_t(run_start) * n;
        c += int64_t(blockIdx.y) * m * n;
        k = max(0, min(k - run_start, split_slices * BLOCK_K));
    }
    int tile_row, tile_col;
    swizzled_tile((m + BLOCK_M - 1) / BLOCK_M, (n + BLOCK_N - 1) / BLOCK_N, tile_row, tile_col);
    int row_start = tile_row * BLOCK_M, col_start = tile_col * BLOCK_N;
    int tx = threadIdx.x % (BLOCK_N / 8), ty = threadIdx.x / (BLOCK_N / 8);
    auto copy_slice = [&](int slice) {
        int stage = slice % STAGES;
        copy_a_slice<BLOCK_M, THREADS, transpose_a>(stages.a[stage], a, m, k, row_start, slice * BLOCK_K, a_vector_ok);
        copy_b_slice<BLOCK_N, THREADS, transpose_b>(stages.b[stage], b, n, k, col_start, slice * BLOCK_K, b_vector_ok);
    };

    float acc[THREAD_TILE][THREAD_TILE] = {};
    int slices = (k + BLOCK_K - 1) / BLOCK_K;
    for (int s = 0; s < STAGES - 1; s++) {  // one commit group per slice, empty past the end
        if (s < slices) copy_slice(s);
        __pipeline_commit();
    }
    for (int s = 0; s < slices; s++) {
        __pipeline_wait_prior(STAGES - 2);  // this thread's copies of slice s have landed
        __syncthreads();  // everyone's have, and slice s - 1's stage is no longer read
        if (s + STAGES - 1 < slices) copy_slice(s + STAGES - 1);
        __pipeline_commit();
        int stage = s % STAGES;
        multiply_slice<BLOCK_M, BLOCK_N>(stages.a[stage], stages.b[stage], acc, ty, tx);
    }
    store_tile<BLOCK_M, BLOCK_N>(acc, bias, c, m, n, row_start + ty * 4, col_start + tx * 4, activation, alpha);
}

static bool rows_aligned16(const float* x, int leading_dimension) {
    return reinterpret_cast<uintptr_t>(x) % 16 == 0 && leading_dimension % 4 == 0;
}

int matmul_tiles_for(int m, int n) {
    if (block_count(m, n, 128, 128) >= TARGET_BLOCKS) return TILES_128x128;
    if (block_count(m, n, 128, 64) >= TARGET_BLOCKS) return TILES_128x64;
    return TILES_64x64;
}

void matmul_forward_tiles(int tiles, const float* a, const float* b, const float* bias, float* c, int m, int n,
                          int k, bool transpose_a, bool transpose_b, int activation, float alpha,
                          cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    bool a_ok = rows_aligned16(a, transpose_a ? m : k);
    bool b_ok = rows_aligned16(b, transpose_b ? k : n);
    with_tiles(tiles, "matmul", [&](auto block_m, auto block_n) {
        dim3 grid = swizzled_grid(m, n, block_m, block_n);
        int threads = block_m * block_n / (THREAD_TILE * THREAD_TILE);
        with_transposes(transpose_a, transpose_b, [&](auto ta, auto tb) {
            sgemm_kernel<block_m, block_n, ta, tb><<<grid, threads, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok,
                                                                                 activation, alpha, 0);
        });
    });
    CUDA_CHECK(cudaGetLastError());
}

void matmul_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                    bool transpose_a, bool transpose_b, int activation, float alpha, cudaStream_t stream) {
    matmul_forward_tiles(matmul_tiles_for(m, n), a, b, bias, c, m, n, k, transpose_a, transpose_b, activation,
                         alpha, stream);
}

int matmul_depth_splits(int m, int n, int k) {
    int tiles = matmul_tiles_for(m, n);
    int64_t blocks = tiles == TILES_128x128 ? block_count(m, n, 128, 128)
                   : tiles == TILES_128x64 ? block_count(m, n, 128, 64) : block_count(m, n, 64, 64);
    if (blocks == 0 || 2 * blocks > TARGET_BLOCKS) return 1;  // half the SMs have a block or more
    int64_t to_fill = (TARGET_BLOCKS + blocks - 1) / blocks;
    return int(std::max<int64_t>(1, std::min<int64_t>({to_fill, k / SPLIT_MIN_DEPTH, MAX_DEPTH_SPLITS})));
}

void matmul_split_depth(const float* a, const float* b, float* partials, int m, int n, int k, int splits,
                        cudaStream_t stream) {
    if (splits < 1 || splits > MAX_DEPTH_SPLITS) {
        throw std::invalid_argument("matmul_split_depth: splits is " + std::to_string(splits) + ", not 1 to " +
                                    std::to_string(MAX_DEPTH_SPLITS));
    }
    if (m == 0 || n == 0) return;
    bool a_ok = rows_aligned16(a, m), b_ok = rows_aligned16(b, n);
    int split_slices = max(1, ((k + BLOCK_K - 1) / BLOCK_K + splits - 1) / splits);
    with_tiles(matmul_tiles_for(m, n), "matmul_split_depth", [&](auto block_m, auto block_n) {
        dim3 grid = swizzled_grid(m, n, block_m, block_n);
        grid.y = unsigned(splits);
        int threads = block_m * block_n / (THREAD_TILE * THREAD_TILE);
        sgemm_kernel<block_m, block_n, true, false, true><<<grid, threads, 0, stream>>>(
            a, b, nullptr, partials, m, n, k, a_ok, b_ok, NONE, 0.0f, split_slices);
    });
    CUDA_CHECK(cudaGetLastError());
}

constexpr int SUM_THREADS = 256;

// out (+)= pages[0] + pages[1] + ... (in that order), each page `size` floats.
__global__ void __launch_bounds__(SUM_THREADS)
sum_splits_kernel(const float* __restrict__ pages, int splits, int64_t size, float* __restrict__ out, bool add) {
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += int64_t(gridDim.x) * blockDim.x) {
        float total = pages[e];
        for (int r = 1; r < splits; r++) total += pages[r * size + e];
        out[e] = add ? out[e] + total : total;
    }
}

void sum_splits(const float* pages, int splits, int64_t size, float* out, bool add, cudaStream_t stream) {
    if (size == 0) return;
    unsigned blocks = unsigned(std::min<int64_t>((size + SUM_THREADS - 1) / SUM_THREADS, 4096));
    sum_splits_kernel<<<blocks, SUM_THREADS, 0, stream>>>(pages, splits, size, out, add);
    CUDA_CHECK(cudaGetLastError());
}
