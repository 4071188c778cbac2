/* FULLY_CONNECTED, int8 activations, packed int4 filter (contract in mcuq_kernels.h). Filters of
 * up to MCUQ_S4_UNPACKED_BYTES weights run unpacked through mcuq_fully_connected_s8; larger ones
 * unpack their nibbles in the inner loop (DSP path) or read them one by one (plain C). */
#include <stddef.h>

#include "mcuq_kernels.h"
#include "mcuq_requantize.h"
#include "mcuq_support_s4.h"

#if MCUQ_DSP
/* Input rows in pairs (a 2-row column block) or alone, times every filter row. */
static MCUQ_S4_NOINLINE void fully_connected_dsp(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                const uint8_t *filter, int8_t *output)
{
    uint32_t block[MCUQ_S4_BLOCK_WORDS];
    const int32_t k = p->depth, n = p->units;
    int32_t b, r, i, rows;
    mcuq_matmul_t q; /* the int8 product's parameters; shifts_fast is not read here */
    q.channel_data = p->channel_data;
    q.output_offset = p->output_offset;
    q.act_min = p->act_min;
    q.act_max = p->act_max;
    q.shifts_fast = 0;
    for (b = 0; b < p->batches; b += rows, input += rows * k, output += rows * n) {
        rows = p->batches - b >= 2 && k <= MCUQ_S4_MAX_DEPTH ? 2 : 1;
        for (r = 0; r < rows; r++) {
            uint32_t sum = 0;
            for (i = 0; i < k && p->filter_offset != 0; i++) {
                sum += (uint32_t)input[r * k + i];
            }
            q.row_bias[r] = mcuq_wrap32(sum * (uint32_t)p->filter_offset);
            mcuq_s4_block_put(block, rows, r, input + r * k, k);
        }
        mcuq_matmul_s8_s4(&q, block, rows, k, filter, n, output, n);
    }
}
#endif

mcuq_status_t mcuq_fully_connected_s8_s4(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                         const uint8_t *filter, const int32_t *bias, int8_t *output)
{
    int32_t b, o, i;
    if (p->accumulator_bits != 32) {
        return MCUQ_ERR_PARAMS;
    }
    if (p->units * p->depth <= MCUQ_S4_UNPACKED_BYTES) {
        int8_t unpacked[MCUQ_S4_UNPACKED_BYTES];
        mcuq_s4_unpack(filter, p->units * p->depth, unpacked);
        return mcuq_fully_connected_s8(p, input, unpacked, bias, output);
    }
#if MCUQ_DSP
    if (p->depth <= 2 * MCUQ_S4_MAX_DEPTH && (p->bias_folded || bias == NULL)) { /* 1 row: 4 words per 8 inputs */
        fully_connected_dsp(p, input, filter, output);
        return MCUQ_OK;
    }
#endif
    for (b = 0; b < p->batches; b++) {
        const int8_t *x = input + b * p->depth;
        for (o = 0; o < p->units; o++) {
            const int32_t k = p->per_channel ? o : 0, s = o * p->depth;
            uint32_t acc = bias != NULL ? (uint32_t)bias[o] : 0u;
            for (i = 0; i < p->depth; i++) {
                acc += (uint32_t)((mcuq_s4_at(filter, s + i) + p->filter_offset) * (x[i] + p->input_offset));
            }
            *output++ = (int8_t)mcuq_offset_clamp(mcuq_requantize_node(mcuq_wrap32(acc), p->multiplier[k],
                                                                       p->shift[k], p->shift_only),
                                                  p->output_offset, p->act_min, p->act_max);
        }
    }
    return MCUQ_OK;
}
