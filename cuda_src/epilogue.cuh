// The activations a fused matmul epilogue applies (codes in matmul.cuh), shared by the SGEMM
// (matmul.cu) and the tensor-core GEMM (matmul_tf32.cu).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "matmul.cuh"

__device__ __forceinline__ float activate(float x, int activation, float alpha) {
    switch (activation) {
        case LEAKY_RELU: return x > 0.0f ? x : alpha * x;
        case RELU: return x > 0.0f ? x : 0.0f;
        case SIGMOID: {  // exp of a non-positive number only: finite for any x
            float e = expf(-fabsf(x));
            return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        }
        case TANH: return tanhf(x);
        case GELU: {  // x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3); see gelu.cu
            float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
            float e = expf(-fabsf(2.0f * u));
            return x * (u >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e));
        }
        default: return x;
    }
}
