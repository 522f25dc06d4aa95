// Softmax cross-entropy over a vocabulary, fused: per-row losses and d loss / d logits in one pass.
//   lse_r = m_r + log sum_j exp(z_rj - m_r),  m_r = max_j z_rj
//   losses_r = lse_r - z_r,t_r                         (the caller takes the mean over rows)
//   dz_rj = (exp(z_rj - lse_r) - [j == t_r]) / N
// logits z, dz (N, V); targets t (N,) int64. Finite for any finite logits: every exp is of a
// number <= 0 and the loss is lse - z, never log(p).
// Cost per logit: ~50 FLOPs (two exps); 8 bytes (read z, write dz), where softmax, log, gather
// and the gradient as separate kernels move the N x V matrix 4-5 times.
//
// Fast version: one block per row, as softmax.cu: the online max and sum of exps (in double) in
// one read of the row, then dz written in a second pass over the row, still in cache. The loss
// is (m - z_t) + log(sum) in double: where the target holds the max the loss is log(sum), with
// no cancellation of lse against z_t. A row of -inf only (every logit masked) has p = 0: loss
// +inf, gradient -1/N at the target, as on the CPU backend.
#include "check.cuh"
#include "reduce.cuh"
#include "softmax.cuh"

constexpr int THREADS_PER_ROW = 256;

__global__ void softmax_cross_entropy_kernel(const float* __restrict__ logits, const int64_t* __restrict__ targets,
                                             float* __restrict__ losses, float* __restrict__ dlogits,
                                             int64_t rows, int columns) {
    const float* z = logits + int64_t(blockIdx.x) * columns;
    float* dz = dlogits + int64_t(blockIdx.x) * columns;
    MaxSum stats = {-INFINITY, 0.0};
    for (int j = threadIdx.x; j < columns; j += blockDim.x) add_to(stats, z[j]);
    stats = block_max_sum(stats);
    float largest = stats.max;
    double total = stats.sum;
    int64_t target = targets[blockIdx.x];
    float inverse_rows = float(1.0 / double(rows));
    if (largest == -INFINITY) {   // every logit masked (the whole block sees it): p = 0, the target's too
        for (int j = threadIdx.x; j < columns; j += blockDim.x) dz[j] = j == target ? -inverse_rows : 0.0f;
        if (threadIdx.x == 0) losses[blockIdx.x] = INFINITY;
        return;
    }
    float scale = float(1.0 / (total * double(rows)));   // p_j / N = exp(z_j - m) / (sum N)
    for (int j = threadIdx.x; j < columns; j += blockDim.x) {
        float p_over_rows = expf(z[j] - largest) * scale;
        // the target's p - 1 as (exp - sum) / (sum N) in double: no float32 p - 1 cancelling
        dz[j] = j == target ? float((double(expf(z[j] - largest)) - total) / (total * double(rows))) : p_over_rows;
    }
    if (threadIdx.x == 0) losses[blockIdx.x] = float(double(largest - z[target]) + log(total));
}

void softmax_cross_entropy_forward_backward(const float* logits, const int64_t* targets, float* losses,
                                            float* dlogits, int64_t rows, int columns, cudaStream_t stream) {
    if (rows == 0) return;
    softmax_cross_entropy_kernel<<<unsigned(rows), THREADS_PER_ROW, 0, stream>>>(logits, targets, losses, dlogits,
                                                                                rows, columns);
    CUDA_CHECK(cudaGetLastError());
}
