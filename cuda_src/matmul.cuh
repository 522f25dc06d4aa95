// SGEMM with a fused epilogue on float32 device arrays; see matmul.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// The epilogue's activation; the numbers are the ones the Python row passes.
enum Activation : int { NONE = 0, LEAKY_RELU = 1, RELU = 2, SIGMOID = 3, TANH = 4, GELU = 5 };

// op(a) is (m, k), op(b) is (k, n), bias is (n,) or null, c is (m, n), all row-major and packed:
//   c = activation(op(a) @ op(b) + bias)
// a is stored (m, k), or (k, m) when transpose_a; b is stored (k, n), or (n, k) when transpose_b.
void matmul_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                    bool transpose_a, bool transpose_b, int activation, float alpha,
                    cudaStream_t stream);
