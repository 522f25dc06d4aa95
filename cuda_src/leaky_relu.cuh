// Leaky ReLU on float32 device arrays of n elements; see leaky_relu.cu.
// Both launch on `stream` (0: the default stream) and throw std::runtime_error if the launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (n,): y = x > 0 ? x : alpha * x
void leaky_relu_forward(const float* x, float* y, int64_t n, float alpha, cudaStream_t stream);

// dy, x, dx are (n,): dx = x > 0 ? dy : alpha * dy
void leaky_relu_backward(const float* dy, const float* x, float* dx, int64_t n, float alpha,
                         cudaStream_t stream);
