/* QUANTIZE float32 -> int8/int16, the host's rule (mcuq.fixedpoint.quantize_real): float32
 * division, rounding half away from zero, zero point, clamp (contract in mcuq_kernels.h). */
#include <float.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "float arithmetic must be evaluated in float (FLT_EVAL_METHOD 0) to match the host"
#endif

/* round_half_away(x / scale) + offset clamped to [lo, hi]; NaN gives lo. */
static int32_t quantize_one(float x, float scale, int32_t offset, int32_t lo, int32_t hi)
{
    const float v = x / scale;
    int32_t r;
    float frac;
    if (!(v >= -1.0e6f)) {
        return lo;
    }
    if (v > 1.0e6f) {
        return hi;
    }
    r = (int32_t)v; /* truncation toward zero, exact here */
    frac = v - (float)r;
    r += (frac >= 0.5f) - (frac <= -0.5f);
    return mcuq_clamp(r + offset, lo, hi);
}

mcuq_status_t mcuq_quantize_f32(const mcuq_quantize_params_t *p, const float *input, void *output)
{
    int32_t k, lo, hi;
    if (p->output_bits != 8 && p->output_bits != 16) {
        return MCUQ_ERR_PARAMS;
    }
    mcuq_bits_range(p->output_bits, &lo, &hi);
    for (k = 0; k < p->size; k++) {
        mcuq_store_bits(output, p->output_bits, k, quantize_one(input[k], p->scale, p->output_offset, lo, hi));
    }
    return MCUQ_OK;
}
