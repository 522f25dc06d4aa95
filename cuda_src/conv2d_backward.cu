// Conv2D backward, float32, NHWC: the input, weight and bias gradients of y = conv(x, w) + bias
// from dy = d loss / d y (N, OH, OW, O), the gradient before any activation (the caller applies
// the activation's gradient first). Shapes as in conv2d.cu. With cols = im2col(x), the
// (N*OH*OW, kh*kw*C) matrix of x's windows, and dy as an (N*OH*OW, O) matrix:
//   dx = col2im(dy @ w.reshape(kh*kw*C, O)^T)    (N, H, W, C)      2*N*OH*OW*kh*kw*C*O FLOPs
//   dw = cols^T @ dy                              (kh, kw, C, O)    as many FLOPs
//   db = the column sums of dy                    (O,)              N*OH*OW*O adds
// Bytes: at least 4*(2*N*OH*OW*O + N*H*W*C + kh*kw*C*O) read and as many written, plus 8 bytes a
// cols element for each of dx and dw.
//
// dx is Conv2DTranspose's routine (im2col.cu's convolve_transposed: the SGEMM, then a col2im that
// gathers each pixel's sum in a fixed order); dw the SGEMM with cols transposed (weight_gradient),
// chunks of images added in order; db two deterministic passes in double (bias_grad.cu). No
// atomics anywhere: the same bits on every run.
#include "bias_grad.cuh"
#include "conv2d.cuh"
#include "im2col.cuh"
#include "matmul.cuh"

void conv2d_backward(const float* dy, const float* x, const float* w, float* dx, float* dw, float* db,
                     const ConvGeometry& g, const ConvWorkspace& workspace, cudaStream_t stream) {
    if (dx != nullptr) convolve_transposed(dy, w, nullptr, dx, g, NONE, 0.0f, workspace, stream);
    if (dw != nullptr) {
        weight_gradient(x, dy, dw, g, workspace, stream);
        bias_grad(dy, db, workspace.sums, g.images * g.windows(), g.out_channels, stream);
    }
}
