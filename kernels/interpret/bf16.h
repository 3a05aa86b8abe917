// bf16.h — minimal host versions of __nv_bfloat16 / __half and their pairs, enough for
// kernels. Conversions from float round to nearest even exactly like the host paths of
// cuda_bf16.hpp / cuda_fp16.hpp (NaN -> 0x7fff for both). Arithmetic goes through f32
// and rounds once, which is what the sm_80 bf16/f16 instructions give except for rare
// double-rounding cases in add/fma.
#pragma once
#include <cstdint>
#include <cstring>

namespace scalerl_interp {
inline uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t f32_to_bf16_rn(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;   // NaN
    u += 0x7fffu + ((u >> 16) & 1u);                       // ties to even
    return static_cast<uint16_t>(u >> 16);
}
inline uint16_t f32_to_bf16_rz(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return u2f(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_f16_rn(float f) {
    const uint32_t x = f2u(f), sign = (x >> 16) & 0x8000u;
    uint32_t u = x & 0x7fffffffu, result, rem;
    if (u >= 0x7f800000u) return static_cast<uint16_t>(u == 0x7f800000u ? (sign | 0x7c00u) : 0x7fffu);
    if (u > 0x477fefffu) {            // >= 65520 rounds to inf
        return static_cast<uint16_t>(sign | 0x7c00u);
    } else if (u >= 0x38800000u) {    // normal half
        rem = u << 19;                // the 13 dropped mantissa bits, left aligned
        result = sign | ((u - 0x38000000u) >> 13);
    } else if (u < 0x33000001u) {     // below half the smallest subnormal: +-0
        rem = u; result = sign;
        return static_cast<uint16_t>(result);
    } else {                          // subnormal half
        const uint32_t shift = 0x7eu - (u >> 23);
        const uint32_t mant = (u & 0x7fffffu) | 0x800000u;
        rem = mant << (32u - shift);
        result = sign | (mant >> shift);
    }
    if (rem > 0x80000000u || (rem == 0x80000000u && (result & 1u))) ++result;
    return static_cast<uint16_t>(result);
}
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return u2f(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return u2f(sign);
        float v = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}
}  // namespace scalerl_interp

struct __nv_bfloat16_raw { unsigned short x; };
struct __half_raw { unsigned short x; };

#define SCALERL_HALF_TYPE(T, RAW, TO, FROM)                                                 \
    struct alignas(2) T {                                                                   \
        unsigned short __x;                                                                 \
        T() = default;                                                                      \
        T(float f) : __x(::scalerl_interp::TO(f)) {}                                        \
        T(double f) : __x(::scalerl_interp::TO(static_cast<float>(f))) {}                   \
        T(int i) : __x(::scalerl_interp::TO(static_cast<float>(i))) {}                      \
        T(unsigned i) : __x(::scalerl_interp::TO(static_cast<float>(i))) {}                 \
        T(RAW r) : __x(r.x) {}                                                              \
        operator float() const { return ::scalerl_interp::FROM(__x); }                      \
        operator RAW() const { return RAW{__x}; }                                           \
    };                                                                                      \
    inline T operator+(T a, T b) { return T(float(a) + float(b)); }                         \
    inline T operator-(T a, T b) { return T(float(a) - float(b)); }                         \
    inline T operator*(T a, T b) { return T(float(a) * float(b)); }                         \
    inline T operator/(T a, T b) { return T(float(a) / float(b)); }                         \
    inline T operator-(T a) { T r; r.__x = a.__x ^ 0x8000; return r; }                      \
    inline T& operator+=(T& a, T b) { return a = a + b; }                                   \
    inline T& operator-=(T& a, T b) { return a = a - b; }                                   \
    inline T& operator*=(T& a, T b) { return a = a * b; }                                   \
    inline T& operator/=(T& a, T b) { return a = a / b; }                                   \
    inline bool operator==(T a, T b) { return float(a) == float(b); }                       \
    inline bool operator!=(T a, T b) { return float(a) != float(b); }                       \
    inline bool operator<(T a, T b) { return float(a) < float(b); }                         \
    inline bool operator<=(T a, T b) { return float(a) <= float(b); }                       \
    inline bool operator>(T a, T b) { return float(a) > float(b); }                         \
    inline bool operator>=(T a, T b) { return float(a) >= float(b); }                       \
    inline T __hadd(T a, T b) { return a + b; }                                             \
    inline T __hsub(T a, T b) { return a - b; }                                             \
    inline T __hmul(T a, T b) { return a * b; }                                             \
    inline T __hdiv(T a, T b) { return a / b; }                                             \
    inline T __hfma(T a, T b, T c) { return T(__builtin_fmaf(float(a), float(b), float(c))); } \
    inline T __hneg(T a) { return -a; }                                                     \
    inline T __habs(T a) { T r; r.__x = a.__x & 0x7fff; return r; }                         \
    inline T __hmax(T a, T b) { return float(a) >= float(b) ? a : b; }                      \
    inline T __hmin(T a, T b) { return float(a) <= float(b) ? a : b; }                      \
    inline bool __hisnan(T a) { return float(a) != float(a); }                              \
    inline bool __heq(T a, T b) { return a == b; }                                          \
    inline bool __hlt(T a, T b) { return a < b; }                                           \
    inline bool __hgt(T a, T b) { return a > b; }

SCALERL_HALF_TYPE(__nv_bfloat16, __nv_bfloat16_raw, f32_to_bf16_rn, bf16_to_f32)
SCALERL_HALF_TYPE(__half, __half_raw, f32_to_f16_rn, f16_to_f32)
#undef SCALERL_HALF_TYPE

struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
struct alignas(4) __half2 { __half x, y; };
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
typedef __half half;
typedef __half2 half2;

// ---- bf16 ----
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __nv_bfloat16_raw{::scalerl_interp::f32_to_bf16_rz(f)}; }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
inline __nv_bfloat16 __short_as_bfloat16(short u) { return __nv_bfloat16_raw{static_cast<unsigned short>(u)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return {a, a}; }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline float __low2float(__nv_bfloat162 v) { return float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return float(v.y); }
inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x + b.x, a.y + b.y}; }
inline __nv_bfloat162 __hsub2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x - b.x, a.y - b.y}; }
inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x * b.x, a.y * b.y}; }
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
inline __nv_bfloat162 __hmax2(__nv_bfloat162 a, __nv_bfloat162 b) { return {__hmax(a.x, b.x), __hmax(a.y, b.y)}; }
// ---- f16 ----
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half2 __half2half2(__half a) { return {a, a}; }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline float __low2float(__half2 v) { return float(v.x); }
inline float __high2float(__half2 v) { return float(v.y); }
inline __half2 __hadd2(__half2 a, __half2 b) { return {a.x + b.x, a.y + b.y}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {a.x * b.x, a.y * b.y}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) { return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; }
