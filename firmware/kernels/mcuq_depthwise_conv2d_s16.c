/* DEPTHWISE_CONV_2D 16x8: int16 activations, int8 filter, int64 accumulator (mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_depthwise_conv2d_s16(const mcuq_conv_params_t *p, const int16_t *input,
                                        const int8_t *filter, const int64_t *bias, int16_t *output)
{
    int32_t b, oy, ox, c, ky, kx;
    if (p->accumulator_bits != 64 || p->depth_multiplier <= 0 || p->output_c != p->input_c * p->depth_multiplier) {
        return MCUQ_ERR_PARAMS;
    }
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                for (c = 0; c < p->output_c; c++) {
                    const int16_t *in_c = input + (b * p->input_h * p->input_w) * p->input_c + c / p->depth_multiplier;
                    int64_t acc = 0;
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
                            acc += filter[(ky * p->filter_w + kx) * p->output_c + c] *
                                   (in_c[(iy * p->input_w + ix) * p->input_c] + p->input_offset);
                        }
                    }
                    if (bias != NULL) {
                        acc = mcuq_wrap64((uint64_t)acc + (uint64_t)bias[c]);
                    }
                    *output++ = (int16_t)mcuq_offset_clamp(mcuq_requantize64(acc, p->multiplier[c], p->shift[c]),
                                                           p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
