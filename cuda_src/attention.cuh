// Flash attention forward and backward on float32 device arrays, and on bfloat16 ones; see
// attention_forward.cu, attention_backward.cu and their _bf16 twins. q, o, do, dq are (B, H, Tq, D); k, v, dk, dv (B, H, Tk, D); lse (B, H, Tq);
// all packed row-major. D <= ATTENTION_MAX_DEPTH. causal: query i sees key j iff
// j <= i + (Tk - Tq), which needs Tq <= Tk.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

constexpr int ATTENTION_MAX_DEPTH = 128;

// o = softmax(scale q k^T + mask) v, lse_i = log sum_j exp(scale q_i.k_j) over visible keys
void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int heads,
                       int n_queries, int n_keys, int depth, bool causal, float scale,
                       cudaStream_t stream);

// The same on BF16 tensor cores (sm_80+): q, k, v, o bfloat16, lse float32.
void attention_forward_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                            __nv_bfloat16* o, float* lse, int heads, int n_queries, int n_keys, int depth,
                            bool causal, float scale, cudaStream_t stream);

// The backward on BF16 tensor cores: do, q, k, v, o, dq, dk, dv bfloat16; lse (from
// attention_forward_bf16) and the scratch `delta` (heads * n_queries) float32.
void attention_backward_bf16(const __nv_bfloat16* d_out, const __nv_bfloat16* q, const __nv_bfloat16* k,
                             const __nv_bfloat16* v, const __nv_bfloat16* o, const float* lse, float* delta,
                             __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, int heads, int n_queries,
                             int n_keys, int depth, bool causal, float scale, cudaStream_t stream);

// dq, dk, dv from do and the forward's o and lse; `delta` is scratch of heads * n_queries floats.
void attention_backward(const float* d_out, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, float* delta, float* dq, float* dk, float* dv,
                        int heads, int n_queries, int n_keys, int depth, bool causal, float scale,
                        cudaStream_t stream);
