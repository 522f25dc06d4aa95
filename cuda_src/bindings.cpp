// pyai._cuda: the CUDA C++ kernels as a Python module (nanobind).
//
// Kernels take raw device pointers as ints (e.g. `__cuda_array_interface__['data'][0]` or
// DeviceBuffer.ptr) and a cudaStream_t as an int (0: the default stream); they launch
// asynchronously. DeviceBuffer is the smallest device allocation that moves float32 numpy arrays
// (and int64 ids, and bfloat16 arrays as their uint16 bits) to and from the GPU. A failed CUDA
// call raises RuntimeError naming the call and the CUDA error.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "adam.cuh"
#include "attention.cuh"
#include "bias_grad.cuh"
#include "binary_crossentropy.cuh"
#include "check.cuh"
#include "conv2d.cuh"
#include "embedding.cuh"
#include "gelu.cuh"
#include "layer_norm.cuh"
#include "leaky_relu.cuh"
#include "matmul.cuh"
#include "sigmoid.cuh"
#include "softmax.cuh"
#include "tanh.cuh"

namespace nb = nanobind;

using HostArray = nb::ndarray<float, nb::numpy, nb::c_contig, nb::device::cpu>;
using ConstHostArray = nb::ndarray<const float, nb::numpy, nb::c_contig, nb::device::cpu>;
using ConstHostIndices = nb::ndarray<const int64_t, nb::numpy, nb::c_contig, nb::device::cpu>;
// bfloat16 arrays travel as their bits, viewed as uint16 (numpy has no bfloat16 of its own).
using HostHalfwords = nb::ndarray<uint16_t, nb::numpy, nb::c_contig, nb::device::cpu>;
using ConstHostHalfwords = nb::ndarray<const uint16_t, nb::numpy, nb::c_contig, nb::device::cpu>;

// None when a CUDA device is usable, else why not. Never throws: it is how the "cuda" backend's
// probe finds out, on any machine, whether it can run. A kernel fault (an illegal address, a
// trap) is sticky: the context stays broken and every later CUDA call fails with the same error
// until the process ends, so then the backend reports the first error rather than letting each
// later op fail with it as if it were its own.
static std::optional<std::string> runtime_status() {
    int device_count = 0;
    cudaError_t error = cudaGetDeviceCount(&device_count);
    if (error != cudaSuccess) {
        return std::string("no CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorString(error);
    }
    if (device_count == 0) return std::string("no CUDA device: cudaGetDeviceCount found none");
    error = cudaPeekAtLastError();  // a sticky error stays; a launch error was cleared by its CUDA_CHECK
    if (error != cudaSuccess) {
        return std::string("the CUDA context is unusable after an earlier error (") + cudaGetErrorString(error) +
               "); restart the process";
    }
    return std::nullopt;
}

class DeviceBuffer {
public:
    explicit DeviceBuffer(size_t nbytes) : nbytes_(nbytes) {
        if (nbytes > 0) CUDA_CHECK(cudaMalloc(&data_, nbytes));  // a zero-byte buffer needs no memory
    }
    ~DeviceBuffer() { cudaFree(data_); }  // a destructor cannot raise; a failed free is ignored
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    uintptr_t ptr() const { return reinterpret_cast<uintptr_t>(data_); }
    size_t nbytes() const { return nbytes_; }

    // Synchronous copies on the default stream: they wait for kernels launched on it before them.
    // Copies of zero bytes touch no memory and skip the CUDA call.
    template <typename Array>
    void copy_from_host(Array array) {
        check_size("copy_from_host", array.nbytes());
        if (nbytes_ > 0) CUDA_CHECK(cudaMemcpy(data_, array.data(), nbytes_, cudaMemcpyHostToDevice));
    }
    template <typename Array>
    void copy_to_host(Array array) const {
        check_size("copy_to_host", array.nbytes());
        if (nbytes_ > 0) CUDA_CHECK(cudaMemcpy(array.data(), data_, nbytes_, cudaMemcpyDeviceToHost));
    }

private:
    void check_size(const char* method, size_t array_nbytes) const {
        if (array_nbytes != nbytes_) {
            throw std::invalid_argument(std::string(method) + ": the array holds " + std::to_string(array_nbytes) +
                                        " bytes but the buffer holds " + std::to_string(nbytes_));
        }
    }

    void* data_ = nullptr;
    size_t nbytes_;
};

template <typename T>
static T* device_pointer(uintptr_t address) {
    return reinterpret_cast<T*>(address);
}

static cudaStream_t stream_handle(uintptr_t address) {
    return reinterpret_cast<cudaStream_t>(address);
}

// The GEMM launchers: operands of type T (float, or __nv_bfloat16 for matmul_bf16_*), float32
// bias and c; the *_tiles ones take a tile configuration first.
template <typename T>
using MatmulLauncher = void (*)(const T*, const T*, const float*, float*, int, int, int, bool, bool, int, float,
                                cudaStream_t);
template <typename T>
using TiledMatmulLauncher = void (*)(int, const T*, const T*, const float*, float*, int, int, int, bool, bool, int,
                                     float, cudaStream_t);

template <typename T>
static void def_matmul(nb::module_& m, const char* name, MatmulLauncher<T> launcher, const char* doc) {
    m.def(
        name,
        [launcher](uintptr_t a, uintptr_t b, uintptr_t bias, uintptr_t c, int rows, int columns, int depth,
                   bool transpose_a, bool transpose_b, int activation, float alpha, uintptr_t stream) {
            launcher(device_pointer<const T>(a), device_pointer<const T>(b), device_pointer<const float>(bias),
                     device_pointer<float>(c), rows, columns, depth, transpose_a, transpose_b, activation, alpha,
                     stream_handle(stream));
        },
        nb::arg("a_ptr"), nb::arg("b_ptr"), nb::arg("bias_ptr"), nb::arg("c_ptr"), nb::arg("m"), nb::arg("n"),
        nb::arg("k"), nb::arg("transpose_a"), nb::arg("transpose_b"), nb::arg("activation"), nb::arg("alpha"),
        nb::arg("stream") = 0, doc);
}

template <typename T>
static void def_tiled_matmul(nb::module_& m, const char* name, TiledMatmulLauncher<T> launcher, const char* doc) {
    m.def(
        name,
        [launcher](int tiles, uintptr_t a, uintptr_t b, uintptr_t bias, uintptr_t c, int rows, int columns, int depth,
                   bool transpose_a, bool transpose_b, int activation, float alpha, uintptr_t stream) {
            launcher(tiles, device_pointer<const T>(a), device_pointer<const T>(b), device_pointer<const float>(bias),
                     device_pointer<float>(c), rows, columns, depth, transpose_a, transpose_b, activation, alpha,
                     stream_handle(stream));
        },
        nb::arg("tiles"), nb::arg("a_ptr"), nb::arg("b_ptr"), nb::arg("bias_ptr"), nb::arg("c_ptr"), nb::arg("m"),
        nb::arg("n"), nb::arg("k"), nb::arg("transpose_a"), nb::arg("transpose_b"), nb::arg("activation"),
        nb::arg("alpha"), nb::arg("stream") = 0, doc);
}

// The convolution launchers take their ConvGeometry as a sequence of its 13 ints in the order of
// its fields (H, W, C, OH, OW, kh, kw, sh, sw, pt, pl: kernels/common.py's Geometry, then N, O),
// and their workspace's pointers.
using GeometryInts = std::array<int, CONV_GEOMETRY_INTS>;
using ConvForwardLauncher = void (*)(const float*, const float*, const float*, float*, const ConvGeometry&, int, float,
                                     const ConvWorkspace&, cudaStream_t);
using ConvBackwardLauncher = void (*)(const float*, const float*, const float*, float*, float*, float*,
                                      const ConvGeometry&, const ConvWorkspace&, cudaStream_t);

static void def_conv_forward(nb::module_& m, const char* name, ConvForwardLauncher launcher, const char* doc) {
    m.def(
        name,
        [launcher](uintptr_t x, uintptr_t w, uintptr_t bias, uintptr_t y, GeometryInts geometry, int activation,
                   float alpha, uintptr_t cols, int chunk_images, uintptr_t stream) {
            ConvWorkspace workspace{device_pointer<float>(cols), chunk_images, nullptr, nullptr};
            launcher(device_pointer<const float>(x), device_pointer<const float>(w), device_pointer<const float>(bias),
                     device_pointer<float>(y), conv_geometry(geometry.data()), activation, alpha, workspace,
                     stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("w_ptr"), nb::arg("bias_ptr"), nb::arg("y_ptr"), nb::arg("geometry"),
        nb::arg("activation"), nb::arg("alpha"), nb::arg("cols_ptr"), nb::arg("chunk_images"), nb::arg("stream") = 0,
        doc);
}

static void def_conv_backward(nb::module_& m, const char* name, ConvBackwardLauncher launcher, const char* doc) {
    m.def(
        name,
        [launcher](uintptr_t dy, uintptr_t x, uintptr_t w, uintptr_t dx, uintptr_t dw, uintptr_t db,
                   GeometryInts geometry, uintptr_t cols, int chunk_images, uintptr_t partial, uintptr_t sums,
                   uintptr_t stream) {
            ConvWorkspace workspace{device_pointer<float>(cols), chunk_images, device_pointer<float>(partial),
                                    device_pointer<double>(sums)};
            launcher(device_pointer<const float>(dy), device_pointer<const float>(x), device_pointer<const float>(w),
                     device_pointer<float>(dx), device_pointer<float>(dw), device_pointer<float>(db),
                     conv_geometry(geometry.data()), workspace, stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("x_ptr"), nb::arg("w_ptr"), nb::arg("dx_ptr"), nb::arg("dw_ptr"), nb::arg("db_ptr"),
        nb::arg("geometry"), nb::arg("cols_ptr"), nb::arg("chunk_images"), nb::arg("partial_ptr"),
        nb::arg("sums_ptr"), nb::arg("stream") = 0, doc);
}

NB_MODULE(_cuda, m) {
    m.doc() = "pyai's CUDA C++ kernels; see pyai/_backends/cuda.py for the backend that uses them.";

    m.def("runtime_status", &runtime_status,
          "None when a CUDA device is usable here, else a sentence saying why not.");

    m.def(
        "leaky_relu_forward",
        [](uintptr_t x, uintptr_t y, int64_t n, float alpha, uintptr_t stream) {
            leaky_relu_forward(device_pointer<const float>(x), device_pointer<float>(y), n, alpha,
                               stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("y_ptr"), nb::arg("n"), nb::arg("alpha"), nb::arg("stream") = 0,
        "y = x > 0 ? x : alpha * x over n float32 values at device addresses x_ptr, y_ptr.");

    m.def(
        "leaky_relu_backward",
        [](uintptr_t dy, uintptr_t x, uintptr_t dx, int64_t n, float alpha, uintptr_t stream) {
            leaky_relu_backward(device_pointer<const float>(dy), device_pointer<const float>(x),
                                device_pointer<float>(dx), n, alpha, stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("x_ptr"), nb::arg("dx_ptr"), nb::arg("n"), nb::arg("alpha"),
        nb::arg("stream") = 0,
        "dx = x > 0 ? dy : alpha * dy over n float32 values at device addresses dy_ptr, x_ptr, dx_ptr.");

    def_matmul<float>(m, "matmul_forward", matmul_forward,
               "c (m, n) = activation(op(a) @ op(b) + bias); bias_ptr 0 for none; activation 0 none, 1 leaky_relu, "
               "2 relu, 3 sigmoid, 4 tanh, 5 gelu.");
    def_tiled_matmul<float>(m, "matmul_forward_tiles", matmul_forward_tiles,
                            "matmul_forward with the SGEMM tile configuration `tiles`: 0 128 x 128, 1 128 x 64, "
                            "2 64 x 64.");
    m.def("matmul_tiles_for", &matmul_tiles_for, nb::arg("m"), nb::arg("n"),
          "The tile configuration matmul_forward uses for an (m, n) result (see matmul_forward_tiles).");
    def_matmul<__nv_bfloat16>(m, "matmul_bf16_forward", matmul_bf16_forward,
                              "matmul_forward with bf16 a and b on tensor cores (sm_80+): float32 sums, bias and c.");
    def_tiled_matmul<__nv_bfloat16>(m, "matmul_bf16_forward_tiles", matmul_bf16_forward_tiles,
                                    "matmul_bf16_forward with the tile configuration `tiles` (as matmul_forward_tiles).");
    def_matmul<float>(m, "matmul_tf32_forward", matmul_tf32_forward,
               "matmul_forward on TF32 tensor cores (sm_80+): operands rounded to TF32, sums in float32.");

    m.def(
        "attention_forward",
        [](uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse, int heads, int n_queries, int n_keys,
           int depth, bool causal, float scale, uintptr_t stream) {
            attention_forward(device_pointer<const float>(q), device_pointer<const float>(k),
                              device_pointer<const float>(v), device_pointer<float>(o), device_pointer<float>(lse),
                              heads, n_queries, n_keys, depth, causal, scale, stream_handle(stream));
        },
        nb::arg("q_ptr"), nb::arg("k_ptr"), nb::arg("v_ptr"), nb::arg("o_ptr"), nb::arg("lse_ptr"), nb::arg("heads"),
        nb::arg("n_queries"), nb::arg("n_keys"), nb::arg("depth"), nb::arg("causal"), nb::arg("scale"),
        nb::arg("stream") = 0, "Flash attention forward: o (heads, Tq, D) and lse (heads, Tq).");

    m.def(
        "attention_forward_bf16",
        [](uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse, int heads, int n_queries, int n_keys,
           int depth, bool causal, float scale, uintptr_t stream) {
            attention_forward_bf16(device_pointer<const __nv_bfloat16>(q), device_pointer<const __nv_bfloat16>(k),
                                   device_pointer<const __nv_bfloat16>(v), device_pointer<__nv_bfloat16>(o),
                                   device_pointer<float>(lse), heads, n_queries, n_keys, depth, causal, scale,
                                   stream_handle(stream));
        },
        nb::arg("q_ptr"), nb::arg("k_ptr"), nb::arg("v_ptr"), nb::arg("o_ptr"), nb::arg("lse_ptr"), nb::arg("heads"),
        nb::arg("n_queries"), nb::arg("n_keys"), nb::arg("depth"), nb::arg("causal"), nb::arg("scale"),
        nb::arg("stream") = 0,
        "Flash attention forward on BF16 tensor cores (sm_80+): q, k, v, o bfloat16, lse float32.");

    m.def(
        "attention_backward",
        [](uintptr_t d_out, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse, uintptr_t delta,
           uintptr_t dq, uintptr_t dk, uintptr_t dv, int heads, int n_queries, int n_keys, int depth, bool causal,
           float scale, uintptr_t stream) {
            attention_backward(device_pointer<const float>(d_out), device_pointer<const float>(q),
                               device_pointer<const float>(k), device_pointer<const float>(v),
                               device_pointer<const float>(o), device_pointer<const float>(lse),
                               device_pointer<float>(delta), device_pointer<float>(dq), device_pointer<float>(dk),
                               device_pointer<float>(dv), heads, n_queries, n_keys, depth, causal, scale,
                               stream_handle(stream));
        },
        nb::arg("do_ptr"), nb::arg("q_ptr"), nb::arg("k_ptr"), nb::arg("v_ptr"), nb::arg("o_ptr"), nb::arg("lse_ptr"),
        nb::arg("delta_ptr"), nb::arg("dq_ptr"), nb::arg("dk_ptr"), nb::arg("dv_ptr"), nb::arg("heads"),
        nb::arg("n_queries"), nb::arg("n_keys"), nb::arg("depth"), nb::arg("causal"), nb::arg("scale"),
        nb::arg("stream") = 0, "Flash attention backward; delta_ptr: scratch of heads * Tq floats.");
    m.def(
        "attention_backward_bf16",
        [](uintptr_t d_out, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t o, uintptr_t lse, uintptr_t delta,
           uintptr_t dq, uintptr_t dk, uintptr_t dv, int heads, int n_queries, int n_keys, int depth, bool causal,
           float scale, uintptr_t stream) {
            attention_backward_bf16(device_pointer<const __nv_bfloat16>(d_out), device_pointer<const __nv_bfloat16>(q),
                                    device_pointer<const __nv_bfloat16>(k), device_pointer<const __nv_bfloat16>(v),
                                    device_pointer<const __nv_bfloat16>(o), device_pointer<const float>(lse),
                                    device_pointer<float>(delta), device_pointer<__nv_bfloat16>(dq),
                                    device_pointer<__nv_bfloat16>(dk), device_pointer<__nv_bfloat16>(dv), heads,
                                    n_queries, n_keys, depth, causal, scale, stream_handle(stream));
        },
        nb::arg("do_ptr"), nb::arg("q_ptr"), nb::arg("k_ptr"), nb::arg("v_ptr"), nb::arg("o_ptr"), nb::arg("lse_ptr"),
        nb::arg("delta_ptr"), nb::arg("dq_ptr"), nb::arg("dk_ptr"), nb::arg("dv_ptr"), nb::arg("heads"),
        nb::arg("n_queries"), nb::arg("n_keys"), nb::arg("depth"), nb::arg("causal"), nb::arg("scale"),
        nb::arg("stream") = 0,
        "Flash attention backward on BF16 tensor cores: do, q, k, v, o, dq, dk, dv bfloat16; lse and the "
        "delta scratch (heads * Tq) float32.");
    m.attr("ATTENTION_MAX_DEPTH") = ATTENTION_MAX_DEPTH;

    m.def(
        "layer_norm_forward",
        [](uintptr_t x, uintptr_t gamma, uintptr_t beta, uintptr_t y, uintptr_t mean, uintptr_t rstd, int64_t rows,
           int channels, float epsilon, uintptr_t stream) {
            layer_norm_forward(device_pointer<const float>(x), device_pointer<const float>(gamma),
                               device_pointer<const float>(beta), device_pointer<float>(y), device_pointer<float>(mean),
                               device_pointer<float>(rstd), rows, channels, epsilon, stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("gamma_ptr"), nb::arg("beta_ptr"), nb::arg("y_ptr"), nb::arg("mean_ptr"),
        nb::arg("rstd_ptr"), nb::arg("rows"), nb::arg("channels"), nb::arg("epsilon"), nb::arg("stream") = 0,
        "Layer norm over rows of `channels` floats: y, and each row's mean and rstd.");

    m.def(
        "layer_norm_backward",
        [](uintptr_t dy, uintptr_t x, uintptr_t gamma, uintptr_t mean, uintptr_t rstd, uintptr_t dx, uintptr_t dgamma,
           uintptr_t dbeta, uintptr_t scratch, int64_t rows, int channels, uintptr_t stream) {
            layer_norm_backward(device_pointer<const float>(dy), device_pointer<const float>(x),
                                device_pointer<const float>(gamma), device_pointer<const float>(mean),
                                device_pointer<const float>(rstd), device_pointer<float>(dx),
                                device_pointer<float>(dgamma), device_pointer<float>(dbeta),
                                device_pointer<double>(scratch), rows, channels, stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("x_ptr"), nb::arg("gamma_ptr"), nb::arg("mean_ptr"), nb::arg("rstd_ptr"),
        nb::arg("dx_ptr"), nb::arg("dgamma_ptr"), nb::arg("dbeta_ptr"), nb::arg("scratch_ptr"), nb::arg("rows"),
        nb::arg("channels"), nb::arg("stream") = 0,
        "Layer norm backward: dx, dgamma, dbeta; scratch_ptr: 2 * LAYER_NORM_MAX_ROW_CHUNKS * channels doubles.");
    m.attr("LAYER_NORM_MAX_ROW_CHUNKS") = LAYER_NORM_MAX_ROW_CHUNKS;

    m.def(
        "gelu_forward",
        [](uintptr_t x, uintptr_t y, int64_t n, uintptr_t stream) {
            gelu_forward(device_pointer<const float>(x), device_pointer<float>(y), n, stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("y_ptr"), nb::arg("n"), nb::arg("stream") = 0, "y = gelu(x), tanh approximation.");

    m.def(
        "gelu_backward",
        [](uintptr_t dy, uintptr_t x, uintptr_t dx, int64_t n, uintptr_t stream) {
            gelu_backward(device_pointer<const float>(dy), device_pointer<const float>(x), device_pointer<float>(dx), n,
                          stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("x_ptr"), nb::arg("dx_ptr"), nb::arg("n"), nb::arg("stream") = 0,
        "dx = dy * gelu'(x).");

    m.def(
        "sigmoid_forward",
        [](uintptr_t x, uintptr_t y, int64_t n, uintptr_t stream) {
            sigmoid_forward(device_pointer<const float>(x), device_pointer<float>(y), n, stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("y_ptr"), nb::arg("n"), nb::arg("stream") = 0, "y = 1 / (1 + exp(-x)).");

    m.def(
        "sigmoid_backward",
        [](uintptr_t dy, uintptr_t y, uintptr_t dx, int64_t n, uintptr_t stream) {
            sigmoid_backward(device_pointer<const float>(dy), device_pointer<const float>(y), device_pointer<float>(dx),
                             n, stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("y_ptr"), nb::arg("dx_ptr"), nb::arg("n"), nb::arg("stream") = 0,
        "dx = dy * y * (1 - y), from the forward output y.");

    m.def(
        "tanh_forward",
        [](uintptr_t x, uintptr_t y, int64_t n, uintptr_t stream) {
            tanh_forward(device_pointer<const float>(x), device_pointer<float>(y), n, stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("y_ptr"), nb::arg("n"), nb::arg("stream") = 0, "y = tanh(x).");

    m.def(
        "tanh_backward",
        [](uintptr_t dy, uintptr_t y, uintptr_t dx, int64_t n, uintptr_t stream) {
            tanh_backward(device_pointer<const float>(dy), device_pointer<const float>(y), device_pointer<float>(dx),
                          n, stream_handle(stream));
        },
        nb::arg("dy_ptr"), nb::arg("y_ptr"), nb::arg("dx_ptr"), nb::arg("n"), nb::arg("stream") = 0,
        "dx = dy * (1 - y * y), from the forward output y.");

    m.def(
        "binary_crossentropy_logits_forward",
        [](uintptr_t z, uintptr_t t, uintptr_t loss, uintptr_t partial_sums, int64_t n, uintptr_t stream) {
            binary_crossentropy_logits_forward(device_pointer<const float>(z), device_pointer<const float>(t),
                                               device_pointer<double>(loss), device_pointer<double>(partial_sums), n,
                                               stream_handle(stream));
        },
        nb::arg("z_ptr"), nb::arg("t_ptr"), nb::arg("loss_ptr"), nb::arg("partial_sums_ptr"), nb::arg("n"),
        nb::arg("stream") = 0,
        "One double at loss_ptr: mean(max(z, 0) - z t + log1p(exp(-|z|))); partial_sums_ptr: scratch of "
        "BINARY_CROSSENTROPY_MAX_BLOCKS doubles.");
    m.attr("BINARY_CROSSENTROPY_MAX_BLOCKS") = BINARY_CROSSENTROPY_MAX_BLOCKS;

    m.def(
        "binary_crossentropy_logits_backward",
        [](uintptr_t z, uintptr_t t, uintptr_t dz, int64_t n, uintptr_t stream) {
            binary_crossentropy_logits_backward(device_pointer<const float>(z), device_pointer<const float>(t),
                                                device_pointer<float>(dz), n, stream_handle(stream));
        },
        nb::arg("z_ptr"), nb::arg("t_ptr"), nb::arg("dz_ptr"), nb::arg("n"), nb::arg("stream") = 0,
        "dz = (sigmoid(z) - t) / n.");

    m.def(
        "softmax_forward",
        [](uintptr_t x, uintptr_t y, int64_t rows, int columns, uintptr_t stream) {
            softmax_forward(device_pointer<const float>(x), device_pointer<float>(y), rows, columns,
                            stream_handle(stream));
        },
        nb::arg("x_ptr"), nb::arg("y_ptr"), nb::arg("rows"), nb::arg("columns"), nb::arg("stream") = 0,
        "Softmax over each row of `columns` floats.");

    m.def(
        "softmax_cross_entropy",
        [](uintptr_t logits, uintptr_t targets, uintptr_t losses, uintptr_t dlogits, int64_t rows, int columns,
           uintptr_t stream) {
            softmax_cross_entropy_forward_backward(device_pointer<const float>(logits),
                                                   device_pointer<const int64_t>(targets), device_pointer<float>(losses),
                                                   device_pointer<float>(dlogits), rows, columns,
                                                   stream_handle(stream));
        },
        nb::arg("logits_ptr"), nb::arg("targets_ptr"), nb::arg("losses_ptr"), nb::arg("dlogits_ptr"), nb::arg("rows"),
        nb::arg("columns"), nb::arg("stream") = 0,
        "Per-row losses lse - z[target] and dlogits = (softmax - onehot) / rows; targets are int64.");

    m.def(
        "embedding_forward",
        [](uintptr_t ids, uintptr_t table, uintptr_t out, int64_t count, int channels, uintptr_t stream) {
            embedding_forward(device_pointer<const int64_t>(ids), device_pointer<const float>(table),
                              device_pointer<float>(out), count, channels, stream_handle(stream));
        },
        nb::arg("ids_ptr"), nb::arg("table_ptr"), nb::arg("out_ptr"), nb::arg("count"), nb::arg("channels"),
        nb::arg("stream") = 0, "out[n] = table[ids[n]] for int64 ids.");

    m.def(
        "embedding_backward",
        [](uintptr_t dout, uintptr_t ids, uintptr_t dtable, int64_t count, int64_t vocab_size, int channels,
           uintptr_t stream) {
            embedding_backward(device_pointer<const float>(dout), device_pointer<const int64_t>(ids),
                               device_pointer<float>(dtable), count, vocab_size, channels, stream_handle(stream));
        },
        nb::arg("dout_ptr"), nb::arg("ids_ptr"), nb::arg("dtable_ptr"), nb::arg("count"), nb::arg("vocab_size"),
        nb::arg("channels"), nb::arg("stream") = 0, "dtable = 0, then dtable[ids[n]] += dout[n].");

    def_conv_forward(m, "conv2d_forward", conv2d_forward,
                     "y = activation(Conv2D(x, w) + bias), NHWC; bias_ptr 0 for none; cols_ptr: chunk_images "
                     "images' im2col matrix (0 for a 1x1 kernel at stride 1).");
    def_conv_backward(m, "conv2d_backward", conv2d_backward,
                      "dx, dw, db of Conv2D from dy; dx_ptr 0 skips dx, dw_ptr and db_ptr 0 skip both; partial_ptr: "
                      "conv_partial_floats floats; sums_ptr: BIAS_GRAD_MAX_ROW_CHUNKS x O doubles.");
    m.def(
        "conv_partial_floats",
        [](GeometryInts geometry, int chunk_images) { return conv_partial_floats(conv_geometry(geometry.data()),
                                                                                 chunk_images); },
        nb::arg("geometry"), nb::arg("chunk_images"),
        "The floats of a conv backward's partial_ptr for dw: chunks after the first, or the pages of dw's "
        "product cut in depth (split-K) where its tiles would leave most SMs idle; 0 where neither.");
    def_conv_forward(m, "conv2d_transpose_forward", conv2d_transpose_forward,
                     "y = activation(Conv2DTranspose(x, w) + bias), NHWC; the geometry is the Conv2D's from y to x.");
    def_conv_backward(m, "conv2d_transpose_backward", conv2d_transpose_backward,
                      "dx, dw, db of Conv2DTranspose from dy, skipped and scratch as conv2d_backward's (sums_ptr: "
                      "BIAS_GRAD_MAX_ROW_CHUNKS x y's channels doubles).");
    m.attr("BIAS_GRAD_MAX_ROW_CHUNKS") = BIAS_GRAD_MAX_ROW_CHUNKS;

    m.def(
        "adam_update",
        [](uintptr_t param, uintptr_t grad, uintptr_t m, uintptr_t v, int64_t n, float alpha, float one_minus_beta_1,
           float one_minus_beta_2, float epsilon, uintptr_t stream) {
            adam_update(device_pointer<float>(param), device_pointer<const float>(grad), device_pointer<float>(m),
                        device_pointer<float>(v), n, alpha, one_minus_beta_1, one_minus_beta_2, epsilon,
                        stream_handle(stream));
        },
        nb::arg("param_ptr"), nb::arg("grad_ptr"), nb::arg("m_ptr"), nb::arg("v_ptr"), nb::arg("n"), nb::arg("alpha"),
        nb::arg("one_minus_beta_1"), nb::arg("one_minus_beta_2"), nb::arg("epsilon"), nb::arg("stream") = 0,
        "One Adam step in place on param, m, v; alpha is the bias-corrected step size.");

    m.def(
        "synchronize", [] { CUDA_CHECK(cudaDeviceSynchronize()); },
        "Wait for every kernel launched so far (raises if one of them failed).");

    nb::class_<DeviceBuffer>(m, "DeviceBuffer", "nbytes bytes of device memory (cudaMalloc), freed with the object.")
        .def(nb::init<size_t>(), nb::arg("nbytes"))
        .def_prop_ro("ptr", &DeviceBuffer::ptr, "The device address, as an int.")
        .def_prop_ro("nbytes", &DeviceBuffer::nbytes)
        // noconvert: a float64 or strided array is refused rather than silently copied (for
        // copy_to_host the result would land in the copy).
        .def("copy_from_host", &DeviceBuffer::copy_from_host<ConstHostArray>, nb::arg("array").noconvert(),
             "Copy a C-contiguous float32 numpy array of exactly nbytes bytes to the device.")
        .def("copy_from_host", &DeviceBuffer::copy_from_host<ConstHostIndices>, nb::arg("array").noconvert(),
             "Copy a C-contiguous int64 numpy array (ids, targets) of exactly nbytes bytes to the device.")
        .def("copy_from_host", &DeviceBuffer::copy_from_host<ConstHostHalfwords>, nb::arg("array").noconvert(),
             "Copy a C-contiguous uint16 numpy array (bfloat16 bits) of exactly nbytes bytes to the device.")
        .def("copy_to_host", &DeviceBuffer::copy_to_host<HostArray>, nb::arg("array").noconvert(),
             "Copy the buffer into a writable C-contiguous float32 numpy array of exactly nbytes bytes.")
        .def("copy_to_host", &DeviceBuffer::copy_to_host<HostHalfwords>, nb::arg("array").noconvert(),
             "Copy the buffer into a writable C-contiguous uint16 numpy array (bfloat16 bits) of exactly nbytes "
             "bytes.");
}
