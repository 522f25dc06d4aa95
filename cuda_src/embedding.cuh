// Embedding lookup and its gradient on device arrays; see embedding.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// ids (count,) int64 in [0, V); table (V, channels); out (count, channels): out[n] = table[ids[n]]
void embedding_forward(const int64_t* ids, const float* table, float* out, int64_t count, int channels,
                       cudaStream_t stream);

// dout (count, channels); dtable (vocab_size, channels), zeroed here, then dtable[ids[n]] += dout[n]
void embedding_backward(const float* dout, const int64_t* ids, float* dtable, int64_t count, int64_t vocab_size,
                        int channels, cudaStream_t stream);
