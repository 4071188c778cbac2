/* The int8 matrix products behind CONV_2D and FULLY_CONNECTED on the DSP path (mcuq_support.h):
 * column blocks of int16 lanes times int8 weight rows, two MACs per SMLAD, the input offset
 * already folded into the bias, then the per-channel requantization.
 *
 * A weight word w gives its lanes as SXTB16(w) and w & 0xFF00FF00 (the block's lanes carry the
 * matching factors, see mcuq_support.h), so every SMLAD adds 256 times its two products. A chunk
 * of at most 511 MACs sums to less than 2^23 in magnitude (|w|, |x| <= 128): its accumulator,
 * 256 times the sum, stays inside int32 and shifts back exactly; chunks are added to the int32
 * accumulator, which wraps as TFLM's does. */
#include "mcuq_support.h"

int32_t mcuq_requantize_clamp(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset, int32_t lo,
                              int32_t hi)
{
    return mcuq_offset_clamp(mcuq_requantize_node(acc, multiplier, shift, multiplier == (INT32_C(1) << 30)),
                             output_offset, lo, hi);
}

#if MCUQ_DSP

#define CHUNK_GROUPS 127 /* 508 MACs, and with the last group's up to 3 more at most 511 */

/* Bytes 0 .. n-1 (n < 4) of a row's last, partial group, the rest 0. */
static inline uint32_t partial_word(const int8_t *w, int32_t n)
{
    uint32_t v = (uint8_t)w[0];
    if (n > 1) {
        v |= (uint32_t)(uint8_t)w[1] << 8;
    }
    if (n > 2) {
        v |= (uint32_t)(uint8_t)w[2] << 16;
    }
    return v;
}

/* a + 256 * the products of one group: block words e and o of a row with weight word v. */
static inline int32_t mac4(uint32_t e, uint32_t o, uint32_t v, int32_t a)
{
    return mcuq_smlad(o, v & MCUQ_LANE_MASK, mcuq_smlad(e, mcuq_sxtb16(v), a));
}

/* y clamped to [lo, hi]; `full`: that is the int8 range (one SSAT). */
static inline int32_t clamp(int32_t y, int32_t lo, int32_t hi, int32_t full)
{
    if (full) {
        return mcuq_ssat8(y);
    }
    return y < lo ? lo : (y > hi ? hi : y);
}

#define SUM_CHANNELS 32 /* output channels summed before their requantization pass */

/* Pass 1 of a 2-row block: sums_r[c] = row_bias[r] + the sum of block row r times weight row c
 * (modulo 2^32) for channels c < n <= SUM_CHANNELS, weight rows w, w + stride, ...; chunks of k
 * beyond 511 are added to what the previous chunks left (first: the chunk starting at k0 = 0).
 * A last odd channel is computed twice and also written to sums_r[n]. */
static void sums_2x2(const uint32_t *block, int32_t k, int32_t k0, const int8_t *w, int32_t stride, int32_t n,
                     const int32_t *row_bias, int32_t *sums0, int32_t *sums1)
{
    const int32_t rb0 = row_bias[0], rb1 = row_bias[1];
    int32_t c;
    for (c = 0; c < n; c += 2, w += 2 * stride) {
        /* channels c and c + 1; a last odd channel is computed twice */
        const int8_t *w0 = w, *w1 = c + 1 < n ? w + stride : w;
        const uint32_t *x = block, *end = block + 4 * (k >> 2);
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        for (; x != end; x += 4, w0 += 4, w1 += 4) {
            const uint32_t v0 = mcuq_read_u32(w0), v1 = mcuq_read_u32(w1);
            const uint32_t l0 = mcuq_sxtb16(v0), h0 = v0 & MCUQ_LANE_MASK;
            const uint32_t l1 = mcuq_sxtb16(v1), h1 = v1 & MCUQ_LANE_MASK;
            uint32_t t = x[0];
            a00 = mcuq_smlad(t, l0, a00);
            a10 = mcuq_smlad(t, l1, a10);
            t = x[2];
            a01 = mcuq_smlad(t, l0, a01);
            a11 = mcuq_smlad(t, l1, a11);
            t = x[1];
            a00 = mcuq_smlad(t, h0, a00);
            a10 = mcuq_smlad(t, h1, a10);
            t = x[3];
            a01 = mcuq_smlad(t, h0, a01);
            a11 = mcuq_smlad(t, h1, a11);
        }
        if (k & 3) {
            const uint32_t v0 = partial_word(w0, k & 3), v1 = partial_word(w1, k & 3);
            a00 = mac4(x[0], x[1], v0, a00);
            a01 = mac4(x[2], x[3], v0, a01);
            a10 = mac4(x[0], x[1], v1, a10);
            a11 = mac4(x[2], x[3], v1, a11);
        }
        if (k0 == 0) {
            sums0[c] = mcuq_add_wrap(rb0, a00 >> 8);
            sums1[c] = mcuq_add_wrap(rb1, a01 >> 8);
            sums0[c + 1] = mcuq_add_wrap(rb0, a10 >> 8);
            sums1[c + 1] = mcuq_add_wrap(rb1, a11 >> 8);
        } else {
            sums0[c] = mcuq_add_wrap(sums0[c], a00 >> 8);
            sums1[c] = mcuq_add_wrap(sums1[c], a01 >> 8);
            sums0[c + 1] = mcuq_add_wrap(sums0[c + 1], a10 >> 8);
            sums1[c + 1] = mcuq_add_wrap(sums1[c + 1], a11 >> 8);
        }
    }
}

/* Pass 2: the outputs of `rows` rows for channels c < n from sums_r[c] and channel_data. */
static inline __attribute__((always_inline)) void outputs(const mcuq_matmul_t *q, const int32_t *cd, int32_t n,
                                                          int32_t rows, const int32_t *sums0,
                                                          const int32_t *sums1, int8_t *out0, int8_t *out1,
                                                          int32_t full)
{
    const int32_t zp = q->output_offset, lo = q->act_min, hi = q->act_max;
    int32_t c;
    for (c = 0; c < n; c++, cd += 4) {
        const int32_t b = cd[0], m = cd[1], r = cd[2], h = cd[3];
        if (r > 0) {
            out0[c] = (int8_t)clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums0[c]), m, r, h, zp), lo, hi, full);
            if (rows == 2) {
                out1[c] = (int8_t)clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums1[c]), m, r, h, zp), lo, hi, full);
            }
        } else {
            out0[c] = (int8_t)mcuq_requantize_clamp(mcuq_add_wrap(b, sums0[c]), m, h, zp, lo, hi);
            if (rows == 2) {
                out1[c] = (int8_t)mcuq_requantize_clamp(mcuq_add_wrap(b, sums1[c]), m, h, zp, lo, hi);
            }
        }
    }
}

void mcuq_matmul_s8_rows2(const mcuq_matmul_t *q, const uint32_t *block, int32_t k, const int8_t *w,
                          int32_t n, int8_t *out0, int8_t *out1)
{
    const mcuq_matmul_t local = *q; /* output stores may not alias it: no reloads */
    const int32_t full = local.act_min == -128 && local.act_max == 127;
    int32_t sums[2 * (SUM_CHANNELS + 1)]; /* rows 0 and 1, each with room for an odd channel's repeat */
    int32_t c, k0;
    for (c = 0; c < n; c += SUM_CHANNELS) {
        const int32_t m = n - c < SUM_CHANNELS ? n - c : SUM_CHANNELS;
        for (k0 = 0; k0 < k; k0 += 4 * CHUNK_GROUPS) {
            const int32_t kc = k - k0 <= 4 * CHUNK_GROUPS + 3 ? k - k0 : 4 * CHUNK_GROUPS;
            sums_2x2(block + 4 * (k0 >> 2), kc, k0, w + c * k + k0, k, m, local.row_bias, sums,
                     sums + SUM_CHANNELS + 1);
            if (kc != 4 * CHUNK_GROUPS) {
                break;
            }
        }
        if (full) {
            outputs(&local, local.channel_data + 4 * c, m, 2, sums, sums + SUM_CHANNELS + 1, out0 + c, out1 + c, 1);
        } else {
            outputs(&local, local.channel_data + 4 * c, m, 2, sums, sums + SUM_CHANNELS + 1, out0 + c, out1 + c, 0);
        }
    }
}

/* Pass 1 of a 1-row block: sums[c] as sums_2x2() does for rows 0 and 1, three channels at a
 * time (a last one or two repeat the first of their three, written to sums[n] and sums[n + 1]). */
static void sums_1x3(const uint32_t *block, int32_t k, int32_t k0, const int8_t *w, int32_t stride, int32_t n,
                     int32_t row_bias, int32_t *sums)
{
    int32_t c;
    for (c = 0; c < n; c += 3, w += 3 * stride) {
        const int8_t *w0 = w, *w1 = c + 1 < n ? w + stride : w, *w2 = c + 2 < n ? w + 2 * stride : w;
        const uint32_t *x = block, *end = block + 2 * (k >> 2);
        int32_t a0 = 0, a1 = 0, a2 = 0;
        for (; x != end; x += 2, w0 += 4, w1 += 4, w2 += 4) {
            const uint32_t e = x[0], o = x[1];
            a0 = mac4(e, o, mcuq_read_u32(w0), a0);
            a1 = mac4(e, o, mcuq_read_u32(w1), a1);
            a2 = mac4(e, o, mcuq_read_u32(w2), a2);
        }
        if (k & 3) {
            a0 = mac4(x[0], x[1], partial_word(w0, k & 3), a0);
            a1 = mac4(x[0], x[1], partial_word(w1, k & 3), a1);
            a2 = mac4(x[0], x[1], partial_word(w2, k & 3), a2);
        }
        if (k0 == 0) {
            sums[c] = mcuq_add_wrap(row_bias, a0 >> 8);
            sums[c + 1] = mcuq_add_wrap(row_bias, a1 >> 8);
            sums[c + 2] = mcuq_add_wrap(row_bias, a2 >> 8);
        } else {
            sums[c] = mcuq_add_wrap(sums[c], a0 >> 8);
            sums[c + 1] = mcuq_add_wrap(sums[c + 1], a1 >> 8);
            sums[c + 2] = mcuq_add_wrap(sums[c + 2], a2 >> 8);
        }
    }
}

void mcuq_matmul_s8_rows1(const mcuq_matmul_t *q, const uint32_t *block, int32_t k, const int8_t *w,
                          int32_t n, int8_t *out)
{
    const mcuq_matmul_t local = *q;
    const int32_t full = local.act_min == -128 && local.act_max == 127;
    int32_t sums[SUM_CHANNELS + 2]; /* room for sums_1x3()'s repeats past n */
    int32_t c, k0;
    for (c = 0; c < n; c += SUM_CHANNELS) {
        const int32_t m = n - c < SUM_CHANNELS ? n - c : SUM_CHANNELS;
        for (k0 = 0; k0 < k; k0 += 4 * CHUNK_GROUPS) {
            const int32_t kc = k - k0 <= 4 * CHUNK_GROUPS + 3 ? k - k0 : 4 * CHUNK_GROUPS;
            sums_1x3(block + 2 * (k0 >> 2), kc, k0, w + c * k + k0, k, m, local.row_bias[0], sums);
            if (kc != 4 * CHUNK_GROUPS) {
                break;
            }
        }
        if (full) {
            outputs(&local, local.channel_data + 4 * c, m, 1, sums, sums, out + c, out + c, 1);
        } else {
            outputs(&local, local.channel_data + 4 * c, m, 1, sums, sums, out + c, out + c, 0);
        }
    }
}

/* Pass 1 of a 4-row block with k <= 511: sums[r * SUM_CHANNELS + c] = the sum of block row r
 * times weight row c (modulo 2^32), one weight row at a time: its unpacking serves four rows. */
static void sums_4x1(const uint32_t *block, int32_t k, const int8_t *w, int32_t n, int32_t *sums)
{
    int32_t c;
    for (c = 0; c < n; c++) {
        const uint32_t *x = block, *end = block + 8 * (k >> 2);
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (; x != end; x += 8, w += 4) {
            const uint32_t v = mcuq_read_u32(w), l = mcuq_sxtb16(v), h = v & MCUQ_LANE_MASK;
            a0 = mcuq_smlad(x[0], l, a0);
            a1 = mcuq_smlad(x[2], l, a1);
            a2 = mcuq_smlad(x[4], l, a2);
            a3 = mcuq_smlad(x[6], l, a3);
            a0 = mcuq_smlad(x[1], h, a0);
            a1 = mcuq_smlad(x[3], h, a1);
            a2 = mcuq_smlad(x[5], h, a2);
            a3 = mcuq_smlad(x[7], h, a3);
        }
        if (k & 3) {
            const uint32_t v = partial_word(w, k & 3);
            a0 = mac4(x[0], x[1], v, a0);
            a1 = mac4(x[2], x[3], v, a1);
            a2 = mac4(x[4], x[5], v, a2);
            a3 = mac4(x[6], x[7], v, a3);
            w += k & 3;
        }
        sums[c] = a0 >> 8;
        sums[SUM_CHANNELS + c] = a1 >> 8;
        sums[2 * SUM_CHANNELS + c] = a2 >> 8;
        sums[3 * SUM_CHANNELS + c] = a3 >> 8;
    }
}

/* Pass 2 for four rows: channel c's row of channel_data read once for its four outputs. */
static inline __attribute__((always_inline)) void outputs4(const mcuq_matmul_t *q, const int32_t *cd, int32_t n,
                                                           const int32_t *sums, int8_t *out, int32_t stride,
                                                           int32_t full)
{
    const int32_t zp = q->output_offset, lo = q->act_min, hi = q->act_max;
    int32_t c, i;
    for (c = 0; c < n; c++, cd += 4) {
        const int32_t b = cd[0], m = cd[1], r = cd[2], h = cd[3];
        if (r > 0) {
            const int32_t y0 = clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums[c]), m, r, h, zp), lo, hi, full);
            const int32_t y1 =
                clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums[SUM_CHANNELS + c]), m, r, h, zp), lo, hi, full);
            const int32_t y2 =
                clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums[2 * SUM_CHANNELS + c]), m, r, h, zp), lo, hi, full);
            const int32_t y3 =
                clamp(mcuq_requantize_fast(mcuq_add_wrap(b, sums[3 * SUM_CHANNELS + c]), m, r, h, zp), lo, hi, full);
            out[c] = (int8_t)y0;
            out[stride + c] = (int8_t)y1;
            out[2 * stride + c] = (int8_t)y2;
            out[3 * stride + c] = (int8_t)y3;
        } else {
            for (i = 0; i < 4; i++) {
                out[i * stride + c] =
                    (int8_t)mcuq_requantize_clamp(mcuq_add_wrap(b, sums[i * SUM_CHANNELS + c]), m, h, zp, lo, hi);
            }
        }
    }
}

void mcuq_matmul_s8_rows4(const mcuq_matmul_t *q, const uint32_t *block, int32_t k, const int8_t *w,
                          int32_t n, int8_t *out, int32_t stride)
{
    const mcuq_matmul_t local = *q;
    const int32_t full = local.act_min == -128 && local.act_max == 127;
    int32_t sums[4 * SUM_CHANNELS];
    int32_t c;
    for (c = 0; c < n; c += SUM_CHANNELS) {
        const int32_t m = n - c < SUM_CHANNELS ? n - c : SUM_CHANNELS;
        sums_4x1(block, k, w + c * k, m, sums);
        if (full) {
            outputs4(&local, local.channel_data + 4 * c, m, sums, out + c, stride, 1);
        } else {
            outputs4(&local, local.channel_data + 4 * c, m, sums, out + c, stride, 0);
        }
    }
}

#endif /* MCUQ_DSP */
