/* DEPTHWISE_CONV_2D, int8 activations, packed int4 filter, int32 accumulator (mcuq_kernels.h).
 * Depthwise filters are small: up to MCUQ_S4_UNPACKED_BYTES weights run unpacked through
 * mcuq_depthwise_conv2d_s8 (its DSP path); larger ones read their nibbles in a plain C loop
 * (one SBFX each). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support_s4.h"

mcuq_status_t mcuq_depthwise_conv2d_s8_s4(const mcuq_conv_params_t *p, const int8_t *input,
                                          const uint8_t *filter, const int32_t *bias, int8_t *output)
{
    const int32_t weights = p->filter_h * p->filter_w * p->output_c;
    int32_t b, oy, ox, c, ky, kx;
    if (p->accumulator_bits != 32 || p->depth_multiplier <= 0 || p->output_c != p->input_c * p->depth_multiplier) {
        return MCUQ_ERR_PARAMS;
    }
    if (weights <= MCUQ_S4_UNPACKED_BYTES) {
        int8_t unpacked[MCUQ_S4_UNPACKED_BYTES];
        mcuq_s4_unpack(filter, weights, unpacked);
        return mcuq_depthwise_conv2d_s8(p, input, unpacked, bias, output);
    }
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                for (c = 0; c < p->output_c; c++) {
                    const int8_t *in_c = input + (b * p->input_h * p->input_w) * p->input_c + c / p->depth_multiplier;
                    uint32_t acc = bias != NULL ? (uint32_t)bias[c] : 0u;
                    for (ky = 0; ky < p->filter_h; ky++) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        for (kx = 0; kx < p->filter_w && iy >= 0 && iy < p->input_h; kx++) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix >= 0 && ix < p->input_w) {
                                acc += (uint32_t)(mcuq_s4_at(filter, (ky * p->filter_w + kx) * p->output_c + c) *
                                                  (in_c[(iy * p->input_w + ix) * p->input_c] + p->input_offset));
                            }
                        }
                    }
                    const int32_t y = mcuq_requantize_node(mcuq_wrap32(acc), p->multiplier[c], p->shift[c],
                                                           p->shift_only);
                    *output++ = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
