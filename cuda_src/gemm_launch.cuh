// What the GEMM launchers (matmul.cu, matmul_bf16.cu) share: the block order (a CTA swizzle over
// a 1-D grid of BLOCK_M x BLOCK_N tiles of C), the grid, and the choice of a kernel instance by
// tile configuration (MatmulTiles in matmul.cuh) and by which operands are stored transposed.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "matmul.cuh"

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

// launch(block_m, block_n) with the tile configuration's sizes as std::integral_constant values,
// so that it can instantiate a kernel with them; std::invalid_argument for an unknown one.
template <class Launch>
void with_tiles(int tiles, const char* op, Launch launch) {
    using std::integral_constant;
    switch (tiles) {
        case TILES_128x128: launch(integral_constant<int, 128>{}, integral_constant<int, 128>{}); break;
        case TILES_128x64: launch(integral_constant<int, 128>{}, integral_constant<int, 64>{}); break;
        case TILES_64x64: launch(integral_constant<int, 64>{}, integral_constant<int, 64>{}); break;
        default:
            throw std::invalid_argument(std::string(op) + ": tile configuration " + std::to_string(tiles) +
                                        " is not 0, 1 or 2");
    }
}

// launch(transpose_a, transpose_b) with the flags as std::bool_constant values.
template <class Launch>
void with_transposes(bool transpose_a, bool transpose_b, Launch launch) {
    using std::bool_constant;
    if (!transpose_a && !transpose_b) launch(bool_constant<false>{}, bool_constant<false>{});
    else if (!transpose_a) launch(bool_constant<false>{}, bool_constant<true>{});
    else if (!transpose_b) launch(bool_constant<true>{}, bool_constant<false>{});
    else launch(bool_constant<true>{}, bool_constant<true>{});
}
