/* The int8 matrix product of CONV_2D and FULLY_CONNECTED on Helium (MVE) cores: int8 rows (the
 * pixels of a 1x1 convolution and FULLY_CONNECTED's inputs in place, other windows as
 * mcuq_conv2d_s8.c copies them; no column block) times int8 weight rows, 16 products per
 * VMLAVA.S8 (that is VMLADAVA) into a 32-bit sum, modulo 2^32 like TFLM's int32 accumulator
 * (the input offset is in channel_data's bias). The dot loops are short inline assembly: a tail-predicated
 * low-overhead loop (WLSTP.8 / LETP) runs k elements in ceil(k / 16) turns, its last turn
 * loading and adding only the lanes left (inactive lanes read no memory), one loop instruction
 * a turn; GCC 12 neither forms such loops nor keeps the pointers in registers at -Os.
 *
 * Four rows (a run of four pixels) share one weight vector: their four sums of one channel then
 * requantize as one vector (VQRDMULH is TFLM's saturating rounding doubling high multiply; its
 * rounding divide by 2^e is VRSHL after subtracting 1 from negative values) and go out with one
 * scatter store; the common case (int8 clamp, runs of channels with r > 0) is one assembly
 * loop over the channels, run4_asm(), the others its C form. A single row (FULLY_CONNECTED,
 * leftover pixels) takes four weight rows per input vector and requantizes each sum from its
 * channel_data row. */
#include "mcuq_support.h"

#if MCUQ_MVE
#include <arm_mve.h>

/* a[j] += v[0 .. k) . r[j][0 .. k) for the four rows r[j] (k > 0): one vector of v, loaded once a
 * turn, meets the four rows' vectors (the products are symmetric: v is the weight row and r the
 * pixels, or v the input row and r four weight rows). */
static inline __attribute__((always_inline)) void dot_shared4(const int8_t *v, const int8_t *r0, const int8_t *r1,
                                                              const int8_t *r2, const int8_t *r3, int32_t k,
                                                              int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    __asm__("wlstp.8 lr, %[k], 2f\n\t"
            "1:\n\t"
            "vldrb.8   q0, [%[v]], #16\n\t"
            "vldrb.8   q1, [%[r0]], #16\n\t"
            "vmlava.s8 %[a0], q0, q1\n\t"
            "vldrb.8   q1, [%[r1]], #16\n\t"
            "vmlava.s8 %[a1], q0, q1\n\t"
            "vldrb.8   q1, [%[r2]], #16\n\t"
            "vmlava.s8 %[a2], q0, q1\n\t"
            "vldrb.8   q1, [%[r3]], #16\n\t"
            "vmlava.s8 %[a3], q0, q1\n\t"
            "letp      lr, 1b\n\t"
            "2:\n\t"
            : [a0] "+Te"(a0), [a1] "+Te"(a1), [a2] "+Te"(a2), [a3] "+Te"(a3), [v] "+r"(v), [r0] "+r"(r0),
              [r1] "+r"(r1), [r2] "+r"(r2), [r3] "+r"(r3)
            : [k] "r"(k)
            : "lr", "q0", "q1", "memory");
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* Sums of the four rows x, x + ldx, x + 2 ldx, x + 3 ldx times the weight row w over k > 0
 * elements, each starting from b, as one vector. */
static inline __attribute__((always_inline)) int32x4_t dot_4x1(const int8_t *x, int32_t ldx, const int8_t *w,
                                                               int32_t k, int32_t b)
{
    int32_t a[4] = {b, b, b, b};
    dot_shared4(w, x, x + ldx, x + 2 * ldx, x + 3 * ldx, k, a);
    return vldrwq_s32(a);
}

/* a[j] += x[0 .. k) . w[j][0 .. k) (k > 0) for weight rows w[j] = w + min(j, m - 1) * k, m in
 * 1 .. 4 (a last group of m < 4 channels reads its last row again for the missing ones). */
static inline __attribute__((always_inline)) void dot_1x4(const int8_t *x, const int8_t *w, int32_t m, int32_t k,
                                                          int32_t *a)
{
    const int8_t *w1 = m > 1 ? w + k : w, *w2 = m > 2 ? w + 2 * k : w1, *w3 = m > 3 ? w + 3 * k : w2;
    dot_shared4(x, w, w1, w2, w3, k, a);
}

/* clamp(requantize(s, M, shift) + output_offset) of four sums of channel_data row cd (any r),
 * stored at out + offsets: the left shift (r <= 0 and shift > 0), VQRDMULH, the rounding right
 * shift by e as VRSHL of s - [s < 0] (saturating: INT32_MIN stays, still exact; nothing is
 * subtracted when e = 0), the offset, the clamp (int8's: two saturating narrows). */
static inline __attribute__((always_inline)) void outputs4(int32x4_t s, const int32_t *cd, const mcuq_matmul_t *q,
                                                           int8_t *out, uint32x4_t offsets, int32_t full)
{
    const int32_t r = cd[2], h = cd[3];
    const int32_t left = r > 0 || h < 0 ? 0 : h, right = r > 0 ? -(r + 1) : h < 0 ? h : 0;
    s = vshlq_r_s32(s, left);
    s = vqrdmulhq_n_s32(s, cd[1]);
    s = vqsubq_s32(s, vreinterpretq_s32_u32(vshlq_r_u32(vreinterpretq_u32_s32(s), right < 0 ? -31 : -32)));
    s = vrshlq_n_s32(s, right);
    s = vaddq_n_s32(s, q->output_offset);
    if (full) {
        const int16x8_t h16 = vqmovnbq_s32(vreinterpretq_s16_s32(s), s);
        s = vreinterpretq_s32_s8(vqmovnbq_s16(vreinterpretq_s8_s16(h16), h16));
    } else {
        s = vminq_s32(vmaxq_s32(s, vdupq_n_s32(q->act_min)), vdupq_n_s32(q->act_max));
    }
    vstrbq_scatter_offset_s32(out, offsets, s);
}

/* The output of one sum (bias included) of channel_data row cd. */
static inline __attribute__((always_inline)) int8_t output1(int32_t acc, const int32_t *cd, const mcuq_matmul_t *q,
                                                            int32_t full)
{
    if (full && cd[2] > 0) {
        return (int8_t)mcuq_ssat8(mcuq_requantize_fast(acc, cd[1], cd[2], cd[3], q->output_offset));
    }
    return (int8_t)mcuq_requantize_channel(acc, cd, q->output_offset, q->act_min, q->act_max);
}

/* One row x: the computed channels in groups of four, constant channels stored as they come. */
static void row1(const mcuq_matmul_t *q, const int8_t *x, int32_t k, const int8_t *w, int32_t n, int8_t *out,
                 int32_t full)
{
    const int32_t *cd = q->channel_data;
    int32_t c = 0, j;
    while (c < n) {
        int32_t idx[4], a[4], m = 0;
        for (; q->shifts_fast && c < n && m < 4; c++) { /* no constant channel */
            idx[m++] = c;
        }
        for (; c < n && m < 4; c++) {
            if (mcuq_constant_channel(cd + 4 * c)) {
                out[c] = mcuq_constant_output(cd + 4 * c, q->output_offset);
            } else {
                idx[m++] = c;
            }
        }
        if (m == 0) {
            break;
        }
        for (j = 0; j < 4; j++) {
            a[j] = j < m ? cd[4 * idx[j]] + q->row_bias[0] : 0;
        }
        dot_1x4(x, w, m, k, a);
        w += m * k;
        if (full && q->shifts_fast && m == 4) { /* channels idx[0] .. + 3, all r > 0: as one vector */
            const int32x4x4_t d = vld4q_s32(cd + 4 * idx[0]); /* b, M, r, h of the four */
            int32x4_t v = vqrdmulhq_s32(vld1q_s32(a), d.val[1]);
            v = vqsubq_s32(v, vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(v), 31)));
            v = vaddq_n_s32(vrshlq_s32(v, vmvnq_s32(d.val[2])), q->output_offset);
            const int16x8_t h16 = vqmovnbq_s32(vreinterpretq_s16_s32(v), v);
            vstrbq_s32(out + idx[0], vreinterpretq_s32_s8(vqmovnbq_s16(vreinterpretq_s8_s16(h16), h16)));
            continue;
        }
        for (j = 0; j < m; j++) {
            out[idx[j]] = output1(a[j], cd + 4 * idx[j], q, full);
        }
    }
}

/* The four sums in r4, r6, r8, r10 into q3 (lanes one at a time: QEMU 7.2 puts the two-register
 * VMOV's Rt in lane 0, not in lane 2 as other references), then VQRDMULH by M and the rounding
 * shift right by r + 1 (M, r from the channel_data row at r1; r12, lr and q0 clobbered). */
#define REQUANTIZE4                                                                                       \
    "vmov.32 d6[0], r4\n\t"                                                                               \
    "vmov.32 d6[1], r6\n\t"                                                                               \
    "vmov.32 d7[0], r8\n\t"                                                                               \
    "vmov.32 d7[1], r10\n\t"                                                                              \
    "ldrd    r12, lr, [r1, #4]\n\t"                                                                       \
    "vqrdmulh.s32 q3, q3, r12\n\t"                                                                        \
    "vshr.u32 q0, q3, #31\n\t"                                                                            \
    "vqsub.s32 q3, q3, q0\n\t"                                                                            \
    "mvn     lr, lr\n\t"                                                                                  \
    "vrshl.s32 q3, lr\n\t"
/* The four outputs in q3 (offset added) saturated to int8 and stored at r3 + the offsets in q2. */
#define STORE4                                                                                            \
    "vqmovnb.s32 q3, q3\n\t"                                                                              \
    "vqmovnb.s16 q3, q3\n\t"                                                                              \
    "vstrb.32 q3, [r3, q2]\n\t"

/* The channel loop of rows4() in assembly for a run of channels cd .. cde - 1 that all have r > 0
 * (constant ones included), the int8 clamp and no row bias: per channel dot_4x1()'s loop, then
 * outputs4() without its left shift (r > 0: none) and with the fix-up always (e = r + 1 >= 2),
 * or a constant channel's output (M = 0) without products. Its state lives in a run4_t; w is
 * left at the next computed channel's weight row. */
typedef struct {
    const int8_t *x;      /* [0] the run's first row */
    int32_t k;            /* [4] */
    int32_t zp;           /* [8] */
    const int32_t *cde;   /* [12] end of the channel_data rows */
    uint32_t offsets[4];  /* [16] the four rows' output offsets */
    const int32_t *cd;    /* [32] */
    const int8_t *w;      /* [36] */
    int8_t *out;          /* [40] the first channel's output in row 0 */
} run4_t;

static void __attribute__((naked, noinline)) run4_asm(run4_t *s)
{
    (void)s;
    __asm__("push    {r4-r11, lr}\n\t"
            "ldr     r1, [r0, #32]\n\t"
            "ldr     r3, [r0, #40]\n\t"
            "vldrw.u32 q2, [r0, #16]\n\t"
            "1:\n\t"
            "ldr     r4, [r1, #4]\n\t" /* M */
            "cbnz    r4, 6f\n\t"
            "ldr     r12, [r1, #12]\n\t" /* constant: zp + (h >> 1) */
            "ldr     r4, [r0, #8]\n\t"
            "add     r12, r4, r12, asr #1\n\t"
            "vdup.32 q3, r12\n\t"
            "vstrb.32 q3, [r3, q2]\n\t"
            "b       4f\n\t"
            "6:\n\t"
            "ldr     r4, [r1]\n\t" /* the bias */
            "ldrd    lr, r12, [r0]\n\t" /* x, k */
            "ldr     r2, [r0, #36]\n\t" /* the weight row */
            "add     r5, r2, r12\n\t"
            "str     r5, [r0, #36]\n\t" /* the next one (the loop may end up to 15 bytes past it) */
            "mov     r6, r4\n\t"
            "mov     r8, r4\n\t"
            "mov     r10, r4\n\t"
            "mov     r5, lr\n\t"
            "add     r7, lr, r12\n\t"
            "add     r9, r7, r12\n\t"
            "add     r11, r9, r12\n\t"
            "wlstp.8 lr, r12, 3f\n\t"
            "2:\n\t"
            "vldrb.8   q0, [r2], #16\n\t"
            "vldrb.8   q1, [r5], #16\n\t"
            "vmlava.s8 r4, q1, q0\n\t"
            "vldrb.8   q1, [r7], #16\n\t"
            "vmlava.s8 r6, q1, q0\n\t"
            "vldrb.8   q1, [r9], #16\n\t"
            "vmlava.s8 r8, q1, q0\n\t"
            "vldrb.8   q1, [r11], #16\n\t"
            "vmlava.s8 r10, q1, q0\n\t"
            "letp    lr, 2b\n\t"
            "3:\n\t"
            REQUANTIZE4
            "ldr     r12, [r0, #8]\n\t"
            "vadd.i32 q3, q3, r12\n\t"
            STORE4
            "4:\n\t"
            "adds    r3, r3, #1\n\t"
            "adds    r1, r1, #16\n\t"
            "ldr     r12, [r0, #12]\n\t"
            "cmp     r1, r12\n\t"
            "bne     1b\n\t"
            "pop     {r4-r11, pc}\n\t");
}

/* run4_asm() for rows of k <= 16 elements: the four rows loaded once (q4-q7, their lanes past k
 * zeroed by the predicated loads), then per channel one predicated weight load and four VMLAVA,
 * no loop. */
static void __attribute__((naked, noinline)) run4_short_asm(run4_t *s)
{
    (void)s;
    __asm__("push    {r4-r11, lr}\n\t"
            "vpush   {d8-d15}\n\t"
            "ldr     r1, [r0, #32]\n\t"
            "ldrd    r2, r3, [r0, #36]\n\t" /* w, out */
            "vldrw.u32 q2, [r0, #16]\n\t"
            "ldrd    lr, r11, [r0]\n\t" /* x, k */
            "add     r5, lr, r11\n\t"
            "add     r7, r5, r11\n\t"
            "add     r9, r7, r11\n\t"
            "vctp.8  r11\n\t"
            "vpstttt\n\t"
            "vldrbt.8 q4, [lr]\n\t"
            "vldrbt.8 q5, [r5]\n\t"
            "vldrbt.8 q6, [r7]\n\t"
            "vldrbt.8 q7, [r9]\n\t"
            "ldr     r9, [r0, #8]\n\t" /* zp */
            "ldr     r7, [r0, #12]\n\t" /* end of the channel_data rows */
            "1:\n\t"
            "ldr     r4, [r1, #4]\n\t" /* M */
            "cbnz    r4, 6f\n\t"
            "ldr     r12, [r1, #12]\n\t" /* constant: zp + (h >> 1) */
            "add     r12, r9, r12, asr #1\n\t"
            "vdup.32 q3, r12\n\t"
            "vstrb.32 q3, [r3, q2]\n\t"
            "b       4f\n\t"
            "6:\n\t"
            "ldr     r4, [r1]\n\t" /* the bias */
            "vpst\n\t"
            "vldrbt.8 q0, [r2]\n\t"
            "add     r2, r2, r11\n\t"
            "mov     r6, r4\n\t"
            "mov     r8, r4\n\t"
            "mov     r10, r4\n\t"
            "vmlava.s8 r4, q4, q0\n\t"
            "vmlava.s8 r6, q5, q0\n\t"
            "vmlava.s8 r8, q6, q0\n\t"
            "vmlava.s8 r10, q7, q0\n\t"
            REQUANTIZE4
            "vadd.i32 q3, q3, r9\n\t"
            STORE4
            "4:\n\t"
            "adds    r3, r3, #1\n\t"
            "adds    r1, r1, #16\n\t"
            "cmp     r1, r7\n\t"
            "bne     1b\n\t"
            "str     r2, [r0, #36]\n\t"
            "vpop    {d8-d15}\n\t"
            "pop     {r4-r11, pc}\n\t");
}

/* Rows x .. x + 3 k (a run of four pixels: every channel of the run before the next run, as the
 * overlap contract of mcuq_kernels.h asks), one weight row serving the four: with the int8 clamp
 * and no row bias, runs of channels with r > 0 in run4_asm() (`all_fast`: every channel one run),
 * the others here. */
static void rows4(const mcuq_matmul_t *q, const int8_t *x, int32_t k, const int8_t *w, int32_t n, int8_t *out,
                  uint32x4_t offsets, int32_t full, int32_t all_fast)
{
    const int32_t *cd = q->channel_data, *end = cd + 4 * n;
    run4_t st;
    if (full && q->row_bias[0] == 0) {
        st.x = x;
        st.k = k;
        st.zp = q->output_offset;
        vst1q_u32(st.offsets, offsets);
    }
    while (cd != end) {
        if (full && q->row_bias[0] == 0 && cd[2] > 0) {
            const int32_t *run = all_fast ? end : cd + 4;
            while (run != end && run[2] > 0) {
                run += 4;
            }
            st.cde = run;
            st.cd = cd;
            st.w = w;
            st.out = out;
            if (k <= 16) {
                run4_short_asm(&st);
            } else {
                run4_asm(&st);
            }
            w = st.w;
            out += (run - cd) >> 2;
            cd = run;
            continue;
        }
        if (!q->shifts_fast && mcuq_constant_channel(cd)) {
            vstrbq_scatter_offset_s32(out, offsets, vdupq_n_s32(mcuq_constant_output(cd, q->output_offset)));
        } else {
            outputs4(dot_4x1(x, k, w, k, cd[0] + q->row_bias[0]), cd, q, out, offsets, full);
            w += k;
        }
        cd += 4;
        out++;
    }
}

static inline __attribute__((always_inline)) void product(const mcuq_matmul_t *q, const int8_t *x, int32_t rows,
                                                          int32_t k, const int8_t *w, int32_t n, int8_t *out,
                                                          int32_t stride, int32_t full, int32_t all_fast)
{
    const uint32x4_t offsets = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)stride);
    int32_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        rows4(q, x + r * k, k, w, n, out + r * stride, offsets, full, all_fast);
    }
    for (; r < rows; r++) {
        row1(q, x + r * k, k, w, n, out + r * stride, full);
    }
}

void mcuq_matmul_s8_mve(const mcuq_matmul_t *q, const int8_t *x, int32_t rows, int32_t k, const int8_t *w,
                        int32_t n, int8_t *out, int32_t stride)
{
    const mcuq_matmul_t local = *q; /* output stores may not alias it: no reloads */
    int32_t c, all_fast = 1; /* every channel_data row has r > 0 (constant ones included) */
    for (c = 0; c < n && all_fast && !local.shifts_fast && rows >= 4; c++) {
        all_fast = local.channel_data[4 * c + 2] > 0;
    }
    if (local.act_min == -128 && local.act_max == 127) {
        product(&local, x, rows, k, w, n, out, stride, 1, all_fast);
    } else {
        product(&local, x, rows, k, w, n, out, stride, 0, all_fast);
    }
}
#endif /* MCUQ_MVE */
