// Sigmoid, forward and backward, elementwise over n float32 values:
//   forward:  y  = 1 / (1 + exp(-x))
//   backward: dx = dy * y * (1 - y), from the forward output y
// Stable form, as pyai's CPU kernel (kernels/numba_cpu/sigmoid.py): with e = exp(-|x|) in [0, 1],
// y = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, so no exp overflows and the limits are
// exactly 0 and 1 (sigmoid(-1000) = 0, sigmoid(1000) = 1); NaN stays NaN. Outputs under 2^-126
// (x < -87.3) stay subnormal here, where the CPU kernel flushes them to 0.
//
// Cost per element: forward ~20 FLOPs (an exp and a divide), 8 bytes (read x, write y);
// backward 3 FLOPs, 12 bytes (read dy and y, write dx). Memory-bound, as gelu.cu: a grid-stride
// loop of coalesced loads, few enough blocks to fill the GPU a few times over.
#include "check.cuh"
#include "sigmoid.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;  // ~4 waves of an H100 (132 SMs x 2048 threads); the loop strides past it

__global__ void sigmoid_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float value = x[i];
        float e = expf(-fabsf(value));
        y[i] = (value >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
}

__global__ void sigmoid_backward_kernel(const float* __restrict__ dy, const float* __restrict__ y,
                                        float* __restrict__ dx, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float value = y[i];
        dx[i] = dy[i] * value * (1.0f - value);
    }
}

static int block_count(int64_t n) {
    int64_t blocks = (n + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

void sigmoid_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
    if (n == 0) return;  // a grid of zero blocks is a launch error
    sigmoid_forward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(x, y, n);
    CUDA_CHECK(cudaGetLastError());
}

void sigmoid_backward(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    sigmoid_backward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(dy, y, dx, n);
    CUDA_CHECK(cudaGetLastError());
}
