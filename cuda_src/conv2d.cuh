// Conv2D and Conv2DTranspose on float32 NHWC device arrays, forward and backward; see conv2d.cu,
// conv2d_backward.cu, conv2d_transpose.cu, conv2d_transpose_backward.cu, and im2col.cu for what
// they share. Weights are in Keras's layouts: Conv2D (kh, kw, C, O), Conv2DTranspose (kh, kw, O, C).
// Every launcher launches on `stream` and throws std::runtime_error if a launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// A convolution from "big" images (N, H, W, C) to "small" ones (N, OH, OW, O) through a kh x kw
// window moved by (sh, sw), with pt rows and pl columns of zeros before the image (TensorFlow's
// padding): Conv2D maps its x (big) to its y (small); Conv2DTranspose runs the same map
// backwards, from its x (small) to its y (big). The weights, seen as a (kh*kw*C, O) matrix, are
// w in both layouts. The fields are kernels/common.py's Geometry (which the Python side
// computes), then N and O.
struct ConvGeometry {
    int height, width, channels;  // big: H, W, C
    int out_height, out_width;    // small: OH, OW
    int kernel_height, kernel_width, stride_height, stride_width, pad_top, pad_left;
    int images, out_channels;     // N, and the small image's channels O

    __host__ __device__ int64_t windows() const { return int64_t(out_height) * out_width; }   // per image
    __host__ __device__ int depth() const { return kernel_height * kernel_width * channels; }  // kh*kw*C
    __host__ __device__ bool is_pointwise() const {  // a 1x1 kernel at stride 1: im2col(big) is big
        return kernel_height == 1 && kernel_width == 1 && stride_height == 1 && stride_width == 1;
    }
};
constexpr int CONV_GEOMETRY_INTS = 13;

// The geometry from its 13 ints in the order of the fields (how the Python side passes it).
inline ConvGeometry conv_geometry(const int* values) {
    return ConvGeometry{values[0], values[1], values[2],  values[3],  values[4],  values[5], values[6],
                        values[7], values[8], values[9], values[10], values[11], values[12]};
}

// Device scratch of a call. The ops work a chunk of `chunk_images` whole images at a time, whose
// (chunk_images * OH * OW, kh*kw*C) matrix of windows (im2col) or of contributions (col2im) is
// `cols`; a pointwise convolution needs none. `partial` holds dw's product of each chunk after the
// first (kh*kw*C x O floats), or the pages of a product cut in depth: conv_partial_floats of them;
// `sums` (BIAS_GRAD_MAX_ROW_CHUNKS x O doubles) db's partial sums. Pointers
// a call does not use may be null.
struct ConvWorkspace {
    float* cols;
    int chunk_images;
    float* partial;
    double* sums;
};

// The floats `partial` must hold for dw (either op) with chunk_images images a chunk: none where
// dw's product is neither cut in depth nor made of several chunks.
int64_t conv_partial_floats(const ConvGeometry& g, int chunk_images);

// x (N, H, W, C), w (kh, kw, C, O), bias (O,) or null -> y (N, OH, OW, O) = activation(conv(x, w) + bias)
void conv2d_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeometry& g,
                    int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream);

// dy (N, OH, OW, O), x, w as the forward's -> dx (N, H, W, C), dw (kh, kw, C, O), db (O,):
// dx is skipped when null, dw and db when null (both or neither)
void conv2d_backward(const float* dy, const float* x, const float* w, float* dx, float* dw, float* db,
                     const ConvGeometry& g, const ConvWorkspace& workspace, cudaStream_t stream);

// x (N, OH, OW, C') (the small image), w (kh, kw, O', C'), bias (O',) or null -> y (N, H, W, O') (the big one)
// = activation(conv_transpose(x, w) + bias); g's channels are O', its out_channels C'
void conv2d_transpose_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeometry& g,
                              int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream);

// dy (N, H, W, O'), x, w as the forward's -> dx (N, OH, OW, C'), dw (kh, kw, O', C'), db (O',), skipped as
// conv2d_backward's; `sums` holds BIAS_GRAD_MAX_ROW_CHUNKS x O' doubles here
void conv2d_transpose_backward(const float* dy, const float* x, const float* w, float* dx, float* dw, float* db,
                               const ConvGeometry& g, const ConvWorkspace& workspace, cudaStream_t stream);
