// The bias gradient of a dense or convolution layer, float32, summed in double:
//   db[c] = sum over rows r of dy[r, c]          dy (rows, C) row-major, db (C,)
// Cost: rows * C adds; 4 * rows * C bytes read, 4 * C written. Memory-bound.
//
// Two kernels, as layer_norm.cu's dgamma and dbeta: a grid of (C / 32 column blocks) x (row
// chunks), each block summing 32 columns (one a lane, so a warp reads 128 contiguous bytes of a
// row) over one chunk of rows, its 8 warps taking every 8th row and then adding in shared memory
// in warp order, into a double partial sum per chunk; then one thread per column adds its
// chunks' partials in chunk order. Enough chunks (up to BIAS_GRAD_MAX_ROW_CHUNKS) keep the SMs
// busy where C alone gives few blocks (a convolution of one output channel: one column block).
// No atomics: every sum has one fixed order, the same bits on every run.
#include "bias_grad.cuh"
#include "check.cuh"

constexpr int SUM_COLUMNS = 32;         // columns per block: one a lane
constexpr int SUM_ROW_GROUPS = 8;       // warps per block, splitting a chunk's rows
constexpr int MIN_CHUNK_ROWS = 64;      // fewer rows per chunk would cost more in partials than they save
constexpr int TOTAL_THREADS = 256;      // the second kernel: one column a thread

// Block (b, chunk) sums columns [32 b, 32 b + 32) over the chunk's rows into sums[chunk, column].
__global__ void __launch_bounds__(SUM_COLUMNS * SUM_ROW_GROUPS)
bias_grad_partial_kernel(const float* __restrict__ dy, double* __restrict__ sums, int64_t rows, int64_t chunk_rows,
                         int columns) {
    __shared__ double part[SUM_ROW_GROUPS][SUM_COLUMNS];
    int lane = threadIdx.x % 32, group = threadIdx.x / 32;
    int column = blockIdx.x * SUM_COLUMNS + lane;
    int64_t first_row = int64_t(blockIdx.y) * chunk_rows;
    int64_t end_row = min(rows, first_row + chunk_rows);
    double total = 0.0;
    if (column < columns) {
        for (int64_t row = first_row + group; row < end_row; row += SUM_ROW_GROUPS) total += dy[row * columns + column];
    }
    part[group][lane] = total;
    __syncthreads();
    if (group != 0 || column >= columns) return;
    for (int g = 1; g < SUM_ROW_GROUPS; g++) total += part[g][lane];
    sums[int64_t(blockIdx.y) * columns + column] = total;
}

// db[c] = the sum of sums[chunk, c] over the chunks, in chunk order.
__global__ void bias_grad_total_kernel(const double* __restrict__ sums, float* __restrict__ db, int chunks,
                                       int columns) {
    int column = blockIdx.x * blockDim.x + threadIdx.x;
    if (column >= columns) return;
    double total = 0.0;
    for (int chunk = 0; chunk < chunks; chunk++) total += sums[int64_t(chunk) * columns + column];
    db[column] = float(total);
}

void bias_grad(const float* dy, float* db, double* sums, int64_t rows, int columns, cudaStream_t stream) {
    if (columns == 0) return;
    int64_t chunks = min(int64_t(BIAS_GRAD_MAX_ROW_CHUNKS), (rows + MIN_CHUNK_ROWS - 1) / MIN_CHUNK_ROWS);
    if (chunks > 0) {
        int64_t chunk_rows = (rows + chunks - 1) / chunks;
        chunks = (rows + chunk_rows - 1) / chunk_rows;  // every chunk holds rows
        dim3 grid((columns + SUM_COLUMNS - 1) / SUM_COLUMNS, unsigned(chunks));
        bias_grad_partial_kernel<<<grid, SUM_COLUMNS * SUM_ROW_GROUPS, 0, stream>>>(dy, sums, rows, chunk_rows,
                                                                                   columns);
        CUDA_CHECK(cudaGetLastError());
    }
    bias_grad_total_kernel<<<(columns + TOTAL_THREADS - 1) / TOTAL_THREADS, TOTAL_THREADS, 0, stream>>>(
        sums, db, int(chunks), columns);
    CUDA_CHECK(cudaGetLastError());
}
