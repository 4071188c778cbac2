/* ADD, int8_t, with broadcasting (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* (x + offset) << left_shift, requantized: one input's contribution to the sum. */
static int32_t scale_input(int32_t x, int32_t offset, int32_t left_shift, int32_t multiplier, int32_t shift,
                           int32_t shift_only)
{
    return mcuq_requantize_node(mcuq_wrap32((uint32_t)(x + offset) << left_shift), multiplier, shift, shift_only);
}

#if MCUQ_DSP
#define MCUQ_FALLBACK __attribute__((cold, noinline))
#define TABLE_MIN_ELEMENTS 512 /* below this, building the two tables costs more than it saves */

/* One output of the tight loop from twice the sum, s2: mcuq_requantize_fast(s2 / 2, m, e - 1, h, zp)
 * with h = 2^(e - 2), as (SMMLAR(s2, m, hz2) - [s2 < 0]) >> e with hz2 = 2 h + zp 2^e (every term
 * doubled so that the rounding constant is SMMLAR's 2^31, the offset a multiple of 2^e), int8
 * clamp. Exact while s2 and hz2 fit 32 bits: |s2| <= 2^30 (each table value is (x + offset) 2^20
 * scaled down by a Q31 multiplier, so |value| < 2^28) and e <= 23 (|hz2| <= 2^30 + 2^22). */
static inline int8_t add_out(int32_t s2, int32_t m, int32_t e, int32_t hz2)
{
    return (int8_t)mcuq_ssat8((mcuq_smmlar(s2, m, hz2) + (s2 >> 31)) >> e);
}

/* output[k] from the doubled tables for the bytes u1[k], u2[k], four at a time. */
static MCUQ_NO_PRESCHEDULE void add_flat(const int32_t *t1, const int32_t *t2, const uint8_t *u1, const uint8_t *u2,
                                         int8_t *output, int32_t n, int32_t m, int32_t e, int32_t hz2)
{
    int32_t k;
    for (k = 0; k + 4 <= n; k += 4) {
        output[k] = add_out(t1[u1[k]] + t2[u2[k]], m, e, hz2);
        output[k + 1] = add_out(t1[u1[k + 1]] + t2[u2[k + 1]], m, e, hz2);
        output[k + 2] = add_out(t1[u1[k + 2]] + t2[u2[k + 2]], m, e, hz2);
        output[k + 3] = add_out(t1[u1[k + 3]] + t2[u2[k + 3]], m, e, hz2);
    }
    for (; k < n; k++) {
        output[k] = add_out(t1[u1[k]] + t2[u2[k]], m, e, hz2);
    }
}

/* Large ADDs: each input's contribution depends on its 256 possible values only, so both come
 * from tables built once per call (2 KB of stack, indexed by the value's byte); the sum is
 * requantized by one SMMLAR from doubled tables (add_out()) when the clamp is int8 and the
 * output shift allows. */
static void add_tables(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                       mcuq_walk_t *w, int32_t n)
{
    int32_t t1[256], t2[256];
    const uint8_t *u1 = (const uint8_t *)input1, *u2 = (const uint8_t *)input2;
    const int32_t m = p->output_multiplier, e = -p->output_shift, zp = p->output_offset;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t u, k, flat = 1; /* no broadcasting: both inputs are read in output order */
    int32_t tight; /* the common case: add_flat() over doubled tables */
    for (k = 0; k < MCUQ_MAX_DIMS; k++) {
        flat &= p->input1_dims[k] == p->input2_dims[k];
    }
    tight = flat && e >= 2 && e <= 23 && lo == -128 && hi == 127;
    for (u = 0; u < 256; u++) {
        const int32_t v = u < 128 ? u : u - 256;
        t1[u] = scale_input(v, p->input1_offset, p->left_shift, p->input1_multiplier, p->input1_shift, p->shift_only) *
                (1 + tight);
        t2[u] = scale_input(v, p->input2_offset, p->left_shift, p->input2_multiplier, p->input2_shift, p->shift_only) *
                (1 + tight);
    }
    if (tight) {
        add_flat(t1, t2, u1, u2, output, n, m, e, (INT32_C(1) << (e - 1)) + zp * (INT32_C(1) << e));
        return;
    }
    for (k = 0; k < n; k++) {
        int32_t sum;
        if (flat) {
            sum = mcuq_add_wrap(t1[u1[k]], t2[u2[k]]);
        } else {
            sum = mcuq_add_wrap(t1[u1[w->offset[0]]], t2[u2[w->offset[1]]]);
            mcuq_walk_next(w);
        }
        output[k] = (int8_t)mcuq_offset_clamp(mcuq_requantize_node(sum, m, -e, p->shift_only), zp, lo, hi);
    }
}
#else
#define MCUQ_FALLBACK
#endif

/* Any broadcast, one element at a time: what the DSP path leaves (fewer than TABLE_MIN_ELEMENTS
 * outputs) is rare in models, so with it this is built for size. */
static MCUQ_FALLBACK void add_general(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2,
                                      int8_t *output, mcuq_walk_t *w, int32_t n)
{
    int32_t k;
    for (k = 0; k < n; k++) {
        const int32_t a = scale_input(input1[w->offset[0]], p->input1_offset, p->left_shift,
                                      p->input1_multiplier, p->input1_shift, p->shift_only);
        const int32_t b = scale_input(input2[w->offset[1]], p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift, p->shift_only);
        const int32_t y = mcuq_requantize_node(mcuq_add_wrap(a, b), p->output_multiplier, p->output_shift,
                                               p->shift_only);
        output[k] = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        mcuq_walk_next(w);
    }
}

mcuq_status_t mcuq_add_s8(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2,
                          int8_t *output)
{
    mcuq_walk_t w;
    const int32_t n = mcuq_broadcast_init(&w, p->input1_dims, p->input2_dims);
    if (n < 0) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    if (n >= TABLE_MIN_ELEMENTS) {
        add_tables(p, input1, input2, output, &w, n);
        return MCUQ_OK;
    }
#endif
    add_general(p, input1, input2, output, &w, n);
    return MCUQ_OK;
}
