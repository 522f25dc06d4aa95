// Softmax over the last axis, float32:
//   y[r, j] = exp(x[r, j] - m_r) / sum_k exp(x[r, k] - m_r),   m_r = max_k x[r, k]
// x, y (N, V). Subtracting the row max keeps every exp in (0, 1]: no overflow for any finite x.
// Cost per element: ~50 FLOPs (two exps); 8 bytes when a row stays in L1/L2 between the passes.
//
// Fast version: one block per row; two passes over the row, each a strided loop with coalesced
// loads: the online max and sum of exps in one read (reduce.cuh's MaxSum, merged across the
// block), then the write. The second read of the row comes from cache for rows up to ~100k
// floats. The sum is in double: a float sum of V terms is off by up to ~V * 6e-8 relative, and
// that error would scale the whole row. A row of -inf only (every position masked) gives 0s, as
// on the CPU backend.
#include "check.cuh"
#include "reduce.cuh"
#include "softmax.cuh"

constexpr int THREADS_PER_ROW = 256;

__global__ void softmax_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int columns) {
    const float* x_row = x + int64_t(blockIdx.x) * columns;
    float* y_row = y + int64_t(blockIdx.x) * columns;
    MaxSum stats = {-INFINITY, 0.0};
    for (int j = threadIdx.x; j < columns; j += blockDim.x) add_to(stats, x_row[j]);
    stats = block_max_sum(stats);
    if (stats.max == -INFINITY) {   // every position masked (the whole block sees it): 0s
        for (int j = threadIdx.x; j < columns; j += blockDim.x) y_row[j] = 0.0f;
        return;
    }
    float inverse = float(1.0 / stats.sum);
    for (int j = threadIdx.x; j < columns; j += blockDim.x) y_row[j] = expf(x_row[j] - stats.max) * inverse;
}

void softmax_forward(const float* x, float* y, int64_t rows, int columns, cudaStream_t stream) {
    if (rows == 0) return;
    softmax_forward_kernel<<<unsigned(rows), THREADS_PER_ROW, 0, stream>>>(x, y, columns);
    CUDA_CHECK(cudaGetLastError());
}
