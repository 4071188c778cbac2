/* FULLY_CONNECTED, int8, with a row-paired filter (mcuq_kernels.h): what pack stores for int8
 * layers of symmetric weights whose second rows keep 128 * sum |w| < 2^23 and whose shape and
 * parameters the assembly below takes (mcuq.pack.pairable); the runtime runs it for filters of
 * dtype MCUQ_INT8_PAIRED. */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

#if MCUQ_DSP
/* Row-paired products. A paired weight word holds rows a and b for two inputs, each int16 lane
 * 256 * b[i] + (a[i] + 128): SMLAD with the block word of those inputs adds 256 * (b's two
 * products) + (a's two products + 128 * the two inputs) to a sum F, SMLAD with the word masked to
 * its high bytes adds 256 * (b's products) to a sum H. Starting F at a's bias - 128 * sum x and H
 * at 0, a's sum is F - H and b's its bias + H / 256 (the shift is exact: pack pairs a layer only
 * when 128 * sum |b| < 2^23), all modulo 2^32 as TFLM's accumulator: four MACs per SMLAD pair and
 * one mask per weight word, where unpacking takes two SXTB16 per four weights.
 *
 * On Arm, four rows (two pairs) per pass run as quads_asm(): per group one LDM of the block's
 * two words, one LDM of the four weight words, four ANDs and eight SMLADs (14 instructions per
 * 16 MACs, 58 per 64 with the loop's compare and branch). Its C twin is the loop in paired_product(). */
#if defined(__ARM_FEATURE_DSP)
typedef struct {
    const uint32_t *x;    /* [0] the block */
    const uint32_t *xend; /* [4] block + 2 * groups */
    const int32_t *cd;    /* [8] channel_data row of the next four rows */
    const int32_t *cde;   /* [12] the end of the four-row sets' rows */
    int8_t *out;          /* [16] output of the next four rows */
    int32_t zp;           /* [20] */
    int32_t low_bias;     /* [24] -128 * sum x */
    const int8_t *w;      /* [28] paired weights of the first four rows */
    int32_t half;         /* [32] 1: groups % 4 == 2, the first turn runs two groups */
} quads_t;

/* One group: r1, r2 = F, H of pair 0, r3, r4 of pair 1; r11 block, r12 weights. */
#define ASM_QUAD_GROUP                                                                                    \
    "ldm    r11!, {r5, r6}\n\t"                                                                           \
    "ldm    r12!, {r7, r8, r9, r10}\n\t"                                                                  \
    "smlad  r1, r5, r7, r1\n\t"                                                                           \
    "and    r7, r7, #0xFF00FF00\n\t"                                                                      \
    "smlad  r2, r5, r7, r2\n\t"                                                                           \
    "smlad  r1, r6, r8, r1\n\t"                                                                           \
    "and    r8, r8, #0xFF00FF00\n\t"                                                                      \
    "smlad  r2, r6, r8, r2\n\t"                                                                           \
    "smlad  r3, r5, r9, r3\n\t"                                                                           \
    "and    r9, r9, #0xFF00FF00\n\t"                                                                      \
    "smlad  r4, r5, r9, r4\n\t"                                                                           \
    "smlad  r3, r6, r10, r3\n\t"                                                                          \
    "and    r10, r10, #0xFF00FF00\n\t"                                                                    \
    "smlad  r4, r6, r10, r4\n\t"
/* Output of sum a (channel_data row at lr + off) stored at r11 + k (MCUQ_ASM_REQUANTIZE). */
#define ASM_QUAD_OUTPUT(a, off, k)                                                                        \
    "ldrd   r5, r6, [lr, #" off " + 4]\n\t"                                                               \
    "ldr    r7, [lr, #" off " + 12]\n\t" MCUQ_ASM_REQUANTIZE(a) "strb   r9, [r11, #" k "]\n\t"

/* Rows in fours, groups four per turn (depth a multiple of 8: a first turn of two groups when
 * `half`), every channel r > 0, int8 clamp. */
static void __attribute__((naked, noinline)) quads_asm(quads_t *s)
{
    (void)s;
    __asm__("push   {r4-r11, lr}\n\t"
            "ldr    r12, [r0, #28]\n\t"
            "1:\n\t"
            "ldr    lr, [r0, #8]\n\t"
            "ldr    r5, [r0, #24]\n\t"
            "ldr    r1, [lr]\n\t"
            "ldr    r3, [lr, #32]\n\t"
            "add    r1, r1, r5\n\t"
            "add    r3, r3, r5\n\t"
            "mov    r2, #0\n\t"
            "mov    r4, #0\n\t"
            "ldrd   r11, lr, [r0, #0]\n\t"
            "ldr    r5, [r0, #32]\n\t"
            "cbnz   r5, 3f\n\t"
            "2:\n\t" ASM_QUAD_GROUP ASM_QUAD_GROUP "3:\n\t" ASM_QUAD_GROUP ASM_QUAD_GROUP
            "cmp    r11, lr\n\t"
            "bne    2b\n\t"
            "ldr    lr, [r0, #8]\n\t"
            "ldr    r5, [lr, #16]\n\t"
            "sub    r1, r1, r2\n\t"
            "add    r2, r5, r2, asr #8\n\t"
            "ldr    r5, [lr, #48]\n\t"
            "sub    r3, r3, r4\n\t"
            "add    r4, r5, r4, asr #8\n\t"
            "ldr    r10, [r0, #20]\n\t"
            "ldr    r11, [r0, #16]\n\t" ASM_QUAD_OUTPUT("r1", "0", "0") ASM_QUAD_OUTPUT("r2", "16", "1")
                ASM_QUAD_OUTPUT("r3", "32", "2") ASM_QUAD_OUTPUT("r4", "48", "3")
            "add    r11, r11, #4\n\t"
            "str    r11, [r0, #16]\n\t"
            "add    lr, lr, #64\n\t"
            "str    lr, [r0, #8]\n\t"
            "ldr    r5, [r0, #12]\n\t"
            "cmp    lr, r5\n\t"
            "bne    1b\n\t"
            "pop    {r4-r11, pc}\n\t");
}
#undef ASM_QUAD_GROUP
#undef ASM_QUAD_OUTPUT
#endif

/* One input row's block times a row-paired filter w into out[0 .. units). */
static void paired_product(const mcuq_fully_connected_params_t *p, const uint32_t *block, const int8_t *w,
                           int8_t *out)
{
    const int32_t groups = p->depth >> 2, *cd = p->channel_data, *end = cd + 4 * p->units;
    int32_t g, sum = 0;
    for (g = 0; g < 2 * groups; g++) {
        sum = mcuq_smlad(block[g], UINT32_C(0x00010001), sum);
    }
    sum = mcuq_wrap32((uint32_t)sum * UINT32_C(0xFFFFFF80)); /* -128 * sum x */
#if defined(__ARM_FEATURE_DSP)
    {
        quads_t st;
        st.x = block;
        st.xend = block + 2 * groups;
        st.cd = cd;
        st.cde = end;
        st.out = out;
        st.zp = p->output_offset;
        st.low_bias = sum;
        st.w = w;
        st.half = (groups & 3) != 0;
        quads_asm(&st);
    }
#else
    for (; cd != end; cd += 16, out += 4) { /* quads_asm()'s C twin */
        int32_t f[2], h[2], j;
        f[0] = mcuq_add_wrap(cd[0], sum);
        f[1] = mcuq_add_wrap(cd[8], sum);
        h[0] = h[1] = 0;
        for (g = 0; g < groups; g++) {
            const uint32_t e = block[2 * g], o = block[2 * g + 1];
            for (j = 0; j < 2; j++, w += 8) {
                const uint32_t ve = mcuq_read_u32(w), vo = mcuq_read_u32(w + 4);
                f[j] = mcuq_smlad(e, ve, f[j]);
                h[j] = mcuq_smlad(e, ve & MCUQ_LANE_MASK, h[j]);
                f[j] = mcuq_smlad(o, vo, f[j]);
                h[j] = mcuq_smlad(o, vo & MCUQ_LANE_MASK, h[j]);
            }
        }
        for (j = 0; j < 2; j++) {
            const int32_t *d = cd + 8 * j, a = mcuq_wrap32((uint32_t)f[j] - (uint32_t)h[j]);
            out[2 * j] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(a, d[1], d[2], d[3], p->output_offset));
            out[2 * j + 1] = (int8_t)mcuq_ssat8(
                mcuq_requantize_fast(mcuq_add_wrap(d[4], h[j] >> 8), d[5], d[6], d[7], p->output_offset));
        }
    }
#endif
}
#else
/* Weight i of row o of a row-paired filter (mcuq_kernels.h): byte (o & 1) of lane (i >> 1) & 1
 * of word (i & 1) of pair (o >> 1) & 1 of group i >> 2 of the rows' four-row set. */
static int32_t paired_weight(const int8_t *f, int32_t k, int32_t o, int32_t i)
{
    const int32_t at = (o & ~3) * k + 16 * (i >> 2) + 8 * ((o >> 1) & 1) + 4 * (i & 1) + 2 * ((i >> 1) & 1);
    const int8_t v = f[at + (o & 1)];
    return (o & 1) ? v : (int8_t)(v ^ 0x80);
}

/* Sum of w[o][i] * (x[i] + input_offset) over row o of a row-paired filter, modulo 2^32. */
static uint32_t dot_paired(const int8_t *x, const int8_t *f, int32_t k, int32_t o, int32_t input_offset)
{
    uint32_t acc = 0;
    int32_t i;
    for (i = 0; i < k; i++) {
        acc += (uint32_t)(paired_weight(f, k, o, i) * (x[i] + input_offset));
    }
    return acc;
}
#endif

mcuq_status_t mcuq_fully_connected_s8_paired(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                             const int8_t *filter, const int32_t *bias, int8_t *output)
{
    const int32_t k = p->depth, n = p->units;
    int32_t b;
    if (p->accumulator_bits != 32 || p->filter_offset != 0 || k % 8 != 0 || n % 4 != 0) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    /* what pack.pairable() guarantees: one block, bias folded, int8 clamp, every r > 0 */
    if (k > 2 * MCUQ_DSP_MAX_DEPTH || !(p->bias_folded || bias == NULL) || p->act_min != -128 ||
        p->act_max != 127 || !p->shifts_fast || ((uintptr_t)filter & 3) != 0) {
        return MCUQ_ERR_PARAMS;
    }
    {
        uint32_t block[MCUQ_DSP_BLOCK_WORDS];
        for (b = 0; b < p->batches; b++, input += k, output += n) {
            mcuq_block_put(block, 1, 0, 0, input, k);
            paired_product(p, block, filter, output);
        }
    }
#else
    for (b = 0; b < p->batches; b++, input += k) {
        int32_t o;
        for (o = 0; o < n; o++) {
            const int32_t c = p->per_channel ? o : 0;
            uint32_t acc = dot_paired(input, filter, k, o, p->input_offset);
            if (bias != NULL) {
                acc += (uint32_t)bias[o];
            }
            *output++ = (int8_t)mcuq_offset_clamp(mcuq_requantize_node(mcuq_wrap32(acc), p->multiplier[c],
                                                                       p->shift[c], p->shift_only),
                                                  p->output_offset, p->act_min, p->act_max);
        }
    }
#endif
    return MCUQ_OK;
}
