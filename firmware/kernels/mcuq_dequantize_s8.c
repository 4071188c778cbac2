/* DEQUANTIZE int8_t -> float32 (contract in mcuq_kernels.h). The float32 product of the float32
 * scale and the exact integer (x - zero_point) is the correctly rounded exact product, i.e. the
 * host's float32(double(scale) * (x - zero_point)): no double arithmetic needed. */
#include <float.h>

#include "mcuq_kernels.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "float arithmetic must be evaluated in float (FLT_EVAL_METHOD 0) to match the host"
#endif

mcuq_status_t mcuq_dequantize_s8(const mcuq_dequantize_params_t *p, const int8_t *input, float *output)
{
    int32_t k;
    for (k = 0; k < p->size; k++) {
        output[k] = p->scale * (float)(input[k] - p->zero_point);
    }
    return MCUQ_OK;
}
