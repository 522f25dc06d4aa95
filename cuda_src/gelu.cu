// GELU with the tanh approximation (GPT-2's), forward and backward, elementwise over n floats:
//   u = sqrt(2/pi) (x + 0.044715 x^3),  s = sigmoid(2u) = (1 + tanh u) / 2
//   y = x s,   dx = dy (s + 2 x s (1 - s) u'),  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// With e = exp(-|2u|) in (0, 1]: s = 1/(1+e) for u >= 0, e/(1+e) for u < 0, s(1-s) = e/(1+e)^2,
// so nothing cancels where s is near 0 or 1 (the same form as pyai's CPU kernel,
// kernels/numba_cpu/gelu.py).
// Cost per element: ~25 FLOPs (an exp, a divide); forward 8 bytes, backward 12. Memory-bound:
// a grid-stride loop of coalesced loads, few enough blocks to fill the GPU a few times over.
#include "check.cuh"
#include "gelu.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
constexpr float CUBIC = 0.044715f;

struct SigmoidOfTwice {
    float s;          // sigmoid(2u)
    float s_one_minus_s;  // s (1 - s)
};

__device__ __forceinline__ SigmoidOfTwice sigmoid_of_twice(float u) {
    float e = expf(-fabsf(2.0f * u));
    float inverse = 1.0f / (1.0f + e);
    return {u >= 0.0f ? inverse : e * inverse, e * inverse * inverse};
}

__global__ void gelu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float value = x[i];
        float u = SQRT_2_OVER_PI * (value + CUBIC * value * value * value);
        y[i] = value * sigmoid_of_twice(u).s;
    }
}

__global__ void gelu_backward_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                     float* __restrict__ dx, int64_t n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float value = x[i];
        float u = SQRT_2_OVER_PI * (value + CUBIC * value * value * value);
        float slope = SQRT_2_OVER_PI * (1.0f + 3.0f * CUBIC * value * value);
        SigmoidOfTwice sig = sigmoid_of_twice(u);
        dx[i] = dy[i] * (sig.s + 2.0f * value * sig.s_one_minus_s * slope);
    }
}

static int block_count(int64_t n) {
    int64_t blocks = (n + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

void gelu_forward(const float* x, float* y, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    gelu_forward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(x, y, n);
    CUDA_CHECK(cudaGetLastError());
}

void gelu_backward(const float* dy, const float* x, float* dx, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    gelu_backward_kernel<<<block_count(n), THREADS_PER_BLOCK, 0, stream>>>(dy, x, dx, n);
    CUDA_CHECK(cudaGetLastError());
}
