/* DEPTHWISE_CONV_2D, int8 activations and filter, int32 accumulator (contract in mcuq_kernels.h). */
#include <stddef.h>
#include <string.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

#if MCUQ_DSP
#define MAX_TAPS 25 /* windows up to 5x5 (and 1xN, Nx1 up to 25 taps) take the DSP path */

/* The DSP path works on channels in fours. A word of 4 input channels x = [x0 x1 x2 x3] gives
 * SXTB16(x) = (x0, x2) and x & 0xFF00FF00 = (256 x1, 256 x3); the weights, unpacked once per
 * call into (w0, w2) and (w1, w3), meet them in SMLABB / SMLATT. Channels 1 and 3 thus sum 256
 * times their products (at most 25 taps: |sum| < 2^31) and shift back exactly. Every tap of a
 * window reads its input pixel or, outside the image, `pad` (-input_offset in every channel, a
 * term that vanishes: the input offset is in channel_data's bias). */

/* wbuf[2 * (g * taps + t)] = SXTB16 of tap t's weights for channels c0 + 4g .. + 3, and
 * [.. + 1] = SXTB16 of them rotated by 8. */
static void unpack_weights(const int8_t *filter, int32_t channels, int32_t taps, int32_t c0, int32_t groups,
                           uint32_t *wbuf)
{
    int32_t g, t;
    for (g = 0; g < groups; g++) {
        const int8_t *w = filter + c0 + 4 * g;
        for (t = 0; t < taps; t++, w += channels, wbuf += 2) {
            const uint32_t v = mcuq_read_u32(w);
            wbuf[0] = mcuq_sxtb16(v);
            wbuf[1] = mcuq_sxtb16_ror8(v);
        }
    }
}

/* One tap for 4 channels at offset c of the tap's pixel. */
static inline void tap4(const int8_t *pixel, int32_t c, const uint32_t *w, int32_t *a)
{
    const uint32_t x = mcuq_read_u32(pixel + c);
    const uint32_t xe = mcuq_sxtb16(x), xo = x & MCUQ_LANE_MASK, we = w[0], wo = w[1];
    a[0] = mcuq_smlabb(xe, we, a[0]);
    a[2] = mcuq_smlatt(xe, we, a[2]);
    a[1] = mcuq_smlabb(xo, wo, a[1]);
    a[3] = mcuq_smlatt(xo, wo, a[3]);
}

/* The requantized output of a channel (channel_data row cd) from its sum, without the bias. */
static inline int8_t out1(const int32_t *cd, int32_t sum, int32_t zp, int32_t lo, int32_t hi, int32_t full)
{
    const int32_t acc = mcuq_add_wrap(cd[0], sum);
    int32_t y;
    if (cd[2] > 0) {
        y = mcuq_requantize_fast(acc, cd[1], cd[2], cd[3], zp);
        y = full ? mcuq_ssat8(y) : (y < lo ? lo : (y > hi ? hi : y));
    } else {
        y = mcuq_requantize_clamp(acc, cd[1], cd[3], zp, lo, hi);
    }
    return (int8_t)y;
}

/* One output pixel, channel groups [g0, g0 + groups) (weights unpacked from group g0 on). Tap t
 * reads base + off[t] for a window inside the image (`interior`), else tap[t]. */
static inline __attribute__((always_inline)) void pixel4(const mcuq_conv_params_t *p, const int8_t *base,
                                                         const int32_t *off, const int8_t *const *tap,
                                                         int32_t interior, int32_t taps, const uint32_t *wbuf,
                                                         int32_t g0, int32_t groups, int8_t *out, int32_t full)
{
    const int32_t zp = p->output_offset, lo = p->act_min, hi = p->act_max;
    int32_t g, t;
    for (g = 0; g < groups; g++) {
        const int32_t c = 4 * (g0 + g);
        const uint32_t *w = wbuf + 2 * taps * g;
        int32_t a[4] = {0, 0, 0, 0};
        if (taps == 9) { /* 3x3, unrolled */
#define TAP(t) tap4(interior ? base + off[t] : tap[t], c, w + 2 * (t), a)
            TAP(0);
            TAP(1);
            TAP(2);
            TAP(3);
            TAP(4);
            TAP(5);
            TAP(6);
            TAP(7);
            TAP(8);
#undef TAP
        } else {
            for (t = 0; t < taps; t++) {
                tap4(interior ? base + off[t] : tap[t], c, w + 2 * t, a);
            }
        }
        {
            /* channels 1 and 3 summed 256 times their products */
            const int32_t *cd = p->channel_data + 4 * c;
            out[c] = out1(cd, a[0], zp, lo, hi, full);
            out[c + 1] = out1(cd + 4, a[1] >> 8, zp, lo, hi, full);
            out[c + 2] = out1(cd + 8, a[2], zp, lo, hi, full);
            out[c + 3] = out1(cd + 12, a[3] >> 8, zp, lo, hi, full);
        }
    }
}

/* The window's taps for output pixel (b, oy, ox): input pixels, or pad outside the image. */
static void window_taps(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *pad, int32_t b,
                        int32_t oy, int32_t ox, const int8_t **tap)
{
    const int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left;
    const int32_t step = p->dilation_w * p->input_c;
    int32_t ky, kx;
    for (ky = 0; ky < p->filter_h; ky++) {
        const int32_t iy = y0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->input_h) {
            for (kx = 0; kx < p->filter_w; kx++) {
                *tap++ = pad;
            }
        } else {
            const int8_t *row = input + (b * p->input_h + iy) * p->input_w * p->input_c;
            int32_t ix = x0, offset = x0 * p->input_c;
            for (kx = 0; kx < p->filter_w; kx++, ix += p->dilation_w, offset += step) {
                *tap++ = ix < 0 || ix >= p->input_w ? pad : row + offset;
            }
        }
    }
}

/* Depth multiplier 1, at most MAX_TAPS taps and MCUQ_DSP_MAX_DEPTH channels, bias folded:
 * channel chunks whose unpacked weights fit the stack buffer, all pixels per chunk; channels
 * past the last multiple of 4 one by one. */
static void depthwise_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    const int32_t full = p->act_min == -128 && p->act_max == 127;
    int8_t pad[MCUQ_DSP_MAX_DEPTH];
    uint32_t wbuf[MCUQ_DSP_BLOCK_WORDS];
    const int8_t *tap[MAX_TAPS];
    int32_t off[MAX_TAPS];
    const int32_t channels = p->input_c, taps = p->filter_h * p->filter_w;
    const int32_t all_groups = channels >> 2, chunk = MCUQ_DSP_BLOCK_WORDS / (2 * taps);
    const int32_t span_h = (p->filter_h - 1) * p->dilation_h, span_w = (p->filter_w - 1) * p->dilation_w;
    int32_t g0, b, oy, ox, c, t, ky, kx;
    memset(pad, -p->input_offset, (size_t)channels);
    for (ky = 0, t = 0; ky < p->filter_h; ky++) {
        for (kx = 0; kx < p->filter_w; kx++, t++) {
            off[t] = (ky * p->dilation_h * p->input_w + kx * p->dilation_w) * channels;
        }
    }
    for (g0 = 0; g0 < all_groups; g0 += chunk) {
        const int32_t groups = all_groups - g0 < chunk ? all_groups - g0 : chunk;
        int8_t *out = output;
        unpack_weights(filter, channels, taps, 4 * g0, groups, wbuf);
        for (b = 0; b < p->batches; b++) {
            for (oy = 0; oy < p->output_h; oy++) {
                const int32_t y0 = oy * p->stride_h - p->pad_top;
                const int32_t rows_in = y0 >= 0 && y0 + span_h < p->input_h;
                for (ox = 0; ox < p->output_w; ox++, out += channels) {
                    const int32_t x0 = ox * p->stride_w - p->pad_left;
                    if (rows_in && x0 >= 0 && x0 + span_w < p->input_w) {
                        const int8_t *base = input + ((b * p->input_h + y0) * p->input_w + x0) * channels;
                        if (taps == 9 && full) { /* the common case, specialized */
                            pixel4(p, base, off, tap, 1, 9, wbuf, g0, groups, out, 1);
                        } else {
                            pixel4(p, base, off, tap, 1, taps, wbuf, g0, groups, out, full);
                        }
                    } else {
                        window_taps(p, input, pad, b, oy, ox, tap);
                        pixel4(p, input, off, tap, 0, taps, wbuf, g0, groups, out, full);
                    }
                }
            }
        }
    }
    if (channels & 3) { /* the last 1 to 3 channels */
        for (b = 0; b < p->batches; b++) {
            for (oy = 0; oy < p->output_h; oy++) {
                for (ox = 0; ox < p->output_w; ox++, output += channels) {
                    window_taps(p, input, pad, b, oy, ox, tap);
                    for (c = 4 * all_groups; c < channels; c++) {
                        const int32_t *cd = p->channel_data + 4 * c;
                        uint32_t acc = (uint32_t)cd[0];
                        for (t = 0; t < taps; t++) {
                            acc += (uint32_t)(tap[t][c] * filter[t * channels + c]);
                        }
                        output[c] = (int8_t)mcuq_requantize_channel(mcuq_wrap32(acc), cd, p->output_offset,
                                                                    p->act_min, p->act_max);
                    }
                }
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
                    const int32_t y = mcuq_requantize_node(mcuq_wrap32(acc), p->multiplier[c], p->shift[c],
                                                           p->shift_only);
                    *output++ = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
