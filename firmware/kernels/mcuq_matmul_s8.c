/* The int8 matrix products behind CONV_2D and FULLY_CONNECTED on the DSP path (mcuq_support.h):
 * column blocks of int16 lanes times int8 weight rows, two MACs per SMLAD, the input offset
 * already folded into the bias, then the per-channel requantization of each channel's outputs
 * as soon as its sums are done.
 *
 * On Arm the hot loops are assembly (GCC 12 neither folds the rotation into SXTB16 nor loads
 * the block with LDM, and spills around its requantization): dot_4x1()'s inner loop, and the
 * whole channel loops rows4_asm() (4-row blocks: convolutions) and rows1_asm() (1-row blocks:
 * FULLY_CONNECTED), naked functions that need no free register from the compiler. Each has a
 * C twin, the same algorithm over the portable instruction definitions: the host tests run the
 * twins (MCUQ_DSP_EMULATED), QEMU runs the assembly, and both are compared with the simulator.
 * All sums wrap modulo 2^32 like TFLM's int32 accumulator (SMLAD's result does).
 *
 * mcuq_matmul_s8() also takes rows = 4 * m (m > 1): m consecutive 4-row blocks of the same
 * product (block b at block + 8 * b * ceil(k / 4) words, its outputs at out + 4 * b * stride),
 * one call for all of them (the convolution's batches of output pixels). */
#include "mcuq_support.h"

int32_t mcuq_requantize_clamp(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset, int32_t lo,
                              int32_t hi)
{
    return mcuq_offset_clamp(mcuq_requantize_node(acc, multiplier, shift, multiplier == (INT32_C(1) << 30)),
                             output_offset, lo, hi);
}

#if MCUQ_DSP

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

/* a + the four products of one group: even and odd block words e, o with weight word v. */
static inline int32_t mac4(uint32_t e, uint32_t o, uint32_t v, int32_t a)
{
    return mcuq_smlad(o, mcuq_sxtb16_ror8(v), mcuq_smlad(e, mcuq_sxtb16(v), a));
}

#if defined(__ARM_FEATURE_DSP)
/* One group of a 4-row block times one weight row: the weight word, the rows' even words (one
 * LDM into r8-r11), SXTB16 and four SMLADs, the odd words, SXTB16 ROR 8, four SMLADs. */
#define GROUP_4X1                                                                                         \
    "ldr    %[v], [%[w]], #4\n\t"                                                                         \
    "ldm    %[x]!, {r8, r9, r10, r11}\n\t"                                                                \
    "sxtb16 %[t], %[v]\n\t"                                                                               \
    "smlad  %[a0], r8, %[t], %[a0]\n\t"                                                                   \
    "smlad  %[a1], r9, %[t], %[a1]\n\t"                                                                   \
    "smlad  %[a2], r10, %[t], %[a2]\n\t"                                                                  \
    "smlad  %[a3], r11, %[t], %[a3]\n\t"                                                                  \
    "ldm    %[x]!, {r8, r9, r10, r11}\n\t"                                                                \
    "sxtb16 %[v], %[v], ror #8\n\t"                                                                       \
    "smlad  %[a0], r8, %[v], %[a0]\n\t"                                                                   \
    "smlad  %[a1], r9, %[v], %[a1]\n\t"                                                                   \
    "smlad  %[a2], r10, %[v], %[a2]\n\t"                                                                  \
    "smlad  %[a3], r11, %[v], %[a3]\n\t"
#define OPERANDS_4X1                                                                                      \
    [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "+r"(x), [w] "+r"(w), [v] "=&r"(v),  \
        [t] "=&r"(t)
#endif

/* a[r] += block row r times weight row w over `groups` whole groups, for the 4 rows. */
static inline void dot_4x1(const uint32_t *x, const int8_t *w, int32_t groups, int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#if defined(__ARM_FEATURE_DSP)
    const uint32_t *end = x + 8 * groups;
    uint32_t v, t;
    if (groups & 1) {
        __asm__(GROUP_4X1 : OPERANDS_4X1 : : "r8", "r9", "r10", "r11", "memory");
    }
    if (x != end) { /* two groups per turn */
        __asm__("1:\n\t" GROUP_4X1 GROUP_4X1 "cmp    %[x], %[end]\n\t"
                "bne    1b\n\t"
                : OPERANDS_4X1
                : [end] "r"(end)
                : "r8", "r9", "r10", "r11", "cc", "memory");
    }
#else
    int32_t g;
    for (g = 0; g < groups; g++, x += 8, w += 4) {
        const uint32_t v = mcuq_read_u32(w), l = mcuq_sxtb16(v), h = mcuq_sxtb16_ror8(v);
        a0 = mcuq_smlad(x[0], l, a0);
        a1 = mcuq_smlad(x[1], l, a1);
        a2 = mcuq_smlad(x[2], l, a2);
        a3 = mcuq_smlad(x[3], l, a3);
        a0 = mcuq_smlad(x[4], h, a0);
        a1 = mcuq_smlad(x[5], h, a1);
        a2 = mcuq_smlad(x[6], h, a2);
        a3 = mcuq_smlad(x[7], h, a3);
    }
#endif
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* a[j] += the one-row block times weight row j over `groups` groups; rows j = 0, 1 at w, w +
 * stride and j = 2, 3 at w2, w2 + stride. */
static inline void dot_1x4(const uint32_t *x, const int8_t *w, const int8_t *w2, int32_t stride, int32_t groups,
                           int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    int32_t g;
    for (g = 0; g < groups; g++, x += 2, w += 4, w2 += 4) {
        a0 = mac4(x[0], x[1], mcuq_read_u32(w), a0);
        a1 = mac4(x[0], x[1], mcuq_read_u32(w + stride), a1);
        a2 = mac4(x[0], x[1], mcuq_read_u32(w2), a2);
        a3 = mac4(x[0], x[1], mcuq_read_u32(w2 + stride), a3);
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* The output of one sum (bias included) of channel_data row {b, M, r, h}; `full`: the clamp is
 * the int8 range (one SSAT). */
static inline __attribute__((always_inline)) int8_t output(int32_t acc, int32_t m, int32_t r, int32_t h,
                                                           const mcuq_matmul_t *q, int32_t full)
{
    int32_t y;
    if (r <= 0) {
        return (int8_t)mcuq_requantize_clamp(acc, m, h, q->output_offset, q->act_min, q->act_max);
    }
    y = mcuq_requantize_fast(acc, m, r, h, q->output_offset);
    if (full) {
        return (int8_t)mcuq_ssat8(y);
    }
    return (int8_t)(y < q->act_min ? q->act_min : (y > q->act_max ? q->act_max : y));
}

/* The four int8 outputs out[0], out[s], out[2s], out[3s] of one channel from its sums a0..a3
 * (bias included) and its channel_data row cd with r > 0, clamped to the int8 range: per output
 * the 64-bit multiply-add of mcuq_requantize_fast(), the shift, the offset, SSAT and the store. */
static inline void outputs4_s8(int32_t a0, int32_t a1, int32_t a2, int32_t a3, const int32_t *cd, int32_t zp,
                               int8_t *out, int32_t s)
{
    const int32_t m = cd[1], r = cd[2], h = cd[3];
    out[0] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(a0, m, r, h, zp));
    out[s] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(a1, m, r, h, zp));
    out[2 * s] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(a2, m, r, h, zp));
    out[3 * s] = (int8_t)mcuq_ssat8(mcuq_requantize_fast(a3, m, r, h, zp));
}

#if defined(__ARM_FEATURE_DSP)
/* The whole channel loop of 4-row products over rows of a multiple of 4 elements in assembly,
 * for outputs4_s8() outputs, over one or
 * more consecutive 4-row blocks (each 8 * groups words, its outputs 4 * stride bytes after the
 * previous block's): per channel its bias, a first group that starts the four sums from it,
 * dot_4x1()'s loop over the other groups, the last one partial or not, four groups per turn
 * (the first turn entered where the group count says, an address found once per call through
 * a TBB table), then outputs4_s8(). Its state lives in a rows4_t; the C twin is channel4()
 * with outputs4_s8(), block after block. */
typedef struct {
    uintptr_t last;       /* [0] the byte before the output of the block's last channel in row 0 */
    int32_t zp;           /* [4] */
    int32_t stride;       /* [8] */
    uintptr_t before;     /* [12] the byte before the output of the next channel in row 0 */
    const uint32_t *x;    /* [16] the block */
    const uint32_t *xend; /* [20] block + 8 * groups */
    const int8_t *w;      /* [24] weight row of the first channel */
    const int32_t *cd;    /* [28] channel_data row of the first channel */
    int32_t blocks;       /* [32] */
    int32_t next;         /* [36] from the block's last output to the next block's first */
} rows4_t;

/* r1-r4: the sums; r12: weights; r7: block; r5, r6: weight word, its unpacked half. */
#define ASM_GROUP_FROM(a0, a1, a2, a3, from0, from1, from2, from3)                                       \
    "ldr    r5, [r12], #4\n\t"                                                                            \
    "ldm    r7!, {r8, r9, r10, r11}\n\t"                                                                  \
    "sxtb16 r6, r5\n\t"                                                                                   \
    "smlad  " a3 ", r11, r6, " from3 "\n\t"                                                               \
    "smlad  " a2 ", r10, r6, " from2 "\n\t"                                                               \
    "smlad  " a1 ", r9, r6, " from1 "\n\t"                                                                \
    "smlad  " a0 ", r8, r6, " from0 "\n\t"                                                                \
    "ldm    r7!, {r8, r9, r10, r11}\n\t"                                                                  \
    "sxtb16 r5, r5, ror #8\n\t"                                                                           \
    "smlad  r1, r8, r5, r1\n\t"                                                                           \
    "smlad  r2, r9, r5, r2\n\t"                                                                           \
    "smlad  r3, r10, r5, r3\n\t"                                                                          \
    "smlad  r4, r11, r5, r4\n\t"
#define ASM_GROUP ASM_GROUP_FROM("r1", "r2", "r3", "r4", "r1", "r2", "r3", "r4")
/* The state is copied to the stack ([sp, #0] .. [sp, #36] as in rows4_t, [sp, #44] where each
 * channel's loop is entered), r0 walks channel_data, a block ends after `last`; each channel's loop
 * ends at the next weight row. aligned(4): ADR computes from the word-aligned PC, so its
 * offsets hold only if the function starts on a word (-Os aligns functions to 2 bytes; the
 * channel loop then jumped 2 bytes off, into an instruction). */
static void __attribute__((naked, noinline, aligned(4))) rows4_asm(rows4_t *s)
{
    (void)s;
    __asm__("push   {r4-r11, lr}\n\t"
            "sub    sp, sp, #48\n\t"
            "ldm    r0, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"
            "stm    sp, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"
            "sub    r0, r6, r5\n\t"
            "subs   r0, r0, #32\n\t" /* 32 * the groups after the first */
            "beq    11f\n\t"
            "ubfx   r0, r0, #5, #2\n\t" /* modulo 4: the first turn does that many */
            "tbb    [pc, r0]\n\t"
            "0:\n\t"
            ".byte  (7f - 0b) / 2, (8f - 0b) / 2, (9f - 0b) / 2, (10f - 0b) / 2\n\t"
            "7:\n\t"
            "adr.w  r0, 2f\n\t"
            "b      3f\n\t"
            "8:\n\t"
            "adr.w  r0, 6f\n\t"
            "b      3f\n\t"
            "9:\n\t"
            "adr.w  r0, 5f\n\t"
            "b      3f\n\t"
            "10:\n\t"
            "adr.w  r0, 4f\n\t"
            "b      3f\n\t"
            "11:\n\t"
            "adr.w  r0, 12f\n\t" /* one group: no loop */
            "3:\n\t"
            "orr    r0, r0, #1\n\t" /* a Thumb address */
            "str    r0, [sp, #44]\n\t"
            "13:\n\t" /* each block */
            "ldr    r12, [sp, #24]\n\t"
            "ldr    r0, [sp, #28]\n\t"
            "1:\n\t" /* each channel */
            "ldr    r1, [r0], #4\n\t" /* the bias */
            "ldrd   r7, lr, [sp, #16]\n\t" /* block, its end */
            ASM_GROUP_FROM("r1", "r2", "r3", "r4", "r1", "r1", "r1", "r1")
            "ldr    pc, [sp, #44]\n\t"
            "2:\n\t" ASM_GROUP "4:\n\t" ASM_GROUP "5:\n\t" ASM_GROUP "6:\n\t" ASM_GROUP
            "cmp    r7, lr\n\t"
            "bne    2b\n\t"
            "12:\n\t"
            "ldm    r0!, {r5, r6, r7}\n\t"  /* M, r, h */
            "ldm    sp, {r9, r10, r11, lr}\n\t" /* last, zp, stride, before */
            "cmp    lr, r9\n\t" /* the last channel? (nothing below sets the flags) */
            MCUQ_ASM_REQUANTIZE("r1") "strb   r9, [lr, #1]!\n\t"
            "str    lr, [sp, #12]\n\t" /* before the next channel's output */
            MCUQ_ASM_REQUANTIZE("r2") "strb   r9, [lr, r11]\n\t"
            "add    lr, lr, r11, lsl #1\n\t"
            MCUQ_ASM_REQUANTIZE("r3") "strb   r9, [lr]\n\t"
            MCUQ_ASM_REQUANTIZE("r4") "strb   r9, [lr, r11]\n\t"
            "bne    1b\n\t"
            "ldr    r5, [sp, #32]\n\t"
            "subs   r5, r5, #1\n\t"
            "beq    14f\n\t"
            "str    r5, [sp, #32]\n\t"
            "ldrd   r7, lr, [sp, #16]\n\t"
            "sub    r6, lr, r7\n\t"
            "add    r6, lr, r6\n\t"
            "strd   lr, r6, [sp, #16]\n\t" /* the next block */
            "ldr    r8, [sp, #12]\n\t"
            "ldr    r9, [sp, #36]\n\t"
            "add    r9, r8, r9\n\t"
            "str    r9, [sp, #12]\n\t"
            "ldr    r8, [sp, #0]\n\t"
            "add    r8, r8, r11, lsl #2\n\t"
            "str    r8, [sp, #0]\n\t"
            "b      13b\n\t"
            "14:\n\t"
            "add    sp, sp, #48\n\t"
            "pop    {r4-r11, pc}\n\t");
}

/* Channels cd .. cde - 1 (all with r > 0) of `blocks` 4-row blocks in assembly (their outputs
 * written after those of earlier channels of every block: the product's input was converted
 * before). */
static void rows4(const mcuq_matmul_t *q, const uint32_t *block, int32_t k, const int8_t *w, const int32_t *cd,
                  const int32_t *cde, int8_t *out, int32_t stride, int32_t blocks)
{
    rows4_t st;
    st.last = (uintptr_t)out + (uintptr_t)((cde - cd) >> 2) - 2u;
    st.zp = q->output_offset;
    st.stride = stride;
    st.before = (uintptr_t)out - 1u;
    st.x = block;
    st.xend = block + 8 * ((k + 3) >> 2);
    st.w = w;
    st.cd = cd;
    st.next = 4 * stride - (int32_t)((cde - cd) >> 2);
    st.blocks = blocks;
    rows4_asm(&st);
}
#undef ASM_GROUP
#undef ASM_GROUP_FROM
#endif

/* One channel of a 4-row block (weight row w, k elements used, channel_data row cd): the sums
 * start from the bias (`first`) or sums[0..3], and end as outputs (`last`; outputs4_s8() when
 * `full`, the clamp being the int8 range, and r > 0) or in sums[0..3]. */
static void channel4(const mcuq_matmul_t *q, const uint32_t *block, int32_t k, const int8_t *w, const int32_t *cd,
                     int32_t *sums, int32_t first, int32_t last, int8_t *out, int32_t stride, int32_t full)
{
    const uint32_t *tail = block + 8 * (k >> 2);
    int32_t a[4];
    if (first) {
        a[0] = a[1] = a[2] = a[3] = cd[0];
    } else {
        a[0] = sums[0];
        a[1] = sums[1];
        a[2] = sums[2];
        a[3] = sums[3];
    }
    dot_4x1(block, w, k >> 2, a);
    if (k & 3) {
        const uint32_t v = partial_word(w + (k & ~3), k & 3);
        a[0] = mac4(tail[0], tail[4], v, a[0]);
        a[1] = mac4(tail[1], tail[5], v, a[1]);
        a[2] = mac4(tail[2], tail[6], v, a[2]);
        a[3] = mac4(tail[3], tail[7], v, a[3]);
    }
    if (!last) {
        sums[0] = a[0];
        sums[1] = a[1];
        sums[2] = a[2];
        sums[3] = a[3];
    } else if (full && cd[2] > 0) {
        outputs4_s8(a[0], a[1], a[2], a[3], cd, q->output_offset, out, stride);
    } else {
        const int32_t m = cd[1], r = cd[2], h = cd[3];
        out[0] = output(a[0], m, r, h, q, full);
        out[stride] = output(a[1], m, r, h, q, full);
        out[2 * stride] = output(a[2], m, r, h, q, full);
        out[3 * stride] = output(a[3], m, r, h, q, full);
    }
}

/* 4-row blocks: one weight row at a time serves the four rows (rows at stride ldw), channel4()
 * for each channel; in chunks (sums not NULL) constant channels have no row and store their
 * output when `last` (product() never gets one). */
static inline __attribute__((always_inline)) void product4(const mcuq_matmul_t *q, const uint32_t *block,
                                                           int32_t k, const int8_t *w, int32_t ldw, int32_t n,
                                                           int32_t *sums, int32_t first, int32_t last,
                                                           int8_t *out, int32_t stride, int32_t full)
{
    const int32_t *cd = q->channel_data, *end = cd + 4 * n;
    const int32_t chunked = sums != NULL;
    for (; cd != end; cd += 4, out++, sums += 4) {
        if (!chunked || !mcuq_constant_channel(cd)) {
            channel4(q, block, k, w, cd, sums, first, last, out, stride, full);
            w += ldw;
        } else if (last) {
            out[0] = out[stride] = out[2 * stride] = out[3 * stride] = mcuq_constant_output(cd, q->output_offset);
        }
    }
}

#if defined(__ARM_FEATURE_DSP)
/* The channel loop of a 1-row product in assembly, two channels at a time, for rows of a
 * multiple of 8 elements at word-aligned addresses and outputs4_s8()-style outputs (r > 0,
 * int8 clamp): per turn one LDM of the block's two groups and one LDRD of each row's two
 * weight words. Its state lives in a rows1_t; the C twin is product1(). */
typedef struct {
    const uint32_t *x;    /* [0] the block */
    const uint32_t *xend; /* [4] block + 2 * groups */
    const int8_t *w;      /* [8] weight row of the first channel */
    int32_t k;            /* [12] row stride */
    const int32_t *cd;    /* [16] channel_data row of the next pair */
    const int32_t *cde;   /* [20] end of the pairs */
    int8_t *out;          /* [24] output of the next pair */
    int32_t zp;           /* [28] */
    int32_t row_bias;     /* [32] */
} rows1_t;

/* Two weight words in r4, r5 times block words r8..r11 into the sum in register a. */
#define ASM_PAIR(a)                                                                                       \
    "sxtb16 r6, r4\n\t"                                                                                   \
    "smlad  " a ", r8, r6, " a "\n\t"                                                                     \
    "sxtb16 r4, r4, ror #8\n\t"                                                                           \
    "smlad  " a ", r9, r4, " a "\n\t"                                                                     \
    "sxtb16 r6, r5\n\t"                                                                                   \
    "smlad  " a ", r10, r6, " a "\n\t"                                                                    \
    "sxtb16 r5, r5, ror #8\n\t"                                                                           \
    "smlad  " a ", r11, r5, " a "\n\t"

static void __attribute__((naked, noinline)) rows1_asm(rows1_t *s)
{
    (void)s;
    __asm__("push   {r4-r11, lr}\n\t"
            "ldr    r12, [r0, #8]\n\t"
            "1:\n\t"
            "ldr    r1, [r0, #16]\n\t"
            "ldr    r3, [r0, #32]\n\t"
            "ldr    r2, [r1, #16]\n\t" /* the biases of both channels, plus row_bias */
            "ldr    r1, [r1]\n\t"
            "add    r1, r1, r3\n\t"
            "add    r2, r2, r3\n\t"
            "ldr    r3, [r0, #12]\n\t"
            "add    r3, r12, r3\n\t" /* the second channel's row */
            "ldrd   r7, lr, [r0, #0]\n\t"
            "2:\n\t"
            "ldm    r7!, {r8, r9, r10, r11}\n\t"
            "ldrd   r4, r5, [r12], #8\n\t" ASM_PAIR("r1")
            "ldrd   r4, r5, [r3], #8\n\t" ASM_PAIR("r2")
            "cmp    r7, lr\n\t"
            "bne    2b\n\t"
            "mov    r12, r3\n\t" /* the next pair's first row */
            "ldr    lr, [r0, #16]\n\t"
            "ldr    r10, [r0, #28]\n\t"
            "ldr    r11, [r0, #24]\n\t"
            "ldrd   r5, r6, [lr, #4]\n\t"
            "ldr    r7, [lr, #12]\n\t" MCUQ_ASM_REQUANTIZE("r1")
            "strb   r9, [r11]\n\t"
            "ldrd   r5, r6, [lr, #20]\n\t"
            "ldr    r7, [lr, #28]\n\t" MCUQ_ASM_REQUANTIZE("r2")
            "strb   r9, [r11, #1]\n\t"
            "add    r11, r11, #2\n\t"
            "str    r11, [r0, #24]\n\t"
            "add    lr, lr, #32\n\t"
            "str    lr, [r0, #16]\n\t"
            "ldr    r3, [r0, #20]\n\t"
            "cmp    lr, r3\n\t"
            "bne    1b\n\t"
            "pop    {r4-r11, pc}\n\t");
}
#undef ASM_PAIR
#endif

/* 1-row blocks: four weight rows at a time. A last block of m < 4 rows reads rows (0, 1, 0, 1)
 * for m = 2, (0, 1, 1, 2) for m = 3 and row 0 four times for m = 1. */
static __attribute__((noinline)) void product1(const mcuq_matmul_t *q, const uint32_t *block, int32_t k,
                                               const int8_t *w, int32_t n, int8_t *out, int32_t full)
{
    const int32_t *cd = q->channel_data;
    const uint32_t *tail = block + 2 * (k >> 2);
    int32_t c, j, a[4];
    for (c = 0; c < n; c += 4, w += 4 * k) {
        const int32_t m = n - c < 4 ? n - c : 4;
        const int32_t stride = m > 1 ? k : 0, second = m > 2 ? m - 2 : 0; /* rows 2, 3 start at w2 */
        const int8_t *w2 = w + second * k;
        const int32_t row[4] = {0, m > 1, second, second + (m > 1)};
        for (j = 0; j < 4; j++) {
            a[j] = cd[4 * (c + row[j])] + q->row_bias[0];
        }
        dot_1x4(block, w, w2, stride, k >> 2, a);
        if (k & 3) {
            for (j = 0; j < 4; j++) {
                a[j] = mac4(tail[0], tail[1], partial_word(w + row[j] * k + (k & ~3), k & 3), a[j]);
            }
        }
        for (j = 0; j < 4; j++) {
            const int32_t *d = cd + 4 * (c + row[j]);
            out[c + row[j]] = output(a[j], d[1], d[2], d[3], q, full);
        }
    }
}

/* mcuq_matmul_s8() over channels none of which is constant. */
static void product(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k, const int8_t *w,
                    int32_t n, int8_t *out, int32_t stride)
{
    mcuq_matmul_t local = *q; /* output stores may not alias it: no reloads */
    const int32_t full = local.act_min == -128 && local.act_max == 127;
    if ((rows & 3) == 0) { /* rows / 4 consecutive 4-row blocks */
        int32_t r;
#if defined(__ARM_FEATURE_DSP)
        if (full && (k & 3) == 0) { /* runs of channels with r > 0 in assembly, the others in channel4() */
            const int32_t *cd = local.channel_data, *end = cd + 4 * n;
            while (cd != end) {
                const int32_t *run = local.shifts_fast ? end : cd;
                while (run != end && run[2] > 0) {
                    run += 4;
                }
                if (run != cd) {
                    rows4(&local, block, k, w, cd, run, out, stride, rows >> 2);
                    w += k * ((run - cd) >> 2);
                    out += (run - cd) >> 2;
                    cd = run;
                }
                if (cd != end) {
                    for (r = 0; r < rows; r += 4) {
                        channel4(&local, block + 2 * r * (k >> 2), k, w, cd, NULL, 1, 1, out + r * stride, stride, 1);
                    }
                    cd += 4;
                    w += k;
                    out++;
                }
            }
            return;
        }
#endif
        for (r = 0; r < rows; r += 4, block += 8 * ((k + 3) >> 2), out += 4 * stride) {
            product4(&local, block, k, w, k, n, NULL, 1, 1, out, stride, full);
        }
    } else {
#if defined(__ARM_FEATURE_DSP)
        if (full && (k & 7) == 0 && k > 0 && n >= 2 && ((uintptr_t)w & 3) == 0 && local.shifts_fast) {
            rows1_t st;
            st.x = block;
            st.xend = block + 2 * (k >> 2);
            st.w = w;
            st.k = k;
            st.cd = local.channel_data;
            st.cde = local.channel_data + 4 * (n & ~1);
            st.out = out;
            st.zp = local.output_offset;
            st.row_bias = local.row_bias[0];
            rows1_asm(&st);
            if (n & 1) { /* the last channel */
                local.channel_data += 4 * (n - 1);
                product1(&local, block, k, w + (n - 1) * k, 1, out + n - 1, 1);
            }
            return;
        }
#endif
        product1(&local, block, k, w, n, out, full);
    }
}

/* Constant channels (mcuq_constant_channel(): no weight row) store their output in every row; the
 * runs of other channels between them go through product(). */
void mcuq_matmul_s8(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k, const int8_t *w,
                    int32_t n, int8_t *out, int32_t stride)
{
    mcuq_matmul_t run;
    const int32_t *cd = q->channel_data;
    int32_t c = 0, c0, r;
    if (q->shifts_fast) { /* no constant channel */
        product(q, block, rows, k, w, n, out, stride);
        return;
    }
    run = *q;
    while (c < n) {
        for (c0 = c; c < n && !mcuq_constant_channel(cd + 4 * c); c++) {
        }
        if (c != c0) {
            run.channel_data = cd + 4 * c0;
            product(&run, block, rows, k, w, c - c0, out + c0, stride);
            w += (c - c0) * k;
        }
        for (; c < n && mcuq_constant_channel(cd + 4 * c); c++) {
            const int8_t y = mcuq_constant_output(cd + 4 * c, q->output_offset);
            for (r = 0; r < rows; r++) {
                out[r * stride + c] = y;
            }
        }
    }
}

void mcuq_matmul_s8_chunk4(const mcuq_matmul_t *q, const uint32_t *block, int32_t kc, const int8_t *w,
                           int32_t ldw, int32_t n, int32_t *sums, int32_t first, int32_t last, int8_t *out,
                           int32_t stride)
{
    const mcuq_matmul_t local = *q;
    product4(&local, block, kc, w, ldw, n, sums, first, last, out, stride,
             local.act_min == -128 && local.act_max == 127);
}

#endif /* MCUQ_DSP */
