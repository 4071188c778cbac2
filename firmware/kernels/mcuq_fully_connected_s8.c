/* FULLY_CONNECTED, int8, per-tensor (with filter offset) or per-channel (mcuq_kernels.h). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

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

mcuq_status_t mcuq_fully_connected_s8(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                      const int8_t *filter, const int32_t *bias, int8_t *output)
{
    int32_t b, o;
    if (p->accumulator_bits != 32) {
        return MCUQ_ERR_PARAMS;
    }
    for (b = 0; b < p->batches; b++) {
        const int8_t *x = input + b * p->depth;
        for (o = 0; o < p->units; o++) {
            const int32_t k = p->per_channel ? o : 0;
            uint32_t acc = dot_s8(x, filter + o * p->depth, p->depth, p->input_offset, p->filter_offset);
            if (bias != NULL) {
                acc += (uint32_t)bias[o];
            }
            *output++ = (int8_t)mcuq_offset_clamp(mcuq_requantize(mcuq_wrap32(acc), p->multiplier[k], p->shift[k]),
                                                  p->output_offset, p->act_min, p->act_max);
        }
    }
    return MCUQ_OK;
}
