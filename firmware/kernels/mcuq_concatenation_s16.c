/* CONCATENATION, int16_t elements, one input per call (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_concatenation_s16(const mcuq_concatenation_params_t *p, int32_t index,
                                     const int16_t *input, int16_t *output)
{
    return mcuq_concatenate_one(p, index, input, output, (int32_t)sizeof(int16_t));
}
