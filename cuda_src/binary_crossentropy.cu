// Binary cross-entropy from logits (tf.nn.sigmoid_cross_entropy_with_logits, averaged), over n
// float32 logits z and targets t in [0, 1]:
//   loss = sum(max(z, 0) - z t + log1p(exp(-|z|))) / n
//   dz   = (sigmoid(z) - t) / n,   sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0
// with e = exp(-|z|) in (0, 1]: nothing overflows, so both are finite for any finite logit
// (z = +-1e30 gives a loss of 1e30 or 0, not inf or NaN). As pyai's CPU kernel
// (kernels/numba_cpu/binary_crossentropy.py), each element's term is computed in double from the
// float32 inputs and rounded once: where t is near 1 and z large, max(z, 0) - z t cancels, which
// float32 would show.
//
// Cost per element: ~10 FLOPs and an exp and a log1p in double, 8 bytes read (forward); ~8 FLOPs
// and an exp in double, 12 bytes (backward). On an H100 (FP64 at half the float32 rate) both stay
// near memory speed; on GPUs with slow FP64 the forward is compute-bound.
//
// The loss is deterministic: each block sums its threads' terms (a grid-stride loop) in double by
// warp shuffles, and writes one partial sum; a second launch of one block sums the partial sums in
// a fixed order and divides by n. The number of blocks depends on n alone, so a given input gives
// the same bits on every run and every GPU.
#include "binary_crossentropy.cuh"
#include "check.cuh"
#include "reduce.cuh"

constexpr int THREADS_PER_BLOCK = 256;
constexpr int64_t MAX_BLOCKS = 4096;  // backward: ~4 waves of an H100; the loop strides past it

__device__ __forceinline__ double logits_loss_term(float z, float t) {
    double logit = z;
    return (logit > 0.0 ? logit : 0.0) - logit * double(t) + log1p(exp(-fabs(logit)));
}

// The sum of x over the block, on every thread; called once per kernel, by every thread of a block
// of THREADS_PER_BLOCK threads.
static __device__ double block_sum(double x) {
    __shared__ double warp_sums[THREADS_PER_BLOCK / 32];
    int lane = threadIdx.x % 32;
    x = warp_sum(x);
    if (lane == 0) warp_sums[threadIdx.x / 32] = x;
    __syncthreads();
    return warp_sum(lane < THREADS_PER_BLOCK / 32 ? warp_sums[lane] : 0.0);
}

__global__ void binary_crossentropy_partial_sums_kernel(const float* __restrict__ z, const float* __restrict__ t,
                                                        double* __restrict__ partial_sums, int64_t n) {
    double total = 0.0;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        total += logits_loss_term(z[i], t[i]);
    }
    total = block_sum(total);
    if (threadIdx.x == 0) partial_sums[blockIdx.x] = total;
}

__global__ void binary_crossentropy_mean_kernel(const double* __restrict__ partial_sums, int blocks,
                                                double* __restrict__ loss, int64_t n) {
    double total = 0.0;
    for (int i = threadIdx.x; i < blocks; i += blockDim.x) total += partial_sums[i];
    total = block_sum(total);
    if (threadIdx.x == 0) *loss = total / double(n);
}

__global__ void binary_crossentropy_logits_backward_kernel(const float* __restrict__ z, const float* __restrict__ t,
                                                           float* __restrict__ dz, int64_t n, double inverse_n) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        double logit = z[i];
        double e = exp(-fabs(logit));
        double sigmoid = (logit >= 0.0 ? 1.0 : e) / (1.0 + e);
        dz[i] = float((sigmoid - double(t[i])) * inverse_n);
    }
}

// Enough blocks for one thread per element, at least one and at most `max_blocks`.
static int block_count(int64_t n, int64_t max_blocks) {
    int64_t blocks = (n + THREADS_PER_BLOCK - 1) / THREADS_PER_BLOCK;
    return int(blocks < 1 ? 1 : blocks < max_blocks ? blocks : max_blocks);
}

void binary_crossentropy_logits_forward(const float* z, const float* t, double* loss, double* partial_sums,
                                        int64_t n, cudaStream_t stream) {
    int blocks = block_count(n, BINARY_CROSSENTROPY_MAX_BLOCKS);  // one block at n == 0: loss 0 / 0
    binary_crossentropy_partial_sums_kernel<<<blocks, THREADS_PER_BLOCK, 0, stream>>>(z, t, partial_sums, n);
    CUDA_CHECK(cudaGetLastError());
    binary_crossentropy_mean_kernel<<<1, THREADS_PER_BLOCK, 0, stream>>>(partial_sums, blocks, loss, n);
    CUDA_CHECK(cudaGetLastError());
}

void binary_crossentropy_logits_backward(const float* z, const float* t, float* dz, int64_t n,
                                         cudaStream_t stream) {
    if (n == 0) return;  // a grid of zero blocks is a launch error
    binary_crossentropy_logits_backward_kernel<<<block_count(n, MAX_BLOCKS), THREADS_PER_BLOCK, 0, stream>>>(
        z, t, dz, n, 1.0 / double(n));
    CUDA_CHECK(cudaGetLastError());
}
