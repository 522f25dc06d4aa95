// What the convolution launchers share (im2col.cu): the three products every Conv2D and
// Conv2DTranspose pass is made of, over a ConvGeometry (conv2d.cuh) from big images to small
// ones, with `weights` the (kh*kw*C, O) matrix of w in either layout.
#pragma once

#include <cuda_runtime.h>

#include "conv2d.cuh"

// small (N, OH, OW, O) = activation(im2col(big) @ weights + bias); bias (O,) or null
void convolve(const float* big, const float* weights, const float* bias, float* small, const ConvGeometry& g,
              int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream);

// big (N, H, W, C) = activation(col2im(small @ weights^T) + bias); bias (C,) or null
void convolve_transposed(const float* small, const float* weights, const float* bias, float* big,
                         const ConvGeometry& g, int activation, float alpha, const ConvWorkspace& workspace,
                         cudaStream_t stream);

// dw (kh*kw*C, O) = im2col(big)^T @ small, small seen as (N*OH*OW, O)
void weight_gradient(const float* big, const float* small, float* dw, const ConvGeometry& g,
                     const ConvWorkspace& workspace, cudaStream_t stream);
