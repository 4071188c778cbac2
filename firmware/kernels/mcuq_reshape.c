/* RESHAPE: a byte copy, none when planned in place (contract in mcuq_kernels.h). */
#include <string.h>

#include "mcuq_kernels.h"

mcuq_status_t mcuq_reshape(const mcuq_reshape_params_t *p, const void *input, void *output)
{
    if (p->bytes < 0) {
        return MCUQ_ERR_PARAMS;
    }
    if (input != output) {
        memmove(output, input, (size_t)p->bytes);
    }
    return MCUQ_OK;
}
