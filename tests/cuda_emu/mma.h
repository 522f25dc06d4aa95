// nvcuda::wmma (tensor-core fragments) for the host emulation, modelled at the matrix level.
//
// A real fragment spreads its tile over the 32 lanes of a warp in a layout the CUDA
// documentation leaves opaque; here every lane's fragment holds the whole tile (x[] of
// num_elements = rows x cols, row-major), so load_matrix_sync, mma_sync and store_matrix_sync
// compute the same tile in every lane and element-wise loops over x[] keep their meaning. Each
// call is warp-collective: the warp meets at a barrier (a lane that exited or took another path
// is a fault, as for shuffles). load/store check what the hardware requires: a 32-byte aligned
// pointer and a leading dimension that is a multiple of 16 bytes.
//
// Two shapes are modelled, both with float accumulators: tf32 m16n16k8 and bf16 m16n16k16.
// TF32 is float32 with the mantissa rounded to 10 bits: __float_to_tf32 rounds to nearest (ties
// away, as cvt.rna), and mma_sync rounds its a and b inputs the same way (a kernel that forgot
// the conversion gets the rounding it would get on a GPU, up to the last bit), then accumulates
// in float in k order.
// A GPU's accumulation order and internal precision differ: agreement is to float32 rounding of
// the sum, not bit for bit. BF16 fragments hold __nv_bfloat16 (what the kernel converted, with
// __float2bfloat16's rounding), so mma_sync reads exactly the values a GPU reads; their products
// are exact in float32, and are summed in float in k order as for tf32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <type_traits>

void emu_note_wmma_fault(const char* what, const void* pointer, unsigned ldm);

namespace nvcuda {
namespace wmma {

inline float __float_to_tf32(float x) {
    if (!std::isfinite(x)) return x;
    uint32_t bits;
    memcpy(&bits, &x, 4);
    bits = (bits + 0x1000u) & ~0x1FFFu;  // round the 13 dropped mantissa bits, ties away from zero
    memcpy(&x, &bits, 4);
    return x;
}

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && (K == 8 || K == 16), "the emulation models m16n16k8 and m16n16k16 only");
    static_assert(K == 16 || !std::is_same_v<T, __nv_bfloat16>, "bf16 fragments are m16n16k16");
    using element_type = std::conditional_t<std::is_same_v<T, __nv_bfloat16>, __nv_bfloat16, float>;
    static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
    static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
    static constexpr int num_elements = rows * cols;
    element_type x[num_elements];
};

inline void check_memory(const void* pointer, unsigned ldm, unsigned element_bytes = 4) {
    if (reinterpret_cast<uintptr_t>(pointer) % 32) emu_note_wmma_fault("pointer not 32-byte aligned", pointer, ldm);
    if (ldm * element_bytes % 16) emu_note_wmma_fault("leading dimension not a multiple of 16 bytes", pointer, ldm);
}

inline void warp_meets() {
    emu_warp_slots();  // counts a lane that exited
    emu_warp_barrier();
}

template <class F, class T>
void load(F& fragment, const T* p, unsigned ldm, bool row_major_memory) {
    warp_meets();
    check_memory(p, ldm, sizeof(T));
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            fragment.x[r * F::cols + c] = row_major_memory ? p[r * ldm + c] : p[c * ldm + r];
    warp_meets();
}

template <class Use, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 8, precision::tf32, Layout>& f, const float* p, unsigned ldm) {
    load(f, p, ldm, std::is_same_v<Layout, row_major>);
}

using Accumulator = fragment<accumulator, 16, 16, 8, float>;

inline void load_matrix_sync(Accumulator& f, const float* p, unsigned ldm, layout_t layout) {
    load(f, p, ldm, layout == mem_row_major);
}

template <class F>
void fill_fragment(F& fragment, float value) {
    for (int i = 0; i < F::num_elements; i++) fragment.x[i] = value;
}

template <class LayoutA, class LayoutB>
void mma_sync(Accumulator& d, const fragment<matrix_a, 16, 16, 8, precision::tf32, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 8, precision::tf32, LayoutB>& b, const Accumulator& c) {
    warp_meets();
    float result[16 * 16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float total = c.x[i * 16 + j];
            for (int k = 0; k < 8; k++) {
                total = fmaf(__float_to_tf32(a.x[i * 8 + k]), __float_to_tf32(b.x[k * 16 + j]), total);
            }
            result[i * 16 + j] = total;
        }
    memcpy(d.x, result, sizeof result);
    warp_meets();
}

template <int K>
void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, K, float>& f, unsigned ldm, layout_t layout) {
    warp_meets();
    check_memory(p, ldm);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
    warp_meets();
}

// bf16, m16n16k16: a and b hold bf16 values, the accumulator float.
using AccumulatorK16 = fragment<accumulator, 16, 16, 16, float>;

template <class Use, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, Layout>& f, const __nv_bfloat16* p, unsigned ldm) {
    load(f, p, ldm, std::is_same_v<Layout, row_major>);
}

inline void load_matrix_sync(AccumulatorK16& f, const float* p, unsigned ldm, layout_t layout) {
    load(f, p, ldm, layout == mem_row_major);
}

template <class LayoutA, class LayoutB>
void mma_sync(AccumulatorK16& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB>& b, const AccumulatorK16& c) {
    warp_meets();
    float result[16 * 16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float total = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++)
                total = fmaf(__bfloat162float(a.x[i * 16 + k]), __bfloat162float(b.x[k * 16 + j]), total);
            result[i * 16 + j] = total;
        }
    memcpy(d.x, result, sizeof result);
    warp_meets();
}

}  // namespace wmma
}  // namespace nvcuda
