// What the convolutions share: im2col and its gather-sum inverse col2im, and the three products
// built from them on the SGEMM of matmul.cu, whose fused bias + activation epilogue they reuse.
//
// A ConvGeometry (conv2d.cuh) maps big images (N, H, W, C) to small ones (N, OH, OW, O):
//   im2col:  cols[(n, oh, ow), (i, j, c)] = big[n, oh*sh - pt + i, ow*sw - pl + j, c]   (0 outside),
//            a (N*OH*OW, kh*kw*C) matrix
//   col2im:  big[n, h, w, c] = the sum of cols[(n, oh, ow), (i, j, c)] over the windows that read
//            (h, w): the transpose of im2col
// and with weights = w as a (kh*kw*C, O) matrix:
//   convolve:             small = epilogue(im2col(big) @ weights)       Conv2D; Conv2DTranspose's dx
//   convolve_transposed:  big = epilogue(col2im(small @ weights^T))     Conv2DTranspose; Conv2D's dx
//   weight_gradient:      dw = im2col(big)^T @ small                    dw of both
// The epilogue (bias, then activation; epilogue.cuh) runs in the SGEMM's store for convolve and
// in col2im's for convolve_transposed.
//
// Cost: each product 2*N*OH*OW*kh*kw*C*O FLOPs on the SGEMM; im2col writes, and col2im reads,
// 4*N*OH*OW*kh*kw*C bytes of cols (kh*kw / (sh*sw) times the image: 2.25x for a 3x3 kernel at
// stride 2, 4x for a 4x4 transpose at stride 2), and each reads or writes the image once.
//
// Both gathers are grid-stride loops over their outputs, consecutive threads on consecutive
// channels, so cols and the image are read and written coalesced. col2im gathers rather than
// scatters: each big element sums, taps i then j, the few cols entries that read it (tap
// i = h + pt mod sh, and likewise j): no atomics, one fixed order, the same bits on every run.
// cols is large for a large batch (64 x 28x28 windows of 3x3x32: 58 MB), so the products go a
// chunk of workspace.chunk_images whole images at a time (the Python side sizes the chunk); dw
// adds each later chunk's product to the first's, in chunk order. dw's product, a small result
// over a deep K (N*OH*OW), is cut in depth where its tiles would leave most SMs idle
// (matmul_split_depth: the runs' pages in workspace.partial, added in order). A pointwise convolution (1x1,
// stride 1) has im2col(big) = big and col2im(cols) = cols: plain GEMMs, no cols.
#include <stdexcept>

#include "check.cuh"
#include "epilogue.cuh"
#include "im2col.cuh"
#include "matmul.cuh"

constexpr int GATHER_THREADS = 256;
constexpr int64_t GATHER_MAX_BLOCKS = 4096;  // ~4 waves of an H100 (132 SMs x 2048 threads); the loops stride past it

// cols (images * OH * OW, kh*kw*C) = im2col of big's first `images` images; total = cols' size.
__global__ void __launch_bounds__(GATHER_THREADS)
im2col_kernel(const float* __restrict__ big, float* __restrict__ cols, ConvGeometry g, int64_t total) {
    int depth = g.depth();
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
        int row = int(e / depth);  // (n, oh, ow): rows fit an int (the SGEMM's m)
        int column = int(e - int64_t(row) * depth);
        int c = column % g.channels, tap = column / g.channels;
        int ow = row % g.out_width, oh = row / g.out_width % g.out_height, n = row / g.out_width / g.out_height;
        int h = oh * g.stride_height - g.pad_top + tap / g.kernel_width;
        int w = ow * g.stride_width - g.pad_left + tap % g.kernel_width;
        bool inside = 0 <= h && h < g.height && 0 <= w && w < g.width;
        cols[e] = inside ? big[((int64_t(n) * g.height + h) * g.width + w) * g.channels + c] : 0.0f;
    }
}

// big's first images = activation(col2im(cols) + bias), total = their size; bias (C,) or null.
__global__ void __launch_bounds__(GATHER_THREADS)
col2im_kernel(const float* __restrict__ cols, const float* __restrict__ bias, float* __restrict__ big,
              ConvGeometry g, int64_t total, int activation, float alpha) {
    int depth = g.depth();
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
        int pixel = int(e / g.channels);  // (n, h, w): pixels fit an int (the SGEMM's m)
        int c = int(e - int64_t(pixel) * g.channels);
        int w = pixel % g.width, h = pixel / g.width % g.height, n = pixel / g.width / g.height;
        // window (oh, ow) reads (h, w) through tap (th - oh*sh, tw - ow*sw)
        int th = h + g.pad_top, tw = w + g.pad_left;
        float sum = 0.0f;
        for (int i = th % g.stride_height; i < g.kernel_height && i <= th; i += g.stride_height) {
            int oh = (th - i) / g.stride_height;
            if (oh >= g.out_height) continue;
            int64_t window_row = (int64_t(n) * g.out_height + oh) * g.out_width;
            const float* taps = cols + window_row * depth + i * g.kernel_width * g.channels + c;
            for (int j = tw % g.stride_width; j < g.kernel_width && j <= tw; j += g.stride_width) {
                int ow = (tw - j) / g.stride_width;
                if (ow < g.out_width) sum += taps[int64_t(ow) * depth + j * g.channels];
            }
        }
        big[e] = activate(sum + (bias != nullptr ? bias[c] : 0.0f), activation, alpha);
    }
}

// total += part, elementwise.
__global__ void __launch_bounds__(GATHER_THREADS)
accumulate_kernel(float* __restrict__ total, const float* __restrict__ part, int64_t size) {
    for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += int64_t(gridDim.x) * blockDim.x) {
        total[e] += part[e];
    }
}

static unsigned gather_blocks(int64_t total) {
    return unsigned(min((total + GATHER_THREADS - 1) / GATHER_THREADS, GATHER_MAX_BLOCKS));
}

static void im2col(const float* big, float* cols, const ConvGeometry& g, int images, cudaStream_t stream) {
    int64_t total = images * g.windows() * g.depth();
    if (total == 0) return;  // a grid of zero blocks is a launch error
    im2col_kernel<<<gather_blocks(total), GATHER_THREADS, 0, stream>>>(big, cols, g, total);
    CUDA_CHECK(cudaGetLastError());
}

static void col2im(const float* cols, const float* bias, float* big, const ConvGeometry& g, int images,
                   int activation, float alpha, cudaStream_t stream) {
    int64_t total = int64_t(images) * g.height * g.width * g.channels;
    if (total == 0) return;
    col2im_kernel<<<gather_blocks(total), GATHER_THREADS, 0, stream>>>(cols, bias, big, g, total, activation, alpha);
    CUDA_CHECK(cudaGetLastError());
}

static void accumulate(float* total, const float* part, int64_t size, cudaStream_t stream) {
    if (size == 0) return;
    accumulate_kernel<<<gather_blocks(size), GATHER_THREADS, 0, stream>>>(total, part, size);
    CUDA_CHECK(cudaGetLastError());
}

// body(first image, images) for each chunk of at most chunk_images images, in order; one empty
// chunk when there are no images (so dw is still written).
template <class Body>
static void for_each_chunk(const ConvGeometry& g, const ConvWorkspace& workspace, Body body) {
    if (workspace.chunk_images < 1) {
        throw std::invalid_argument("conv: chunk_images is " + std::to_string(workspace.chunk_images) + ", not >= 1");
    }
    int first = 0;
    do {
        int images = min(workspace.chunk_images, g.images - first);
        body(first, images);
        first += images;
    } while (first < g.images);
}

static int64_t big_image_size(const ConvGeometry& g) { return int64_t(g.height) * g.width * g.channels; }
static int64_t small_image_size(const ConvGeometry& g) { return g.windows() * g.out_channels; }

void convolve(const float* big, const float* weights, const float* bias, float* small, const ConvGeometry& g,
              int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream) {
    if (g.is_pointwise()) {
        matmul_forward(big, weights, bias, small, int(g.images * g.windows()), g.out_channels, g.depth(), false,
                       false, activation, alpha, stream);
        return;
    }
    for_each_chunk(g, workspace, [&](int first, int images) {
        im2col(big + first * big_image_size(g), workspace.cols, g, images, stream);
        matmul_forward(workspace.cols, weights, bias, small + first * small_image_size(g),
                       int(images * g.windows()), g.out_channels, g.depth(), false, false, activation, alpha, stream);
    });
}

void convolve_transposed(const float* small, const float* weights, const float* bias, float* big,
                         const ConvGeometry& g, int activation, float alpha, const ConvWorkspace& workspace,
                         cudaStream_t stream) {
    if (g.is_pointwise()) {
        matmul_forward(small, weights, bias, big, int(g.images * g.windows()), g.depth(), g.out_channels, false,
                       true, activation, alpha, stream);
        return;
    }
    for_each_chunk(g, workspace, [&](int first, int images) {
        matmul_forward(small + first * small_image_size(g), weights, nullptr, workspace.cols,
                       int(images * g.windows()), g.depth(), g.out_channels, false, true, NONE, 0.0f, stream);
        col2im(workspace.cols, bias, big + first * big_image_size(g), g, images, activation, alpha, stream);
    });
}

// dw (+ where add) = cols^T @ small over `rows` rows: its depth cut in runs (matmul_split_depth)
// where the (kh*kw*C, O) result has too few tiles for the GPU, the runs' pages in `partial`.
static void weight_product(const float* cols, const float* small, float* dw, bool add, int rows,
                           const ConvGeometry& g, float* partial, cudaStream_t stream) {
    int splits = matmul_depth_splits(g.depth(), g.out_channels, rows);
    int64_t size = int64_t(g.depth()) * g.out_channels;
    if (splits == 1 && !add) {
        matmul_forward(cols, small, nullptr, dw, g.depth(), g.out_channels, rows, true, false, NONE, 0.0f, stream);
    } else if (splits == 1) {
        matmul_forward(cols, small, nullptr, partial, g.depth(), g.out_channels, rows, true, false, NONE, 0.0f,
                       stream);
        accumulate(dw, partial, size, stream);
    } else {
        matmul_split_depth(cols, small, partial, g.depth(), g.out_channels, rows, splits, stream);
        sum_splits(partial, splits, size, dw, add, stream);
    }
}

int64_t conv_partial_floats(const ConvGeometry& g, int chunk_images) {
    bool chunked = !g.is_pointwise() && chunk_images < g.images;
    int64_t rows = (chunked ? chunk_images : g.images) * g.windows();  // the first (deepest) product's
    int splits = matmul_depth_splits(g.depth(), g.out_channels, int(rows));
    int64_t size = int64_t(g.depth()) * g.out_channels;
    return splits > 1 ? splits * size : chunked ? size : 0;
}

void weight_gradient(const float* big, const float* small, float* dw, const ConvGeometry& g,
                     const ConvWorkspace& workspace, cudaStream_t stream) {
    if (g.is_pointwise()) {
        weight_product(big, small, dw, false, int(g.images * g.windows()), g, workspace.partial, stream);
        return;
    }
    for_each_chunk(g, workspace, [&](int first, int images) {
        im2col(big + first * big_image_size(g), workspace.cols, g, images, stream);
        weight_product(workspace.cols, small + first * small_image_size(g), dw, first > 0, int(images * g.windows()),
                       g, workspace.partial, stream);
    });
}
