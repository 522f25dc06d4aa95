// C entry points over the launchers declared in cuda_src/*.cuh, for ctypes (fake_cuda.py).
// Each returns 0, or 1 with emu_message() saying what failed: an exception (CUDA_CHECK), a launch
// error nobody checked, or a fault the emulator counted (emu_runtime.cpp).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "adam.cuh"
#include "attention.cuh"
#include "binary_crossentropy.cuh"
#include "conv2d.cuh"
#include "embedding.cuh"
#include "gelu.cuh"
#include "layer_norm.cuh"
#include "leaky_relu.cuh"
#include "matmul.cuh"
#include "sigmoid.cuh"
#include "softmax.cuh"
#include "tanh.cuh"

std::string emu_take_faults();
void emu_set_reverse(bool reverse);

namespace {
std::string message;

template <class Body>
int run(Body body) {
    emu_take_faults();
    try {
        body();
    } catch (const std::exception& error) {
        message = error.what();
        emu_take_faults();
        return 1;
    }
    cudaError_t error = cudaGetLastError();
    message = emu_take_faults();
    if (error != cudaSuccess) message = std::string("a launch failed and no CUDA_CHECK noticed: ") + message;
    return message.empty() ? 0 : 1;
}
}  // namespace

#define F(x) reinterpret_cast<float*>(x)
#define CF(x) reinterpret_cast<const float*>(x)
#define D(x) reinterpret_cast<double*>(x)
#define CI(x) reinterpret_cast<const int64_t*>(x)
#define B(x) reinterpret_cast<__nv_bfloat16*>(x)
#define CB(x) reinterpret_cast<const __nv_bfloat16*>(x)
typedef uintptr_t ptr;

extern "C" {
const char* emu_message() { return message.c_str(); }
void emu_reverse(int reverse) { emu_set_reverse(reverse != 0); }
uint16_t emu_float_to_bf16(float x) { return __float2bfloat16(x).bits; }

int w_leaky_relu_forward(ptr x, ptr y, int64_t n, float alpha, ptr) {
    return run([&] { leaky_relu_forward(CF(x), F(y), n, alpha, 0); });
}
int w_leaky_relu_backward(ptr dy, ptr x, ptr dx, int64_t n, float alpha, ptr) {
    return run([&] { leaky_relu_backward(CF(dy), CF(x), F(dx), n, alpha, 0); });
}
int w_matmul_forward(ptr a, ptr b, ptr bias, ptr c, int m, int n, int k, bool ta, bool tb, int act, float alpha, ptr) {
    return run([&] { matmul_forward(CF(a), CF(b), CF(bias), F(c), m, n, k, ta, tb, act, alpha, 0); });
}
int w_matmul_forward_tiles(int tiles, ptr a, ptr b, ptr bias, ptr c, int m, int n, int k, bool ta, bool tb, int act,
                           float alpha, ptr) {
    return run([&] { matmul_forward_tiles(tiles, CF(a), CF(b), CF(bias), F(c), m, n, k, ta, tb, act, alpha, 0); });
}
int w_matmul_tiles_for(int m, int n) { return matmul_tiles_for(m, n); }
int w_matmul_bf16_forward(ptr a, ptr b, ptr bias, ptr c, int m, int n, int k, bool ta, bool tb, int act, float alpha,
                          ptr) {
    return run([&] { matmul_bf16_forward(CB(a), CB(b), CF(bias), F(c), m, n, k, ta, tb, act, alpha, 0); });
}
int w_matmul_bf16_forward_tiles(int tiles, ptr a, ptr b, ptr bias, ptr c, int m, int n, int k, bool ta, bool tb,
                                int act, float alpha, ptr) {
    return run([&] { matmul_bf16_forward_tiles(tiles, CB(a), CB(b), CF(bias), F(c), m, n, k, ta, tb, act, alpha, 0); });
}
int w_matmul_tf32_forward(ptr a, ptr b, ptr bias, ptr c, int m, int n, int k, bool ta, bool tb, int act, float alpha,
                          ptr) {
    return run([&] { matmul_tf32_forward(CF(a), CF(b), CF(bias), F(c), m, n, k, ta, tb, act, alpha, 0); });
}
int w_attention_forward(ptr q, ptr k, ptr v, ptr o, ptr lse, int heads, int nq, int nk, int d, bool causal,
                        float scale, ptr) {
    return run([&] { attention_forward(CF(q), CF(k), CF(v), F(o), F(lse), heads, nq, nk, d, causal, scale, 0); });
}
int w_attention_forward_bf16(ptr q, ptr k, ptr v, ptr o, ptr lse, int heads, int nq, int nk, int d, bool causal,
                             float scale, ptr) {
    return run([&] {
        attention_forward_bf16(CB(q), CB(k), CB(v), B(o), F(lse), heads, nq, nk, d, causal, scale, 0);
    });
}
int w_attention_backward_bf16(ptr dout, ptr q, ptr k, ptr v, ptr o, ptr lse, ptr delta, ptr dq, ptr dk, ptr dv,
                              int heads, int nq, int nk, int d, bool causal, float scale, ptr) {
    return run([&] {
        attention_backward_bf16(CB(dout), CB(q), CB(k), CB(v), CB(o), CF(lse), F(delta), B(dq), B(dk), B(dv), heads,
                                nq, nk, d, causal, scale, 0);
    });
}
int w_attention_backward(ptr dout, ptr q, ptr k, ptr v, ptr o, ptr lse, ptr delta, ptr dq, ptr dk, ptr dv, int heads,
                         int nq, int nk, int d, bool causal, float scale, ptr) {
    return run([&] {
        attention_backward(CF(dout), CF(q), CF(k), CF(v), CF(o), CF(lse), F(delta), F(dq), F(dk), F(dv), heads, nq, nk,
                           d, causal, scale, 0);
    });
}
int w_layer_norm_forward(ptr x, ptr g, ptr b, ptr y, ptr mean, ptr rstd, int64_t rows, int c, float eps, ptr) {
    return run([&] { layer_norm_forward(CF(x), CF(g), CF(b), F(y), F(mean), F(rstd), rows, c, eps, 0); });
}
int w_layer_norm_backward(ptr dy, ptr x, ptr g, ptr mean, ptr rstd, ptr dx, ptr dg, ptr db, ptr scratch, int64_t rows,
                          int c, ptr) {
    return run([&] {
        layer_norm_backward(CF(dy), CF(x), CF(g), CF(mean), CF(rstd), F(dx), F(dg), F(db),
                            reinterpret_cast<double*>(scratch), rows, c, 0);
    });
}
int w_gelu_forward(ptr x, ptr y, int64_t n, ptr) { return run([&] { gelu_forward(CF(x), F(y), n, 0); }); }
int w_gelu_backward(ptr dy, ptr x, ptr dx, int64_t n, ptr) {
    return run([&] { gelu_backward(CF(dy), CF(x), F(dx), n, 0); });
}
int w_sigmoid_forward(ptr x, ptr y, int64_t n, ptr) { return run([&] { sigmoid_forward(CF(x), F(y), n, 0); }); }
int w_sigmoid_backward(ptr dy, ptr y, ptr dx, int64_t n, ptr) {
    return run([&] { sigmoid_backward(CF(dy), CF(y), F(dx), n, 0); });
}
int w_tanh_forward(ptr x, ptr y, int64_t n, ptr) { return run([&] { tanh_forward(CF(x), F(y), n, 0); }); }
int w_tanh_backward(ptr dy, ptr y, ptr dx, int64_t n, ptr) {
    return run([&] { tanh_backward(CF(dy), CF(y), F(dx), n, 0); });
}
int w_binary_crossentropy_logits_forward(ptr z, ptr t, ptr loss, ptr partial_sums, int64_t n, ptr) {
    return run([&] { binary_crossentropy_logits_forward(CF(z), CF(t), D(loss), D(partial_sums), n, 0); });
}
int w_binary_crossentropy_logits_backward(ptr z, ptr t, ptr dz, int64_t n, ptr) {
    return run([&] { binary_crossentropy_logits_backward(CF(z), CF(t), F(dz), n, 0); });
}
int w_softmax_forward(ptr x, ptr y, int64_t rows, int cols, ptr) {
    return run([&] { softmax_forward(CF(x), F(y), rows, cols, 0); });
}
int w_softmax_cross_entropy(ptr z, ptr t, ptr losses, ptr dz, int64_t rows, int cols, ptr) {
    return run([&] { softmax_cross_entropy_forward_backward(CF(z), CI(t), F(losses), F(dz), rows, cols, 0); });
}
int w_embedding_forward(ptr ids, ptr table, ptr out, int64_t count, int c, ptr) {
    return run([&] { embedding_forward(CI(ids), CF(table), F(out), count, c, 0); });
}
int w_embedding_backward(ptr dout, ptr ids, ptr dtable, int64_t count, int64_t vocab, int c, ptr) {
    return run([&] { embedding_backward(CF(dout), CI(ids), F(dtable), count, vocab, c, 0); });
}
int w_conv2d_forward(ptr x, ptr w, ptr bias, ptr y, const int* geometry, int act, float alpha, ptr cols, int chunk,
                     ptr) {
    ConvWorkspace workspace{F(cols), chunk, nullptr, nullptr};
    return run([&] {
        conv2d_forward(CF(x), CF(w), CF(bias), F(y), conv_geometry(geometry), act, alpha, workspace, 0);
    });
}
int w_conv2d_transpose_forward(ptr x, ptr w, ptr bias, ptr y, const int* geometry, int act, float alpha, ptr cols,
                               int chunk, ptr) {
    ConvWorkspace workspace{F(cols), chunk, nullptr, nullptr};
    return run([&] {
        conv2d_transpose_forward(CF(x), CF(w), CF(bias), F(y), conv_geometry(geometry), act, alpha, workspace, 0);
    });
}
int64_t w_conv_partial_floats(const int* geometry, int chunk) {
    return conv_partial_floats(conv_geometry(geometry), chunk);
}
int w_conv2d_backward(ptr dy, ptr x, ptr w, ptr dx, ptr dw, ptr db, const int* geometry, ptr cols, int chunk,
                      ptr partial, ptr sums, ptr) {
    ConvWorkspace workspace{F(cols), chunk, F(partial), D(sums)};
    return run([&] {
        conv2d_backward(CF(dy), CF(x), CF(w), F(dx), F(dw), F(db), conv_geometry(geometry), workspace, 0);
    });
}
int w_conv2d_transpose_backward(ptr dy, ptr x, ptr w, ptr dx, ptr dw, ptr db, const int* geometry, ptr cols,
                                int chunk, ptr partial, ptr sums, ptr) {
    ConvWorkspace workspace{F(cols), chunk, F(partial), D(sums)};
    return run([&] {
        conv2d_transpose_backward(CF(dy), CF(x), CF(w), F(dx), F(dw), F(db), conv_geometry(geometry), workspace, 0);
    });
}
int w_adam_update(ptr p, ptr g, ptr m, ptr v, int64_t n, float alpha, float b1, float b2, float eps, ptr) {
    return run([&] { adam_update(F(p), CF(g), F(m), F(v), n, alpha, b1, b2, eps, 0); });
}
}
