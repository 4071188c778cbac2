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
#define TABLE_MIN_ELEMENTS 512 /* below this, building the two tables costs more than it saves */

/* Large ADDs: each input's contribution depends on its 256 possible values only, so both come
 * from tables built once per call (2 KB of stack, indexed by the value's byte); the sum is
 * requantized with the one multiply-add form of channel_data (mcuq_kernels.h) when the output
 * shift allows. */
static void add_tables(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output,
                       mcuq_walk_t *w, int32_t n)
{
    int32_t t1[256], t2[256];
    const uint8_t *u1 = (const uint8_t *)input1, *u2 = (const uint8_t *)input2;
    const int32_t m = p->output_multiplier, e = -p->output_shift, zp = p->output_offset;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t u, k, flat = 1; /* no broadcasting: both inputs are read in output order */
    for (k = 0; k < MCUQ_MAX_DIMS; k++) {
        flat &= p->input1_dims[k] == p->input2_dims[k];
    }
    for (u = 0; u < 256; u++) {
        const int32_t v = u < 128 ? u : u - 256;
        t1[u] = scale_input(v, p->input1_offset, p->left_shift, p->input1_multiplier, p->input1_shift, p->shift_only);
        t2[u] = scale_input(v, p->input2_offset, p->left_shift, p->input2_multiplier, p->input2_shift, p->shift_only);
    }
    if (flat && e >= 2 && e <= 31 && lo == -128 && hi == 127) { /* the common case, tight */
        const int32_t r = e - 1, h = INT32_C(1) << (e - 2);
        for (k = 0; k < n; k++) {
            output[k] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(mcuq_add_wrap(t1[u1[k]], t2[u2[k]]), m, r, h, zp));
        }
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
#endif

mcuq_status_t mcuq_add_s8(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2,
                          int8_t *output)
{
    mcuq_walk_t w;
    const int32_t n = mcuq_broadcast_init(&w, p->input1_dims, p->input2_dims);
    int32_t k;
    if (n < 0) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    if (n >= TABLE_MIN_ELEMENTS) {
        add_tables(p, input1, input2, output, &w, n);
        return MCUQ_OK;
    }
#endif
    for (k = 0; k < n; k++) {
        const int32_t a = scale_input(input1[w.offset[0]], p->input1_offset, p->left_shift,
                                      p->input1_multiplier, p->input1_shift, p->shift_only);
        const int32_t b = scale_input(input2[w.offset[1]], p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift, p->shift_only);
        const int32_t y = mcuq_requantize_node(mcuq_add_wrap(a, b), p->output_multiplier, p->output_shift,
                                               p->shift_only);
        output[k] = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        mcuq_walk_next(&w);
    }
    return MCUQ_OK;
}
