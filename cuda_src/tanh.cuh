// Tanh on float32 device arrays of n elements; see tanh.cu.
// Both launch on `stream` (0: the default stream) and throw std::runtime_error if the launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (n,): y = tanh(x)
void tanh_forward(const float* x, float* y, int64_t n, cudaStream_t stream);

// dy, y, dx are (n,), y the forward's output: dx = dy * (1 - y * y)
void tanh_backward(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream);
