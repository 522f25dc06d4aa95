// Layer normalization over the last axis on float32 device arrays; see layer_norm.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (rows, channels); gamma, beta (channels,); mean, rstd (rows,)
void layer_norm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                        float* rstd, int64_t rows, int channels, float epsilon, cudaStream_t stream);

// dy, x, dx are (rows, channels); gamma, dgamma, dbeta (channels,); mean, rstd (rows,)
void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows, int channels,
                         cudaStream_t stream);
