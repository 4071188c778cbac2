/* SOFTMAX int8 -> int8_t along rows, gemmlowp fixed point as TFLM's reference (mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_softmax_s8(const mcuq_softmax_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t row, c;
    if (p->output_bits != 8) {
        return MCUQ_ERR_PARAMS;
    }
    for (row = 0; row < p->rows; row++) {
        const int8_t *x = input + row * p->depth;
        int8_t *y = output + row * p->depth;
        int32_t max, reciprocal, exponent;
        const mcuq_status_t status = mcuq_softmax_row_scale(p, x, &max, &reciprocal, &exponent);
        if (status != MCUQ_OK) {
            return status;
        }
        for (c = 0; c < p->depth; c++) {
            y[c] = (int8_t)mcuq_softmax_value(p, x[c] - max, reciprocal, exponent);
        }
    }
    return MCUQ_OK;
}
