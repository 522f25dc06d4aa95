// Layer normalization over the last axis on float32 device arrays; see layer_norm.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (rows, channels); gamma, beta (channels,); mean, rstd (rows,)
void layer_norm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                        float* rstd, int64_t rows, int channels, float epsilon, cudaStream_t stream);

// Row chunks the backward splits dgamma and dbeta into: `scratch` holds
// 2 * LAYER_NORM_MAX_ROW_CHUNKS * channels doubles of per-chunk column sums.
constexpr int LAYER_NORM_MAX_ROW_CHUNKS = 128;

// dy, x, dx are (rows, channels); gamma, dgamma, dbeta (channels,); mean, rstd (rows,)
void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, double* scratch, int64_t rows,
                         int channels, cudaStream_t stream);
