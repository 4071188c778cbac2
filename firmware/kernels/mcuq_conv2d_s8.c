/* CONV_2D, int8 activations and filter, int32 accumulator (contract in mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* sum of w[i] * (x[i] + input_offset) over n contiguous channels, wrapping modulo 2^32: the
 * inner loop a DSP (SMLAD) path replaces. */
static uint32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t input_offset)
{
    uint32_t acc = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        acc += (uint32_t)(w[i] * (x[i] + input_offset));
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

static inline void fill_bytes(int8_t *dst, int32_t v, int32_t n)
{
    const uint32_t word = ((uint32_t)v & 0xFFu) * UINT32_C(0x01010101);
    for (; n >= 4; n -= 4, dst += 4) {
        mcuq_write_u32(dst, word);
    }
    for (; n > 0; n--) {
        *dst++ = (int8_t)v;
    }
}

/* Row r of the column block: output pixel (b, oy, ox)'s window in filter order (ky, kx,
 * channel), taps outside the image holding -input_offset (their term vanishes: the input offset
 * is in the bias). 1x1 windows come straight from the input, windows over whole groups of 4
 * channels from their runs of input bytes; other windows are gathered into `patch` first. */
static void window(const mcuq_conv_params_t *p, const int8_t *input, int8_t *patch, uint32_t *block, int32_t rows,
                   int32_t r, int32_t b, int32_t oy, int32_t ox)
{
    const int32_t ic = p->input_c, kw = p->filter_w, span = kw * ic, pad = -p->input_offset;
    const int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left;
    const int32_t dw = p->dilation_w, h = p->input_h, w = p->input_w;
    const int32_t whole = dw == 1 && x0 >= 0 && x0 + kw <= w, direct = (ic & 3) == 0;
    int8_t *dst = patch;
    int32_t ky, kx, k = 0;
    if (p->filter_h == 1 && kw == 1) { /* inside the image: 1x1 windows have no padding */
        mcuq_block_put(block, rows, r, 0, input + ((b * h + y0) * w + x0) * ic, ic);
        return;
    }
    for (ky = 0; ky < p->filter_h; ky++, dst += span, k += span) {
        const int32_t iy = y0 + ky * p->dilation_h;
        const int8_t *row;
        if (iy < 0 || iy >= h) {
            if (direct) {
                mcuq_block_fill(block, rows, r, k, pad, span);
            } else {
                fill_bytes(dst, pad, span);
            }
            continue;
        }
        row = input + (b * h + iy) * w * ic;
        if (whole) {
            if (direct) {
                mcuq_block_put(block, rows, r, k, row + x0 * ic, span);
            } else {
                copy_bytes(dst, row + x0 * ic, span);
            }
            continue;
        }
        for (kx = 0; kx < kw; kx++) {
            const int32_t ix = x0 + kx * dw;
            if (direct) {
                if (ix < 0 || ix >= w) {
                    mcuq_block_fill(block, rows, r, k + kx * ic, pad, ic);
                } else {
                    mcuq_block_put(block, rows, r, k + kx * ic, row + ix * ic, ic);
                }
            } else if (ix < 0 || ix >= w) {
                fill_bytes(dst + kx * ic, pad, ic);
            } else {
                copy_bytes(dst + kx * ic, row + ix * ic, ic);
            }
        }
    }
    if (!direct) {
        mcuq_block_put(block, rows, r, 0, patch, p->filter_h * span);
    }
}

/* Pairs of output pixels: their windows as a 2-row column block times every filter. */
static void conv_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    uint32_t block[MCUQ_DSP_BLOCK_WORDS];
    int8_t patch[MCUQ_DSP_MAX_DEPTH];
    const int32_t k = p->filter_h * p->filter_w * p->input_c, n = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w, ow = p->output_w, oh = p->output_h;
    int32_t i, r, rows, b = 0, oy = 0, ox = 0; /* (b, oy, ox): the next pixel's position */
    mcuq_matmul_t q;
    q.channel_data = p->channel_data;
    q.row_bias[0] = q.row_bias[1] = 0;
    q.output_offset = p->output_offset;
    q.act_min = p->act_min;
    q.act_max = p->act_max;
    mcuq_block_clear_tail(block, 2, k);
    for (i = 0; i < pixels; i += rows) {
        rows = pixels - i >= 2 ? 2 : 1;
        if (rows == 1) {
            mcuq_block_clear_tail(block, 1, k);
        }
        for (r = 0; r < rows; r++) {
            window(p, input, patch, block, rows, r, b, oy, ox);
            if (++ox == ow) {
                ox = 0;
                if (++oy == oh) {
                    oy = 0;
                    b++;
                }
            }
        }
        if (rows == 2) {
            mcuq_matmul_s8_rows2(&q, block, k, filter, n, output, output + n);
        } else {
            mcuq_matmul_s8_rows1(&q, block, k, filter, n, output);
        }
        output += rows * n;
    }
}
#endif

mcuq_status_t mcuq_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output)
{
    int32_t b, oy, ox, c, ky, kx, group_in, group_out;
    if (p->accumulator_bits != 32 || p->groups <= 0 || p->input_c % p->groups || p->output_c % p->groups) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    if (p->groups == 1 && p->filter_h * p->filter_w * p->input_c <= MCUQ_DSP_MAX_DEPTH &&
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
                            acc += dot_s8(input + ((b * p->input_h + iy) * p->input_w + ix) * p->input_c + channel0,
                                          filter + ((c * p->filter_h + ky) * p->filter_w + kx) * group_in,
                                          group_in, p->input_offset);
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
