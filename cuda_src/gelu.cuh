// GELU (tanh approximation) on float32 device arrays of n elements; see gelu.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (n,): y = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
void gelu_forward(const float* x, float* y, int64_t n, cudaStream_t stream);

// dy, x, dx are (n,): dx = dy * gelu'(x)
void gelu_backward(const float* dy, const float* x, float* dx, int64_t n, cudaStream_t stream);
