// Softmax over the last axis, and fused softmax cross-entropy, on float32 device arrays; see
// softmax.cu and softmax_cross_entropy.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// x, y are (rows, columns): y = exp(x - max) / sum exp(x - max), per row
void softmax_forward(const float* x, float* y, int64_t rows, int columns, cudaStream_t stream);

// logits, dlogits are (rows, columns); targets (rows,) int64 in [0, columns); losses (rows,):
//   losses[r] = lse_r - logits[r, t_r],  dlogits[r, j] = (exp(logits[r, j] - lse_r) - [j == t_r]) / rows
void softmax_cross_entropy_forward_backward(const float* logits, const int64_t* targets, float* losses,
                                            float* dlogits, int64_t rows, int columns, cudaStream_t stream);
