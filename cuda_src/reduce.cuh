// Sums and maxima across a warp by shuffles, and softmax statistics across a block (shuffles, and
// shared memory between warps). Sums come in float and double: the row kernels sum in double
// where float32 rounding of a long sum (~n * 6e-8 relative) would show in every output of the row.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// Online softmax statistics of a set of numbers (Milakov & Gimelshein, 2018): their max and the
// sum of exp(x - max), in double. Numbers are added one at a time, the sum rescaled whenever the
// max grows, and two sets merge by rescaling each sum to the larger max, so a row's statistics
// take one read of the row. Non-finite inputs give what the two-pass form gives: a +inf makes
// the sum NaN (exp(inf - inf)); a row of -inf only has max -inf and sum 0, and its softmax is NaN.
struct MaxSum {
    float max;
    double sum;  // 0 only while no finite number has been added
};

// A -inf adds exp(-inf) = 0 whatever the max: skipped, since exp(x - max) is NaN while max is -inf.
__device__ __forceinline__ void add_to(MaxSum& stats, float x) {
    if (x == -INFINITY) return;
    if (x > stats.max) {
        stats.sum *= exp(double(stats.max) - double(x));  // exp(-inf) = 0 while the set is empty
        stats.max = x;
    }
    stats.sum += expf(x - stats.max);
}

__device__ __forceinline__ double rescaled_sum(MaxSum stats, float max) {
    return stats.sum == 0.0 ? 0.0 : stats.sum * exp(double(stats.max) - double(max));
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
    float max = fmaxf(a.max, b.max);
    return {max, rescaled_sum(a, max) + rescaled_sum(b, max)};
}

__device__ __forceinline__ MaxSum warp_max_sum(MaxSum stats) {
    for (int offset = 16; offset > 0; offset /= 2) {
        float other_max = __shfl_xor_sync(0xffffffffu, stats.max, offset);
        double other_sum = __shfl_xor_sync(0xffffffffu, stats.sum, offset);
        stats = merge(stats, {other_max, other_sum});
    }
    return stats;
}

// The statistics of the whole block's numbers, returned to every thread; as block_reduce, every
// thread of a block of a multiple of 32 threads must call it.
__device__ inline MaxSum block_max_sum(MaxSum stats) {
    __shared__ float partial_max[32];
    __shared__ double partial_sum[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    stats = warp_max_sum(stats);
    if (lane == 0) partial_max[warp] = stats.max, partial_sum[warp] = stats.sum;
    __syncthreads();
    stats = lane < warps ? MaxSum{partial_max[lane], partial_sum[lane]} : MaxSum{-INFINITY, 0.0};
    stats = warp_max_sum(stats);
    __syncthreads();  // the partials may be reused by the next call
    return stats;
}
