// Binary cross-entropy from logits on float32 device arrays of n elements; see binary_crossentropy.cu.
// Both launch on `stream` (0: the default stream) and throw std::runtime_error if a launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// The most blocks the loss's first pass launches: partial_sums holds this many doubles.
constexpr int BINARY_CROSSENTROPY_MAX_BLOCKS = 1024;

// z (logits), t (targets) are (n,): *loss = mean(max(z, 0) - z t + log1p(exp(-|z|))), a double
// (NaN for n == 0, the mean of nothing); partial_sums is scratch of BINARY_CROSSENTROPY_MAX_BLOCKS doubles.
void binary_crossentropy_logits_forward(const float* z, const float* t, double* loss, double* partial_sums,
                                        int64_t n, cudaStream_t stream);

// z, t, dz are (n,): dz = (sigmoid(z) - t) / n
void binary_crossentropy_logits_backward(const float* z, const float* t, float* dz, int64_t n,
                                         cudaStream_t stream);
