// The block order and grid the GEMMs (matmul.cu, matmul_bf16.cu) share: a CTA swizzle over a 1-D
// grid of BLOCK_M x BLOCK_N tiles of C.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

constexpr int SWIZZLE_ROWS = 8;  // row tiles per group of the block order

// The (row tile, column tile) of this block: the 1-D grid runs down SWIZZLE_ROWS row tiles at a
// time, then one column tile right, so consecutive blocks share B's column tile and the blocks of
// one group (SWIZZLE_ROWS x all columns) read only SWIZZLE_ROWS row tiles of A: the blocks
// resident at one time reuse each other's A and B tiles in L2.
__device__ __forceinline__ void swizzled_tile(int row_tiles, int col_tiles, int& tile_row, int& tile_col) {
    int per_group = SWIZZLE_ROWS * col_tiles;
    int block = int(blockIdx.x), first_row = (block / per_group) * SWIZZLE_ROWS;
    int rows_in_group = min(row_tiles - first_row, SWIZZLE_ROWS);
    int within = block % per_group;
    tile_row = first_row + within % rows_in_group;
    tile_col = within / rows_in_group;
}

inline int64_t block_count(int m, int n, int block_m, int block_n) {
    return int64_t((m + block_m - 1) / block_m) * ((n + block_n - 1) / block_n);
}

// The 1-D grid of an (m, n) result in block_m x block_n tiles; std::invalid_argument when it is
// past CUDA's limit of 2^31 - 1 blocks.
inline dim3 swizzled_grid(int m, int n, int block_m, int block_n) {
    int64_t blocks = block_count(m, n, block_m, block_n);
    if (blocks > INT32_MAX) {
        throw std::invalid_argument("matmul: M x N = " + std::to_string(m) + " x " + std::to_string(n) + " needs " +
                                    std::to_string(blocks) + " blocks, past CUDA's grid limit");
    }
    return dim3{unsigned(blocks)};
}
