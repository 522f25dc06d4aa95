// GEMMs with a fused epilogue; see matmul.cu (float32 on CUDA cores), matmul_tf32.cu (TF32
// tensor cores) and matmul_bf16.cu (bf16 operands on tensor cores, float32 result).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

// The epilogue's activation; the numbers are the ones the Python row passes.
enum Activation : int { NONE = 0, LEAKY_RELU = 1, RELU = 2, SIGMOID = 3, TANH = 4, GELU = 5 };

// op(a) is (m, k), op(b) is (k, n), bias is (n,) or null, c is (m, n), all row-major and packed:
//   c = activation(op(a) @ op(b) + bias)
// a is stored (m, k), or (k, m) when transpose_a; b is stored (k, n), or (n, k) when transpose_b.
// The tile configuration matmul_forward chooses by the shape is matmul_tiles_for(m, n).
void matmul_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                    bool transpose_a, bool transpose_b, int activation, float alpha,
                    cudaStream_t stream);

// The SGEMM's tile configurations (rows x columns of C per block), and matmul_forward with one of
// them chosen by the caller (benchmarks, tests); an unknown one throws std::invalid_argument.
enum MatmulTiles : int { TILES_128x128 = 0, TILES_128x64 = 1, TILES_64x64 = 2 };
int matmul_tiles_for(int m, int n);
void matmul_forward_tiles(int tiles, const float* a, const float* b, const float* bias, float* c, int m, int n,
                          int k, bool transpose_a, bool transpose_b, int activation, float alpha,
                          cudaStream_t stream);

// A weight gradient's product a^T @ b (a stored (k, m), b (k, n)) cut in depth (split-K), for a
// result of too few tiles to fill a GPU over a deep K: matmul_depth_splits(m, n, k) runs (1: not
// cut) such that the tiles fill TARGET_BLOCKS SMs, each run at least SPLIT_MIN_DEPTH deep;
// matmul_split_depth writes run r's product over its part of K to partials + r m n (splits x m x
// n floats), and sum_splits adds such pages in order into out (add: to what out holds): the same
// bits on every run.
constexpr int SPLIT_MIN_DEPTH = 512;
constexpr int MAX_DEPTH_SPLITS = 64;
int matmul_depth_splits(int m, int n, int k);
void matmul_split_depth(const float* a, const float* b, float* partials, int m, int n, int k, int splits,
                        cudaStream_t stream);
void sum_splits(const float* pages, int splits, int64_t size, float* out, bool add, cudaStream_t stream);

// The same product on tensor cores (sm_80+): op(a) and op(b) rounded to TF32 (10-bit mantissa),
// products summed in float32. Same arguments and layout as matmul_forward.
void matmul_tf32_forward(const float* a, const float* b, const float* bias, float* c, int m, int n, int k,
                         bool transpose_a, bool transpose_b, int activation, float alpha, cudaStream_t stream);

// The product of bf16 operands on tensor cores (sm_80+), sums in float32; bias and c float32.
// Same layout and tile configurations as matmul_forward (matmul_tiles_for chooses by shape).
void matmul_bf16_forward(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* bias, float* c, int m, int n,
                         int k, bool transpose_a, bool transpose_b, int activation, float alpha, cudaStream_t stream);
void matmul_bf16_forward_tiles(int tiles, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* bias, float* c,
                               int m, int n, int k, bool transpose_a, bool transpose_b, int activation, float alpha,
                               cudaStream_t stream);
