// The CUDA runtime as cuda_src/ uses it, emulated on the host (see README.md here). Each CUDA
// thread of a block is a fiber (a ucontext with its own stack) on one host thread; a scheduler
// runs the fibers of a block one after another, each until it reaches a barrier (__syncthreads,
// or the warp barrier inside a shuffle) or exits, in lane order or in reverse order
// (emu_set_reverse). Blocks run one after another. Everything the GPU would have undefined or
// fatal is counted and makes the wrapped call fail (emu_runtime.cpp): a barrier or shuffle reached
// after a thread of the block or warp exited, threads stuck at different barriers (a hang on a
// GPU), a misaligned float4 access, an invalid launch configuration.
#pragma once
#include <math.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
using std::max;
using std::min;

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };
typedef void* cudaStream_t;
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();  // returns and clears the error of the last launch, as CUDA does
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
    memset(p, v, n);
    return cudaSuccess;
}

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 {
    unsigned x, y, z;
};
extern uint3 threadIdx, blockIdx;  // set by the scheduler before it switches to a fiber
extern dim3 blockDim, gridDim;

void emu_note_misaligned(const void* p);
inline void emu_check_align(const void* p) {
    if (reinterpret_cast<uintptr_t>(p) % 16) emu_note_misaligned(p);
}

// float4 as a struct whose copies check the 16-byte alignment a GPU's vector loads need.
struct alignas(16) float4 {
    float x, y, z, w;
    float4() = default;
    float4(float a, float b, float c, float d) : x(a), y(b), z(c), w(d) {}
    float4(const float4& o) {
        emu_check_align(&o);
        x = o.x, y = o.y, z = o.z, w = o.w;
    }
    float4& operator=(const float4& o) {
        emu_check_align(this);
        emu_check_align(&o);
        x = o.x, y = o.y, z = o.z, w = o.w;
        return *this;
    }
};
inline float4 make_float4(float a, float b, float c, float d) { return float4(a, b, c, d); }

// __syncthreads() names its place in the source: threads of a block meeting at different
// __syncthreads in one phase are counted (undefined on a GPU, where it may hang or misorder).
void emu_syncthreads(const char* file, int line);
#define __syncthreads() emu_syncthreads(__FILE__, __LINE__)
void emu_warp_barrier();      // all live lanes of the calling thread's warp
double* emu_warp_slots();     // 32 exchange slots of the calling thread's warp; notes exited lanes
int emu_lane();
// __syncwarp with the full mask: the warp meets (a lane that exited is counted, as for shuffles).
inline void __syncwarp(unsigned = 0xffffffffu) {
    emu_warp_slots();
    emu_warp_barrier();
}

// A shuffle: every lane posts its value, the warp meets, each reads its source lane's, the warp
// meets again (so the slots can be reused). double holds float, int and double exactly.
template <class T>
T emu_shuffle(T x, int source) {
    double* slots = emu_warp_slots();
    slots[emu_lane()] = double(x);
    emu_warp_barrier();
    T result = T(slots[source & 31]);
    emu_warp_barrier();
    return result;
}
template <class T>
T __shfl_xor_sync(unsigned, T x, int mask) {
    return emu_shuffle(x, emu_lane() ^ mask);
}
template <class T>
T __shfl_sync(unsigned, T x, int source) {
    return emu_shuffle(x, source);
}
// Fibers never run at the same time, so a plain add is atomic here.
inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }

struct EmuConfig {
    dim3 grid, block;
    size_t shared_bytes;
};
#define EMU_CONFIG(g, b, ...) EmuConfig{dim3(g), dim3(b), emu_shared_bytes(__VA_ARGS__)}
inline size_t emu_shared_bytes(size_t bytes = 0, cudaStream_t = nullptr) { return bytes; }
void emu_run_grid(const EmuConfig& config, const std::function<void()>& kernel);

// kernel<<<grid, block, shared, stream>>>(args...) is rewritten to emu_launch(EMU_CONFIG(...), kernel, args...)
template <class Kernel, class... Args>
void emu_launch(EmuConfig config, Kernel kernel, Args... args) {
    emu_run_grid(config, [&] { kernel(args...); });
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
