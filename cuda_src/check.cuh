// CUDA_CHECK(call): run a CUDA runtime call and throw std::runtime_error if it fails, naming the
// call, where it was made and cudaGetErrorString. nanobind raises it in Python as RuntimeError.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

inline void cuda_check(cudaError_t error, const char* call, const char* file, int line) {
    if (error != cudaSuccess) {
        throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                                 ": " + cudaGetErrorString(error));
    }
}

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
