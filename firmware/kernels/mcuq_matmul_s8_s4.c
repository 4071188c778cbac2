/* Column blocks and the matrix product of the int8 x int4 DSP paths (mcuq_support_s4.h). */
#include <string.h>

#include "mcuq_support_s4.h"

#if MCUQ_DSP
/* Four block words at dst from the 8 int8 values at x. */
static inline void put8(uint32_t *dst, const int8_t *x)
{
    const uint32_t a = mcuq_read_u32(x), b = mcuq_read_u32(x + 4);
    const uint32_t ae = mcuq_sxtb16(a), be = mcuq_sxtb16(b);           /* (x0, x2), (x4, x6) */
    const uint32_t ao = mcuq_sxtb16_ror8(a), bo = mcuq_sxtb16_ror8(b); /* (x1, x3), (x5, x7) */
    dst[0] = (ae & 0xFFFFu) | (be << 16);
    dst[1] = (ao & 0xFFFFu) | (bo << 16);
    dst[2] = (ae >> 16) | (be & UINT32_C(0xFFFF0000));
    dst[3] = (ao >> 16) | (bo & UINT32_C(0xFFFF0000));
}

void mcuq_s4_block_put(uint32_t *block, int32_t rows, int32_t r, const int8_t *x, int32_t k)
{
    uint32_t *dst = block + 4 * r;
    int32_t g;
    for (g = 0; g + 8 <= k; g += 8, x += 8, dst += 4 * rows) {
        put8(dst, x);
    }
    if (g < k) {
        int8_t last[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        memcpy(last, x, (size_t)(k - g));
        put8(dst, last);
    }
}

/* Nibbles 0..7 of the word: eight weights from byte p on, or from the high nibble of p (odd). */
static inline uint32_t load8(const uint8_t *p, int32_t odd)
{
    return odd ? (mcuq_read_u32(p) >> 4) | ((uint32_t)p[4] << 28) : mcuq_read_u32(p);
}

/* Weights s .. s + n - 1 (n < 8) as nibbles 0 .. n - 1 of a word, the others 0. */
static uint32_t load_tail(const uint8_t *w, int32_t s, int32_t n)
{
    uint32_t v = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        v |= (((uint32_t)w[(s + i) >> 1] >> (4 * ((s + i) & 1))) & 0xFu) << (4 * i);
    }
    return v;
}

/* a[r] (r < rows) += 4096 * (eight products) of weight word v and block row r's four words at
 * b. m is MCUQ_S4_LANE_MASK, held in a register so that each unpack is one AND with a shifted
 * operand, done just before its SMLADs (one unpacked weight pair live at a time). */
#define MCUQ_S4_LANES(w, b, rows, j, a0, a1, a2, a3)                                              \
    do {                                                                                         \
        a0 = mcuq_smlad(w, (b)[j], a0);                                                          \
        if ((rows) > 1) {                                                                        \
            a1 = mcuq_smlad(w, (b)[4 + (j)], a1);                                                \
        }                                                                                        \
        if ((rows) > 2) {                                                                        \
            a2 = mcuq_smlad(w, (b)[8 + (j)], a2);                                                \
            a3 = mcuq_smlad(w, (b)[12 + (j)], a3);                                               \
        }                                                                                        \
    } while (0)
#define MCUQ_S4_DOT8(v, m, b, rows, a0, a1, a2, a3)                                               \
    do {                                                                                         \
        MCUQ_S4_LANES((m) & ((v) << 12), b, rows, 0, a0, a1, a2, a3);                            \
        MCUQ_S4_LANES((m) & ((v) << 8), b, rows, 1, a0, a1, a2, a3);                             \
        MCUQ_S4_LANES((m) & ((v) << 4), b, rows, 2, a0, a1, a2, a3);                             \
        MCUQ_S4_LANES((m) & (v), b, rows, 3, a0, a1, a2, a3);                                    \
    } while (0)

/* sum[r] (r < rows, modulo 2^32) of the k-element weight row starting at weight s times block
 * row r. `rows`, `odd` (= s & 1) and `last_row` are constants where this is inlined. The last
 * group may read weights past the row (they meet the block's zero lanes) unless `last_row`:
 * the tensor ends there, so that tail is read nibble by nibble. */
static inline void row_sums(const uint32_t *block, int32_t rows, int32_t k, const uint8_t *w, int32_t s,
                            int32_t odd, int32_t last_row, uint32_t *sum)
{
    const int32_t groups = last_row ? k >> 3 : (k + 7) >> 3;
    const uint8_t *p = w + (s >> 1);
    uint32_t m = MCUQ_S4_LANE_MASK, s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int32_t g = 0;
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
    __asm__("" : "+r"(m)); /* GCC would otherwise shift and AND with an immediate: two instructions */
#endif
    while (g < groups) {
        const int32_t end = groups - g > MCUQ_S4_CHUNK_GROUPS ? g + MCUQ_S4_CHUNK_GROUPS : groups;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (; g < end; g++, p += 4, block += 4 * rows) {
            const uint32_t v = load8(p, odd);
            MCUQ_S4_DOT8(v, m, block, rows, a0, a1, a2, a3);
        }
        s0 += (uint32_t)(a0 >> 12);
        s1 += (uint32_t)(a1 >> 12);
        s2 += (uint32_t)(a2 >> 12);
        s3 += (uint32_t)(a3 >> 12);
    }
    if (8 * groups < k) {
        const uint32_t v = load_tail(w, s + 8 * groups, k & 7);
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        MCUQ_S4_DOT8(v, m, block, rows, a0, a1, a2, a3);
        s0 += (uint32_t)(a0 >> 12);
        s1 += (uint32_t)(a1 >> 12);
        s2 += (uint32_t)(a2 >> 12);
        s3 += (uint32_t)(a3 >> 12);
    }
    sum[0] = s0;
    sum[1] = s1;
    sum[2] = s2;
    sum[3] = s3;
}

/* Row c's sums for a block of `rows` rows (a constant where this is inlined): rows before the
 * tensor's last (k >= 8) are followed by 5 or more bytes of it. */
static inline void channel_sums(const uint32_t *block, int32_t rows, int32_t k, const uint8_t *w, int32_t c,
                                int32_t n, uint32_t *sum)
{
    const int32_t s = c * k;
    if (c == n - 1 || k < 8) {
        row_sums(block, rows, k, w, s, s & 1, 1, sum);
    } else if (s & 1) {
        row_sums(block, rows, k, w, s, 1, 0, sum);
    } else {
        row_sums(block, rows, k, w, s, 0, 0, sum);
    }
}

/* The product for a block of `rows` rows (a constant where this is inlined). */
static inline void product(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k,
                           const uint8_t *w, int32_t n, int8_t *out, int32_t stride)
{
    int32_t c, r;
    for (c = 0; c < n; c++) {
        const int32_t *cd = q->channel_data + 4 * c;
        uint32_t sum[4];
        channel_sums(block, rows, k, w, c, n, sum);
        for (r = 0; r < rows; r++) {
            const int32_t acc = mcuq_wrap32((uint32_t)cd[0] + (uint32_t)q->row_bias[r] + sum[r]);
            out[r * stride + c] = (int8_t)mcuq_requantize_channel(acc, cd, q->output_offset, q->act_min,
                                                                  q->act_max);
        }
    }
}

void mcuq_matmul_s8_s4(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k,
                       const uint8_t *w, int32_t n, int8_t *out, int32_t stride)
{
    if (rows == 4) {
        product(q, block, 4, k, w, n, out, stride);
    } else if (rows == 2) {
        product(q, block, 2, k, w, n, out, stride);
    } else {
        product(q, block, 1, k, w, n, out, stride);
    }
}
#endif /* MCUQ_DSP */
