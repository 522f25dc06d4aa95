// One fused Adam step on float32 device arrays of n elements; see adam.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// param, grad, m, v are (n,); param, m, v updated in place. alpha is the bias-corrected step
// lr sqrt(1 - beta_2^step) / (1 - beta_1^step), computed once by the caller (in float32, as Keras).
void adam_update(float* param, const float* grad, float* m, float* v, int64_t n, float alpha,
                 float one_minus_beta_1, float one_minus_beta_2, float epsilon, cudaStream_t stream);
