// What the BF16 tensor-core attention kernels share (attention_forward_bf16.cu,
// attention_backward_bf16.cu): WMMA fragments of shape m16n16k16, rows of q, k, v staged in shared
// memory as bf16, and the way a warp's 16 x 16 accumulators leave through shared memory.
// Rows are padded to 16 bf16 (32 bytes) past ATTENTION_MAX_DEPTH so that every fragment is
// 32-byte aligned and every leading dimension a multiple of 16 bytes, as WMMA requires; D is
// padded with zeros to a multiple of 16.
#pragma once

#include <cuda_bf16.h>
#include <mma.h>

#include "attention.cuh"

constexpr int FRAGMENT = 16;                                  // wmma bf16 shape m16n16k16
constexpr int DEPTH_FRAGMENTS = ATTENTION_MAX_DEPTH / FRAGMENT;
constexpr int BF16_PITCH = ATTENTION_MAX_DEPTH + 16;          // bf16 per q, k, v or do row: 288 bytes
constexpr int BF16_TILE = 32;                                 // staged rows (keys or queries) per step
constexpr int SCORE_PITCH = BF16_TILE + 8;                    // floats per row of s: 160 bytes
constexpr int WEIGHT_PITCH = BF16_TILE + 16;                  // bf16 per row of p or ds: 96 bytes

using RowsFragment = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, FRAGMENT, FRAGMENT, FRAGMENT, __nv_bfloat16,
                                            nvcuda::wmma::row_major>;
// rows^T as the b operand: column j of the fragment is row j of the staged tile
using TransposedFragment = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, FRAGMENT, FRAGMENT, FRAGMENT,
                                                  __nv_bfloat16, nvcuda::wmma::col_major>;
using ColumnsFragment = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, FRAGMENT, FRAGMENT, FRAGMENT, __nv_bfloat16,
                                               nvcuda::wmma::row_major>;
using SumFragment = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, FRAGMENT, FRAGMENT, FRAGMENT, float>;

// tile[r][d] = rows[first + r][d] for r < count, d < padded_depth (zero past n_rows and depth).
__device__ __forceinline__ void load_bf16_rows(__nv_bfloat16 (*tile)[BF16_PITCH], int count,
                                               const __nv_bfloat16* rows, int first, int n_rows, int depth,
                                               int padded_depth) {
    for (int i = threadIdx.x; i < count * padded_depth; i += blockDim.x) {
        int r = i / padded_depth, d = i % padded_depth;
        bool inside = first + r < n_rows && d < depth;
        tile[r][d] = inside ? rows[int64_t(first + r) * depth + d] : __float2bfloat16(0.0f);
    }
}

// row_out[c] = bf16(factor * sums[c / 16](r, c % 16)) for c < depth, where r = lane / 2 is the
// lane's row among the warp's 16 (lanes 2r and 2r + 1 write 8 columns of each 16); the fragments
// pass through `scores`, the warp's 16 rows of SCORE_PITCH floats. row_out null: a row past the end.
__device__ __forceinline__ void store_bf16_row(__nv_bfloat16* row_out, const SumFragment (&sums)[DEPTH_FRAGMENTS],
                                               float factor, float (*scores)[SCORE_PITCH], int depth,
                                               int padded_depth) {
    int lane = threadIdx.x % 32, r = lane / 2, first_column = lane % 2 * FRAGMENT / 2;
#pragma unroll
    for (int f = 0; f < DEPTH_FRAGMENTS; f++) {
        if (f * FRAGMENT >= padded_depth) break;
        nvcuda::wmma::store_matrix_sync(&scores[0][0], sums[f], SCORE_PITCH, nvcuda::wmma::mem_row_major);
        __syncwarp();
        for (int c = first_column; c < first_column + FRAGMENT / 2; c++) {
            int column = f * FRAGMENT + c;
            if (row_out != nullptr && column < depth) row_out[column] = __float2bfloat16(factor * scores[r][c]);
        }
        __syncwarp();  // read before the next fragment overwrites it
    }
}
