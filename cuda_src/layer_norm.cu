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
// cancel on short rows, and a float32 sum over C terms is ~C * 6e-8 off. The backward's column sums dgamma, dbeta go through a second kernel in which each
// block owns COLUMNS_PER_BLOCK columns and its warps split the rows, then add in shared memory:
// no atomics, the same result on every run.
#include "check.cuh"
#include "layer_norm.cuh"
#include "reduce.cuh"

constexpr int ROWS_PER_BLOCK = 8;       // warps per block, one row each
constexpr int COLUMNS_PER_BLOCK = 32;   // dgamma/dbeta: one column per lane
constexpr int ROW_GROUPS = 8;           // dgamma/dbeta: warps per block, splitting the rows
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
    double g_total = 0.0, g_xhat_total = 0.0;
    for (int c = lane; c < channels; c += 32) {
        double g = double(dy_row[c]) * gamma[c];
        g_total += g;
        g_xhat_total = fma(g, (double(x_row[c]) - row_mean) * row_rstd, g_xhat_total);
    }
    double g_mean = warp_sum(g_total) / channels, g_xhat_mean = warp_sum(g_xhat_total) / channels;
    float* dx_row = dx + row * channels;
    for (int c = lane; c < channels; c += 32) {
        double xhat = (double(x_row[c]) - row_mean) * row_rstd;
        dx_row[c] = float(row_rstd * (double(dy_row[c]) * gamma[c] - g_mean - xhat * g_xhat_mean));
    }
}

// Block b sums columns [32 b, 32 b + 32): lane = column, warp w takes rows w, w + ROW_GROUPS, ...
__global__ void layer_norm_parameter_grad_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                                 const float* __restrict__ mean, const float* __restrict__ rstd,
                                                 float* __restrict__ dgamma, float* __restrict__ dbeta,
                                                 int64_t rows, int channels) {
    __shared__ double gamma_part[ROW_GROUPS][COLUMNS_PER_BLOCK];
    __shared__ double beta_part[ROW_GROUPS][COLUMNS_PER_BLOCK];
    int lane = threadIdx.x % 32, group = threadIdx.x / 32;
    int column = blockIdx.x * COLUMNS_PER_BLOCK + lane;
    double gamma_total = 0.0, beta_total = 0.0;
    if (column < channels) {
        for (int64_t row = group; row < rows; row += ROW_GROUPS) {
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
                         const float* rstd, float* dx, float* dgamma, float* dbeta, int64_t rows, int channels,
                         cudaStream_t stream) {
    if (rows == 0) return;
    layer_norm_dx_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, stream>>>(dy, x, gamma, mean, rstd, dx, rows,
                                                                             channels);
    CUDA_CHECK(cudaGetLastError());
    unsigned column_blocks = (channels + COLUMNS_PER_BLOCK - 1) / COLUMNS_PER_BLOCK;
    layer_norm_parameter_grad_kernel<<<column_blocks, ROW_GROUPS * 32, 0, stream>>>(dy, x, mean, rstd, dgamma,
                                                                                   dbeta, rows, channels);
    CUDA_CHECK(cudaGetLastError());
}
