/* FULLY_CONNECTED, int8, per-tensor (with filter offset) or per-channel (mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* `mcuq build` passes MCUQ_PLAIN_FULLY_CONNECTED_S8=0 when no layer of the model needs fully_connected_plain() on a DSP
 * core (mcuq.pack.plain_fallbacks); then it is left out. */
#ifndef MCUQ_PLAIN_FULLY_CONNECTED_S8
#define MCUQ_PLAIN_FULLY_CONNECTED_S8 1
#endif
#define PLAIN (!MCUQ_DSP || MCUQ_PLAIN_FULLY_CONNECTED_S8)

#if PLAIN
/* sum of (w[i] + filter_offset) * (x[i] + input_offset), wrapping modulo 2^32: the inner loop
 * a DSP (SMLAD) path replaces. */
static uint32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t input_offset, int32_t filter_offset)
{
    uint32_t acc = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        acc += (uint32_t)((w[i] + filter_offset) * (x[i] + input_offset));
    }
    return acc;
}
#endif

#if MCUQ_DSP
/* filter_offset * sum of a row's inputs, the part of the offsets that depends on the input. */
static int32_t filter_offset_term(const mcuq_fully_connected_params_t *p, const int8_t *x)
{
    uint32_t sum = 0;
    int32_t i;
    if (p->filter_offset == 0) {
        return 0;
    }
    for (i = 0; i < p->depth; i++) {
        sum += (uint32_t)x[i];
    }
    return mcuq_wrap32(sum * (uint32_t)p->filter_offset);
}

/* Input rows one at a time (a 1-row column block; on Helium cores the row itself), times every
 * filter row. */
static void fully_connected_dsp(const mcuq_fully_connected_params_t *p, const int8_t *input, const int8_t *filter,
                                int8_t *output)
{
#if !MCUQ_MVE
    uint32_t block[MCUQ_DSP_BLOCK_WORDS];
#endif
    const int32_t k = p->depth, n = p->units;
    int32_t b;
    mcuq_matmul_t q;
    q.channel_data = p->channel_data;
    q.output_offset = p->output_offset;
    q.act_min = p->act_min;
    q.act_max = p->act_max;
    q.shifts_fast = p->shifts_fast;
    q.row_bias[1] = q.row_bias[2] = q.row_bias[3] = 0;
    for (b = 0; b < p->batches; b++, input += k, output += n) {
#if MCUQ_MVE
        q.row_bias[0] = filter_offset_term(p, input);
        mcuq_matmul_s8_mve(&q, input, 1, k, filter, n, output, n);
#else
        mcuq_block_clear_tail(block, 1, k);
        mcuq_block_put(block, 1, 0, 0, input, k);
        q.row_bias[0] = filter_offset_term(p, input);
        mcuq_matmul_s8(&q, block, 1, k, filter, n, output, n);
#endif
    }
}
#endif

#if PLAIN
/* mcuq_fully_connected_s8() past its DSP path, or all of it on cores without one. */
static MCUQ_PLAIN_FALLBACK mcuq_status_t fully_connected_plain(const mcuq_fully_connected_params_t *p,
                                                                const int8_t *input, const int8_t *filter,
                                                                const int32_t *bias, int8_t *output)
{
    int32_t b, o;
    for (b = 0; b < p->batches; b++) {
        const int8_t *x = input + b * p->depth;
        for (o = 0; o < p->units; o++) {
            const int32_t k = p->per_channel ? o : 0;
            uint32_t acc = dot_s8(x, filter + o * p->depth, p->depth, p->input_offset, p->filter_offset);
            if (bias != NULL) {
                acc += (uint32_t)bias[o];
            }
            *output++ = (int8_t)mcuq_offset_clamp(mcuq_requantize_node(mcuq_wrap32(acc), p->multiplier[k],
                                                                       p->shift[k], p->shift_only),
                                                  p->output_offset, p->act_min, p->act_max);
        }
    }
    return MCUQ_OK;
}
#endif

mcuq_status_t mcuq_fully_connected_s8(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                      const int8_t *filter, const int32_t *bias, int8_t *output)
{
    if (p->accumulator_bits != 32) {
        return MCUQ_ERR_PARAMS;
    }
#if MCUQ_DSP
    /* 1 row: 2 words per 4 inputs (Helium: the row in place, any depth) */
    if ((MCUQ_MVE || p->depth <= 2 * MCUQ_DSP_MAX_DEPTH) && (p->bias_folded || bias == NULL)) {
        fully_connected_dsp(p, input, filter, output);
        return MCUQ_OK;
    }
#endif
#if PLAIN
    return fully_connected_plain(p, input, filter, bias, output);
#else
    return MCUQ_ERR_UNSUPPORTED; /* pack said no layer gets here */
#endif
}
