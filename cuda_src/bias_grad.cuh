// The bias gradient of a layer on float32 device arrays: the column sums of dy; see bias_grad.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// Row chunks the sum is split into: `sums` holds BIAS_GRAD_MAX_ROW_CHUNKS * columns doubles.
constexpr int BIAS_GRAD_MAX_ROW_CHUNKS = 128;

// dy (rows, columns) -> db (columns,) = sum over the rows of dy; db = 0 when rows is 0
void bias_grad(const float* dy, float* db, double* sums, int64_t rows, int columns, cudaStream_t stream);
