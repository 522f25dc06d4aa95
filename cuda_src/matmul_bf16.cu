// GEMM with a fused epilogue on BF16 tensor cores (sm_80+), bf16 operands, float32 sums and result:
//   C = activation(op(A) @ op(B) + bias)     op(A) (M, K), op(B) (K, N) bf16; bias (N,), C (M, N) float32
// A and B are row-major bf16 and may be stored transposed; activation as in matmul.cu. The
// products of bf16 values are exact in float32 and the sums are float32: C is within float32
// summation error of the product of the bf16 operands (bf16 keeps 8 significant bits: the
// rounding of the operands themselves, ~2^-9 relative, is the caller's, before the call).
// Cost: 2 M N K FLOPs on tensor cores (an H100 does ~15x its float32 FMA rate in BF16); at least
// 2 (M K + K N) + 4 M N bytes.
//
// Fast version (through the WMMA API, whose fragments the host emulation models):
//   - block tiles of BLOCK_M x BLOCK_N (the configurations of matmul.cuh: 128 x 128, 128 x 64,
//     64 x 64, chosen per shape by matmul_tiles_for), 2 x (BLOCK_N / 32) warps, each owning a
//     (BLOCK_M / 2) x 32 tile of C as (BLOCK_M / 32) x 2 accumulator fragments of 16 x 16;
//   - K in slices of BLOCK_K = 32 through a STAGES = 2 deep cp.async pipeline (slice s + 1 copied
//     while slice s is multiplied): each operand is staged as it is stored (no transposition on
//     the way), 16-byte copies of 8 bf16 along its contiguous dimension, and read by fragments of
//     the matching layout (row_major, or col_major for a transposed operand); rows are padded by
//     8 bf16 (16 bytes), which keeps every fragment 32-byte aligned and spreads rows over banks;
//   - per 16-deep step a warp loads BLOCK_M / 32 A and 2 B fragments and issues 2 BLOCK_M / 32 mma;
//   - the CTA swizzle of gemm_launch.cuh;
//   - the epilogue: each warp stores one accumulator at a time to its own 16 x 16 scratch in shared
//     memory, then each lane adds the bias and applies the activation to 8 consecutive elements.
// Not yet: mma.sync and ldmatrix in PTX, more stages (dynamic shared memory), a bf16 result.
#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <mma.h>

#include <type_traits>

#include "check.cuh"
#include "epilogue.cuh"
#include "matmul.cuh"
#include "gemm_launch.cuh"

using namespace nvcuda;

constexpr int BF16_BLOCK_K = 32;
constexpr int BF16_STAGES = 2;
constexpr int BF16_PAD = 8;    // bf16 per row: 16 bytes
constexpr int FRAGMENT = 16;   // wmma bf16 shape m16n16k16

// Shared memory of a block: the pipeline's stages of op(A) and op(B) as stored, and each warp's
// scratch tile for the epilogue. A stored (m, k) is staged [m][k], stored (k, m) [k][m]; likewise B.
template <int BLOCK_M, int BLOCK_N, bool transpose_a, bool transpose_b>
struct Bf16Shared {
    static constexpr int A_ROWS = transpose_a ? BF16_BLOCK_K : BLOCK_M;
    static constexpr int A_PITCH = (transpose_a ? BLOCK_M : BF16_BLOCK_K) + BF16_PAD;
    static constexpr int B_ROWS = transpose_b ? BLOCK_N : BF16_BLOCK_K;
    static constexpr int B_PITCH = (transpose_b ? BF16_BLOCK_K : BLOCK_N) + BF16_PAD;
    __nv_bfloat16 a[BF16_STAGES][A_ROWS][A_PITCH];
    __nv_bfloat16 b[BF16_STAGES][B_ROWS][B_PITCH];
    float scratch[BLOCK_N / 16][FRAGMENT][FRAGMENT];  // one per warp
};

// Starts copying 8 consecutive bf16 of a row-major (rows, cols) matrix at (row, col..col+7) to
// `to`: one 16-byte cp.async when the row is aligned (`vector_ok`: pointer and leading dimension)
// and the 8 lie inside the matrix, else element by element, with zeros outside.
__device__ __forceinline__ void copy8_async(__nv_bfloat16* to, const __nv_bfloat16* matrix, int rows, int cols,
                                            int row, int col, bool vector_ok) {
    if (row < rows && vector_ok && col + 7 < cols) {
        __pipeline_memcpy_async(to, matrix + int64_t(row) * cols + col, 16);
        return;
    }
    for (int i = 0; i < 8; i++) {
        to[i] = row < rows && col + i < cols ? matrix[int64_t(row) * cols + col + i] : __float2bfloat16(0.0f);
    }
}

// Starts copying the TILE_ROWS x TILE_COLS tile of a stored (rows, cols) matrix at (row0, col0).
template <int TILE_ROWS, int TILE_COLS, int PITCH, int THREADS>
__device__ void copy_tile_async(__nv_bfloat16 (*tile)[PITCH], const __nv_bfloat16* x, int rows, int cols, int row0,
                                int col0, bool vector_ok) {
    for (int group = threadIdx.x; group < TILE_ROWS * TILE_COLS / 8; group += THREADS) {
        int r = group / (TILE_COLS / 8), c = (group % (TILE_COLS / 8)) * 8;
        copy8_async(&tile[r][c], x, rows, cols, row0 + r, col0 + c, vector_ok);
    }
}

// The address of element (row, col) of op(X) in a tile staged as stored: [row][col], or [col][row]
// when X is stored transposed.
template <bool transposed, int PITCH>
__device__ __forceinline__ const __nv_bfloat16* at(const __nv_bfloat16 (*tile)[PITCH], int row, int col) {
    return transposed ? &tile[col][row] : &tile[row][col];
}

template <int BLOCK_M, int BLOCK_N, bool transpose_a, bool transpose_b>
__global__ void __launch_bounds__(2 * BLOCK_N)
bf16_gemm_kernel(const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b,
                 const float* __restrict__ bias, float* __restrict__ c, int m, int n, int k, bool a_vector_ok,
                 bool b_vector_ok, int activation, float alpha) {
    using Shared = Bf16Shared<BLOCK_M, BLOCK_N, transpose_a, transpose_b>;
    using LayoutA = std::conditional_t<transpose_a, wmma::col_major, wmma::row_major>;
    using LayoutB = std::conditional_t<transpose_b, wmma::col_major, wmma::row_major>;
    using FragmentA = wmma::fragment<wmma::matrix_a, FRAGMENT, FRAGMENT, FRAGMENT, __nv_bfloat16, LayoutA>;
    using FragmentB = wmma::fragment<wmma::matrix_b, FRAGMENT, FRAGMENT, FRAGMENT, __nv_bfloat16, LayoutB>;
    using Accumulator = wmma::fragment<wmma::accumulator, FRAGMENT, FRAGMENT, FRAGMENT, float>;
    constexpr int THREADS = 2 * BLOCK_N, FRAGMENTS_M = BLOCK_M / 32, FRAGMENTS_N = 2;
    __shared__ __align__(128) Shared shared;

    int tile_row, tile_col;
    swizzled_tile((m + BLOCK_M - 1) / BLOCK_M, (n + BLOCK_N - 1) / BLOCK_N, tile_row, tile_col);
    int row_start = tile_row * BLOCK_M, col_start = tile_col * BLOCK_N;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int warp_row = (warp / (BLOCK_N / 32)) * (BLOCK_M / 2), warp_col = (warp % (BLOCK_N / 32)) * 32;
    auto copy_slice = [&](int slice) {
        int stage = slice % BF16_STAGES, k0 = slice * BF16_BLOCK_K;
        if (transpose_a) {
            copy_tile_async<BF16_BLOCK_K, BLOCK_M, Shared::A_PITCH, THREADS>(shared.a[stage], a, k, m, k0, row_start, a_vector_ok);
        } else {
            copy_tile_async<BLOCK_M, BF16_BLOCK_K, Shared::A_PITCH, THREADS>(shared.a[stage], a, m, k, row_start, k0, a_vector_ok);
        }
        if (transpose_b) {
            copy_tile_async<BLOCK_N, BF16_BLOCK_K, Shared::B_PITCH, THREADS>(shared.b[stage], b, n, k, col_start, k0, b_vector_ok);
        } else {
            copy_tile_async<BF16_BLOCK_K, BLOCK_N, Shared::B_PITCH, THREADS>(shared.b[stage], b, k, n, k0, col_start, b_vector_ok);
        }
    };

    Accumulator accumulators[FRAGMENTS_M][FRAGMENTS_N];
#pragma unroll
    for (int i = 0; i < FRAGMENTS_M; i++)
#pragma unroll
        for (int j = 0; j < FRAGMENTS_N; j++) wmma::fill_fragment(accumulators[i][j], 0.0f);
    int slices = (k + BF16_BLOCK_K - 1) / BF16_BLOCK_K;
    for (int s = 0; s < BF16_STAGES - 1; s++) {  // one commit group per slice, empty past the end
        if (s < slices) copy_slice(s);
        __pipeline_commit();
    }
    for (int s = 0; s < slices; s++) {
        __pipeline_wait_prior(BF16_STAGES - 2);  // this thread's copies of slice s have landed
        __syncthreads();  // everyone's have, and slice s - 1's stage is no longer read
        if (s + BF16_STAGES - 1 < slices) copy_slice(s + BF16_STAGES - 1);
        __pipeline_commit();
        const auto& a_tile = shared.a[s % BF16_STAGES];
        const auto& b_tile = shared.b[s % BF16_STAGES];
#pragma unroll
        for (int kk = 0; kk < BF16_BLOCK_K; kk += FRAGMENT) {
            FragmentA a_fragments[FRAGMENTS_M];
            FragmentB b_fragments[FRAGMENTS_N];
#pragma unroll
            for (int i = 0; i < FRAGMENTS_M; i++) {
                wmma::load_matrix_sync(a_fragments[i], at<transpose_a>(a_tile, warp_row + i * FRAGMENT, kk),
                                       Shared::A_PITCH);
            }
#pragma unroll
            for (int j = 0; j < FRAGMENTS_N; j++) {
                wmma::load_matrix_sync(b_fragments[j], at<transpose_b>(b_tile, kk, warp_col + j * FRAGMENT),
                                       Shared::B_PITCH);
            }
#pragma unroll
            for (int i = 0; i < FRAGMENTS_M; i++)
#pragma unroll
                for (int j = 0; j < FRAGMENTS_N; j++)
                    wmma::mma_sync(accumulators[i][j], a_fragments[i], b_fragments[j], accumulators[i][j]);
        }
    }

    float (*scratch)[FRAGMENT] = shared.scratch[warp];
    int r = lane / 2, c0 = (lane % 2) * 8;  // each lane: 8 consecutive elements of one row
#pragma unroll
    for (int i = 0; i < FRAGMENTS_M; i++) {
#pragma unroll
        for (int j = 0; j < FRAGMENTS_N; j++) {
            wmma::store_matrix_sync(&scratch[0][0], accumulators[i][j], FRAGMENT, wmma::mem_row_major);
            __syncwarp();  // the whole fragment is in scratch
            int row = row_start + warp_row + i * FRAGMENT + r, col = col_start + warp_col + j * FRAGMENT + c0;
#pragma unroll
            for (int e = 0; e < 8; e++) {  // (no early exit: every lane must reach the __syncwarp below)
                if (row < m && col + e < n) {
                    float bias_e = bias != nullptr ? bias[col + e] : 0.0f;
                    c[int64_t(row) * n + col + e] = activate(scratch[r][c0 + e] + bias_e, activation, alpha);
                }
            }
            __syncwarp();  // scratch is read before the next fragment overwrites it
        }
    }
}

static bool rows_aligned16(const __nv_bfloat16* x, int leading_dimension) {
    return reinterpret_cast<uintptr_t>(x) % 16 == 0 && leading_dimension % 8 == 0;
}

void matmul_bf16_forward_tiles(int tiles, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* bias, float* c,
                               int m, int n, int k, bool transpose_a, bool transpose_b, int activation, float alpha,
                               cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    bool a_ok = rows_aligned16(a, transpose_a ? m : k);
    bool b_ok = rows_aligned16(b, transpose_b ? k : n);
    with_tiles(tiles, "matmul_bf16", [&](auto block_m, auto block_n) {
        dim3 grid = swizzled_grid(m, n, block_m, block_n);
        with_transposes(transpose_a, transpose_b, [&](auto ta, auto tb) {
            bf16_gemm_kernel<block_m, block_n, ta, tb><<<grid, 2 * block_n, 0, stream>>>(a, b, bias, c, m, n, k, a_ok, b_ok, activation, alpha);
        });
    });
    CUDA_CHECK(cudaGetLastError());
}

void matmul_bf16_forward(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* bias, float* c, int m, int n,
                         int k, bool transpose_a, bool transpose_b, int activation, float alpha, cudaStream_t stream) {
    matmul_bf16_forward_tiles(matmul_tiles_for(m, n), a, b, bias, c, m, n, k, transpose_a, transpose_b, activation,
                              alpha, stream);
}
