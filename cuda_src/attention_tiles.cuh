// Helpers shared by the attention kernels: staging rows in shared memory, per-lane dot products.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attention.cuh"
#include "reduce.cuh"

constexpr int ROW_TILE = 32;                          // keys (or queries) per tile: one per lane
constexpr int ROW_PITCH = ATTENTION_MAX_DEPTH + 1;    // lane j reads row j: the pad keeps banks apart
constexpr int DEPTH_PER_LANE = ATTENTION_MAX_DEPTH / 32;

// tile[r][d] = rows[first + r][d] for r < ROW_TILE (zero past n_rows), by all threads of the block.
__device__ __forceinline__ void load_rows(float (*tile)[ROW_PITCH], const float* rows, int first,
                                          int n_rows, int depth) {
    for (int index = threadIdx.x; index < ROW_TILE * depth; index += blockDim.x) {
        int r = index / depth, d = index % depth;
        tile[r][d] = first + r < n_rows ? rows[int64_t(first + r) * depth + d] : 0.0f;
    }
}

// row . tile[lane] over depth: one dot product per lane, the row broadcast from shared memory.
__device__ __forceinline__ float dot_with_lane_row(const float* row, const float (*tile)[ROW_PITCH],
                                                   int lane, int depth) {
    float total = 0.0f;
    for (int d = 0; d < depth; d++) total = fmaf(row[d], tile[lane][d], total);
    return total;
}

// accumulator[c] += sum_r weight_r tile[r][lane + 32 c] for lane + 32 c < depth, with weight_r
// held by lane r.
__device__ __forceinline__ void add_weighted_rows(float (&accumulator)[DEPTH_PER_LANE], float weight,
                                                  const float (*tile)[ROW_PITCH], int lane, int depth) {
    for (int r = 0; r < ROW_TILE; r++) {
        float w = __shfl_sync(0xffffffffu, weight, r);
#pragma unroll
        for (int c = 0; c < DEPTH_PER_LANE; c++) {
            if (lane + 32 * c < depth) accumulator[c] = fmaf(w, tile[r][lane + 32 * c], accumulator[c]);
        }
    }
}

// row[d] = source[d] for d < depth, by the 32 lanes of one warp.
__device__ __forceinline__ void load_row(float* row, const float* source, int lane, int depth) {
    for (int d = lane; d < depth; d += 32) row[d] = source[d];
}
