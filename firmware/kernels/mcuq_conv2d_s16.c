/* CONV_2D 16x8: int16 activations, int8 filter, int32 or int64 accumulator (mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* sum of w[i] * (x[i] + input_offset) over n contiguous channels: the inner loop a DSP path
 * replaces. Exact in int64 (products are below 2^25). */
static int64_t dot_s16(const int16_t *x, const int8_t *w, int32_t n, int32_t input_offset)
{
    int64_t acc = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        acc += w[i] * (x[i] + input_offset);
    }
    return acc;
}

mcuq_status_t mcuq_conv2d_s16(const mcuq_conv_params_t *p, const int16_t *input, const int8_t *filter,
                              const void *bias, int16_t *output)
{
    const int32_t *bias32 = p->accumulator_bits == 32 ? (const int32_t *)bias : NULL;
    const int64_t *bias64 = p->accumulator_bits == 64 ? (const int64_t *)bias : NULL;
    int32_t b, oy, ox, c, ky, kx, group_in, group_out;
    if ((p->accumulator_bits != 32 && p->accumulator_bits != 64) || p->groups <= 0 ||
        p->input_c % p->groups || p->output_c % p->groups) {
        return MCUQ_ERR_PARAMS;
    }
    group_in = p->input_c / p->groups;
    group_out = p->output_c / p->groups;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                for (c = 0; c < p->output_c; c++) {
                    const int32_t channel0 = (c / group_out) * group_in;
                    int64_t acc = 0;
                    int32_t y;
                    for (ky = 0; ky < p->filter_h; ky++) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->input_h) {
                            continue;
                        }
                        for (kx = 0; kx < p->filter_w; kx++) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->input_w) {
                                continue;
                            }
                            acc += dot_s16(input + ((b * p->input_h + iy) * p->input_w + ix) * p->input_c + channel0,
                                           filter + ((c * p->filter_h + ky) * p->filter_w + kx) * group_in,
                                           group_in, p->input_offset);
                        }
                    }
                    if (p->accumulator_bits == 32) {
                        const uint32_t acc32 = (uint32_t)acc + (bias32 != NULL ? (uint32_t)bias32[c] : 0u);
                        y = mcuq_requantize(mcuq_wrap32(acc32), p->multiplier[c], p->shift[c]);
                    } else {
                        const uint64_t acc64 = (uint64_t)acc + (bias64 != NULL ? (uint64_t)bias64[c] : 0u);
                        y = mcuq_requantize64(mcuq_wrap64(acc64), p->multiplier[c], p->shift[c]);
                    }
                    *output++ = (int16_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
