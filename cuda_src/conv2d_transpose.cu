// Conv2DTranspose forward, float32, NHWC: y = activation(conv_transpose(x, w) + bias)
//   x (N, H, W, I), w (kh, kw, O, I) (Keras's layout), bias (O,), y (N, OH, OW, O) with
//   OH = H*sh ('same') or H*sh + max(kh - sh, 0) ('valid'), as Keras computes it. The op is the
//   transpose (the input gradient) of the Conv2D from y's shape to x's with the same kernel,
//   stride and padding: each input pixel spreads x[n, h, w, :] @ w[i, j]^T over the window it
//   would have been computed from,
//   y[n, h*sh - pt + i, w*sw - pl + j, o] += sum over c of x[n, h, w, c] w[i, j, o, c]
// Cost: 2*N*H*W*kh*kw*O*I FLOPs, plus N*H*W*kh*kw*O adds in col2im; at least
// 4*(N*H*W*I + kh*kw*O*I + N*OH*OW*O) bytes, plus 8*N*H*W*kh*kw*O for the contributions
// written and read back.
//
// im2col.cu's convolve_transposed: cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T on the
// SGEMM (matmul.cu), a chunk of images at a time, then col2im gathers each output element's
// contributions in a fixed order (taps i then j; no atomics) and applies the bias and
// activation (epilogue.cuh) before its one store. A 1x1 kernel at stride 1 is the SGEMM alone,
// with the epilogue fused.
#include "conv2d.cuh"
#include "im2col.cuh"

void conv2d_transpose_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeometry& g,
                              int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream) {
    convolve_transposed(x, w, bias, y, g, activation, alpha, workspace, stream);
}
