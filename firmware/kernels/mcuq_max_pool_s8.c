/* MAX_POOL_2D, int8_t (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_requantize.h"

mcuq_status_t mcuq_max_pool_s8(const mcuq_pool_params_t *p, const int8_t *input, int8_t *output)
{
    int32_t b, oy, ox, ch, iy, ix;
    for (b = 0; b < p->batches; b++) {
        for (oy = 0; oy < p->output_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            const int32_t y_start = y0 > 0 ? y0 : 0;
            const int32_t y_end = y0 + p->filter_h < p->input_h ? y0 + p->filter_h : p->input_h;
            for (ox = 0; ox < p->output_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                const int32_t x_start = x0 > 0 ? x0 : 0;
                const int32_t x_end = x0 + p->filter_w < p->input_w ? x0 + p->filter_w : p->input_w;
                for (ch = 0; ch < p->channels; ch++) {
                    int32_t max = INT8_MIN;
                    for (iy = y_start; iy < y_end; iy++) {
                        for (ix = x_start; ix < x_end; ix++) {
                            const int32_t v = input[((b * p->input_h + iy) * p->input_w + ix) * p->channels + ch];
                            max = v > max ? v : max;
                        }
                    }
                    *output++ = (int8_t)mcuq_clamp(max, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
