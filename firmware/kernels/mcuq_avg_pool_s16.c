/* AVERAGE_POOL_2D, int16_t (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_support.h"

mcuq_status_t mcuq_avg_pool_s16(const mcuq_pool_params_t *p, const int16_t *input, int16_t *output)
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
                const int32_t count = (y_end - y_start) * (x_end - x_start);
                if (y_end <= y_start || x_end <= x_start) {
                    return MCUQ_ERR_RANGE;
                }
                for (ch = 0; ch < p->channels; ch++) {
                    int32_t sum = 0, avg;
                    for (iy = y_start; iy < y_end; iy++) {
                        for (ix = x_start; ix < x_end; ix++) {
                            sum += input[((b * p->input_h + iy) * p->input_w + ix) * p->channels + ch];
                        }
                    }
                    avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                    *output++ = (int16_t)mcuq_clamp(avg, p->act_min, p->act_max);
                }
            }
        }
    }
    return MCUQ_OK;
}
