// __nv_bfloat16 for the host emulation: the 16 high bits of a float32 (8 exponent bits, 7 stored
// mantissa bits). __float2bfloat16 rounds to nearest, ties to even, as the device's cvt.rn.bf16.f32
// does; NaN stays NaN (quiet); __bfloat162float is exact.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if (std::isnan(x)) return __nv_bfloat16{uint16_t((bits >> 16) | 0x40)};
    bits += 0x7FFFu + ((bits >> 16) & 1u);  // round the 16 dropped bits to nearest, ties to even
    return __nv_bfloat16{uint16_t(bits >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 x) {
    uint32_t bits = uint32_t(x.bits) << 16;
    float result;
    memcpy(&result, &bits, 4);
    return result;
}
