// Leaky ReLU, elementwise over n float32 values:
//   forward:  y  = x > 0 ? x  : alpha * x
//   backward: dx = x > 0 ? dy : alpha * dy
// At x == 0 the gradient is alpha * dy, as in TensorFlow's tf.nn.leaky_relu (which tests x > 0).
//
// Cost: n FLOPs each way (one compare-and-select, one multiply on the negative side).
//   forward  reads 4n bytes, writes 4n bytes
//   backward reads 8n bytes, writes 4n bytes
// At well under one FLOP per byte both are bound by memory bandwidth, so the kernel only tries to
// move bytes efficiently: a grid-stride loop that loads and stores float4 (16 bytes per
// instruction) when every pointer is 16-byte aligned, then a scalar loop for the last n % 4
// elements (or for all of them when a pointer is misaligned).
#include "check.cuh"
#include "leaky_relu.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;  // ~4 waves of an H100 (132 SMs x 2048 threads); the loop strides past it

// `value` where x > 0, else alpha * value: y with value = x, dx with value = dy.
__device__ __forceinline__ float leaky(float x, float value, float alpha) {
    return x > 0.0f ? value : alpha * value;
}

__device__ __forceinline__ float4 leaky4(float4 x, float4 value, float alpha) {
    return make_float4(leaky(x.x, value.x, alpha), leaky(x.y, value.y, alpha),
                       leaky(x.z, value.z, alpha), leaky(x.w, value.w, alpha));
}

// The first `vector_count` groups of four go through float4; elements from 4 * vector_count on
// go one at a time.
__global__ void leaky_relu_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                          int64_t n, int64_t vector_count, float alpha) {
    int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (int64_t i = start; i < vector_count; i += stride) {
        float4 value = x4[i];
        y4[i] = leaky4(value, value, alpha);
    }
    for (int64_t i = 4 * vector_count + start; i < n; i += stride) {
        float value = x[i];
        y[i] = leaky(value, value, alpha);
    }
}

__global__ void leaky_relu_backward_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                           float* __restrict__ dx, int64_t n, int64_t vector_count,
                                           float alpha) {
    int64_t start = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const float4* dy4 = reinterpret_cast<const float4*>(dy);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* dx4 = reinterpret_cast<float4*>(dx);
    for (int64_t i = start; i < vector_count; i += stride) {
        dx4[i] = leaky4(x4[i], dy4[i], alpha);
    }
    for (int64_t i = 4 * vector_count + start; i < n; i += stride) {
        dx[i] = leaky(x[i], dy[i], alpha);
    }
}

static bool aligned16(const void* pointer) {
    return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

// Enough blocks for one thread per float4 group, or per element on the scalar path.
static int block_count(int64_t n, int64_t vector_count) {
    int64_t items = vector_count > 0 ? vector_count : n;
    int64_t blocks = (items + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

void leaky_relu_forward(const float* x, float* y, int64_t n, float alpha, cudaStream_t stream) {
    if (n == 0) return;  // a grid of zero blocks is a launch error
    int64_t vector_count = aligned16(x) && aligned16(y) ? n / 4 : 0;
    leaky_relu_forward_kernel<<<block_count(n, vector_count), THREADS_PER_BLOCK, 0, stream>>>(
        x, y, n, vector_count, alpha);
    CUDA_CHECK(cudaGetLastError());
}

void leaky_relu_backward(const float* dy, const float* x, float* dx, int64_t n, float alpha,
                         cudaStream_t stream) {
    if (n == 0) return;
    int64_t vector_count = aligned16(dy) && aligned16(x) && aligned16(dx) ? n / 4 : 0;
    leaky_relu_backward_kernel<<<block_count(n, vector_count), THREADS_PER_BLOCK, 0, stream>>>(
        dy, x, dx, n, vector_count, alpha);
    CUDA_CHECK(cudaGetLastError());
}
