/* FULLY_CONNECTED 16x8: int16 activations, int8 filter, int32 or int64 accumulator (mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* sum of (w[i] + filter_offset) * (x[i] + input_offset), exact in int64: the inner loop a DSP
 * path replaces. */
static int64_t dot_s16(const int16_t *x, const int8_t *w, int32_t n, int32_t input_offset, int32_t filter_offset)
{
    int64_t acc = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        acc += (int64_t)(w[i] + filter_offset) * (x[i] + input_offset);
    }
    return acc;
}

mcuq_status_t mcuq_fully_connected_s16(const mcuq_fully_connected_params_t *p, const int16_t *input,
                                       const int8_t *filter, const void *bias, int16_t *output)
{
    const int32_t *bias32 = p->accumulator_bits == 32 ? (const int32_t *)bias : NULL;
    const int64_t *bias64 = p->accumulator_bits == 64 ? (const int64_t *)bias : NULL;
    int32_t b, o;
    if (p->accumulator_bits != 32 && p->accumulator_bits != 64) {
        return MCUQ_ERR_PARAMS;
    }
    for (b = 0; b < p->batches; b++) {
        const int16_t *x = input + b * p->depth;
        for (o = 0; o < p->units; o++) {
            const int32_t k = p->per_channel ? o : 0;
            const int64_t acc = dot_s16(x, filter + o * p->depth, p->depth, p->input_offset, p->filter_offset);
            int32_t y;
            if (p->accumulator_bits == 32) {
                const uint32_t acc32 = (uint32_t)acc + (bias32 != NULL ? (uint32_t)bias32[o] : 0u);
                y = mcuq_requantize(mcuq_wrap32(acc32), p->multiplier[k], p->shift[k]);
            } else {
                const uint64_t acc64 = (uint64_t)acc + (bias64 != NULL ? (uint64_t)bias64[o] : 0u);
                y = mcuq_requantize64(mcuq_wrap64(acc64), p->multiplier[k], p->shift[k]);
            }
            *output++ = (int16_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        }
    }
    return MCUQ_OK;
}
