// Layer normalization over the last axis, forward and backward, float32:
//   forward:  mean = sum_c x / C,  var = sum_c (x - mean)^2 / C,  rstd = 1 / sqrt(var + epsilon)
//             y = (x - mean) rstd gamma + beta
//   backward: xhat = (x - mean) rstd,  g = dy gamma
//             dx = rstd (g - mean_c(g) - xhat mean_c(g xhat))
//             dgamma = sum_rows dy xhat,  dbeta = sum_rows dy
// x, y, dy, dx (N, C); gamma, beta, dgamma, dbeta (C,); mean, rstd (N,).
// Cost per element: forward ~8 FLOPs, 8 bytes (read x, write y); backward ~12 FLOPs, 12 bytes
// (read dy and x, write dx) plus the column sums. Memory-bound.
//
// Fast version: one warp per row; the row is read once for the mean, once for the variance about
// the mean (two passes: E[x^2] - mean^2 cancels) and once to write y, the second and third reads
// hitting L1/L2. The row sums are in double, as in pyai's CPU kernel: the backward's three terms
// cancel on short rows, and a float32 sum over C terms is ~C * 6e-8 off. The backward's column
// sums dgamma, dbeta take two more kernels: a grid of (C / 32 column blocks) x (row chunks), each
// block summing 32 columns over one chunk of rows (its warps split the chunk's rows, then add in
// shared memory) into a partial sum per chunk; then one thread per column adds its chunks'
// partials in order. Enough chunks (up to LAYER_NORM_MAX_ROW_CHUNKS) keep every SM busy where C
// alone gives few blocks (C = 768: 24 column blocks, times 128 chunks); no atomics, the same
// result on every run.
#include "check.cuh"
#include "layer_norm.cuh"
#include "reduce.cuh"

constexpr int ROWS_PER_BLOCK = 8;       // warps per block, one row each
constexpr int COLUMNS_PER_BLOCK = 32;   // dgamma/dbeta partials: one column per lane
constexpr int ROW_GROUPS = 8;           // dgamma/dbeta partials: warps per block, splitting a chunk's rows
constexpr int MIN_ROWS_PER_CHUNK = 64;  // fewer rows per chunk would cost more in partials than they save
constexpr int COLUMN_THREADS = 256;     // dgamma/dbeta from the partials: one column per thread
static_assert(COLUMNS_PER_BLOCK == 32, "one column per lane");

__global__ void layer_norm_forward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                          const float* __restrict__ beta, float* __restrict__ y,
                                          float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                                          int channels, float epsilon) {
    int64_t row = int64_t(blockIdx.x) * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* x_row = x + row * channels;
    double total = 0.0;
    for (int c = lane; c < channels; c += 32) total += x_row[c];
    double mean_exact = warp_sum(total) / channels;
    double spread = 0.0;
    for (int c = lane; c < channels; c += 32) {
        double centred = x_row[c] - mean_exact;
        spread = fma(centred, centred, spread);
    }
    float row_mean = float(mean_exact);
    float row_rstd = float(1.0 / sqrt(warp_sum(spread) / channels + epsilon));
    float* y_row = y + row * channels;
    for (int c = lane; c < channels; c += 32) y_row[c] = (x_row[c] - row_mean) * row_rstd * gamma[c] + beta[c];
    if (lane == 0) {
        mean[row] = row_mean;
        rstd[row] = row_rstd;
    }
}

__global__ void layer_norm_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                     const float* __restrict__ gamma, const float* __restrict__ mean,
                                     const float* __restrict__ rstd, float* __restrict__ dx, int64_t rows,
                                     int channels) {
    int64_t row = int64_t(blockIdx.x) * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* x_row = x + row * channels;
    const float* dy_row = dy + row * channels;
    float row_mean = mean[row], row_rstd = rstd[row];
    double g_total = 0.0, g_xhat_total = 0.0, xhat_total = 0.0;
    for (int c = lane; c < channels; c += 32) {
        double g = double(dy_row[c]) * gamma[c];
        double xhat = (double(x_row[c]) - row_mean) * row_rstd;
        g_total += g;
        g_xhat_total = fma(g, xhat, g_xhat_total);
        xhat_total += xhat;
    }
    // xhat centered on its own mean: the saved float32 mean is a rounding off the row's
    double g_mean = warp_sum(g_total) / channels, shift = warp_sum(xhat_total) / channels;
    double g_xhat_mean = warp_sum(g_xhat_total) / channels - shift * g_mean;
    float* dx_row = dx + row * channels;
    for (int c = lane; c < channels; c += 32) {
        double xhat = (double(x_row[c]) - row_mean) * row_rstd - shift;
        dx_row[c] = float(row_rstd * (double(dy_row[c]) * gamma[c] - g_mean - xhat * g_xhat_mean));
    }
}

// Block (b, chunk) sums columns [32 b, 32 b + 32) over the chunk's rows: lane = column, warp w
// takes rows w, w + ROW_GROUPS, ... of the chunk. partial_gamma, partial_beta (chunks, channels).
__global__ void layer_norm_partial_grad_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                               const float* __restrict__ mean, const float* __restrict__ rstd,
                                               double* __restrict__ partial_gamma,
                                               double* __restrict__ partial_beta, int64_t rows,
                                               int64_t rows_per_chunk, int channels) {
    __shared__ double gamma_part[ROW_GROUPS][COLUMNS_PER_BLOCK];
    __shared__ double beta_part[ROW_GROUPS][COLUMNS_PER_BLOCK];
    int lane = threadIdx.x % 32, group = threadIdx.x / 32;
    int column = blockIdx.x * COLUMNS_PER_BLOCK + lane;
    int64_t first_row = int64_t(blockIdx.y) * rows_per_chunk;
    int64_t end_row = min(rows, first_row + rows_per_chunk);
    double gamma_total = 0.0, beta_total = 0.0;
    if (column < channels) {
        for (int64_t row = first_row + group; row < end_row; row += ROW_GROUPS) {
            double d = dy[row * channels + column];
            gamma_total = fma(d, (double(x[row * channels + column]) - mean[row]) * rstd[row], gamma_total);
            beta_total += d;
        }
    }
    gamma_part[group][lane] = gamma_total;
    beta_part[group][lane] = beta_total;
    __syncthreads();
    if (group != 0 || column >= channels) return;
    for (int g = 1; g < ROW_GROUPS; g++) {
        gamma_total += gamma_part[g][lane];
        beta_total += beta_part[g][lane];
    }
    partial_gamma[int64_t(blockIdx.y) * channels + column] = gamma_total;
    partial_beta[int64_t(blockIdx.y) * channels + column] = beta_total;
}

// dgamma[c] = sum over chunks of partial_gamma[chunk, c], likewise dbeta: one thread per column.
__global__ void layer_norm_column_sum_kernel(const double* __restrict__ partial_gamma,
                                             const double* __restrict__ partial_beta, float* __restrict__ dgamma,
                                             float* __restrict__ dbeta, int chunks, int channels) {
    int column = blockIdx.x * blockDim.x + threadIdx.x;
    if (column >= channels) return;
    double gamma_total = 0.0, beta_total = 0.0;
    for (int chunk = 0; chunk < chunks; chunk++) {
        gamma_total += partial_gamma[int64_t(chunk) * channels + column];
        beta_total += partial_beta[int64_t(chunk) * channels + column];
    }
    dgamma[column] = float(gamma_total);
    dbeta[column] = float(beta_total);
}

static unsigned row_blocks(int64_t rows) {
    return unsigned((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK);
}

void layer_norm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                        float* rstd, int64_t rows, int channels, float epsilon, cudaStream_t stream) {
    if (rows == 0) return;
    layer_norm_forward_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, stream>>>(x, gamma, beta, y, mean, rstd,
                                                                                  rows, channels, epsilon);
    CUDA_CHECK(cudaGetLastError());
}

void layer_norm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, double* scratch, int64_t rows,
                         int channels, cudaStream_t stream) {
    if (rows == 0) return;
    layer_norm_dx_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, stream>>>(dy, x, gamma, mean, rstd, dx, rows,
                                                                             channels);
    CUDA_CHECK(cudaGetLastError());
    int64_t chunks = min(int64_t(LAYER_NORM_MAX_ROW_CHUNKS), (rows + MIN_ROWS_PER_CHUNK - 1) / MIN_ROWS_PER_CHUNK);
    int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
    chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;  // every chunk holds rows
    double* partial_gamma = scratch;
    double* partial_beta = scratch + chunks * channels;
    dim3 partial_grid((channels + COLUMNS_PER_BLOCK - 1) / COLUMNS_PER_BLOCK, unsigned(chunks));
    layer_norm_partial_grad_kernel<<<partial_grid, ROW_GROUPS * 32, 0, stream>>>(
        dy, x, mean, rstd, partial_gamma, partial_beta, rows, rows_per_chunk, channels);
    CUDA_CHECK(cudaGetLastError());
    layer_norm_column_sum_kernel<<<(channels + COLUMN_THREADS - 1) / COLUMN_THREADS, COLUMN_THREADS, 0, stream>>>(
        partial_gamma, partial_beta, dgamma, dbeta, int(chunks), channels);
    CUDA_CHECK(cudaGetLastError());
}
