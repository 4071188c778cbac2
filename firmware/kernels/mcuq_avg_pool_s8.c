/* AVERAGE_POOL_2D, int8_t (contract in mcuq_kernels.h). */
#include "mcuq_kernels.h"
#include "mcuq_support.h"

/* sum / count rounded half away from zero, clamped. */
static inline int8_t average(int32_t sum, int32_t count, int32_t lo, int32_t hi)
{
    const int32_t avg = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
    return (int8_t)mcuq_clamp(avg, lo, hi);
}

#if MCUQ_DSP
#define MAX_LANE_TAPS 255 /* 255 x 128 fits an int16 lane */

/* Channels in fours: each tap's word x adds SXTAB16(x) = (x0, x2) and SXTAB16(x >> 8) = (x1, x3)
 * to two words of int16 lane sums; windows of at most MAX_LANE_TAPS taps. */
static void channel_groups(const mcuq_pool_params_t *p, const int8_t *window, int32_t rows, int32_t cols,
                           int32_t count, int8_t *out)
{
    const int32_t stride = p->input_w * p->channels;
    int32_t c, iy, ix;
    for (c = 0; c + 4 <= p->channels; c += 4) {
        uint32_t even = 0, odd = 0;
        const int8_t *row = window + c;
        for (iy = 0; iy < rows; iy++, row += stride) {
            const int8_t *x = row;
            for (ix = 0; ix < cols; ix++, x += p->channels) {
                const uint32_t v = mcuq_read_u32(x);
                even = mcuq_sxtab16(even, v);
                odd = mcuq_sxtab16(odd, v >> 8);
            }
        }
        out[c] = average((int16_t)(even & 0xFFFFu), count, p->act_min, p->act_max);
        out[c + 1] = average((int16_t)(odd & 0xFFFFu), count, p->act_min, p->act_max);
        out[c + 2] = average((int16_t)(even >> 16), count, p->act_min, p->act_max);
        out[c + 3] = average((int16_t)(odd >> 16), count, p->act_min, p->act_max);
    }
}
#endif

mcuq_status_t mcuq_avg_pool_s8(const mcuq_pool_params_t *p, const int8_t *input, int8_t *output)
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
                ch = 0;
#if MCUQ_DSP
                if (count <= MAX_LANE_TAPS) {
                    channel_groups(p, input + ((b * p->input_h + y_start) * p->input_w + x_start) * p->channels,
                                   y_end - y_start, x_end - x_start, count, output);
                    ch = p->channels & ~3;
                }
#endif
                for (; ch < p->channels; ch++) {
                    int32_t sum = 0;
                    for (iy = y_start; iy < y_end; iy++) {
                        for (ix = x_start; ix < x_end; ix++) {
                            sum += input[((b * p->input_h + iy) * p->input_w + ix) * p->channels + ch];
                        }
                    }
                    output[ch] = average(sum, count, p->act_min, p->act_max);
                }
                output += p->channels;
            }
        }
    }
    return MCUQ_OK;
}
