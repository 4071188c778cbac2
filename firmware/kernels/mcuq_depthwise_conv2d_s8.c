/* DEPTHWISE_CONV_2D, int8 activations and filter, int32 accumulator (contract in mcuq_kernels.h). */
#include <stddef.h>
#include <string.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

#if MCUQ_DSP
#define MAX_TAPS 25 /* windows up to 5x5 (and 1xN, Nx1 up to 25 taps) take the DSP path */

/* One output pixel, channels in fours: every tap of the window reads its input pixel or, outside
 * the image, `pad` (-input_offset in every channel, whose term vanishes: the input offset is in
 * the bias). A word of 4 channels pairs as SXTB16 (channels 0 and 2, SMLABB / SMLATT) and, for
 * channels 1 and 3, x & 0xFF00FF00 (256 x) with SXTB16(w ror 8): those two accumulators carry a
 * factor 256 (at most 25 taps: |sum| < 2^31) and shift back exactly. */
static void pixel_dsp(const mcuq_conv_params_t *p, const int8_t *const *tap, int32_t taps, const int8_t *filter,
                      int8_t *out, int32_t full)
{
    const int32_t channels = p->output_c, lo = p->act_min, hi = p->act_max;
    const int32_t *cd = p->channel_data;
    int32_t c, t, i;
    for (c = 0; c + 4 <= channels; c += 4, cd += 16) {
        const int8_t *w = filter + c;
        int32_t a0 = cd[0], a2 = cd[8], a1 = 0, a3 = 0, acc[4];
        for (t = 0; t < taps; t++, w += channels) {
            const uint32_t x = mcuq_read_u32(tap[t] + c), v = mcuq_read_u32(w);
            const uint32_t xe = mcuq_sxtb16(x), ve = mcuq_sxtb16(v);
            const uint32_t xo = x & MCUQ_LANE_MASK, vo = mcuq_sxtb16_ror8(v);
            a0 = mcuq_smlabb(xe, ve, a0);
            a2 = mcuq_smlatt(xe, ve, a2);
            a1 = mcuq_smlabb(xo, vo, a1);
            a3 = mcuq_smlatt(xo, vo, a3);
        }
        acc[0] = a0;
        acc[1] = mcuq_add_wrap(cd[4], a1 >> 8);
        acc[2] = a2;
        acc[3] = mcuq_add_wrap(cd[12], a3 >> 8);
        for (i = 0; i < 4; i++) {
            const int32_t *ci = cd + 4 * i;
            int32_t y;
            if (ci[2] > 0) {
                y = mcuq_requantize_fast(acc[i], ci[1], ci[2], ci[3], p->output_offset);
                y = full ? mcuq_ssat8(y) : (y < lo ? lo : (y > hi ? hi : y));
            } else {
                y = mcuq_requantize_clamp(acc[i], ci[1], ci[3], p->output_offset, lo, hi);
            }
            out[c + i] = (int8_t)y;
        }
    }
    for (; c < channels; c++, cd += 4) {
        uint32_t acc = (uint32_t)cd[0];
        for (t = 0; t < taps; t++) {
            acc += (uint32_t)(tap[t][c] * filter[t * channels + c]);
        }
        out[c] = (int8_t)mcuq_requantize_channel(mcuq_wrap32(acc), cd, p->output_offset, lo, hi);
    }
}

/* Depth multiplier 1, at most MAX_TAPS taps and MCUQ_DSP_MAX_DEPTH channels, bias folded. */
static void depthwise_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    int8_t pad[MCUQ_DSP_MAX_DEPTH];
    const int8_t *tap[MAX_TAPS];
    const int32_t channels = p->input_c, full = p->act_min == -128 && p->act_max == 127;
    int32_t b, oy, ox, ky, kx;
    memset(pad, -p->input_offset, (size_t)channels);
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++, output += channels) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                int32_t t = 0;
                for (ky = 0; ky < p->filter_h; ky++) {
                    const int32_t iy = y0 + ky * p->dilation_h;
                    for (kx = 0; kx < p->filter_w; kx++, t++) {
                        const int32_t ix = x0 + kx * p->dilation_w;
                        tap[t] = iy < 0 || iy >= p->input_h || ix < 0 || ix >= p->input_w
                                     ? pad
                                     : input + ((b * p->input_h + iy) * p->input_w + ix) * channels;
                    }
                }
                pixel_dsp(p, tap, t, filter, output, full);
            }
        }
    }
}
#endif

mcuq_status_t mcuq_depthwise_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input,
                                       const int8_t *filter, const int32_t *bias, int8_t *output)
{
    int32_t b, oy, ox, c, ky, kx;
    if (p->accumulator_bits != 32 || p->depth_multiplier <= 0 || p->output_c != p->input_c * p->depth_multiplier) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    if (p->depth_multiplier == 1 && p->filter_h * p->filter_w <= MAX_TAPS && p->input_c <= MCUQ_DSP_MAX_DEPTH &&
        (p->bias_folded || bias == NULL)) {
        depthwise_dsp(p, input, filter, output);
        return MCUQ_OK;
    }
#endif
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                /* per output channel over the taps; a DSP path would run channels in pairs */
                for (c = 0; c < p->output_c; c++) {
                    const int8_t *in_c = input + (b * p->input_h * p->input_w) * p->input_c + c / p->depth_multiplier;
                    uint32_t acc = 0;
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
                            acc += (uint32_t)(filter[(ky * p->filter_w + kx) * p->output_c + c] *
                                              (in_c[(iy * p->input_w + ix) * p->input_c] + p->input_offset));
                        }
                    }
                    if (bias != NULL) {
                        acc += (uint32_t)bias[c];
                    }
                    const int32_t y = mcuq_requantize(mcuq_wrap32(acc), p->multiplier[c], p->shift[c]);
                    *output++ = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
