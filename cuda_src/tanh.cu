// Tanh, forward and backward, elementwise over n float32 values:
//   forward:  y  = tanh(x)
//   backward: dx = dy * (1 - y * y), from the forward output y, as dy (1 - y)(1 + y): where tanh
//             saturates, the factor near 0 (1 - y for y >= 1/2, 1 + y for y <= -1/2) is exact and
//             the other rounds by half an ulp, so nothing cancels (1 - y * y rounds y * y first:
//             off by 4e-5 of the result at |y| = 0.999 where no FMA contracts it)
// The forward is CUDA's tanhf (within 2 ulp; no --use_fast_math, so not the tanh.approx
// instruction): it saturates to exactly -1 and 1 (tanh(+-1000) = +-1), never overflows, and
// keeps NaN, as pyai's CPU kernel (kernels/numba_cpu/tanh.py) does.
//
// Cost per element: forward ~25 FLOPs, 8 bytes (read x, write y); backward 4 FLOPs, 12 bytes
// (read dy and y, write dx). Memory-bound, as gelu.cu: a grid-stride loop of coalesced loads,
// few enough blocks to fill the GPU a few times over.
#include "check.cuh"
#include "tanh.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;  // ~4 waves of an H100 (132 SMs x 2048 threads); the loop strides past it

__global__ void tanh_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        y[i] = tanhf(x[i]);
    }
}

__global__ void tanh_backward_kernel(const float* __restrict__ dy, const float* __restrict__ y,
                                     float* __restrict__ dx, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float value = y[i];
        dx[i] = dy[i] * ((1.0f - value) * (1.0f + value));
    }
}

static int block_count(int64_t n) {
    int64_t blocks = (n + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

void tanh_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
    if (n == 0) return;  // a grid of zero blocks is a launch error
    tanh_forward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(x, y, n);
    CUDA_CHECK(cudaGetLastError());
}

void tanh_backward(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    tanh_backward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(dy, y, dx, n);
    CUDA_CHECK(cudaGetLastError());
}
