/* Helpers private to the kernel files: N-d index walks (broadcasting, PAD, MEAN), raw block
 * copies (PAD, CONCATENATION), the softmax row normalisation and bit-width dispatch. */
#ifndef MCUQ_SUPPORT_H
#define MCUQ_SUPPORT_H

#include <stdint.h>
#include <string.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"

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

#endif /* MCUQ_SUPPORT_H */
