// Conv2DTranspose backward, float32, NHWC: the input, weight and bias gradients of
// y = conv_transpose(x, w) + bias from dy = d loss / d y (N, OH, OW, O), the gradient before any
// activation. Shapes as in conv2d_transpose.cu. The forward is the transpose of a Conv2D from
// y's shape to x's, so with cols = im2col(dy) (that Conv2D's (N*H*W, kh*kw*O) matrix of dy's
// windows) and x as an (N*H*W, I) matrix:
//   dx = cols @ w.reshape(kh*kw*O, I)     (the Conv2D of dy by w)   2*N*H*W*kh*kw*O*I FLOPs
//   dw = cols^T @ x                       (kh, kw, O, I)            as many FLOPs
//   db = the column sums of dy            (O,)                      N*OH*OW*O adds
// Bytes: at least 4*(2*N*OH*OW*O + 2*N*H*W*I + kh*kw*O*I), plus 8 a cols element for each of dx
// and dw.
//
// dx is Conv2D's forward routine (im2col.cu's convolve) without bias or activation, dw Conv2D's
// weight-gradient routine with the roles of the images swapped (weight_gradient), db two
// deterministic passes in double (bias_grad.cu). No atomics: the same bits on every run.
#include "bias_grad.cuh"
#include "conv2d.cuh"
#include "im2col.cuh"
#include "matmul.cuh"

void conv2d_transpose_backward(const float* dy, const float* x, const float* w, float* dx, float* dw, float* db,
                               const ConvGeometry& g, const ConvWorkspace& workspace, cudaStream_t stream) {
    if (dx != nullptr) convolve(dy, w, nullptr, dx, g, NONE, 0.0f, workspace, stream);
    if (dw != nullptr) {
        weight_gradient(dy, x, dw, g, workspace, stream);
        bias_grad(dy, db, workspace.sums, g.images * int64_t(g.height) * g.width, g.channels, stream);
    }
}
