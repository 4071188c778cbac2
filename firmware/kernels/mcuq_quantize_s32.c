/* QUANTIZE int32_t -> int8/int16: requantize with the zero points, clamp to the output type
 * (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_quantize_s32(const mcuq_quantize_params_t *p, const int32_t *input, void *output)
{
    int32_t k, lo, hi;
    if (p->output_bits != 8 && p->output_bits != 16) {
        return MCUQ_ERR_PARAMS;
    }
    mcuq_bits_range(p->output_bits, &lo, &hi);
    for (k = 0; k < p->size; k++) {
        const int32_t v = mcuq_requantize(mcuq_add_wrap(input[k], p->input_offset), p->multiplier, p->shift);
        mcuq_store_bits(output, p->output_bits, k, mcuq_clamp(mcuq_add_wrap(v, p->output_offset), lo, hi));
    }
    return MCUQ_OK;
}
