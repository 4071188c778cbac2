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

/* A convolution's window geometry, once per call. */
typedef struct {
    const int8_t *input;
    int32_t ic, kh, kw, span, h, w, dh, dw, pad, row_bytes, k, k4;
    int32_t direct; /* channels a multiple of 4: runs of input bytes convert in place */
} geometry_t;

/* Row r of the column block: the window at input row y0, column x0 of the image starting at byte
 * `image`, in filter order (ky, kx, channel), taps outside the image holding -input_offset (their
 * term vanishes: the input offset is in the bias). 1x1 windows come straight from the input,
 * windows over whole groups of 4 channels from their runs of input bytes; other windows are
 * gathered into `patch` first, whose bytes past k stay 0. */
static void window(const geometry_t *g, int8_t *patch, uint32_t *block, int32_t rows, int32_t r, int32_t image,
                   int32_t y0, int32_t x0)
{
    const int32_t ic = g->ic, kw = g->kw, span = g->span, pad = g->pad, w = g->w;
    const int32_t whole = g->dw == 1 && x0 >= 0 && x0 + kw <= w;
    int8_t *dst = patch;
    int32_t ky, kx, k = 0, iy = y0, row = image + y0 * g->row_bytes;
    if (g->kh == 1 && kw == 1) { /* inside the image: 1x1 windows have no padding */
        mcuq_block_put(block, rows, r, 0, g->input + row + x0 * ic, ic);
        return;
    }
    for (ky = 0; ky < g->kh; ky++, dst += span, k += span, iy += g->dh, row += g->dh * g->row_bytes) {
        if (iy < 0 || iy >= g->h) {
            if (g->direct) {
                mcuq_block_fill(block, rows, r, k, pad, span);
            } else {
                fill_bytes(dst, pad, span);
            }
        } else if (whole) {
            if (g->direct) {
                mcuq_block_put(block, rows, r, k, g->input + row + x0 * ic, span);
            } else {
                copy_bytes(dst, g->input + row + x0 * ic, span);
            }
        } else {
            for (kx = 0; kx < kw; kx++) {
                const int32_t ix = x0 + kx * g->dw;
                if (ix < 0 || ix >= w) {
                    if (g->direct) {
                        mcuq_block_fill(block, rows, r, k + kx * ic, pad, ic);
                    } else {
                        fill_bytes(dst + kx * ic, pad, ic);
                    }
                } else if (g->direct) {
                    mcuq_block_put(block, rows, r, k + kx * ic, g->input + row + ix * ic, ic);
                } else {
                    copy_bytes(dst + kx * ic, g->input + row + ix * ic, ic);
                }
            }
        }
    }
    if (!g->direct) {
        mcuq_block_put(block, rows, r, 0, patch, g->k4);
    }
}

/* Output pixels in fours (windows up to 320 elements; one unpacked weight word serves four
 * pixels) or pairs (up to MCUQ_DSP_MAX_DEPTH): their windows as a column block times every
 * filter. */
static void conv_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    uint32_t block[MCUQ_DSP_BLOCK_WORDS];
    int8_t patch[MCUQ_DSP_MAX_DEPTH];
    const int32_t k = p->filter_h * p->filter_w * p->input_c, n = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w, ow = p->output_w, oh = p->output_h;
    const int32_t x_start = -p->pad_left, y_start = -p->pad_top;
    int32_t i, r, rows, last_rows = 0, image = 0, oy = 0, ox = 0, y0 = y_start, x0 = x_start; /* next window */
    geometry_t g;
    mcuq_matmul_t q;
    g.input = input;
    g.ic = p->input_c;
    g.kh = p->filter_h;
    g.kw = p->filter_w;
    g.span = p->filter_w * p->input_c;
    g.h = p->input_h;
    g.w = p->input_w;
    g.dh = p->dilation_h;
    g.dw = p->dilation_w;
    g.pad = -p->input_offset;
    g.row_bytes = p->input_w * p->input_c;
    g.k = k;
    g.k4 = (k + 3) & ~3;
    g.direct = (p->input_c & 3) == 0;
    q.channel_data = p->channel_data;
    q.row_bias[0] = q.row_bias[1] = q.row_bias[2] = q.row_bias[3] = 0;
    q.output_offset = p->output_offset;
    q.act_min = p->act_min;
    q.act_max = p->act_max;
    fill_bytes(patch + k, 0, g.k4 - k);
    for (i = 0; i < pixels; i += rows) {
        rows = pixels - i >= 4 && 2 * g.k4 <= MCUQ_DSP_BLOCK_WORDS ? 4 : pixels - i >= 2 ? 2 : 1;
        if (rows != last_rows) { /* a new layout: the lanes past k must be 0 */
            mcuq_block_clear_tail(block, rows, k);
            last_rows = rows;
        }
        for (r = 0; r < rows; r++) {
            window(&g, patch, block, rows, r, image, y0, x0);
            x0 += p->stride_w;
            if (++ox == ow) {
                ox = 0;
                x0 = x_start;
                y0 += p->stride_h;
                if (++oy == oh) {
                    oy = 0;
                    y0 = y_start;
                    image += p->input_h * g.row_bytes;
                }
            }
        }
        mcuq_matmul_s8(&q, block, rows, k, filter, n, output, n);
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
