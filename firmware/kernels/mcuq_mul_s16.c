/* MUL, int16_t, with broadcasting (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_mul_s16(const mcuq_mul_params_t *p, const int16_t *input1, const int16_t *input2,
                           int16_t *output)
{
    mcuq_walk_t w;
    const int32_t n = mcuq_broadcast_init(&w, p->input1_dims, p->input2_dims);
    int32_t k;
    if (n < 0) {
        return MCUQ_ERR_PARAMS;
    }
    for (k = 0; k < n; k++) {
        const int64_t product = (int64_t)(input1[w.offset[0]] + p->input1_offset) *
                                (input2[w.offset[1]] + p->input2_offset);
        const int32_t y = mcuq_requantize(mcuq_wrap32((uint32_t)product), p->multiplier, p->shift);
        output[k] = (int16_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        mcuq_walk_next(&w);
    }
    return MCUQ_OK;
}
