/* Helpers private to the int8 x int4 kernels (mcuq_*_s8_s4.c): reading packed int4 filters and,
 * on cores with the DSP extension, their column blocks and matrix product.
 *
 * A packed filter holds element i in byte i / 2, low nibble first (as a .tflite does); values
 * are two's complement in [-8, 7]. */
#ifndef MCUQ_SUPPORT_S4_H
#define MCUQ_SUPPORT_S4_H

#include <stdint.h>

#include "mcuq_support.h"

/* Element i of a packed int4 array (one SBFX on Armv7-M). */
static inline int32_t mcuq_s4_at(const uint8_t *w, int32_t i)
{
    const uint32_t byte = w[i >> 1];
    return ((int32_t)((byte << (28 - 4 * (i & 1))) & UINT32_C(0xF0000000))) >> 28;
}

/* Filters of at most this many weights are unpacked once per call into a stack buffer and run
 * by the int8 kernel (as TFLM runs int4 filters; 3x3 windows over 8 x 16 or 128 channels): with
 * that kernel's own stack (4.3 KB at most, conv's DSP path) it stays within the firmware's 8 KB.
 * The s4 DSP paths are not inlined into the kernels, so their buffers are not on that stack. */
#define MCUQ_S4_UNPACKED_BYTES 1280

#if defined(__GNUC__)
#define MCUQ_S4_NOINLINE __attribute__((noinline))
#else
#define MCUQ_S4_NOINLINE
#endif

/* The n weights of a packed filter as int8 values, four at a time: the nibbles of two bytes
 * spread to one byte each, then bit 3 of each byte sign-extended (times 0x1E: 8 -> 0xF0). */
static inline void mcuq_s4_unpack(const uint8_t *w, int32_t n, int8_t *out)
{
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4, w += 2) {
        uint32_t t = (uint32_t)w[0] | ((uint32_t)w[1] << 8);
        t = (t | (t << 8)) & UINT32_C(0x00FF00FF);
        t = (t | (t << 4)) & UINT32_C(0x0F0F0F0F);
        mcuq_write_u32(out + i, t | ((t & UINT32_C(0x08080808)) * 0x1Eu));
    }
    for (; i < n; i++) {
        out[i] = (int8_t)mcuq_s4_at(w, i & 3);
    }
}

#if MCUQ_DSP
/* ---- DSP paths ------------------------------------------------------------------------------
 * Eight int4 weights w0..w7 (nibbles 0..7 of a word v) unpack with one AND each into int16
 * lanes 4096 times their value: (v << 12) & 0xF000F000 = (4096 w0, 4096 w4), (v << 8) & .. =
 * (w1, w5), (v << 4) & .. = (w2, w6), v & .. = (w3, w7). A column block holds the int8 inputs
 * as matching int16 lanes: for group g of 8 elements, row r owns the words
 * block[4 * (rows * g + r) + j] = (x[8g + j], x[8g + j + 4]), j < 4 (lanes past k hold 0), so
 * four SMLADs add 4096 times eight products. |4096 w x| <= 2^22, so MCUQ_S4_CHUNK = 504
 * elements sum below 2^31 and shift back exactly; longer rows add chunk by chunk. */
#define MCUQ_S4_MAX_DEPTH 640            /* elements per block row: blocks of 2 rows take 640 words */
#define MCUQ_S4_BLOCK_WORDS MCUQ_S4_MAX_DEPTH
#define MCUQ_S4_SHORT_DEPTH 320          /* blocks of 4 rows: windows up to 320 elements */
#define MCUQ_S4_CHUNK_GROUPS 63          /* 504 elements */
#define MCUQ_S4_LANE_MASK UINT32_C(0xF000F000)

/* Elements 0 .. k - 1 of block row r from k int8 values at x (any alignment); the lanes of the
 * last group past k are set to 0. */
void mcuq_s4_block_put(uint32_t *block, int32_t rows, int32_t r, const int8_t *x, int32_t k);

/* out[r * stride + c] for r < rows (1, 2 or 4), c < n (q: mcuq_matmul_t of mcuq_support.h, its
 * shifts_fast unread): the k-element rows of `block` times the
 * packed int4 weight rows c (elements c * k .. c * k + k - 1 of w). */
void mcuq_matmul_s8_s4(const mcuq_matmul_t *q, const uint32_t *block, int32_t rows, int32_t k,
                       const uint8_t *w, int32_t n, int8_t *out, int32_t stride);
#endif /* MCUQ_DSP */

#endif /* MCUQ_SUPPORT_S4_H */
