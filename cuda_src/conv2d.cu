// Conv2D forward, float32, NHWC: y = activation(conv(x, w) + bias)
//   x (N, H, W, C), w (kh, kw, C, O) (Keras's layout), bias (O,), y (N, OH, OW, O):
//   y[n, oh, ow, o] = sum over i, j, c of x[n, oh*sh - pt + i, ow*sw - pl + j, c] w[i, j, c, o]
// with OH, OW and TensorFlow's padding pt, pl computed by the Python side (kernels/common.py).
// Cost: 2*N*OH*OW*kh*kw*C*O FLOPs; at least 4*(N*H*W*C + kh*kw*C*O + N*OH*OW*O) bytes, plus
// 8*N*OH*OW*kh*kw*C for the im2col matrix written and read back.
//
// An explicit GEMM (im2col.cu's convolve): the windows of a chunk of images gathered into the
// (images*OH*OW, kh*kw*C) matrix cols, then y = cols @ w.reshape(kh*kw*C, O) on the SGEMM
// (matmul.cu), the bias and activation added in its epilogue before the one store of y. A 1x1
// kernel at stride 1 multiplies x itself.
#include "conv2d.cuh"
#include "im2col.cuh"

void conv2d_forward(const float* x, const float* w, const float* bias, float* y, const ConvGeometry& g,
                    int activation, float alpha, const ConvWorkspace& workspace, cudaStream_t stream) {
    convolve(x, w, bias, y, g, activation, alpha, workspace, stream);
}
