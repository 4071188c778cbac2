/* CONV_2D, int8 activations, packed int4 filter, int32 accumulator (contract in mcuq_kernels.h).
 * Filters of up to MCUQ_S4_UNPACKED_BYTES weights run unpacked through mcuq_conv2d_s8; larger
 * ones unpack their nibbles in the inner loop (DSP path) or read them one by one (plain C). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support_s4.h"

/* sum of w[s + i] * (x[i] + input_offset) over n contiguous channels, modulo 2^32. */
static uint32_t dot_s4(const int8_t *x, const uint8_t *w, int32_t s, int32_t n, int32_t input_offset)
{
    uint32_t acc = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        acc += (uint32_t)(mcuq_s4_at(w, s + i) * (x[i] + input_offset));
    }
    return acc;
}

#if MCUQ_DSP
#if defined(__GNUC__) && !defined(__clang__)
/* the window gathers copy a few bytes at a time: no memcpy / memset calls for them */
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

static inline void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n >= 4; n -= 4, dst += 4, src += 4) {
        mcuq_write_u32(dst, mcuq_read_u32(src));
    }
    for (; n > 0; n--) {
        *dst++ = *src++;
    }
}

/* The window of output pixel (y0, x0) of `image` in filter order (ky, kx, channel) into patch;
 * taps outside the image hold -input_offset (their term vanishes: the offset is in the bias).
 * Window rows inside the image without dilation are one copy of filter_w * input_c bytes. */
static void gather(const mcuq_conv_params_t *p, const int8_t *image, int32_t y0, int32_t x0, int8_t *patch)
{
    const int32_t ic = p->input_c, span = p->filter_w * ic;
    const int32_t whole = p->dilation_w == 1 && x0 >= 0 && x0 + p->filter_w <= p->input_w;
    const int8_t pad = (int8_t)-p->input_offset;
    int32_t ky, kx, i;
    for (ky = 0; ky < p->filter_h; ky++, patch += span) {
        const int32_t iy = y0 + ky * p->dilation_h;
        const int8_t *row = image + iy * p->input_w * ic;
        if (iy >= 0 && iy < p->input_h && whole) {
            copy_bytes(patch, row + x0 * ic, span);
            continue;
        }
        for (kx = 0; kx < p->filter_w; kx++) {
            const int32_t ix = x0 + kx * p->dilation_w;
            if (iy < 0 || iy >= p->input_h || ix < 0 || ix >= p->input_w) {
                for (i = 0; i < ic; i++) {
                    patch[kx * ic + i] = pad;
                }
            } else {
                copy_bytes(patch + kx * ic, row + ix * ic, ic);
            }
        }
    }
}

/* Output pixels in runs of 4, 2 or 1: their windows as a column block times every filter. */
static MCUQ_S4_NOINLINE void conv_dsp(const mcuq_conv_params_t *p, const int8_t *input, const uint8_t *filter,
                                       int8_t *output)
{
    uint32_t block[MCUQ_S4_BLOCK_WORDS];
    int8_t patch[MCUQ_S4_MAX_DEPTH];
    const int32_t k = p->filter_h * p->filter_w * p->input_c, k8 = (k + 7) & ~7, n = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w, image_bytes = p->input_h * p->input_w * p->input_c;
    int32_t i, r, rows, b = 0, oy = 0, ox = 0;
    mcuq_matmul_t q; /* the int8 product's parameters; shifts_fast is not read here */
    q.channel_data = p->channel_data;
    q.row_bias[0] = q.row_bias[1] = q.row_bias[2] = q.row_bias[3] = 0;
    q.output_offset = p->output_offset;
    q.act_min = p->act_min;
    q.act_max = p->act_max;
    q.shifts_fast = 0;
    for (i = k; i < k8; i++) {
        patch[i] = 0; /* the lanes past k: the patch converts in whole groups of 8 */
    }
    for (i = 0; i < pixels; i += rows, output += rows * n) {
        /* one unpacked weight word serves four pixels where the block holds them, else two */
        rows = pixels - i >= 4 && k <= MCUQ_S4_SHORT_DEPTH ? 4 : pixels - i >= 2 ? 2 : 1;
        for (r = 0; r < rows; r++) {
            gather(p, input + b * image_bytes, oy * p->stride_h - p->pad_top, ox * p->stride_w - p->pad_left, patch);
            mcuq_s4_block_put(block, rows, r, patch, k8);
            if (++ox == p->output_w) {
                ox = 0;
                if (++oy == p->output_h) {
                    oy = 0;
                    b++;
                }
            }
        }
        mcuq_matmul_s8_s4(&q, block, rows, k, filter, n, output, n);
    }
}
#endif

mcuq_status_t mcuq_conv2d_s8_s4(const mcuq_conv_params_t *p, const int8_t *input, const uint8_t *filter,
                                const int32_t *bias, int8_t *output)
{
    int32_t b, oy, ox, c, ky, kx, group_in, group_out, weights;
    if (p->accumulator_bits != 32 || p->groups <= 0 || p->input_c % p->groups || p->output_c % p->groups) {
        return MCUQ_ERR_PARAMS;
    }
    weights = p->output_c * p->filter_h * p->filter_w * (p->input_c / p->groups);
    if (weights <= MCUQ_S4_UNPACKED_BYTES) {
        int8_t unpacked[MCUQ_S4_UNPACKED_BYTES];
        mcuq_s4_unpack(filter, weights, unpacked);
        return mcuq_conv2d_s8(p, input, unpacked, bias, output);
    }
#if MCUQ_DSP
    if (p->groups == 1 && p->filter_h * p->filter_w * p->input_c <= MCUQ_S4_MAX_DEPTH &&
        (p->bias_folded || bias == NULL)) {
        conv_dsp(p, input, filter, output);
        return MCUQ_OK;
    }
#endif
    group_in = p->input_c / p->groups;
    group_out = p->output_c / p->groups;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                for (c = 0; c < p->output_c; c++) {
                    const int32_t channel0 = (c / group_out) * group_in;
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
                            acc += dot_s4(input + ((b * p->input_h + iy) * p->input_w + ix) * p->input_c + channel0,
                                          filter, ((c * p->filter_h + ky) * p->filter_w + kx) * group_in, group_in,
                                          p->input_offset);
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
