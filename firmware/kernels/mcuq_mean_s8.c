/* MEAN, int8_t, over any set of axes (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_mean_s8(const mcuq_mean_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t kept_dims[MCUQ_MAX_DIMS], reduced_dims[MCUQ_MAX_DIMS], strides[MCUQ_MAX_DIMS];
    int32_t i, o, r, outputs, count;
    mcuq_walk_t kept, reduced;
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        kept_dims[i] = p->reduce[i] ? 1 : p->input_dims[i];
        reduced_dims[i] = p->reduce[i] ? p->input_dims[i] : 1;
    }
    mcuq_dense_strides(p->input_dims, strides);
    outputs = mcuq_walk_init(&kept, kept_dims);
    count = mcuq_walk_init(&reduced, reduced_dims);
    if (count != p->count) {
        return MCUQ_ERR_PARAMS;
    }
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        kept.strides[0][i] = strides[i];
        reduced.strides[0][i] = strides[i];
    }
    for (o = 0; o < outputs; o++) {
        const int8_t *x = input + kept.offset[0];
        uint32_t sum = (uint32_t)p->input_offset * (uint32_t)count;
        for (r = 0; r < count; r++) {
            sum += (uint32_t)x[reduced.offset[0]];
            mcuq_walk_next(&reduced);
        }
        output[o] = (int8_t)mcuq_offset_clamp(mcuq_requantize(mcuq_wrap32(sum), p->multiplier, p->shift),
                                          p->output_offset, INT8_MIN, INT8_MAX);
        mcuq_walk_next(&kept);
    }
    return MCUQ_OK;
}
