// Embedding lookup and its gradient, float32 rows:
//   forward:  out[n, :] = table[ids[n], :]
//   backward: dtable[v, :] = sum over n with ids[n] == v of dout[n, :]   (zero for unseen ids)
// ids (N,) int64; table, dtable (V, C); out, dout (N, C).
// Cost: no FLOPs forward, C adds per id backward; 8 C bytes per id forward (read a row, write a
// row), 12 C backward (read dout, read and write a dtable row) plus zeroing dtable.
//
// Fast version: a grid-stride loop over the N x C elements, consecutive threads on consecutive
// columns of a row, so every row is read and written coalesced. The backward adds with
// atomicAdd: ids that repeat add into the same row from different threads, in an order that may
// change from run to run (float sums differ in the last bits; the tests' tolerance allows it).
#include "check.cuh"
#include "embedding.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;

__global__ void embedding_forward_kernel(const int64_t* __restrict__ ids, const float* __restrict__ table,
                                         float* __restrict__ out, int64_t total, int channels) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        int64_t n = i / channels, c = i % channels;
        out[i] = table[ids[n] * channels + c];
    }
}

__global__ void embedding_backward_kernel(const float* __restrict__ dout, const int64_t* __restrict__ ids,
                                          float* __restrict__ dtable, int64_t total, int channels) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        int64_t n = i / channels, c = i % channels;
        atomicAdd(&dtable[ids[n] * channels + c], dout[i]);
    }
}

static int block_count(int64_t total) {
    int64_t blocks = (total + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

void embedding_forward(const int64_t* ids, const float* table, float* out, int64_t count, int channels,
                       cudaStream_t stream) {
    int64_t total = count * channels;
    if (total == 0) return;
    embedding_forward_kernel<<<block_count(total), THREADS_PER_BLOCK, 0, stream>>>(ids, table, out, total, channels);
    CUDA_CHECK(cudaGetLastError());
}

void embedding_backward(const float* dout, const int64_t* ids, float* dtable, int64_t count, int64_t vocab_size,
                        int channels, cudaStream_t stream) {
    CUDA_CHECK(cudaMemsetAsync(dtable, 0, sizeof(float) * vocab_size * channels, stream));
    int64_t total = count * channels;
    if (total == 0) return;
    embedding_backward_kernel<<<block_count(total), THREADS_PER_BLOCK, 0, stream>>>(dout, ids, dtable, total,
                                                                                   channels);
    CUDA_CHECK(cudaGetLastError());
}
