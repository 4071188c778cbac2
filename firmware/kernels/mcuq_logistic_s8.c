/* LOGISTIC int8 -> int8, gemmlowp fixed point on Q4.27 as TFLM's reference (mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"

mcuq_status_t mcuq_logistic_s8(const mcuq_logistic_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t k;
    for (k = 0; k < p->size; k++) {
        const int32_t v = input[k] - p->input_zero_point;
        int32_t y;
        if (v <= -p->input_range_radius) {
            y = -128;
        } else if (v >= p->input_range_radius) {
            y = 127;
        } else {
            const int32_t a = mcuq_requantize(v, p->input_multiplier, p->input_left_shift);
            int32_t q0 = INT32_C(1) << 30; /* logistic(0) = 1/2 */
            if (a != 0) {
                const int32_t positive = mcuq_one_over_one_plus_x(mcuq_exp_on_negative_values(a > 0 ? -a : a, 4));
                q0 = a > 0 ? positive : INT32_MAX - positive;
            }
            y = mcuq_clamp(mcuq_rdbpot(q0, 23) - 128, -128, 127);
        }
        output[k] = (int8_t)y;
    }
    return MCUQ_OK;
}
