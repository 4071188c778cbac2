/* CONV_2D, int8 activations and filter, int32 accumulator (contract in mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* `mcuq build` passes MCUQ_PLAIN_CONV2D_S8=0 when no layer of the model needs conv_plain() on a DSP
 * core (mcuq.pack.plain_fallbacks); then it is left out. */
#ifndef MCUQ_PLAIN_CONV2D_S8
#define MCUQ_PLAIN_CONV2D_S8 1
#endif
#define PLAIN (!MCUQ_DSP || MCUQ_PLAIN_CONV2D_S8)

#if PLAIN
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
#endif

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

#define PATCH_BYTES (2 * MCUQ_DSP_MAX_DEPTH) /* gathered windows: 4 of up to 320 elements, 2 of 640 */
#define CHUNK_CHANNELS 32                    /* channels per pass over a window split in chunks */
#define PADDED_BYTES 1024                    /* weights padded to rows of k4 at the column block's end */

/* A convolution's window geometry, once per call. A window is converted in segments of `seg`
 * elements: one per filter row when the channels are a multiple of 4 (direct: a window inside
 * the image is read straight from the input, filter row ky at ky * row_step from its start),
 * else the whole window of k elements gathered into a patch, padded with 0 to k4. */
typedef struct {
    const int8_t *input;
    int32_t ic, kh, kw, span, h, w, dh, dw, pad, row_bytes, row_step, k, k4, seg;
    int32_t direct; /* channels a multiple of 4 */
} geometry_t;

/* Where an output pixel's window starts: byte offset of its image, input row and column;
 * `inside`: undilated columns and every tap inside the image. */
typedef struct {
    int32_t image, y0, x0, inside;
} origin_t;

/* The raster walk over output pixels: the next window's origin, and the bounds (y_in, x_in) its
 * row and column stay below when every tap is inside (0: never). */
typedef struct {
    int32_t image, oy, ox, y0, x0, y_in, x_in;
} walk_t;

/* The origins of the next `rows` windows; returns 1 when all of them are inside. */
static int32_t walk(const mcuq_conv_params_t *p, const geometry_t *g, walk_t *k, origin_t *o, int32_t rows)
{
    int32_t r, all = 1;
    for (r = 0; r < rows; r++) {
        o[r].image = k->image;
        o[r].y0 = k->y0;
        o[r].x0 = k->x0;
        o[r].inside = (uint32_t)k->y0 < (uint32_t)k->y_in && (uint32_t)k->x0 < (uint32_t)k->x_in;
        all &= o[r].inside;
        k->x0 += p->stride_w;
        if (++k->ox == p->output_w) {
            k->ox = 0;
            k->x0 = -p->pad_left;
            k->y0 += p->stride_h;
            if (++k->oy == p->output_h) {
                k->oy = 0;
                k->y0 = -p->pad_top;
                k->image += g->h * g->row_bytes;
            }
        }
    }
    return all;
}

/* Filter rows ky0 .. ky1 - 1 of window o into patch, in filter order (ky, kx, channel), taps
 * outside the image holding -input_offset (their term vanishes: the input offset is in the
 * bias); a whole window is followed by k4 - k zero bytes. */
static void gather(const geometry_t *g, int8_t *patch, const origin_t *o, int32_t ky0, int32_t ky1)
{
    const int32_t ic = g->ic, kw = g->kw, span = g->span, pad = g->pad, w = g->w, x0 = o->x0;
    const int32_t whole = g->dw == 1 && x0 >= 0 && x0 + kw <= w;
    const int32_t kx0 = x0 >= 0 ? 0 : -x0 < kw ? -x0 : kw, kx1 = w - x0 >= kw ? kw : w - x0 > kx0 ? w - x0 : kx0;
    int8_t *dst = patch;
    int32_t ky, kx, iy = o->y0 + ky0 * g->dh;
    const int8_t *row = g->input + o->image + iy * g->row_bytes;
    for (ky = ky0; ky < ky1; ky++, dst += span, iy += g->dh, row += g->row_step) {
        if (iy < 0 || iy >= g->h) {
            fill_bytes(dst, pad, span);
        } else if (whole) {
            copy_bytes(dst, row + x0 * ic, span);
        } else if (g->dw == 1) { /* taps kx0 .. kx1 - 1 in the image: one run of bytes */
            fill_bytes(dst, pad, kx0 * ic);
            copy_bytes(dst + kx0 * ic, row + (x0 + kx0) * ic, (kx1 - kx0) * ic);
            fill_bytes(dst + kx1 * ic, pad, (kw - kx1) * ic);
        } else {
            for (kx = 0; kx < kw; kx++) {
                const int32_t ix = x0 + kx * g->dw;
                if (ix < 0 || ix >= w) {
                    fill_bytes(dst + kx * ic, pad, ic);
                } else {
                    copy_bytes(dst + kx * ic, row + ix * ic, ic);
                }
            }
        }
    }
    if (ky0 == 0 && ky1 == g->kh) {
        fill_bytes(dst, 0, g->k4 - g->k);
    }
}

/* The matrix product's parameters for a convolution (no row bias: that is FULLY_CONNECTED's). */
static void matmul_params(const mcuq_conv_params_t *p, mcuq_matmul_t *q)
{
    q->channel_data = p->channel_data;
    q->row_bias[0] = q->row_bias[1] = q->row_bias[2] = q->row_bias[3] = 0;
    q->output_offset = p->output_offset;
    q->act_min = p->act_min;
    q->act_max = p->act_max;
    q->shifts_fast = p->shifts_fast;
}

#if !MCUQ_MVE /* the DSP path's column blocks: Helium cores take conv_mve() */
/* Filter rows ky0 .. ky1 - 1 of a window inside the image (undilated columns) from src, its
 * first tap, into patch: rows of 4 bytes or more as words, the last word of a row overlapping
 * the one before it (no byte copies, nothing written past the row). */
static void copy_window(const geometry_t *g, int8_t *patch, const int8_t *src, int32_t ky0, int32_t ky1)
{
    const int32_t span = g->span, last = span - 4;
    int32_t ky, i;
    for (ky = ky0; ky < ky1; ky++, src += g->row_step, patch += span) {
        if (last < 0) {
            for (i = 0; i < span; i++) {
                patch[i] = src[i];
            }
            continue;
        }
        for (i = 0; i < last; i += 4) {
            mcuq_write_u32(patch + i, mcuq_read_u32(src + i));
        }
        mcuq_write_u32(patch + last, mcuq_read_u32(src + last));
    }
}

/* The whole windows of four output pixels inside the image (undilated columns) from their
 * first taps src[r] into the four quarters of patch, a filter row of span >= 4 bytes at a time
 * as words, a row's last word overlapping the one before it: nothing is written past k, so the
 * bytes k .. k4 - 1 stay 0. */
static void copy_windows4(const geometry_t *g, int8_t *patch, const int8_t *const *src)
{
    enum { Q = PATCH_BYTES / 4 };
    const int32_t span = g->span, last = span - 4, step = g->row_step;
    const int8_t *s0 = src[0], *s1 = src[1], *s2 = src[2], *s3 = src[3];
    int32_t ky, j;
    for (ky = 0; ky < g->kh; ky++, patch += span, s0 += step, s1 += step, s2 += step, s3 += step) {
        for (j = 0;; j = j + 4 < last ? j + 4 : last) {
            mcuq_write_u32(patch + j, mcuq_read_u32(s0 + j));
            mcuq_write_u32(patch + Q + j, mcuq_read_u32(s1 + j));
            mcuq_write_u32(patch + 2 * Q + j, mcuq_read_u32(s2 + j));
            mcuq_write_u32(patch + 3 * Q + j, mcuq_read_u32(s3 + j));
            if (j == last) {
                break;
            }
        }
    }
}

#if defined(__ARM_FEATURE_DSP)
/* convert() of 4 rows, at least one group and one block in assembly: per group the four source
 * words, eight SXTB16 and one STM of the group's eight block words; per further block the
 * sources `skip` bytes past where the last one ended. */
static void __attribute__((naked, noinline)) convert4_asm(uint32_t *block, const int8_t *const *src, int32_t groups,
                                                          int32_t blocks, int32_t skip)
{
    (void)block;
    (void)src;
    (void)groups;
    (void)blocks;
    (void)skip;
    __asm__("lsl    r2, r2, #5\n\t" /* a block's bytes */
            "push   {r2-r11, lr}\n\t"  /* those in [sp], the blocks left in [sp, #4], skip in [sp, #44] */
            "ldm    r1, {r1, r3, r12, lr}\n\t"
            "add    r2, r0, r2\n\t" /* the block's end */
            "1:\n\t"
            "ldr    r4, [r1], #4\n\t"
            "ldr    r5, [r3], #4\n\t"
            "ldr    r6, [r12], #4\n\t"
            "ldr    r7, [lr], #4\n\t"
            "sxtb16 r8, r4, ror #8\n\t"
            "sxtb16 r9, r5, ror #8\n\t"
            "sxtb16 r10, r6, ror #8\n\t"
            "sxtb16 r11, r7, ror #8\n\t"
            "sxtb16 r4, r4\n\t"
            "sxtb16 r5, r5\n\t"
            "sxtb16 r6, r6\n\t"
            "sxtb16 r7, r7\n\t"
            "stm    r0!, {r4-r11}\n\t"
            "cmp    r0, r2\n\t"
            "bne    1b\n\t"
            "ldr    r4, [sp, #4]\n\t"
            "subs   r4, r4, #1\n\t"
            "beq    2f\n\t"
            "str    r4, [sp, #4]\n\t"
            "ldr    r4, [sp]\n\t"
            "add    r2, r0, r4\n\t" /* the next block's end */
            "ldr    r4, [sp, #44]\n\t"
            "add    r1, r1, r4\n\t"
            "add    r3, r3, r4\n\t"
            "add    r12, r12, r4\n\t"
            "add    lr, lr, r4\n\t"
            "b      1b\n\t"
            "2:\n\t"
            "pop    {r2-r11, pc}\n\t");
}
#endif

/* `groups` groups of block rows 0 .. rows - 1 (block at the first group) from src[r]; with
 * rows 4, `blocks` such runs of groups one after the other in the block, run b's row r from
 * src[r] + b * (4 * groups + skip) (the next pixels, or a window's next filter row). */
static void convert(uint32_t *block, int32_t rows, const int8_t *const *src, int32_t groups, int32_t blocks,
                    int32_t skip)
{
    int32_t b, g, r;
#if defined(__ARM_FEATURE_DSP)
    if (rows == 4 && groups > 0) {
        convert4_asm(block, src, groups, blocks, skip);
        return;
    }
#endif
    if (rows == 4) {
        for (b = 0; b < blocks; b++) {
            const int32_t at = b * (4 * groups + skip);
            const int8_t *s0 = src[0] + at, *s1 = src[1] + at, *s2 = src[2] + at, *s3 = src[3] + at;
            for (g = 0; g < groups; g++, block += 8, s0 += 4, s1 += 4, s2 += 4, s3 += 4) {
                const uint32_t v0 = mcuq_read_u32(s0), v1 = mcuq_read_u32(s1);
                const uint32_t v2 = mcuq_read_u32(s2), v3 = mcuq_read_u32(s3);
                block[0] = mcuq_sxtb16(v0);
                block[1] = mcuq_sxtb16(v1);
                block[2] = mcuq_sxtb16(v2);
                block[3] = mcuq_sxtb16(v3);
                block[4] = mcuq_sxtb16_ror8(v0);
                block[5] = mcuq_sxtb16_ror8(v1);
                block[6] = mcuq_sxtb16_ror8(v2);
                block[7] = mcuq_sxtb16_ror8(v3);
            }
        }
        return;
    }
    for (r = 0; r < rows; r++) {
        mcuq_block_put(block, rows, r, 0, src[r], 4 * groups);
    }
}

/* The column block of `rows` windows, filter rows ky0 .. ky1 - 1 (all of them unless direct). */
static void fill_block(const geometry_t *g, int8_t *patch, uint32_t *block, int32_t rows, const origin_t *o,
                       int32_t ky0, int32_t ky1)
{
    const int8_t *base[4], *src[4];
    int32_t step[4], r, s;
    const int32_t segments = g->direct ? ky1 - ky0 : 1;
    for (r = 0; r < rows; r++) {
        const int8_t *first = g->input + o[r].image + (o[r].y0 + ky0 * g->dh) * g->row_bytes + o[r].x0 * g->ic;
        int8_t *own = patch + r * (PATCH_BYTES >> (rows >> 1)); /* a quarter or all of it */
        if (o[r].inside && g->direct) {
            base[r] = first;
            step[r] = g->row_step;
        } else {
            base[r] = own;
            step[r] = g->seg;
            if (o[r].inside) {
                copy_window(g, own, first, ky0, ky1); /* the bytes k .. k4 - 1 stay 0 (conv_dsp) */
            } else {
                gather(g, own, &o[r], ky0, ky1);
            }
        }
    }
    for (s = 0; s < segments; s++) {
        for (r = 0; r < rows; r++) {
            src[r] = base[r] + s * step[r];
        }
        convert(block + 2 * rows * (s * g->seg >> 2), rows, src, g->seg >> 2, 1, 0);
    }
}

/* Output pixels in fours (one unpacked weight word serves four pixels) or pairs (windows up to
 * MCUQ_DSP_MAX_DEPTH elements): their windows as a column block times every filter. Windows
 * inside the image over channels in multiples of 4 (every 1x1 window) convert straight from
 * the input, the others are copied or gathered into the patch first. Whole windows go as many
 * runs of four at a time as the column block holds, converted before one product writes the
 * runs' outputs in raster order: a run's outputs are written after every later run's input of
 * the batch was read, which the overlap contract allows (the planner keeps each run's output
 * below the input from that run on). Windows of k % 4 != 0 elements take the weights padded to
 * rows of k4 (zeros), so no group is partial. Four windows longer than 320 elements (channels
 * in multiples of 4, filter rows up to 320 elements) go through the block in chunks of whole
 * filter rows, CHUNK_CHANNELS channels at a time. */
static void conv_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    uint32_t block[MCUQ_DSP_BLOCK_WORDS];
    int8_t patch[PATCH_BYTES];
    int32_t sums[4 * CHUNK_CHANNELS];
    const int32_t k = p->filter_h * p->filter_w * p->input_c, n = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w;
    const int32_t last_y = (p->filter_h - 1) * p->dilation_h, last_x = (p->filter_w - 1) * p->dilation_w;
    int32_t i, r, c, ky, rows;
    int32_t rows_w = 0; /* weight rows: the channels but the constant ones */
    int32_t chunk_rows; /* filter rows per chunk of four windows */
    int32_t most = 4 * (MCUQ_DSP_BLOCK_WORDS / (2 * ((k + 3) & ~3))); /* rows of whole windows per product */
    const int8_t *weights = filter; /* their weight rows, of `depth` elements (k4 when padded, else k) */
    const int32_t copied = (p->input_c & 3) != 0 && p->filter_w * p->input_c >= 4; /* copy_windows4() */
    int32_t depth = k;
    origin_t o[4];
    walk_t wk;
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
    g.row_step = g.dh * g.row_bytes;
    g.k = k;
    g.k4 = (k + 3) & ~3;
    g.direct = (p->input_c & 3) == 0;
    g.seg = g.direct ? g.span : g.k4;
    chunk_rows = 2 * g.k4 <= MCUQ_DSP_BLOCK_WORDS ? g.kh : g.direct ? MCUQ_DSP_BLOCK_WORDS / (2 * g.span) : 0;
    matmul_params(p, &q);
    if (g.direct && g.kh == 1 && g.kw == 1 && p->stride_h == 1 && p->stride_w == 1 && chunk_rows > 0) {
        /* 1x1, stride 1: the windows are the input pixels, one after the other */
        const int8_t *src[4];
        for (i = 0; i < pixels; i += rows, output += rows * n) {
            const int32_t fours = (pixels - i) & ~3; /* as many 4-row blocks as the column block holds */
            rows = fours > 0 ? (fours < most ? fours : most) : 1;
            for (r = 0; r < (rows < 4 ? rows : 4); r++) {
                src[r] = input + (i + r) * k;
            }
            convert(block, rows < 4 ? rows : 4, src, k >> 2, rows >> 2, 3 * k);
            mcuq_matmul_s8(&q, block, rows, k, filter, n, output, n);
        }
        return;
    }
    for (c = 0; c < n; c++) {
        rows_w += !mcuq_constant_channel(p->channel_data + 4 * c);
    }
    if (k & 3 && rows_w * g.k4 <= PADDED_BYTES && 2 * g.k4 <= MCUQ_DSP_BLOCK_WORDS - PADDED_BYTES / 4) {
        /* rows of k4 weights, their last k4 - k bytes 0, after the blocks: no partial groups */
        int8_t *to = (int8_t *)(block + MCUQ_DSP_BLOCK_WORDS) - PADDED_BYTES;
        const int8_t *from = filter;
        weights = to;
        for (c = 0; c < rows_w; c++, to += g.k4 - k) {
            for (r = 0; r < k; r++) {
                *to++ = *from++;
            }
            fill_bytes(to, 0, g.k4 - k);
        }
        depth = g.k4;
        most = 4 * ((MCUQ_DSP_BLOCK_WORDS - PADDED_BYTES / 4) / (2 * g.k4));
    }
    wk.image = wk.oy = wk.ox = 0;
    wk.y0 = -p->pad_top;
    wk.x0 = -p->pad_left;
    wk.y_in = g.h > last_y ? g.h - last_y : 0;
    wk.x_in = g.dw == 1 && g.w > last_x ? g.w - last_x : 0;
    fill_bytes(patch, 0, PATCH_BYTES); /* the lanes past k of gathered windows stay 0 */
    for (i = 0; i < pixels; i += rows, output += rows * n) {
        if (pixels - i >= 4 && chunk_rows == g.kh) {
            /* whole windows four at a time: as many 4-row blocks as the column block holds */
            uint32_t *b = block;
            for (rows = 0; rows < most && pixels - i - rows >= 4; rows += 4, b += 2 * g.k4) {
                const int32_t x3 = wk.x0 + 3 * p->stride_w; /* the fourth window's column */
                const int8_t *src[4];
                if ((copied || g.direct) && wk.ox + 4 < p->output_w && (uint32_t)wk.y0 < (uint32_t)wk.y_in &&
                    wk.x0 >= 0 && x3 < wk.x_in) { /* four windows inside, on one output row */
                    src[0] = input + wk.image + wk.y0 * g.row_bytes + wk.x0 * g.ic;
                    for (r = 1; r < 4; r++) {
                        src[r] = src[r - 1] + p->stride_w * g.ic;
                    }
                    wk.ox += 4;
                    wk.x0 = x3 + p->stride_w;
                    if (g.direct) { /* filter row after filter row straight from the input */
                        convert(b, 4, src, g.span >> 2, g.kh, g.row_step - g.span);
                        continue;
                    }
                } else if (walk(p, &g, &wk, o, 4) && copied) {
                    for (r = 0; r < 4; r++) {
                        src[r] = input + o[r].image + o[r].y0 * g.row_bytes + o[r].x0 * g.ic;
                    }
                } else {
                    fill_block(&g, patch, b, 4, o, 0, g.kh);
                    continue;
                }
                copy_windows4(&g, patch, src);
                for (r = 0; r < 4; r++) {
                    src[r] = patch + r * (PATCH_BYTES / 4);
                }
                convert(b, 4, src, g.k4 >> 2, 1, 0);
            }
            mcuq_matmul_s8(&q, block, rows, depth, weights, n, output, n);
            continue;
        }
        rows = pixels - i >= 4 && chunk_rows > 0 ? 4 : 1;
        walk(p, &g, &wk, o, rows);
        if (rows < 4) {
            fill_block(&g, patch, block, rows, o, 0, g.kh);
            mcuq_matmul_s8(&q, block, rows, k, filter, n, output, n);
        } else {
            const int8_t *w = filter; /* the chunk's first weight row */
            for (c = 0; c < n; c += CHUNK_CHANNELS) {
                const int32_t m = n - c < CHUNK_CHANNELS ? n - c : CHUNK_CHANNELS;
                q.channel_data = p->channel_data + 4 * c;
                for (ky = 0; ky < g.kh; ky += chunk_rows) {
                    const int32_t ky1 = ky + chunk_rows < g.kh ? ky + chunk_rows : g.kh;
                    fill_block(&g, patch, block, 4, o, ky, ky1);
                    mcuq_matmul_s8_chunk4(&q, block, (ky1 - ky) * g.span, w + ky * g.span, k, m, sums, ky == 0,
                                          ky1 == g.kh, output + c, n);
                }
                for (r = 0; r < m; r++) {
                    w += mcuq_constant_channel(q.channel_data + 4 * r) ? 0 : k;
                }
            }
            q.channel_data = p->channel_data;
        }
    }
}
#endif /* !MCUQ_MVE */
#endif

#if MCUQ_MVE
/* The filter rows of a window inside the image (undilated columns) from src, its first tap, into
 * dst, span bytes each: a tail-predicated loop of 16-byte loads and stores (nothing written past
 * a row). */
static void copy_window_mve(const geometry_t *g, int8_t *dst, const int8_t *src)
{
    int32_t ky;
    for (ky = 0; ky < g->kh; ky++, src += g->row_step, dst += g->span) {
        const int8_t *s = src;
        int8_t *d = dst;
        __asm__ volatile("wlstp.8 lr, %[n], 2f\n\t"
                         "1:\n\t"
                         "vldrb.8 q0, [%[s]], #16\n\t"
                         "vstrb.8 q0, [%[d]], #16\n\t"
                         "letp    lr, 1b\n\t"
                         "2:\n\t"
                         : [s] "+r"(s), [d] "+r"(d)
                         : [n] "r"(g->span)
                         : "lr", "q0", "memory");
    }
}

/* The windows of four output pixels in a row, all inside the image (undilated columns), from the
 * first one's first tap src into dst (rows of k bytes), filter row by filter row: per window one
 * tail-predicated loop over the row's span bytes. geo = {span, filter_h, row_step, the next
 * window's offset (stride_w * input_c), k}. */
static void __attribute__((naked, noinline)) copy4_asm(int8_t *dst, const int8_t *src, const int32_t *geo)
{
    (void)dst;
    (void)src;
    (void)geo;
    __asm__("push    {r4-r8, lr}\n\t"
            "ldm     r2, {r3, r4, r5, r6, r7}\n\t"
            "1:\n\t"
            "mov     r2, r1\n\t"
            "mov     r8, r0\n\t"
            "wlstp.8 lr, r3, 2f\n\t"
            "3:\n\t"
            "vldrb.8 q0, [r2], #16\n\t"
            "vstrb.8 q0, [r8], #16\n\t"
            "letp    lr, 3b\n\t"
            "2:\n\t"
            "add     r2, r1, r6\n\t"
            "add     r8, r0, r7\n\t"
            "wlstp.8 lr, r3, 4f\n\t"
            "5:\n\t"
            "vldrb.8 q0, [r2], #16\n\t"
            "vstrb.8 q0, [r8], #16\n\t"
            "letp    lr, 5b\n\t"
            "4:\n\t"
            "add     r2, r1, r6, lsl #1\n\t"
            "add     r8, r0, r7, lsl #1\n\t"
            "wlstp.8 lr, r3, 6f\n\t"
            "7:\n\t"
            "vldrb.8 q0, [r2], #16\n\t"
            "vstrb.8 q0, [r8], #16\n\t"
            "letp    lr, 7b\n\t"
            "6:\n\t"
            "add     r2, r1, r6, lsl #1\n\t"
            "add     r2, r2, r6\n\t"
            "add     r8, r0, r7, lsl #1\n\t"
            "add     r8, r8, r7\n\t"
            "wlstp.8 lr, r3, 8f\n\t"
            "9:\n\t"
            "vldrb.8 q0, [r2], #16\n\t"
            "vstrb.8 q0, [r8], #16\n\t"
            "letp    lr, 9b\n\t"
            "8:\n\t"
            "add     r1, r1, r5\n\t" /* the next filter row */
            "add     r0, r0, r3\n\t"
            "subs    r4, r4, #1\n\t"
            "bne     1b\n\t"
            "pop     {r4-r8, pc}\n\t");
}

/* The DSP path's layers on Helium cores: 1x1 at stride 1 reads the pixels in place; other windows
 * are copied into rows of k bytes (copy_window_mve(); across the border gather(), taps outside
 * the image holding -input_offset, its zeros past k landing in the next row or the 3 spare
 * bytes), as many runs of four as the rows hold, then one product writes those runs in order (as
 * the DSP path's column block does: input is only read earlier than the overlap contract needs). */
static void conv_mve(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    int8_t rows[4 * MCUQ_DSP_MAX_DEPTH + 3];
    const int32_t k = p->filter_h * p->filter_w * p->input_c, n = p->output_c;
    const int32_t pixels = p->batches * p->output_h * p->output_w;
    const int32_t last_y = (p->filter_h - 1) * p->dilation_h, last_x = (p->filter_w - 1) * p->dilation_w;
    const int32_t row_bytes = p->input_w * p->input_c;
    const geometry_t g = {input, p->input_c, p->filter_h, p->filter_w, p->filter_w * p->input_c, p->input_h,
                          p->input_w, p->dilation_h, p->dilation_w, -p->input_offset, row_bytes,
                          p->dilation_h * row_bytes, k, (k + 3) & ~3, k, 0};
    walk_t wk = {0, 0, 0, -p->pad_top, -p->pad_left, g.h > last_y ? g.h - last_y : 0,
                 g.dw == 1 && g.w > last_x ? g.w - last_x : 0};
    origin_t o[4];
    mcuq_matmul_t q;
    const int32_t most = 4 * (MCUQ_DSP_MAX_DEPTH / k); /* windows of whole runs of four the rows hold */
    const int32_t geo[5] = {g.span, g.kh, g.row_step, p->stride_w * g.ic, k};
    int32_t i, j, r, m;
    matmul_params(p, &q);
    if (g.kh == 1 && g.kw == 1 && p->stride_h == 1 && p->stride_w == 1) {
        mcuq_matmul_s8_mve(&q, input, pixels, k, filter, n, output, n);
        return;
    }
    for (i = 0; i < pixels; i += m, output += m * n) {
        const int32_t fours = (pixels - i) & ~3, t = fours > 0 ? 4 : 1;
        m = fours > 0 ? (fours < most ? fours : most) : 1;
        for (j = 0; j < m; j += t) {
            const int32_t x3 = wk.x0 + 3 * p->stride_w; /* the fourth window's column */
            if (t == 4 && wk.ox + 4 <= p->output_w && (uint32_t)wk.y0 < (uint32_t)wk.y_in && wk.x0 >= 0 &&
                x3 < wk.x_in) { /* four windows inside, on one output row */
                copy4_asm(rows + j * k, input + wk.image + wk.y0 * row_bytes + wk.x0 * g.ic, geo);
                wk.ox += 4;
                wk.x0 = x3 + p->stride_w;
                if (wk.ox == p->output_w) { /* the row's last four: on to the next row, as walk() */
                    wk.ox = 0;
                    wk.x0 = -p->pad_left;
                    wk.y0 += p->stride_h;
                    if (++wk.oy == p->output_h) {
                        wk.oy = 0;
                        wk.y0 = -p->pad_top;
                        wk.image += g.h * row_bytes;
                    }
                }
                continue;
            }
            walk(p, &g, &wk, o, t);
            for (r = 0; r < t; r++) {
                int8_t *dst = rows + (j + r) * k;
                if (o[r].inside) {
                    copy_window_mve(&g, dst, input + o[r].image + o[r].y0 * row_bytes + o[r].x0 * g.ic);
                } else {
                    gather(&g, dst, &o[r], 0, g.kh);
                }
            }
        }
        mcuq_matmul_s8_mve(&q, rows, m, k, filter, n, output, n);
    }
}
#endif

#if PLAIN
/* mcuq_conv2d_s8() past its DSP path, or all of it on cores without one. */
static MCUQ_PLAIN_FALLBACK mcuq_status_t conv_plain(const mcuq_conv_params_t *p, const int8_t *input,
                                                    const int8_t *filter, const int32_t *bias, int8_t *output)
{
    const int32_t group_in = p->input_c / p->groups, group_out = p->output_c / p->groups;
    const int32_t row_size = p->filter_h * p->filter_w * group_in;
    int32_t b, oy, ox, c, ky, kx;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                const int8_t *row = filter; /* the next channel's weights: constant channels have none */
                for (c = 0; c < p->output_c; c++) {
                    const int32_t channel0 = (c / group_out) * group_in;
                    uint32_t acc = 0;
                    if (mcuq_constant_channel(p->channel_data + 4 * c)) {
                        *output++ = mcuq_constant_output(p->channel_data + 4 * c, p->output_offset);
                        continue;
                    }
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
                                          row + (ky * p->filter_w + kx) * group_in,
                                          group_in, p->input_offset);
                        }
                    }
                    row += row_size;
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
#endif

mcuq_status_t mcuq_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output)
{
    if (p->accumulator_bits != 32 || p->groups <= 0 || p->input_c % p->groups || p->output_c % p->groups) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    if (p->groups == 1 && p->filter_h * p->filter_w * p->input_c <= MCUQ_DSP_MAX_DEPTH &&
        (p->bias_folded || bias == NULL)) {
#if MCUQ_MVE
        conv_mve(p, input, filter, output);
#else
        conv_dsp(p, input, filter, output);
#endif
        return MCUQ_OK;
    }
#endif
#if PLAIN
    return conv_plain(p, input, filter, bias, output);
#else
    return MCUQ_ERR_UNSUPPORTED; /* pack said no layer gets here */
#endif
}
