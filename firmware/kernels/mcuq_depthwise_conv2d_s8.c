/* DEPTHWISE_CONV_2D, int8 activations and filter, int32 accumulator (contract in mcuq_kernels.h). */
#include <stddef.h>
#include <string.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* `mcuq build` passes MCUQ_PLAIN_DEPTHWISE_CONV2D_S8=0 when no layer of the model needs depthwise_plain() on a DSP
 * core (mcuq.pack.plain_fallbacks); then it is left out. */
#ifndef MCUQ_PLAIN_DEPTHWISE_CONV2D_S8
#define MCUQ_PLAIN_DEPTHWISE_CONV2D_S8 1
#endif
#define PLAIN (!MCUQ_DSP || MCUQ_PLAIN_DEPTHWISE_CONV2D_S8)

#if MCUQ_DSP
#define MAX_TAPS 25 /* windows up to 5x5 (and 1xN, Nx1 up to 25 taps) take the DSP path */

/* The DSP path works on channels in fours. A word of 4 input channels x = [x0 x1 x2 x3] gives
 * SXTB16(x) = (x0, x2) and x & 0xFF00FF00 = (256 x1, 256 x3); the weights, unpacked once per
 * call into (w0, w2) and (w1, w3), meet them in SMLABB / SMLATT. Channels 1 and 3 thus sum 256
 * times their products (at most 25 taps: |sum| < 2^31; 512 times with the 3x3 paths' doubled
 * weights, 9 taps) and shift back exactly. Every tap of a window reads its input pixel or,
 * outside the image, `pad` (-input_offset in every channel, a term that vanishes: the input
 * offset is in channel_data's bias). */

/* Both int16 lanes of v doubled (SADD16 v, v; the lanes hold int8 values). */
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t twice16(uint32_t v)
{
    uint32_t y;
    __asm__("sadd16 %0, %1, %1" : "=r"(y) : "r"(v));
    return y;
}
#else
static inline uint32_t twice16(uint32_t v) { return ((v << 1) & 0xFFFFu) | (((v >> 16) << 17) & 0xFFFF0000u); }
#endif

/* wbuf[2 * (g * taps + t)] = SXTB16 of tap t's weights for channels c0 + 4g .. + 3, and
 * [.. + 1] = SXTB16 of them rotated by 8; with `twice`, every lane doubled (the 3x3 paths: their
 * requantization takes twice the sum). */
static void unpack_weights(const int8_t *filter, int32_t channels, int32_t taps, int32_t c0, int32_t groups,
                           int32_t twice, uint32_t *wbuf)
{
    int32_t g, t;
    for (g = 0; g < groups; g++) {
        const int8_t *w = filter + c0 + 4 * g;
        for (t = 0; t < taps; t++, w += channels, wbuf += 2) {
            const uint32_t v = mcuq_read_u32(w), e = mcuq_sxtb16(v), o = mcuq_sxtb16_ror8(v);
            wbuf[0] = twice ? twice16(e) : e;
            wbuf[1] = twice ? twice16(o) : o;
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

/* The 3x3 paths requantize with SMMLAR. For channel_data {b, M, r, h} (r > 0) and a = b + sum,
 * mcuq_requantize_fast(a) = floor((h 2^32 + 2^30 - 2^31 [a < 0] + a M) / 2^(32 + r)) + zp
 *                         = (SMMLAR(2a, M, 2h + zp 2^(r + 1)) - [a < 0]) >> (r + 1)
 * (every term doubled, so that the rounding constant is SMMLAR's 2^31; zp enters as a multiple
 * of 2^(r + 1)). Exact while 2a and the SMMLAR sum fit in 32 bits: |b| <= 2^29 (|sum| < 2^18
 * over 9 taps), r < 22 (|zp 2^(r + 1)| < 2^29) and 0 <= h <= 2^21, checked per layer (rq_fits).
 * rq holds {2b, 2h + zp 2^(r + 1)} per channel of the chunk. */
#define RQ_MAX_R 21
#define RQ_MAX_B (INT32_C(1) << 29)

/* 1 when every channel of the layer has 0 < r <= RQ_MAX_R, |b| <= RQ_MAX_B and 0 <= h <= 2^21. */
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
        (o) = (int8_t)mcuq_ssat8((mcuq_smmlar(t_, m, h2) + (t_ >> 31)) >> ((r) + 1));                    \
    } while (0)

/* o0 = the output of channel j (a constant) of channel_data rows cd and rq pairs rq, from twice
 * its sum s0; the four values come with two LDRDs. */
#define RQ_CH(o0, s0, cd, rq, j)                                                                    \
    do {                                                                                            \
        int32_t m_, r_, b_, h_;                                                                     \
        MCUQ_LOAD2(m_, r_, cd, 4 * (j) + 1);                                                        \
        MCUQ_LOAD2(b_, h_, rq, 2 * (j));                                                            \
        RQ_OUT(o0, s0, b_, h_, m_, r_);                                                             \
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

/* Twice the sum of an odd channel, summed 512 times its products with doubled weights. */
#define TWICE_ODD(a) ((a) >> 8)

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
        RQ_CH(out[c], a[0], cd, rq, 0);
        RQ_CH(out[c + 1], TWICE_ODD(a[1]), cd, rq, 1);
        RQ_CH(out[c + 2], a[2], cd, rq, 2);
        RQ_CH(out[c + 3], TWICE_ODD(a[3]), cd, rq, 3);
    }
}

/* ---- runs of 4 pixels: 3x3, stride_w 1, dilation_w 1 ------------------------------------------
 * Four neighbouring output pixels A-D of one row, all six window columns inside the image (rows
 * may be pad rows: a column step of 0 over `pad`), channel groups of the chunk one after the
 * other: each row's six input words serve up to three pixels, its three unpacked weights all
 * four. The even channels (SXTB16: lanes c0, c2) and the odd ones (SXTB16 ROR 8: c1, c3) run one
 * after the other with eight sums each, every half requantized as soon as it ends. State in a
 * run4_t (the assembly copies it to its frame and walks it there); without the DSP extension
 * (the host tests) run4 is its C twin. */
typedef struct {
    const int8_t *x; /* window row r: input at the run's column 0 (+ the group's channel), or pad */
    int32_t d;       /* its column step: channels, or 0 for a pad row */
} run4_row_t;
typedef struct {
    run4_row_t row[3];       /* [0], [8], [16] */
    const uint32_t *w;       /* [24] unpacked weights of the group */
    const int32_t *cd;       /* [28] its channel_data rows */
    const int32_t *rq;       /* [32] its rq pairs */
    int8_t *out;             /* [36] pixel A's output, the group's first channel */
    int32_t step;            /* [40] bytes from one pixel's outputs to the next (channels) */
    const uint32_t *wend;    /* [44] the chunk's weights end */
} run4_t;

#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
/* Registers while a window row is summed: r1 column address, r11 column step, lr the column word,
 * r0 / r2 / r12 the row's weights for taps 0 / 1 / 2 (one LDM of five words: the other half's
 * two in r1 and r11 until those are loaded), r3-r6 pixels A-D's bottom-lane sums, r7-r10 their
 * top-lane sums. Frame: [sp, #0] the top-lane sums while the bottom lane is requantized,
 * [sp, #16] the run4_t. */
#define R4_MLA(lo, hi, w) "smlabb " lo ", lr, " w ", " lo "\n\t" "smlatt " hi ", lr, " w ", " hi "\n\t"
#define R4_INIT(lo, hi, w) "smlabb " lo ", lr, " w ", r6\n\t" "smlatt " hi ", lr, " w ", r10\n\t"
/* Window row at frame offset `row`, its weights AT bytes into the group's, columns unpacked by
 * UNPACK; FIRST: in row 0 R4_INIT, which starts the sums from the two channels' 2b (loaded by
 * BIAS into r6, r10, free until pixel D's first product), else R4_MLA. */
#define R4_ROW(FIRST, row, AT, UNPACK, BIAS)                                                               \
    "ldr    lr, [sp, #40]\n\t" AT                                                                          \
    "ldm    lr, {r0, r1, r2, r11, r12}\n\t"                                                                \
    "ldrd   r1, r11, [sp, #" #row "]\n\t" BIAS                                                             \
    "ldr    lr, [r1]\n\t" UNPACK FIRST("r3", "r7", "r0")                                                   \
    "ldr    lr, [r1, r11]\n\t" UNPACK R4_MLA("r3", "r7", "r2") FIRST("r4", "r8", "r0")                     \
    "add    r1, r1, r11, lsl #1\n\t"                                                                       \
    "ldr    lr, [r1]\n\t" UNPACK R4_MLA("r3", "r7", "r12") R4_MLA("r4", "r8", "r2") FIRST("r5", "r9", "r0") \
    "ldr    lr, [r1, r11]\n\t" UNPACK R4_MLA("r4", "r8", "r12") R4_MLA("r5", "r9", "r2")                   \
    FIRST("r6", "r10", "r0")                                                                               \
    "add    r1, r1, r11, lsl #1\n\t"                                                                       \
    "ldr    lr, [r1]\n\t" UNPACK R4_MLA("r5", "r9", "r12") R4_MLA("r6", "r10", "r2")                       \
    "ldr    lr, [r1, r11]\n\t" UNPACK R4_MLA("r6", "r10", "r12")
#define R4_EVEN "sxtb16 lr, lr\n\t"
#define R4_ODD "sxtb16 lr, lr, ror #8\n\t"
#define R4_AT(k) "add    lr, lr, #" #k "\n\t"
/* 2b of the half's channels j (bottom lanes) and j + 2 (top): rq pairs at bytes 8j and 8j + 16. */
#define R4_BIAS(lo, hi) "ldr    r10, [sp, #48]\n\t" "ldr    r6, [r10, #" #lo "]\n\t" "ldr    r10, [r10, #" #hi "]\n\t"
/* The even channels (weights from byte 0 of each row's six words) or the odd ones (byte 4). */
#define R4_HALF(AT0, AT1, AT2, UNPACK, BIAS)                                                               \
    R4_ROW(R4_INIT, 16, AT0, UNPACK, BIAS) R4_ROW(R4_MLA, 24, AT1, UNPACK, "")                             \
    R4_ROW(R4_MLA, 32, AT2, UNPACK, "")
/* One output from s = 2b + twice the sum (RQ_OUT: r9 M, r10 r + 1, r12 rq's h2), stored by STORE. */
#define R4_OUT(s, STORE)                                                                                   \
    "smmlar lr, " s ", r9, r12\n\t"                                                                        \
    "add    lr, lr, " s ", asr #31\n\t"                                                                    \
    "asr    lr, lr, r10\n\t"                                                                               \
    "ssat   lr, #8, lr\n\t" STORE
/* Channel j of the group for pixels A-D from r3-r6 (r7 / r8: the group's channel_data rows and
 * rq pairs, loaded by PTRS unless still there; AT: r0 to channel j of pixel A's outputs). */
#define R4_CHANNEL(j, PTRS, AT)                                                                            \
    PTRS                                                                                                   \
    "ldrd   r9, r10, [r7, #16 * " #j " + 4]\n\t"                                                           \
    "ldr    r12, [r8, #8 * " #j " + 4]\n\t"                                                                \
    "ldrd   r0, r1, [sp, #52]\n\t"                                                                         \
    "add    r10, r10, #1\n\t" AT R4_OUT("r3", "strb   lr, [r0]\n\t") R4_OUT("r4", "strb   lr, [r0, r1]\n\t") \
    "add    r0, r0, r1, lsl #1\n\t" R4_OUT("r5", "strb   lr, [r0]\n\t") R4_OUT("r6", "strb   lr, [r0, r1]\n\t")
#define R4_PTRS "ldrd   r7, r8, [sp, #44]\n\t"

static void __attribute__((naked, noinline)) run4(run4_t *s)
{
    (void)s;
    __asm__("push   {r4-r11, lr}\n\t"
            "sub    sp, sp, #64\n\t"
            "ldm    r0, {r1-r12}\n\t"
            "add    lr, sp, #16\n\t"
            "stm    lr, {r1-r12}\n\t"
            "1:\n\t" R4_HALF("", R4_AT(24), R4_AT(48), R4_EVEN, R4_BIAS(0, 16))
            "stm    sp, {r7-r10}\n\t" R4_CHANNEL(0, R4_PTRS, "")
            "ldm    sp, {r3-r6}\n\t" R4_CHANNEL(2, "", "add    r0, r0, #2\n\t")
            R4_HALF(R4_AT(4), R4_AT(28), R4_AT(52), R4_ODD, R4_BIAS(8, 24))
            "stm    sp, {r7-r10}\n\t" R4_CHANNEL(1, R4_PTRS, "add    r0, r0, #1\n\t")
            "ldm    sp, {r3-r6}\n\t" R4_CHANNEL(3, "", "add    r0, r0, #3\n\t")
            "add    lr, sp, #16\n\t" /* the next group: rows + 4, w + 18, cd + 16, rq + 8, out + 4 */
            "ldm    lr, {r0-r11}\n\t"
            "adds   r0, r0, #4\n\t"
            "adds   r2, r2, #4\n\t"
            "adds   r4, r4, #4\n\t"
            "adds   r6, r6, #72\n\t"
            "adds   r7, r7, #64\n\t"
            "adds   r8, r8, #32\n\t"
            "adds   r9, r9, #4\n\t"
            "stm    lr, {r0-r9}\n\t"
            "cmp    r6, r11\n\t"
            "bne    1b\n\t"
            "add    sp, sp, #64\n\t"
            "pop    {r4-r11, pc}\n\t");
}
#undef R4_MLA
#undef R4_INIT
#undef R4_BIAS
#undef R4_ROW
#undef R4_EVEN
#undef R4_ODD
#undef R4_AT
#undef R4_HALF
#undef R4_OUT
#undef R4_CHANNEL
#undef R4_PTRS
#else
/* The C twin of run4's assembly: the same sums in the same order, the same requantization. */
static void run4(run4_t *s)
{
    const uint32_t *w;
    int32_t c = 0, half, j, ky, k, px;
    for (w = s->w; w != s->wend; w += 18, c += 4) {
        for (half = 0; half < 2; half++) {
            const int32_t b0 = s->rq[2 * (c + half)], b1 = s->rq[2 * (c + half + 2)];
            int32_t sum[2][4] = {{b0, b0, b0, b0}, {b1, b1, b1, b1}};
            for (ky = 0; ky < 3; ky++) {
                const int8_t *x = s->row[ky].x + c;
                const int32_t d = s->row[ky].d;
                for (k = 0; k < 6; k++) {
                    const uint32_t word = mcuq_read_u32(x + k * d);
                    const uint32_t v = half ? mcuq_sxtb16_ror8(word) : mcuq_sxtb16(word);
                    for (px = k > 2 ? k - 2 : 0; px <= k && px < 4; px++) {
                        const uint32_t wt = w[2 * (3 * ky + k - px) + half];
                        sum[0][px] = mcuq_smlabb(v, wt, sum[0][px]);
                        sum[1][px] = mcuq_smlatt(v, wt, sum[1][px]);
                    }
                }
            }
            for (j = 0; j < 2; j++) { /* channels half (bottom lanes) and half + 2 (top) */
                const int32_t ch = half + 2 * j, *cd = s->cd + 4 * (c + ch), *q = s->rq + 2 * (c + ch);
                for (px = 0; px < 4; px++) {
                    RQ_OUT(s->out[px * s->step + c + ch], sum[j][px], 0, q[1], cd[1], cd[2]);
                }
            }
        }
    }
}
#endif

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

/* ---- narrow images: fewer than 6 columns, so no run4 inside them ----------------------------
 * A 3x3 layer with stride_w 1 and 4 or 5 output columns (SAME padding, pad_left 1) copies each
 * input row once into a ring of three slots with a pad pixel on either side; its windows read
 * the copies, so that pixels 0-3 of each output row are one run4 and pixel 4 one pixel3x3, edge
 * columns included. Vertical runs (four pixels down a column) would write output rows ahead of
 * input rows still to be read and break the overlap contract at mcuq.plan.min_shift (kws's
 * depthwise outputs sit 640 bytes, two rows, below their inputs); the ring keeps raster order:
 * a row is copied while the first window that reads it is computed, and read from the copy from
 * then on. The ring lies in wbuf past the weights (no more stack): up to NARROW_MAX_C channels
 * (in fours: rows are copied by words) it fits there. */
#define NARROW_W 6
#define NARROW_MAX_C 64
/* the ring (at most 5 columns and 2 pad pixels) fits past the weights (18 words per 4 channels) */
typedef char narrow_ring_check[3 * (NARROW_W + 1) * NARROW_MAX_C <= 4 * MCUQ_DSP_BLOCK_WORDS - 18 * NARROW_MAX_C
                                   ? 1
                                   : -1];

/* n bytes (a positive multiple of 4) from src to dst. */
static void __attribute__((noinline)) copy_row(int8_t *dst, const int8_t *src, int32_t n)
{
    const int8_t *const end = src + n;
    do {
        mcuq_write_u32(dst, mcuq_read_u32(src));
        dst += 4;
        src += 4;
    } while (src != end);
}

/* Every output row of a narrow layer (0 when its padding is not SAME's: nothing done); st holds
 * the chunk's weights and requantization (all channels), ring 3 slots of (input_w + 2) pixels. */
static int32_t __attribute__((noinline)) narrow_rows(const mcuq_conv_params_t *p, const int8_t *input,
                                                     const int8_t *pad, int8_t *ring, run4_t *st, int8_t *out)
{
    const int32_t channels = p->input_c, slot = (p->input_w + 2) * channels, bytes = p->input_w * channels;
    const int8_t *tap[9];
    int32_t copied = 0; /* input rows (b * input_h + iy) copied so far; row r is in slot r % 3 */
    int32_t b, oy, t, k;
    if (p->pad_left != 1 || p->output_w > p->input_w) { /* windows past the ring's columns */
        return 0;
    }
    memset(ring, -p->input_offset, (size_t)(3 * slot));
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++, out += p->output_w * channels) {
            for (t = 0; t < 3; t++) { /* window row t at column -1: a ring slot, or pad at step 0 */
                const int32_t iy = oy * p->stride_h - p->pad_top + t, r = b * p->input_h + iy;
                const int8_t *x = pad;
                int32_t d = 0;
                if (iy >= 0 && iy < p->input_h) {
                    int8_t *copy = ring + r % 3 * slot;
                    if (r >= copied) {
                        copied = r + 1;
                        copy_row(copy + channels, input + r * bytes, bytes);
                    }
                    x = copy;
                    d = channels;
                }
                st->row[t].x = x;
                st->row[t].d = d;
                for (k = 0; k < 3; k++) { /* pixel 4's window: columns 3 to 5 */
                    tap[3 * t + k] = x + (4 + k) * d;
                }
            }
            st->out = out;
            run4(st);
            if (p->output_w > 4) {
                pixel3x3(tap, st->w, st->cd, st->rq, 0, channels, out + 4 * channels);
            }
        }
    }
    return 1;
}

/* Depth multiplier 1, at most MAX_TAPS taps and MCUQ_DSP_MAX_DEPTH channels, bias folded:
 * channel chunks whose unpacked weights fit the stack buffer, all pixels per chunk. 3x3 windows
 * with the int8 clamp and rq_fits (the models' layers: `fast`) run four neighbouring pixels
 * whose columns are inside the image through run4 (stride_w and dilation_w 1) and every other
 * pixel through pixel3x3 (narrow images: narrow_rows); other layers through pixel4. Channels
 * past the last multiple of 4 go one by one. */
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
    /* 1: runs inside the image; 2: a narrow image's, through narrow_rows */
    const int32_t runs = !(fast && p->stride_w == 1 && p->dilation_w == 1 && p->output_w >= 4) ? 0
                         : p->input_w >= NARROW_W                                              ? 1
                         : p->dilation_h == 1 && channels <= NARROW_MAX_C && (channels & 3) == 0 ? 2
                                                                                                 : 0;
    const int32_t span_h = 2 * p->dilation_h, span_w = 2 * p->dilation_w;
    const int32_t row = p->dilation_h * p->input_w * channels, d = p->dilation_w * channels;
    run4_t st;
    int32_t g0, b, oy, ox, c, t;
    memset(pad, -p->input_offset, (size_t)channels);
    for (g0 = 0; g0 < all_groups; g0 += chunk) {
        const int32_t groups = all_groups - g0 < chunk ? all_groups - g0 : chunk;
        int8_t *out = output;
        const int32_t c0 = 4 * g0, end = 4 * (g0 + groups);
        const int32_t *cd = p->channel_data + 4 * c0;
        unpack_weights(filter, channels, taps, c0, groups, fast, wbuf);
        if (fast) {
            rq_fill(p->channel_data, p->output_offset, c0, end - c0, rq);
        }
        st.w = wbuf;
        st.cd = cd;
        st.rq = rq;
        st.step = channels;
        st.wend = wbuf + 18 * groups;
        if (runs == 2 && narrow_rows(p, input, pad, (int8_t *)(wbuf + 18 * groups), &st, out)) {
            continue;
        }
        for (b = 0; b < p->batches; b++) {
            for (oy = 0; oy < p->output_h; oy++) {
                const int32_t y0 = oy * p->stride_h - p->pad_top;
                const int32_t rows_in = fast && y0 >= 0 && y0 + span_h < p->input_h;
                const int8_t *in_row = rows_in ? input + (b * p->input_h + y0) * p->input_w * channels : input;
                const int8_t *base[3]; /* the run's window rows at column 0: input rows, or pad */
                for (t = 0; t < 3 && runs; t++) {
                    const int32_t iy = y0 + t * p->dilation_h, in = iy >= 0 && iy < p->input_h;
                    base[t] = in ? input + (b * p->input_h + iy) * p->input_w * channels + c0 : pad + c0;
                    st.row[t].d = in ? channels : 0;
                }
                for (ox = 0; ox < p->output_w; ox++, out += channels) {
                    const int32_t x0 = ox * p->stride_w - p->pad_left;
                    const int32_t inside = rows_in && x0 >= 0 && x0 + span_w < p->input_w;
                    if (runs && ox + 3 < p->output_w && x0 >= 0 && x0 + 5 < p->input_w) {
                        st.row[0].x = base[0] + x0 * st.row[0].d;
                        st.row[1].x = base[1] + x0 * st.row[1].d;
                        st.row[2].x = base[2] + x0 * st.row[2].d;
                        st.out = out + c0;
                        run4(&st);
                        ox += 3;
                        out += 3 * channels;
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

#if PLAIN
/* mcuq_depthwise_conv2d_s8() past its DSP path, or all of it on cores without one. */
static MCUQ_PLAIN_FALLBACK mcuq_status_t depthwise_plain(const mcuq_conv_params_t *p, const int8_t *input,
                                                         const int8_t *filter, const int32_t *bias, int8_t *output)
{
    int32_t b, oy, ox, c, ky, kx;
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
#endif

mcuq_status_t mcuq_depthwise_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input,
                                       const int8_t *filter, const int32_t *bias, int8_t *output)
{
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
#if PLAIN
    return depthwise_plain(p, input, filter, bias, output);
#else
    return MCUQ_ERR_UNSUPPORTED; /* pack said no layer gets here */
#endif
}
