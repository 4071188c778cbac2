/* PAD, int16_t elements (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_pad_s16(const mcuq_pad_params_t *p, const int16_t *input, int16_t *output)
{
    int32_t i, n = 1;
    for (i = 0; i < MCUQ_MAX_DIMS; i++) {
        n *= p->pad_before[i] + p->input_dims[i] + p->pad_after[i];
    }
    for (i = 0; i < n; i++) {
        output[i] = (int16_t)p->pad_value;
    }
    return mcuq_pad_rows(p, input, output, (int32_t)sizeof(int16_t));
}
