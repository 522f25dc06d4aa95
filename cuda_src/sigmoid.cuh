// Sigmoid on float32 device arrays of n elements; see sigmoid.cu.
// Both launch on `stream` (0: the default stream) and throw std::runtime_error if the launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (n,): y = 1 / (1 + exp(-x))
void sigmoid_forward(const float* x, float* y, int64_t n, cudaStream_t stream);

// dy, y, dx are (n,), y the forward's output: dx = dy * y * (1 - y)
void sigmoid_backward(const float* dy, const float* y, float* dx, int64_t n, cudaStream_t stream);
