/* RESHAPE: a byte copy, none when planned in place (contract in mcuq_kernels.h). The planner
 * either shares the buffer or keeps the two apart, so a forward loop does (libc's memmove would
 * cost 254 bytes of code for a copy the MLPerf models never make). */
#include "mcuq_kernels.h"

mcuq_status_t mcuq_reshape(const mcuq_reshape_params_t *p, const void *input, void *output)
{
    if (p->bytes < 0) {
        return MCUQ_ERR_PARAMS;
    }
    if (input != output) {
        const uint8_t *src = input;
        uint8_t *dst = output;
        for (int32_t i = 0; i < p->bytes; i++) {
            dst[i] = src[i];
        }
    }
    return MCUQ_OK;
}
