/* Integer arithmetic rules of TFLite Micro's reference kernels: the C twin of mcuq/fixedpoint.py.
 *
 * One requantize (TFLM's default double rounding: saturating rounding doubling high multiply,
 * then rounding divide by a power of two), its 64-bit-accumulator variant, and the gemmlowp
 * fixed-point functions SOFTMAX, LOGISTIC and TANH use. No float, no undefined behaviour for
 * the documented argument ranges: signed overflow is avoided through uint32_t/uint64_t
 * arithmetic, whose results are reinterpreted by mcuq_wrap32()/mcuq_wrap64(). Right shifts of
 * negative values are arithmetic (implementation-defined in C99; checked below).
 */
#ifndef MCUQ_REQUANTIZE_H
#define MCUQ_REQUANTIZE_H

#include <stdint.h>

/* Compile-time check that >> on negative integers is an arithmetic shift. */
typedef char mcuq_arithmetic_right_shift_check[((-1) >> 1) == -1 ? 1 : -1];

/* Two's-complement reinterpretation of a uint32_t (C int32 wrap-around, without relying on
 * implementation-defined conversions; compiles to nothing). */
static inline int32_t mcuq_wrap32(uint32_t u)
{
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : (int32_t)(u - UINT32_C(0x80000000)) + INT32_MIN;
}

static inline int64_t mcuq_wrap64(uint64_t u)
{
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : (int64_t)(u - UINT64_C(0x8000000000000000)) + INT64_MIN;
}

/* a + b wrapping modulo 2^32. */
static inline int32_t mcuq_add_wrap(int32_t a, int32_t b)
{
    return mcuq_wrap32((uint32_t)a + (uint32_t)b);
}

static inline int32_t mcuq_clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* SaturatingRoundingDoublingHighMul: floor((a * b + 2^30) / 2^31); INT32_MAX for INT32_MIN^2. */
static inline int32_t mcuq_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + (INT64_C(1) << 30)) >> 31);
}

/* RoundingDivideByPOT: x / 2^exponent rounded half away from zero, exponent in [0, 31]. */
static inline int32_t mcuq_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((UINT32_C(1) << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + (remainder > threshold);
}

/* SaturatingRoundingMultiplyByPOT for exponent in [1, 30]: x * 2^exponent, saturated. */
static inline int32_t mcuq_sat_shl(int32_t x, int32_t exponent)
{
    const int32_t threshold = (int32_t)((UINT32_C(1) << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return x * (INT32_C(1) << exponent);
}

/* MultiplyByQuantizedMultiplier (int32 accumulator), shift in [-31, 30], > 0 = left:
 * rdbpot(srdhm(x << left, multiplier), right); the left shift wraps like TFLM's int32 one. */
static inline int32_t mcuq_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return mcuq_rdbpot(mcuq_srdhm(mcuq_wrap32((uint32_t)x << left), multiplier), right);
}

/* mcuq_requantize(x, 2^30, shift) without a multiplication (power-of-two scales; the twin of
 * mcuq.fixedpoint.requantize_pow2): SRDHM(a, 2^30) = floor((a + 1) / 2) = (a >> 1) + (a & 1),
 * then RDBPOT with every intermediate inside int32 (no overflow at a = INT32_MAX). */
static inline int32_t mcuq_requantize_pow2(int32_t x, int32_t shift)
{
    const int32_t a = mcuq_wrap32((uint32_t)x << (shift > 0 ? shift : 0));
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t t = (a >> 1) + (a & 1);
    const int32_t v = t - (t < 0);
    if (right == 0) {
        return t;
    }
    if (right == 1) {
        return (v >> 1) + (v & 1);
    }
    return ((v >> 1) + (INT32_C(1) << (right - 2))) >> (right - 1);
}

/* MultiplyByQuantizedMultiplier (int64 accumulator), shift in [-31, 7]: one rounding with the
 * multiplier's top 16 bits, (x * m16 + 2^(14 - shift)) >> (15 - shift), truncated to int32
 * (products wrap modulo 2^64 as TFLM's would). */
static inline int32_t mcuq_requantize64(int64_t x, int32_t multiplier, int32_t shift)
{
    const int64_t m16 = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int32_t total = 15 - shift;
    const uint64_t sum = (uint64_t)x * (uint64_t)m16 + (UINT64_C(1) << (total - 1));
    return mcuq_wrap32((uint32_t)(uint64_t)(mcuq_wrap64(sum) >> total));
}

/* Count of leading zero bits, 32 for 0. */
static inline int32_t mcuq_clz32(uint32_t x)
{
#if defined(__GNUC__)
    return x ? __builtin_clz(x) : 32;
#else
    int32_t n = 0;
    while (n < 32 && !(x & (UINT32_C(0x80000000) >> n))) {
        n++;
    }
    return n;
#endif
}

/* ---- gemmlowp fixed point (SOFTMAX, LOGISTIC, TANH) -------------------------------------- */

/* exp(a) for Q0.31 a in [-1/4, 0): Taylor series around -1/8. */
static inline int32_t mcuq_exp_on_quarter_interval(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = mcuq_add_wrap(a, 1 << 28);
    const int32_t x2 = mcuq_srdhm(x, x);
    const int32_t x3 = mcuq_srdhm(x2, x);
    const int32_t x4 = mcuq_srdhm(x2, x2);
    const int32_t x4_over_4 = mcuq_rdbpot(x4, 2);
    const int32_t poly = mcuq_rdbpot(
        mcuq_add_wrap(mcuq_srdhm(mcuq_add_wrap(x4_over_4, x3), one_third), x2), 1);
    return mcuq_add_wrap(exp_minus_one_eighth,
                         mcuq_srdhm(exp_minus_one_eighth, mcuq_add_wrap(x, poly)));
}

/* exp_on_negative_values: a <= 0 in Q(int_bits).(31 - int_bits), int_bits in [1, 5] -> Q0.31. */
static inline int32_t mcuq_exp_on_negative_values(int32_t a, int32_t int_bits)
{
    /* exp(-2^j) in Q0.31, j = -2 .. 4 */
    static const int32_t exp_neg_pot[7] = {1672461947, 1302514674, 790015084, 290630308,
                                           39332535, 720401, 242};
    const int32_t frac_bits = 31 - int_bits;
    const int32_t quarter = INT32_C(1) << (frac_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    const uint32_t remainder = (uint32_t)a_mod_quarter_minus_quarter - (uint32_t)a;
    int32_t result, j;
    if (a == 0) {
        return INT32_MAX;
    }
    result = mcuq_exp_on_quarter_interval(mcuq_sat_shl(a_mod_quarter_minus_quarter, int_bits));
    for (j = -2; j < int_bits && j <= 4; j++) {
        if ((remainder >> (frac_bits + j)) & 1u) {
            result = mcuq_srdhm(result, exp_neg_pot[j + 2]);
        }
    }
    return result;
}

/* Newton-Raphson estimate (Q2.29, three steps) of 2 / (1 + a) for Q0.31 a in [0, 1). */
static inline int32_t mcuq_newton_one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = mcuq_add_wrap(1515870810, mcuq_srdhm(half_denominator, -1010580540)); /* 48/17, -32/17 */
    int i;
    for (i = 0; i < 3; i++) {
        const int32_t one_minus = mcuq_wrap32((uint32_t)(1 << 29) - (uint32_t)mcuq_srdhm(half_denominator, x));
        x = mcuq_add_wrap(x, mcuq_sat_shl(mcuq_srdhm(x, one_minus), 2));
    }
    return x;
}

/* one_over_one_plus_x_for_x_in_0_1: Q0.31 in, Q0.31 out. */
static inline int32_t mcuq_one_over_one_plus_x(int32_t a)
{
    return mcuq_sat_shl(mcuq_newton_one_over_one_plus_x(a), 1);
}

#endif /* MCUQ_REQUANTIZE_H */
