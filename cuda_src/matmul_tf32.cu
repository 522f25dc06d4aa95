// GEMM with a fused epilogue on TF32 tensor cores (sm_80+), float32 in and out:
//   C = activation(op(A) @ op(B) + bias)     op(A) (M, K), op(B) (K, N), bias (N,), C (M, N)
// with op(A) and op(B) rounded to TF32 (float32 with a 10-bit mantissa, relative rounding
// ~2^-11) and the products summed in float32: results are within ~1e-3 relative of float32's,
// and within float32 summation error of the product of the TF32-rounded operands.
// Cost: 2 M N K FLOPs on tensor cores (an H100 does ~8x its float32 FMA rate in TF32);
// at least 4 (M K + K N + M N) bytes.
//
// Fast version (first cut, through the WMMA API, whose fragments the host emulation models):
//   - each block of 4 warps owns a BLOCK_M x BLOCK_N tile of C; warp (wm, wn) owns 32 x 32 of it
//     as 2 x 2 accumulator fragments of 16 x 16;
//   - K is walked in slices of BLOCK_K: the block stages op(A) (m-major) and op(B) (k-major) in
//     shared memory, loading along each operand's contiguous dimension (coalesced), zeros past
//     the edges so ragged M, N, K need no separate path; rows are padded by 8 floats (32 bytes)
//     so every fragment starts 32-byte aligned, as wmma::load_matrix_sync requires;
//   - per 8-deep step a warp loads 2 A and 2 B fragments, rounds them to TF32, and issues 4 mma;
//   - the epilogue stores the accumulators to shared memory, then every thread applies bias and
//     activation to consecutive elements and writes them coalesced.
// Not yet: cp.async multi-stage pipelining, register-level double buffering, larger tiles per
// shape, a CTA swizzle; speed is to be measured on a GPU beside cuBLAS's TF32 GEMM.
#include <mma.h>

#include "check.cuh"
#include "epilogue.cuh"
#include "matmul.cuh"

using namespace nvcuda;

constexpr int TC_BLOCK_M = 64;
constexpr int TC_BLOCK_N = 64;
constexpr int TC_BLOCK_K = 16;
constexpr int TC_THREADS = 128;                 // 4 warps, 2 x 2 over the block's tile
constexpr int FRAGMENT = 16;                    // wmma tf32 shape m16n16k8
constexpr int FRAGMENT_K = 8;
constexpr int PAD = 8;                          // floats: 32 bytes, keeps fragments 32-byte aligned
constexpr int A_PITCH = TC_BLOCK_K + PAD;
constexpr int B_PITCH = TC_BLOCK_N + PAD;
constexpr int C_PITCH = TC_BLOCK_N + PAD;

struct Tf32Tiles {
    float a[TC_BLOCK_M][A_PITCH];  // op(A)[m][k] of the slice
    float b[TC_BLOCK_K][B_PITCH];  // op(B)[k][n] of the slice
    float c[TC_BLOCK_M][C_PITCH];  // the block's C tile before the epilogue
};

using FragmentA =
    wmma::fragment<wmma::matrix_a, FRAGMENT, FRAGMENT, FRAGMENT_K, wmma::precision::tf32, wmma::row_major>;
using FragmentB =
    wmma::fragment<wmma::matrix_b, FRAGMENT, FRAGMENT, FRAGMENT_K, wmma::precision::tf32, wmma::row_major>;
using Accumulator = wmma::fragment<wmma::accumulator, FRAGMENT, FRAGMENT, FRAGMENT_K, float>;

// Element (row, col) of a row-major (rows, cols) matrix, zero outside it.
__device__ __forceinline__ float element(const float* x, int rows, int cols, int row, int col) {
    return row < rows && col < cols ? x[int64_t(row) * cols + col] : 0.0f;
}

// tiles.a[r][kk] = op(A)[row0 + r][k0 + kk]; consecutive threads read consecutive addresses.
template <bool transpose_a>
__device__ void load_a(Tf32Tiles& tiles, const float* a, int m, int k, int row0, int k0) {
    for (int i = threadIdx.x; i < TC_BLOCK_M * TC_BLOCK_K; i += TC_THREADS) {
        if (transpose_a) {  // stored (k, m): along m
            int r = i % TC_BLOCK_M, kk = i / TC_BLOCK_M;
            tiles.a[r][kk] = element(a, k, m, k0 + kk, row0 + r);
        } else {            // stored (m, k): along k
            int r = i / TC_BLOCK_K, kk = i % TC_BLOCK_K;
            tiles.a[r][kk] = element(a, m, k, row0 + r, k0 + kk);
        }
    }
}

// tiles.b[kk][c] = op(B)[k0 + kk][col0 + c]
template <bool transpose_b>
__device__ void load_b(Tf32Tiles& tiles, const float* b, int n, int k, int col0, int k0) {
    for (int i = threadIdx.x; i < TC_BLOCK_K * TC_BLOCK_N; i += TC_THREADS) {
        if (transpose_b) {  // stored (n, k): along k
            int c = i / TC_BLOCK_K, kk = i % TC_BLOCK_K;
            tiles.b[kk][c] = element(b, n, k, col0 + c, k0 + kk);
        } else {            // stored (k, n): along n
            int c = i % TC_BLOCK_N, kk = i / TC_BLOCK_N;
            tiles.b[kk][c] = element(b, k, n, k0 + kk, col0 + c);
        }
    }
}

template <class Fragment>
__device__ __forceinline__ void round_to_tf32(Fragment& fragment) {
    for (int i = 0; i < fragment.num_elements; i++) fragment.x[i] = wmma::__float_to_tf32(fragment.x[i]);
}

template <bool transpose_a, bool transpose_b>
__global__ void __launch_bounds__(TC_THREADS)
tf32_gemm_kernel(const float* __restrict__ a, const float* __restrict__ b, const float* __restrict__ bias,
                 float* __restrict__ c, int m, int n, int k, int activation, float alpha) {
    __shared__ __align__(32) Tf32Tiles tiles;
    int row0 = blockIdx.y * TC_BLOCK_M, col0 = blockIdx.x * TC_BLOCK_N;
    int warp = threadIdx.x / 32, warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    Accumulator accumulators[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::fill_fragment(accumulators[i][j], 0.0f);

    for (int k0 = 0; k0 < k; k0 += TC_BLOCK_K) {
        __syncthreads();  // the previous slice is no longer read
        load_a<transpose_a>(tiles, a, m, k, row0, k0);
        load_b<transpose_b>(tiles, b, n, k, col0, k0);
        __syncthreads();
        for (int kk = 0; kk < TC_BLOCK_K; kk += FRAGMENT_K) {
            FragmentA a_fragments[2];
            FragmentB b_fragments[2];
            for (int i = 0; i < 2; i++) {
                wmma::load_matrix_sync(a_fragments[i], &tiles.a[warp_row + i * FRAGMENT][kk], A_PITCH);
                round_to_tf32(a_fragments[i]);
                wmma::load_matrix_sync(b_fragments[i], &tiles.b[kk][warp_col + i * FRAGMENT], B_PITCH);
                round_to_tf32(b_fragments[i]);
            }
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    wmma::mma_sync(accumulators[i][j], a_fragments[i], b_fragments[j], accumulators[i][j]);
        }
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(&tiles.c[warp_row + i * FRAGMENT][warp_col + j * FRAGMENT], accumulators[i][j],
                                    C_PITCH, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < TC_BLOCK_M * TC_BLOCK_N; i += TC_THREADS) {
        int r = i / TC_BLOCK_N, col = i % TC_BLOCK_N;
        if (row0 + r >= m || col0 + col >= n) continue;
        float bias_j = bias != nullptr ? bias[col0 + col] : 0.0f;
        c[int64_t(row0 + r) * n + col0 + col] = activate(tiles.c[r][col] + bias_j, activation, alpha);
    }
}

void matmul_tf32_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                         bool transpose_a, bool transpose_b, int activation, float alpha, cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    dim3 grid((n + TC_BLOCK_N - 1) / TC_BLOCK_N, (m + TC_BLOCK_M - 1) / TC_BLOCK_M);
    if (!transpose_a && !transpose_b) {
        tf32_gemm_kernel<false, false><<<grid, TC_THREADS, 0, stream>>>(a, b, bias, c, m, n, k, activation, alpha);
    } else if (!transpose_a && transpose_b) {
        tf32_gemm_kernel<false, true><<<grid, TC_THREADS, 0, stream>>>(a, b, bias, c, m, n, k, activation, alpha);
    } else if (transpose_a && !transpose_b) {
        tf32_gemm_kernel<true, false><<<grid, TC_THREADS, 0, stream>>>(a, b, bias, c, m, n, k, activation, alpha);
    } else {
        tf32_gemm_kernel<true, true><<<grid, TC_THREADS, 0, stream>>>(a, b, bias, c, m, n, k, activation, alpha);
    }
    CUDA_CHECK(cudaGetLastError());
}
