/* ADD, int16_t, with broadcasting (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

/* (x + offset) << left_shift, requantized: one input's contribution to the sum. */
static int32_t scale_input(int32_t x, int32_t offset, int32_t left_shift, int32_t multiplier, int32_t shift)
{
    return mcuq_requantize(mcuq_wrap32((uint32_t)(x + offset) << left_shift), multiplier, shift);
}

mcuq_status_t mcuq_add_s16(const mcuq_add_params_t *p, const int16_t *input1, const int16_t *input2,
                           int16_t *output)
{
    mcuq_walk_t w;
    const int32_t n = mcuq_broadcast_init(&w, p->input1_dims, p->input2_dims);
    int32_t k;
    if (n < 0) {
        return MCUQ_ERR_PARAMS;
    }
    for (k = 0; k < n; k++) {
        const int32_t a = scale_input(input1[w.offset[0]], p->input1_offset, p->left_shift,
                                      p->input1_multiplier, p->input1_shift);
        const int32_t b = scale_input(input2[w.offset[1]], p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift);
        const int32_t y = mcuq_requantize(mcuq_add_wrap(a, b), p->output_multiplier, p->output_shift);
        output[k] = (int16_t)mcuq_offset_clamp(y, p->output_offset, p->act_min, p->act_max);
        mcuq_walk_next(&w);
    }
    return MCUQ_OK;
}
