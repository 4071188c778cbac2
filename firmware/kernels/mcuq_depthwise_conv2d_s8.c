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

/* One tap for 4 channels: input word x times the tap's unpacked weights (we, wo) into a[0..3]. */
static inline __attribute__((always_inline)) void mac4(uint32_t x, uint32_t we, uint32_t wo, int32_t *a)
{
    const uint32_t xe = mcuq_sxtb16(x), xo = x & MCUQ_LANE_MASK;
    a[0] = mcuq_smlabb(xe, we, a[0]);
    a[2] = mcuq_smlatt(xe, we, a[2]);
    a[1] = mcuq_smlabb(xo, wo, a[1]);
    a[3] = mcuq_smlatt(xo, wo, a[3]);
}

/* mac4 with tap k's weights w[2k], w[2k + 1] (k a constant), read with one LDRD. */
#define MAC4K(x, w, k, a)                                                                           \
    do {                                                                                            \
        uint32_t we_, wo_;                                                                          \
        MCUQ_LOAD2(we_, wo_, w, 2 * (k));                                                           \
        mac4(x, we_, wo_, a);                                                                       \
    } while (0)

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

#if defined(__ARM_FEATURE_DSP)
/* SMMLAR: the top word of acc * 2^32 + a * b + 2^31 (modulo 2^64). */
static inline int32_t smmlar(int32_t a, int32_t b, int32_t acc)
{
    int32_t y;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(y) : "r"(a), "r"(b), "r"(acc));
    return y;
}
#else
static inline int32_t smmlar(int32_t a, int32_t b, int32_t acc)
{
    const uint64_t s = ((uint64_t)(uint32_t)acc << 32) + (uint64_t)((int64_t)a * b) + UINT64_C(0x80000000);
    return mcuq_wrap32((uint32_t)(s >> 32));
}
#endif

/* The 3x3 paths requantize with SMMLAR. For channel_data {b, M, r, h} (r > 0) and a = b + sum,
 * mcuq_requantize_fast(a) = floor((h 2^32 + 2^30 - 2^31 [a < 0] + a M) / 2^(32 + r)) + zp
 *                         = (SMMLAR(2a, M, 2h + zp 2^(r + 1)) - [a < 0]) >> (r + 1)
 * (every term doubled, so that the rounding constant is SMMLAR's 2^31; zp enters as a multiple
 * of 2^(r + 1)). Exact while 2a and the SMMLAR sum fit in 32 bits: |b| <= 2^29 (|sum| < 2^18
 * over 9 taps), r < 22 (|zp 2^(r + 1)| < 2^29) and 0 <= h <= 2^21, checked per layer (rq_fits).
 * rq holds {2b, 2h + zp 2^(r + 1)} per channel of the chunk. */
#define RQ_MAX_R 21
#define RQ_MAX_B (INT32_C(1) << 29)

/* 1 when every channel of the layer has 0 < r <= RQ_MAX_R and |b| <= RQ_MAX_B. */
static int32_t rq_fits(const int32_t *channel_data, int32_t n)
{
    int32_t c;
    for (c = 0; c < n; c++, channel_data += 4) {
        const int32_t b = channel_data[0], r = channel_data[2], h = channel_data[3];
        if (r <= 0 || r > RQ_MAX_R || b > RQ_MAX_B || b < -RQ_MAX_B || h > (1 << RQ_MAX_R) || h < 0) {
            return 0;
        }
    }
    return 1;
}

/* rq[2k], rq[2k + 1] of channels c0 + k, k < n. */
static void rq_fill(const int32_t *channel_data, int32_t zp, int32_t c0, int32_t n, int32_t *rq)
{
    const int32_t *cd = channel_data + 4 * c0;
    int32_t k;
    for (k = 0; k < n; k++, cd += 4, rq += 2) {
        rq[0] = (int32_t)((uint32_t)cd[0] << 1);
        rq[1] = (int32_t)(((uint32_t)cd[3] << 1) + ((uint32_t)zp << (cd[2] + 1)));
    }
}

/* The int8 output from s2 = twice the sum, a channel's rq pair (b2, h2), M and r. */
#define RQ_OUT(o, s2, b2, h2, m, r)                                                                 \
    do {                                                                                            \
        const int32_t t_ = mcuq_add_wrap(b2, s2);                                                   \
        (o) = (int8_t)mcuq_ssat8((smmlar(t_, m, h2) + (t_ >> 31)) >> ((r) + 1));                    \
    } while (0)

/* o0 (and o1) = the outputs of channel j (a constant) of channel_data rows cd and rq pairs rq,
 * from twice their sums s0 (and s1); the four values come with two LDRDs. */
#define RQ_CH(o0, s0, cd, rq, j)                                                                    \
    do {                                                                                            \
        int32_t m_, r_, b_, h_;                                                                     \
        MCUQ_LOAD2(m_, r_, cd, 4 * (j) + 1);                                                        \
        MCUQ_LOAD2(b_, h_, rq, 2 * (j));                                                            \
        RQ_OUT(o0, s0, b_, h_, m_, r_);                                                             \
    } while (0)
#define RQ_CH2(o0, o1, s0, s1, cd, rq, j)                                                           \
    do {                                                                                            \
        int32_t m_, r_, b_, h_;                                                                     \
        MCUQ_LOAD2(m_, r_, cd, 4 * (j) + 1);                                                        \
        MCUQ_LOAD2(b_, h_, rq, 2 * (j));                                                            \
        RQ_OUT(o0, s0, b_, h_, m_, r_);                                                             \
        RQ_OUT(o1, s1, b_, h_, m_, r_);                                                             \
    } while (0)

/* One output pixel, channel groups [g0, g0 + groups) (weights unpacked from group g0 on); tap t
 * of the window reads tap[t] (an input pixel, or pad outside the image). */
static void pixel4(const mcuq_conv_params_t *p, const int8_t *const *tap, int32_t taps, const uint32_t *wbuf,
                   int32_t g0, int32_t groups, int8_t *out, int32_t full)
{
    const int32_t zp = p->output_offset, lo = p->act_min, hi = p->act_max;
    int32_t g, t;
    for (g = 0; g < groups; g++) {
        const int32_t c = 4 * (g0 + g);
        const uint32_t *w = wbuf + 2 * taps * g;
        const int32_t *cd = p->channel_data + 4 * c;
        int32_t a[4] = {0, 0, 0, 0};
        for (t = 0; t < taps; t++) {
            mac4(mcuq_read_u32(tap[t] + c), w[2 * t], w[2 * t + 1], a);
        }
        /* channels 1 and 3 summed 256 times their products */
        out[c] = out1(cd, a[0], zp, lo, hi, full);
        out[c + 1] = out1(cd + 4, a[1] >> 8, zp, lo, hi, full);
        out[c + 2] = out1(cd + 8, a[2], zp, lo, hi, full);
        out[c + 3] = out1(cd + 12, a[3] >> 8, zp, lo, hi, full);
    }
}

/* Twice a sum of the even channels, and of the odd ones (summed 256 times their products). */
#define TWICE(a) ((int32_t)((uint32_t)(a) << 1))
#define TWICE_ODD(a) ((a) >> 7)

/* One output pixel of a 3x3 window, channels [c, end) of the chunk whose weights start at w,
 * channel_data at cd and rq pairs at rq; tap t reads tap[t] (an input pixel, or pad outside the
 * image). */
static MCUQ_NO_PRESCHEDULE void pixel3x3(const int8_t *const *tap, const uint32_t *w, const int32_t *cd,
                                         const int32_t *rq, int32_t c, int32_t end, int8_t *out)
{
    for (; c != end; c += 4, w += 18, cd += 16, rq += 8) {
        int32_t a[4] = {0, 0, 0, 0};
        MAC4K(mcuq_read_u32(tap[0] + c), w, 0, a);
        MAC4K(mcuq_read_u32(tap[1] + c), w, 1, a);
        MAC4K(mcuq_read_u32(tap[2] + c), w, 2, a);
        MAC4K(mcuq_read_u32(tap[3] + c), w, 3, a);
        MAC4K(mcuq_read_u32(tap[4] + c), w, 4, a);
        MAC4K(mcuq_read_u32(tap[5] + c), w, 5, a);
        MAC4K(mcuq_read_u32(tap[6] + c), w, 6, a);
        MAC4K(mcuq_read_u32(tap[7] + c), w, 7, a);
        MAC4K(mcuq_read_u32(tap[8] + c), w, 8, a);
        RQ_CH(out[c], TWICE(a[0]), cd, rq, 0);
        RQ_CH(out[c + 1], TWICE_ODD(a[1]), cd, rq, 1);
        RQ_CH(out[c + 2], TWICE(a[2]), cd, rq, 2);
        RQ_CH(out[c + 3], TWICE_ODD(a[3]), cd, rq, 3);
    }
}

/* One row of a 3x3 window for two output pixels A and B one column apart (stride == dilation):
 * the row's input words at r, r + d, r + 2d, r + 3d, unpacked by UNPACK (the even or the odd
 * channels of the group), times the row's weights w[0], w[2], w[4]; A's sums go to s[0] (bottom
 * lanes) and s[1] (top), B's to s[2] and s[3]. */
#define PAIR_ROW(UNPACK, r, d, w, s)                                                                \
    do {                                                                                            \
        const uint32_t w0 = (w)[0], w1 = (w)[2], w2 = (w)[4];                                       \
        uint32_t v = UNPACK(mcuq_read_u32(r));                                                      \
        s[0] = mcuq_smlabb(v, w0, s[0]);                                                            \
        s[1] = mcuq_smlatt(v, w0, s[1]);                                                            \
        v = UNPACK(mcuq_read_u32((r) + (d)));                                                       \
        s[0] = mcuq_smlabb(v, w1, s[0]);                                                            \
        s[1] = mcuq_smlatt(v, w1, s[1]);                                                            \
        s[2] = mcuq_smlabb(v, w0, s[2]);                                                            \
        s[3] = mcuq_smlatt(v, w0, s[3]);                                                            \
        v = UNPACK(mcuq_read_u32((r) + 2 * (d)));                                                   \
        s[0] = mcuq_smlabb(v, w2, s[0]);                                                            \
        s[1] = mcuq_smlatt(v, w2, s[1]);                                                            \
        s[2] = mcuq_smlabb(v, w1, s[2]);                                                            \
        s[3] = mcuq_smlatt(v, w1, s[3]);                                                            \
        v = UNPACK(mcuq_read_u32((r) + 3 * (d)));                                                   \
        s[2] = mcuq_smlabb(v, w2, s[2]);                                                            \
        s[3] = mcuq_smlatt(v, w2, s[3]);                                                            \
    } while (0)
#define EVEN(v) mcuq_sxtb16(v)
#define ODD(v) ((v) & MCUQ_LANE_MASK)

/* Two output pixels one column apart (stride_w == dilation_w), both 3x3 windows inside the image,
 * as pixel3x3 (x: the first window's top left input pixel, channel 0; the second pixel's outputs
 * `step` bytes after the first's). Each row's four input words serve both pixels; the even and
 * the odd channels of a group run one after the other, four sums each, so nothing spills. */
static MCUQ_NO_PRESCHEDULE void pair3x3(const int8_t *x, int32_t row, int32_t d, const uint32_t *w,
                                        const int32_t *cd, const int32_t *rq, int32_t c, int32_t end,
                                        int8_t *out, int32_t step)
{
    for (; c != end; c += 4, w += 18, cd += 16, rq += 8) {
        const int8_t *xc = x + c;
        int8_t *o = out + c;
        int32_t e[4] = {0, 0, 0, 0}, od[4] = {0, 0, 0, 0};
        PAIR_ROW(EVEN, xc, d, w, e);
        PAIR_ROW(EVEN, xc + row, d, w + 6, e);
        PAIR_ROW(EVEN, xc + 2 * row, d, w + 12, e);
        MCUQ_RELOAD();
        PAIR_ROW(ODD, xc, d, w + 1, od);
        PAIR_ROW(ODD, xc + row, d, w + 7, od);
        PAIR_ROW(ODD, xc + 2 * row, d, w + 13, od);
        RQ_CH2(o[0], o[step], TWICE(e[0]), TWICE(e[2]), cd, rq, 0);
        RQ_CH2(o[1], o[step + 1], TWICE_ODD(od[0]), TWICE_ODD(od[2]), cd, rq, 1);
        RQ_CH2(o[2], o[step + 2], TWICE(e[1]), TWICE(e[3]), cd, rq, 2);
        RQ_CH2(o[3], o[step + 3], TWICE_ODD(od[1]), TWICE_ODD(od[3]), cd, rq, 3);
    }
}
#undef PAIR_ROW
#undef EVEN
#undef ODD

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
 * channel chunks whose unpacked weights fit the stack buffer, all pixels per chunk. 3x3 windows
 * with the int8 clamp and rq_fits (the models' layers: `fast`) run pairs of neighbouring
 * pixels inside the image through pair3x3 and every other pixel through pixel3x3; other layers
 * through pixel4. Channels past the last multiple of 4 go one by one. */
static void depthwise_dsp(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter, int8_t *output)
{
    const int32_t full = p->act_min == -128 && p->act_max == 127;
    int8_t pad[MCUQ_DSP_MAX_DEPTH];
    uint32_t wbuf[MCUQ_DSP_BLOCK_WORDS];
    int32_t rq[2 * 4 * (MCUQ_DSP_BLOCK_WORDS / 18)]; /* a 3x3 chunk's channels */
    const int8_t *tap[MAX_TAPS];
    const int32_t channels = p->input_c, taps = p->filter_h * p->filter_w;
    const int32_t all_groups = channels >> 2, chunk = MCUQ_DSP_BLOCK_WORDS / (2 * taps);
    const int32_t fast = full && p->filter_h == 3 && p->filter_w == 3 && rq_fits(p->channel_data, channels);
    const int32_t pairs = fast && p->stride_w == p->dilation_w;
    const int32_t span_h = 2 * p->dilation_h, span_w = 2 * p->dilation_w;
    const int32_t row = p->dilation_h * p->input_w * channels, d = p->dilation_w * channels;
    int32_t g0, b, oy, ox, c, t;
    memset(pad, -p->input_offset, (size_t)channels);
    for (g0 = 0; g0 < all_groups; g0 += chunk) {
        const int32_t groups = all_groups - g0 < chunk ? all_groups - g0 : chunk;
        int8_t *out = output;
        const int32_t c0 = 4 * g0, end = 4 * (g0 + groups);
        const int32_t *cd = p->channel_data + 4 * c0;
        unpack_weights(filter, channels, taps, c0, groups, wbuf);
        if (fast) {
            rq_fill(p->channel_data, p->output_offset, c0, end - c0, rq);
        }
        for (b = 0; b < p->batches; b++) {
            for (oy = 0; oy < p->output_h; oy++) {
                const int32_t y0 = oy * p->stride_h - p->pad_top;
                const int32_t rows_in = fast && y0 >= 0 && y0 + span_h < p->input_h;
                const int8_t *in_row = rows_in ? input + (b * p->input_h + y0) * p->input_w * channels : input;
                for (ox = 0; ox < p->output_w; ox++, out += channels) {
                    const int32_t x0 = ox * p->stride_w - p->pad_left;
                    const int32_t inside = rows_in && x0 >= 0 && x0 + span_w < p->input_w;
                    if (pairs && inside && ox + 1 < p->output_w && x0 + p->stride_w + span_w < p->input_w) {
                        pair3x3(in_row + x0 * channels, row, d, wbuf, cd, rq, c0, end, out, channels);
                        ox++;
                        out += channels;
                    } else if (inside) {
                        const int8_t *x = in_row + x0 * channels;
                        for (t = 0; t < 9; t += 3, x += row) {
                            tap[t] = x;
                            tap[t + 1] = x + d;
                            tap[t + 2] = x + 2 * d;
                        }
                        pixel3x3(tap, wbuf, cd, rq, c0, end, out);
                    } else {
                        window_taps(p, input, pad, b, oy, ox, tap);
                        if (fast) {
                            pixel3x3(tap, wbuf, cd, rq, c0, end, out);
                        } else {
                            pixel4(p, tap, taps, wbuf, g0, groups, out, full);
                        }
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
