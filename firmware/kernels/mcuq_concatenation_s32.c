/* CONCATENATION, int32_t elements, one input per call (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_concatenation_s32(const mcuq_concatenation_params_t *p, int32_t index,
                                     const int32_t *input, int32_t *output)
{
    return mcuq_concatenate_one(p, index, input, output, (int32_t)sizeof(int32_t));
}
