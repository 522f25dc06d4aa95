// One Adam step, in place (Keras 3's Adam.update_step), elementwise over n floats:
//   m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2);  param -= m alpha / (sqrt(v) + epsilon)
// with alpha = lr sqrt(1 - beta_2^step) / (1 - beta_1^step) computed once by the caller.
// Cost per element: ~10 FLOPs, a sqrt and a divide; 28 bytes (read param, grad, m, v; write
// param, m, v). Memory-bound: Keras makes a pass over memory per operation, this makes one.
// Each operation is done in float32 in Keras's order, so a step matches pyai's CPU kernel.
#include "adam.cuh"
#include "check.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;

__global__ void adam_update_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                   float* __restrict__ m, float* __restrict__ v, int64_t n, float alpha,
                                   float one_minus_beta_1, float one_minus_beta_2, float epsilon) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        float g = grad[i];
        float m_new = m[i] + __fmul_rn(g - m[i], one_minus_beta_1);
        float v_new = v[i] + __fmul_rn(__fmul_rn(g, g) - v[i], one_minus_beta_2);
        m[i] = m_new;
        v[i] = v_new;
        param[i] -= __fdiv_rn(__fmul_rn(m_new, alpha), __fsqrt_rn(v_new) + epsilon);
    }
}

void adam_update(float* param, const float* grad, float* m, float* v, int64_t n, float alpha,
                 float one_minus_beta_1, float one_minus_beta_2, float epsilon, cudaStream_t stream) {
    if (n == 0) return;
    int64_t blocks = (n + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    adam_update_kernel<<<int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS), THREADS_PER_BLOCK, 0, stream>>>(
        param, grad, m, v, n, alpha, one_minus_beta_1, one_minus_beta_2, epsilon);
    CUDA_CHECK(cudaGetLastError());
}
