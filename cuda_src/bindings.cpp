// pyai._cuda: the CUDA C++ kernels as a Python module (nanobind).
//
// Kernels take raw device pointers as ints (e.g. `__cuda_array_interface__['data'][0]` or
// DeviceBuffer.ptr) and a cudaStream_t as an int (0: the default stream); they launch
// asynchronously. DeviceBuffer is the smallest device allocation that moves float32 numpy arrays
// to and from the GPU. A failed CUDA call raises RuntimeError naming the call and the CUDA error.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "check.cuh"
#include "leaky_relu.cuh"

namespace nb = nanobind;

using HostArray = nb::ndarray<float, nb::numpy, nb::c_contig, nb::device::cpu>;
using ConstHostArray = nb::ndarray<const float, nb::numpy, nb::c_contig, nb::device::cpu>;

// None when a CUDA device is usable, else why not. Never throws: it is how the "cuda" backend's
// probe finds out, on any machine, whether it can run.
static std::optional<std::string> runtime_status() {
    int device_count = 0;
    cudaError_t error = cudaGetDeviceCount(&device_count);
    if (error != cudaSuccess) {
        return std::string("no CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorString(error);
    }
    if (device_count == 0) return std::string("no CUDA device: cudaGetDeviceCount found none");
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
    void copy_from_host(ConstHostArray array) {
        check_size("copy_from_host", array.nbytes());
        if (nbytes_ > 0) CUDA_CHECK(cudaMemcpy(data_, array.data(), nbytes_, cudaMemcpyHostToDevice));
    }
    void copy_to_host(HostArray array) const {
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

NB_MODULE(_cuda, m) {
    m.doc() = "pyai's CUDA C++ kernels; see pyai/backends/cuda.py for the backend that uses them.";

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

    nb::class_<DeviceBuffer>(m, "DeviceBuffer", "nbytes bytes of device memory (cudaMalloc), freed with the object.")
        .def(nb::init<size_t>(), nb::arg("nbytes"))
        .def_prop_ro("ptr", &DeviceBuffer::ptr, "The device address, as an int.")
        .def_prop_ro("nbytes", &DeviceBuffer::nbytes)
        // noconvert: a float64 or strided array is refused rather than silently copied (for
        // copy_to_host the result would land in the copy).
        .def("copy_from_host", &DeviceBuffer::copy_from_host, nb::arg("array").noconvert(),
             "Copy a C-contiguous float32 numpy array of exactly nbytes bytes to the device.")
        .def("copy_to_host", &DeviceBuffer::copy_to_host, nb::arg("array").noconvert(),
             "Copy the buffer into a writable C-contiguous float32 numpy array of exactly nbytes bytes.");
}
