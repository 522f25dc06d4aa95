// Sums and maxima across a warp and across a block, by shuffles (and shared memory between warps).
// Sums come in float and double: the row kernels sum in double where float32 rounding of a long
// sum (~n * 6e-8 relative) would show in every output of the row.
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

// The sum (or max) of x over the whole block, returned to every thread. blockDim.x must be a
// multiple of 32, at most 1024; every thread must call it (it has two barriers).
template <bool is_max, typename T>
__device__ T block_reduce(T x) {
    __shared__ T partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    x = is_max ? warp_max(x) : warp_sum(x);
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    T identity = is_max ? T(-INFINITY) : T(0);
    x = lane < warps ? partial[lane] : identity;
    x = is_max ? warp_max(x) : warp_sum(x);
    __syncthreads();  // partial may be reused by the next call
    return x;
}

__device__ __forceinline__ double block_sum(double x) { return block_reduce<false>(x); }
__device__ __forceinline__ float block_max(float x) { return block_reduce<true>(x); }
