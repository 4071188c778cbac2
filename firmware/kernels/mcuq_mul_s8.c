/* MUL, int8_t, with broadcasting (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_mul_s8(const mcuq_mul_params_t *p, const int8_t *input1, const int8_t *input2,
                          int8_t *output)
{
    mcuq_walk_t w;
    const int32_t n = mcuq_broadcast_init(&w, p->input1_dims, p->input2_dims);
    int32_t k;
    if (n < 0) {
        return MCUQ_ERR_PARAMS;
    }
    for (k = 0; k < n; k++) {
        const int32_t product = (input1[w.offset[0]] + p->input1_offset) * (input2[w.offset[1]] + p->input2_offset);
        const int32_t y = mcuq_requantize(product, p->multiplier, p->shift);
        output[k] = (int8_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        mcuq_walk_next(&w);
    }
    return MCUQ_OK;
}
