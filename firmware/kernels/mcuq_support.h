/* Helpers private to the kernel files: N-d index walks (broadcasting, PAD, MEAN), raw block
 * copies (PAD, CONCATENATION), the softmax row normalisation, bit-width dispatch, and the
 * DSP-extension primitives and matrix products of the int8 fast paths. */
#ifndef MCUQ_SUPPORT_H
#define MCUQ_SUPPORT_H

#include <stdint.h>
#include <string.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"

/* ---- DSP extension ------------------------------------------------------------------------
 * MCUQ_DSP is 1 when the compiler targets the Armv7E-M DSP extension (__ARM_FEATURE_DSP:
 * Cortex-M4, M7, M33, M55), whose SIMD instructions the kernels reach through ACLE intrinsics.
 * The host tests define MCUQ_DSP_EMULATED to run the very same DSP-path algorithms over the
 * portable twins below (bit-exact definitions of the instructions), so every fast path is
 * compared with the simulator on the host, under UBSan too, before QEMU runs the real thing. */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define MCUQ_DSP 1
#elif defined(MCUQ_DSP_EMULATED)
#define MCUQ_DSP 1
#else
#define MCUQ_DSP 0
#endif

/* MCUQ_MVE is 1 when the compiler targets Helium (__ARM_FEATURE_MVE: Cortex-M55), whose integer
 * vector instructions the int8 matrix product of CONV_2D and FULLY_CONNECTED uses there
 * (mcuq_matmul_s8_mve.c) in place of the DSP path's; Helium cores have the DSP extension too. */
#if defined(__ARM_FEATURE_MVE) && defined(__ARM_FEATURE_DSP)
#define MCUQ_MVE 1
#else
#define MCUQ_MVE 0
#endif

/* The plain C loops of the kernels with a DSP path: on DSP cores they run only for layers past the
 * DSP paths' bounds, so there they are built cold (for size, out of line); elsewhere they are the
 * kernel. */
#if MCUQ_DSP && defined(__GNUC__)
#define MCUQ_PLAIN_FALLBACK __attribute__((cold, noinline))
#else
#define MCUQ_PLAIN_FALLBACK
#endif

typedef char mcuq_arithmetic_right_shift64_check[(-INT64_C(1099511627776) >> 41) == -1 ? 1 : -1];

/* 4 bytes from any address (one LDR: Armv7-M loads words unaligned). */
static inline uint32_t mcuq_read_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void mcuq_write_u32(void *p, uint32_t v) { memcpy(p, &v, sizeof v); }

#if MCUQ_DSP
#if defined(__ARM_FEATURE_DSP)
/* SXTB16: bytes 0 and 2 of x, sign-extended, as two int16 lanes. */
static inline uint32_t mcuq_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int32_t)x); }
/* SMLAD: acc + lo(a) * lo(b) + hi(a) * hi(b) (int16 lanes), modulo 2^32. */
static inline int32_t mcuq_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int32_t)a, (int32_t)b, acc);
}
/* SMLABB / SMLATT: acc + lo(a) * lo(b), acc + hi(a) * hi(b), modulo 2^32. */
static inline int32_t mcuq_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}
static inline int32_t mcuq_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}
#else
static inline int32_t mcuq_lane16(uint32_t x, int32_t lane)
{
    const uint32_t h = (x >> (16 * lane)) & 0xFFFFu;
    return (int32_t)h - (int32_t)((h & 0x8000u) << 1);
}
static inline uint32_t mcuq_sxtb16(uint32_t x)
{
    const uint32_t lo = ((x & 0xFFu) ^ 0x80u) - 0x80u, hi = (((x >> 16) & 0xFFu) ^ 0x80u) - 0x80u;
    return (lo & 0xFFFFu) | (hi << 16);
}
static inline int32_t mcuq_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return mcuq_wrap32((uint32_t)acc + (uint32_t)(mcuq_lane16(a, 0) * mcuq_lane16(b, 0)) +
                       (uint32_t)(mcuq_lane16(a, 1) * mcuq_lane16(b, 1)));
}
static inline int32_t mcuq_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return mcuq_wrap32((uint32_t)acc + (uint32_t)(mcuq_lane16(a, 0) * mcuq_lane16(b, 0)));
}
static inline int32_t mcuq_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return mcuq_wrap32((uint32_t)acc + (uint32_t)(mcuq_lane16(a, 1) * mcuq_lane16(b, 1)));
}
#endif

/* SMMLAR: the top word of acc * 2^32 + a * b + 2^31 (modulo 2^64). */
static inline int32_t mcuq_smmlar(int32_t a, int32_t b, int32_t acc)
{
#if defined(__ARM_FEATURE_DSP)
    int32_t y;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(y) : "r"(a), "r"(b), "r"(acc));
    return y;
#else
    const uint64_t s = ((uint64_t)(uint32_t)acc << 32) + (uint64_t)((int64_t)a * b) + UINT64_C(0x80000000);
    return mcuq_wrap32((uint32_t)(s >> 32));
#endif
}

/* x saturated to the int8 range (SSAT #8). */
static inline int32_t mcuq_ssat8(int32_t x)
{
#if defined(__ARM_FEATURE_DSP)
    return __ssat(x, 8);
#else
    return x < -128 ? -128 : (x > 127 ? 127 : x);
#endif
}

/* SXTB16 of x rotated right by 8: bytes 1 and 3 as two int16 lanes. GCC 12 does not fold the
 * rotation into the instruction (a shift, an ORR and the SXTB16), so it is written out. */
static inline uint32_t mcuq_sxtb16_ror8(uint32_t x)
{
#if defined(__ARM_FEATURE_DSP)
    uint32_t y;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(y) : "r"(x));
    return y;
#else
    return mcuq_sxtb16((x >> 8) | (x << 24));
#endif
}

#if defined(__ARM_FEATURE_DSP)
/* Assembly text for the naked channel loops: r9 = SSAT #8 of mcuq_requantize_fast(a, M, r, h,
 * zp) for the sum in register a, with M in r5, r in r6, h in r7, zp in r10 (r8 scratch): the
 * nudge words (h - [a < 0], 2^30 ^ (a & 2^31)), one SMLAL, the shift, the offset, SSAT. */
#define MCUQ_ASM_REQUANTIZE(a)                                                                            \
    "add    r9, r7, " a ", asr #31\n\t"                                                                   \
    "and    r8, " a ", #0x80000000\n\t"                                                                   \
    "orr    r8, r8, #0x40000000\n\t"                                                                      \
    "smlal  r8, r9, " a ", r5\n\t"                                                                        \
    "asr    r9, r9, r6\n\t"                                                                               \
    "add    r9, r9, r10\n\t"                                                                              \
    "ssat   r9, #8, r9\n\t"
#endif

/* ---- column blocks and matrix products of the int8 DSP paths -------------------------------
 * A column block holds `rows` (1, 2 or 4) int8 vectors x[r][0 .. k) as int16 lanes that pair
 * with a weight word w = [b0 b1 b2 b3] unpacked as SXTB16(w) = (b0, b2) and SXTB16(w ROR 8) =
 * (b1, b3): for each group g of 4 elements, block[2 * rows * g + r] = (x[4g], x[4g+2]) and
 * block[2 * rows * g + rows + r] = (x[4g+1], x[4g+3]) (lanes past k hold 0): the even words of
 * all rows, then their odd words, so that a product loads each half with one LDM or LDRD.
 * Kernels keep blocks on the stack: MCUQ_DSP_BLOCK_WORDS words, at most MCUQ_DSP_MAX_DEPTH
 * elements per row of a 2-row block. */
#define MCUQ_DSP_MAX_DEPTH 640
#define MCUQ_DSP_BLOCK_WORDS MCUQ_DSP_MAX_DEPTH /* 2 rows x 2 words per 4 elements */
#define MCUQ_LANE_MASK UINT32_C(0xFF00FF00)     /* the high byte of each int16 lane */

/* Element k of row r: lane (k >> 1) & 1 of the even (k even) or odd word of its group. */
static inline void mcuq_block_put1(uint32_t *block, int32_t rows, int32_t r, int32_t k, int32_t v)
{
    uint32_t *word = block + 2 * rows * (k >> 2) + (k & 1) * rows + r;
    const int32_t lane = 16 * ((k >> 1) & 1);
    *word = (*word & ~(UINT32_C(0xFFFF) << lane)) | (((uint32_t)v & 0xFFFFu) << lane);
}

/* Elements k .. k + n - 1 of row r from n int8 values at src (any alignment). */
static inline void mcuq_block_put(uint32_t *block, int32_t rows, int32_t r, int32_t k, const int8_t *src,
                                  int32_t n)
{
    uint32_t *dst;
    for (; n > 0 && (k & 3); n--) {
        mcuq_block_put1(block, rows, r, k++, *src++);
    }
    dst = block + 2 * rows * (k >> 2) + r;
    for (; n >= 4; n -= 4, k += 4) {
        const uint32_t v = mcuq_read_u32(src);
        dst[0] = mcuq_sxtb16(v);
        dst[rows] = mcuq_sxtb16_ror8(v);
        dst += 2 * rows;
        src += 4;
    }
    for (; n > 0; n--) {
        mcuq_block_put1(block, rows, r, k++, *src++);
    }
}

/* Zeroes the last group of a k-element block (the lanes past k stay 0 while rows are filled). */
static inline void mcuq_block_clear_tail(uint32_t *block, int32_t rows, int32_t k)
{
    int32_t i;
    if (k & 3) {
        for (i = 0; i < 2 * rows; i++) {
            block[2 * rows * (k >> 2) + i] = 0;
        }
    }
}

/* What a product needs besides the block and the weights: output channel c of row r starts
 * from channel_data[c][0] + row_bias[r] (the bias must be folded into channel_data; row_bias is
 * FULLY_CONNECTED's filter_offset * sum x), then clamp(requantize + output_offset) from
 * channel_data[c] (mcuq_requantize_channel()). */
typedef struct {
    const int32_t *channel_data; /* [n][4] */
    int32_t row_bias[4];
    int32_t output_offset;
    int32_t act_min;
    int32_t act_max;
    int32_t shifts_fast; /* 1: every channel has r > 0, M != 0 (the params' shifts_fast, from pack) */
} mcuq_matmul_t;

/* out[r * stride + c] for r < rows (1, or 4 * m: m consecutive 4-row blocks, see
 * mcuq_matmul_s8.c) and c < n: the k-element rows of `block` times the weight rows w[c][0 .. k)
 * (row stride k, any alignment), modulo 2^32 as TFLM's int32 accumulator, then requantized.
 * Constant channels (mcuq_constant_channel()) have no weight row: w holds the other channels'
 * rows in order, and their outputs are mcuq_constant_output(). */
void mcuq_matmul_s8(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k, const int8_t *w,
                    int32_t n, int8_t *out, int32_t stride);

/* One chunk of a 4-row product over windows longer than a block: the block holds elements
 * k0 .. k0 + kc - 1 (kc a multiple of 4) of the rows, w points at element k0 of weight row 0
 * (row stride ldw; constant channels have none); sums[4 * c + r] carry channel c's sums from
 * chunk to chunk: the `first` chunk starts from the bias, the `last` one writes the outputs as
 * mcuq_matmul_s8() does. */
void mcuq_matmul_s8_chunk4(const mcuq_matmul_t *q, const uint32_t *block, int32_t kc, const int8_t *w,
                           int32_t ldw, int32_t n, int32_t *sums, int32_t first, int32_t last, int8_t *out,
                           int32_t stride);

#if MCUQ_MVE
/* out[r * stride + c] for r < rows, c < n: the int8 rows x[r][0 .. k) (row r at x + r * k, any
 * alignment) times the weight rows w[c][0 .. k) (row stride k), plus row_bias[0] in every row,
 * then requantized as mcuq_matmul_s8() does (constant channels have no weight row). Rows go in
 * runs of four, each run's every channel before the next run (the overlap contract). */
void mcuq_matmul_s8_mve(const mcuq_matmul_t *q, const int8_t *x, int32_t rows, int32_t k, const int8_t *w,
                        int32_t n, int8_t *out, int32_t stride);
#endif
#endif /* MCUQ_DSP */

/* A walk over an MCUQ_MAX_DIMS-D index (last axis fastest) tracking two linear offsets. */
typedef struct {
    int32_t dims[MCUQ_MAX_DIMS];
    int32_t strides[2][MCUQ_MAX_DIMS];
    int32_t index[MCUQ_MAX_DIMS];
    int32_t offset[2];
} mcuq_walk_t;

/* Dense row-major strides of dims; returns the element count. */
static inline int32_t mcuq_dense_strides(const int32_t *dims, int32_t *strides)
{
    int32_t i, n = 1;
    for (i = MCUQ_MAX_DIMS - 1; i >= 0; i--) {
        strides[i] = n;
        n *= dims[i];
    }
    return n;
}

/* A walk starting at index 0 (strides to be filled by the caller); returns the element count. */
static inline int32_t mcuq_walk_init(mcuq_walk_t *w, const int32_t *dims)
{
    int32_t i, n = 1;
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        w->dims[i] = dims[i];
        w->strides[0][i] = 0;
        w->strides[1][i] = 0;
        w->index[i] = 0;
        n *= dims[i];
    }
    w->offset[0] = 0;
    w->offset[1] = 0;
    return n;
}

static inline void mcuq_walk_next(mcuq_walk_t *w)
{
    int32_t i;
    for (i = MCUQ_MAX_DIMS - 1; i >= 0; i--) {
        w->offset[0] += w->strides[0][i];
        w->offset[1] += w->strides[1][i];
        if (++w->index[i] < w->dims[i]) {
            return;
        }
        w->offset[0] -= w->strides[0][i] * w->dims[i];
        w->offset[1] -= w->strides[1][i] * w->dims[i];
        w->index[i] = 0;
    }
}

/* Broadcast walk over the output of two inputs: offset[0] indexes input 1, offset[1] input 2.
 * Returns the output element count, or -1 when the dims do not broadcast. */
static inline int32_t mcuq_broadcast_init(mcuq_walk_t *w, const int32_t *dims1, const int32_t *dims2)
{
    int32_t out[MCUQ_MAX_DIMS], s1[MCUQ_MAX_DIMS], s2[MCUQ_MAX_DIMS];
    int32_t i, n;
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        if (dims1[i] != dims2[i] && dims1[i] != 1 && dims2[i] != 1) {
            return -1;
        }
        out[i] = dims1[i] == 1 ? dims2[i] : dims1[i];
    }
    mcuq_dense_strides(dims1, s1);
    mcuq_dense_strides(dims2, s2);
    n = mcuq_walk_init(w, out);
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        w->strides[0][i] = dims1[i] == 1 ? 0 : s1[i];
        w->strides[1][i] = dims2[i] == 1 ? 0 : s2[i];
    }
    return n;
}

/* clamp(x + offset, lo, hi) without int32 overflow. */
static inline int32_t mcuq_offset_clamp(int32_t x, int32_t offset, int32_t lo, int32_t hi)
{
    const int64_t y = (int64_t)x + offset;
    return y < lo ? lo : (y > hi ? hi : (int32_t)y);
}

/* requantize(), or its multiplication-free form when the node is shift_only (multiplier 2^30). */
static inline int32_t mcuq_requantize_node(int32_t x, int32_t multiplier, int32_t shift, int32_t shift_only)
{
    return shift_only ? mcuq_requantize_pow2(x, shift) : mcuq_requantize(x, multiplier, shift);
}

/* clamp(requantize(acc, multiplier, shift) + output_offset, lo, hi), out of line (the rare
 * channels the fast form below does not cover). */
int32_t mcuq_requantize_clamp(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset, int32_t lo,
                              int32_t hi);

/* requantize(acc, M, -(r + 1)) + output_offset from a channel_data row's M, r > 0 and h
 * (mcuq_kernels.h): one 64-bit multiply-add, a shift and the offset. */
static inline int32_t mcuq_requantize_fast(int32_t acc, int32_t m, int32_t r, int32_t h, int32_t output_offset)
{
    const uint32_t low = ((uint32_t)acc & UINT32_C(0x80000000)) ^ UINT32_C(0x40000000);
    const int64_t k = (int64_t)(h + (acc >> 31)) * INT64_C(4294967296) + (int64_t)low;
    return ((int32_t)((k + (int64_t)acc * m) >> 32) >> r) + output_offset;
}

/* 1 for a constant channel's channel_data row {0, 0, 1, 2 (y - output_offset)} (mcuq_kernels.h:
 * an int8 CONV_2D filter holds no row for it). */
static inline int32_t mcuq_constant_channel(const int32_t *cd) { return cd[1] == 0 && cd[2] > 0; }

/* A constant channel's output y. */
static inline int8_t mcuq_constant_output(const int32_t *cd, int32_t output_offset)
{
    return (int8_t)((cd[3] >> 1) + output_offset);
}

/* The same from a channel's whole channel_data row {b, M, r, h}, any r. */
static inline int32_t mcuq_requantize_channel(int32_t acc, const int32_t *cd, int32_t output_offset,
                                              int32_t lo, int32_t hi)
{
    int32_t y;
    if (cd[2] <= 0) {
        return mcuq_requantize_clamp(acc, cd[1], cd[3], output_offset, lo, hi);
    }
    y = mcuq_requantize_fast(acc, cd[1], cd[2], cd[3], output_offset);
    return y < lo ? lo : (y > hi ? hi : y);
}

/* Stores v as element k of an int`bits` array (v already within that type's range). */
static inline void mcuq_store_bits(void *output, int32_t bits, int32_t k, int32_t v)
{
    if (bits == 8) {
        ((int8_t *)output)[k] = (int8_t)v;
    } else if (bits == 16) {
        ((int16_t *)output)[k] = (int16_t)v;
    } else {
        ((int32_t *)output)[k] = v;
    }
}

/* Type range of int`bits` (8, 16 or 32). */
static inline void mcuq_bits_range(int32_t bits, int32_t *lo, int32_t *hi)
{
    *lo = bits == 32 ? INT32_MIN : -(INT32_C(1) << (bits - 1));
    *hi = bits == 32 ? INT32_MAX : (INT32_C(1) << (bits - 1)) - 1;
}

/* PAD body: copies the input rows (last axis) of `element_bytes` elements into an output
 * already filled with the pad value. */
static inline mcuq_status_t mcuq_pad_rows(const mcuq_pad_params_t *p, const void *input, void *output,
                                          int32_t element_bytes)
{
    int32_t out_dims[MCUQ_MAX_DIMS], out_strides[MCUQ_MAX_DIMS], row_dims[MCUQ_MAX_DIMS];
    const int32_t last = MCUQ_MAX_DIMS - 1;
    const size_t row_bytes = (size_t)p->input_dims[last] * (size_t)element_bytes;
    int32_t i, r, rows, base = 0;
    mcuq_walk_t w;
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        if (p->input_dims[i] < 0 || p->pad_before[i] < 0 || p->pad_after[i] < 0) {
            return MCUQ_ERR_PARAMS;
        }
        out_dims[i] = p->pad_before[i] + p->input_dims[i] + p->pad_after[i];
        row_dims[i] = i == last ? 1 : p->input_dims[i];
    }
    mcuq_dense_strides(out_dims, out_strides);
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        base += p->pad_before[i] * out_strides[i];
    }
    rows = mcuq_walk_init(&w, row_dims);
    for (i = 0; i < last; i++) {
        w.strides[0][i] = out_strides[i];
    }
    for (r = 0; r < rows && row_bytes; r++) {
        memcpy((uint8_t *)output + (size_t)(base + w.offset[0]) * (size_t)element_bytes,
               (const uint8_t *)input + (size_t)r * row_bytes, row_bytes);
        mcuq_walk_next(&w);
    }
    return MCUQ_OK;
}

/* CONCATENATION body for elements of `element_bytes` bytes. */
static inline mcuq_status_t mcuq_concatenate_one(const mcuq_concatenation_params_t *p, int32_t index,
                                                 const void *input, void *output, int32_t element_bytes)
{
    int32_t o, axis_out, start, block;
    size_t block_bytes, out_row_bytes, start_bytes;
    if (index < 0 || index >= p->num_inputs) {
        return MCUQ_ERR_PARAMS;
    }
    axis_out = p->axis_offsets[p->num_inputs];
    start = p->axis_offsets[index];
    block = (p->axis_offsets[index + 1] - start) * p->inner_size;
    block_bytes = (size_t)block * (size_t)element_bytes;
    out_row_bytes = (size_t)axis_out * (size_t)p->inner_size * (size_t)element_bytes;
    start_bytes = (size_t)start * (size_t)p->inner_size * (size_t)element_bytes;
    for (o = 0; o < p->outer_size && block_bytes; o++) {
        memcpy((uint8_t *)output + (size_t)o * out_row_bytes + start_bytes,
               (const uint8_t *)input + (size_t)o * block_bytes, block_bytes);
    }
    return MCUQ_OK;
}

/* exp(d) in Q0.31 for a softmax input difference d = x - max (d >= diff_min). */
static inline int32_t mcuq_softmax_exp(const mcuq_softmax_params_t *p, int32_t d)
{
    const int32_t scaled = mcuq_srdhm(mcuq_wrap32((uint32_t)d << p->input_left_shift), p->input_multiplier);
    return mcuq_exp_on_negative_values(scaled, 5);
}

/* Softmax row normalisation (TFLM GetReciprocal): the row maximum, the reciprocal of the Q12.19
 * sum of exponentials and the final rounding exponent for int`output_bits` output.
 * MCUQ_ERR_RANGE when that exponent leaves [0, 31]. */
static inline mcuq_status_t mcuq_softmax_row_scale(const mcuq_softmax_params_t *p, const int8_t *x,
                                                   int32_t *max, int32_t *reciprocal, int32_t *exponent)
{
    uint32_t sum = 0;
    int32_t c, headroom, m = INT8_MIN;
    for (c = 0; c < p->depth; c++) {
        m = x[c] > m ? x[c] : m;
    }
    for (c = 0; c < p->depth; c++) {
        const int32_t d = x[c] - m;
        if (d >= p->diff_min) {
            sum += (uint32_t)mcuq_rdbpot(mcuq_softmax_exp(p, d), 12);
        }
    }
    headroom = mcuq_clz32(sum);
    *max = m;
    *exponent = 12 - headroom + 31 - p->output_bits;
    if (*exponent < 0 || *exponent > 31) {
        return MCUQ_ERR_RANGE;
    }
    *reciprocal = mcuq_one_over_one_plus_x(
        mcuq_wrap32((headroom < 32 ? sum << headroom : 0u) - UINT32_C(0x80000000)));
    return MCUQ_OK;
}

/* One softmax output value for x = row max + d, in [lowest, -lowest - 1] where lowest is the
 * int`output_bits` minimum; entries below diff_min give lowest (TFLM's reference). */
static inline int32_t mcuq_softmax_value(const mcuq_softmax_params_t *p, int32_t d, int32_t reciprocal,
                                         int32_t exponent)
{
    const int32_t lowest = -(INT32_C(1) << (p->output_bits - 1));
    if (d < p->diff_min) {
        return lowest;
    }
    return mcuq_clamp(mcuq_rdbpot(mcuq_srdhm(reciprocal, mcuq_softmax_exp(p, d)), exponent) + lowest,
                      lowest, -lowest - 1);
}

/* ---- per-output work of the int8 fast paths (depthwise, ADD, pooling) ---------------------- */

/* GCC's first scheduling pass hoists the loads of an unrolled multiply-accumulate or table loop
 * ahead, past the registers the loop has, and spills them (a third more instructions in the
 * depthwise kernels): their hot loops are compiled without it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__ARM_FEATURE_DSP)
#define MCUQ_NO_PRESCHEDULE __attribute__((noinline, optimize("no-schedule-insns")))
#else
#define MCUQ_NO_PRESCHEDULE
#endif

/* Loads after this point are not served from registers holding values loaded before it. */
#if defined(__GNUC__)
#define MCUQ_RELOAD() __asm__ volatile("" ::: "memory")
#else
#define MCUQ_RELOAD() ((void)0)
#endif

#if MCUQ_DSP
/* a = p[k], b = p[k + 1] for a constant k: one LDRD (GCC pairs no loads once its first
 * scheduling pass is off, see MCUQ_NO_PRESCHEDULE). */
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
#define MCUQ_LOAD2(a, b, p, k)                                                                      \
    __asm__("ldrd %0, %1, [%2, %3]" : "=r"(a), "=r"(b) : "r"(p), "i"(4 * (k)),                     \
            "m"(*(const uint32_t(*)[2])(const void *)((p) + (k))))
#else
#define MCUQ_LOAD2(a, b, p, k) ((a) = (p)[k], (b) = (p)[(k) + 1])
#endif

/* o0 (and o1) = the int8 outputs of channel_data row cd + 4 * j (j a constant, r > 0, clamp to
 * the int8 range) from sums s0 (and s1) without the bias; the row is read with two LDRDs. */
#define MCUQ_REQUANTIZE_S8(o0, cd, j, s0, zp)                                                       \
    do {                                                                                            \
        int32_t b_, m_, r_, h_;                                                                     \
        MCUQ_LOAD2(b_, m_, cd, 4 * (j));                                                            \
        MCUQ_LOAD2(r_, h_, cd, 4 * (j) + 2);                                                        \
        (o0) = (int8_t)mcuq_ssat8(mcuq_requantize_fast(mcuq_add_wrap(b_, s0), m_, r_, h_, zp));     \
    } while (0)
#define MCUQ_REQUANTIZE2_S8(o0, o1, cd, j, s0, s1, zp)                                              \
    do {                                                                                            \
        int32_t b_, m_, r_, h_;                                                                     \
        MCUQ_LOAD2(b_, m_, cd, 4 * (j));                                                            \
        MCUQ_LOAD2(r_, h_, cd, 4 * (j) + 2);                                                        \
        (o0) = (int8_t)mcuq_ssat8(mcuq_requantize_fast(mcuq_add_wrap(b_, s0), m_, r_, h_, zp));     \
        (o1) = (int8_t)mcuq_ssat8(mcuq_requantize_fast(mcuq_add_wrap(b_, s1), m_, r_, h_, zp));     \
    } while (0)

/* SXTAB16: acc's two int16 lanes plus bytes 0 and 2 of x, sign-extended (modulo 2^16 per lane). */
#if defined(__ARM_FEATURE_DSP)
static inline uint32_t mcuq_sxtab16(uint32_t acc, uint32_t x) { return (uint32_t)__sxtab16((int32_t)acc, (int32_t)x); }
#else
static inline uint32_t mcuq_sxtab16(uint32_t acc, uint32_t x)
{
    const uint32_t e = mcuq_sxtb16(x);
    return ((acc + e) & 0xFFFFu) | (((acc >> 16) + (e >> 16)) << 16);
}
#endif

#endif

#endif /* MCUQ_SUPPORT_H */
