/* mcuq kernels: TFLite Micro's integer reference operators, bit for bit, in C99.
 *
 * Contract shared by every kernel below:
 * - Tensors are dense and row-major (images NHWC); the caller owns every buffer. No kernel
 *   allocates, keeps state, or needs scratch memory from the caller. Outputs must not overlap
 *   inputs, except where a kernel says so.
 * - Overlap contract (the arena planner, mcuq/plan.py, relies on it; tests/test_inplace.py runs
 *   every kernel below with its output over its input as planned). Windowed kernels (CONV_2D,
 *   DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, MAX_POOL_2D, every dtype and path) may find their output
 *   starting `shift` bytes below input 0 (shift from mcuq.plan.min_shift, possibly negative), so
 *   they must: produce output pixels in raster order (batch, row, column) in ONE pass, in runs
 *   of at most 4 consecutive pixels; write a run's output bytes only while that run is being
 *   computed (never a later pass over channels, never the output buffer as scratch); and read
 *   input only inside the windows of the current run and later ones. The planner then places
 *   the output so that a run starting at pixel s ends at or below every input byte pixels s..
 *   still read. DEPTHWISE_CONV_2D is overlapped only with depth multiplier 1, input_c % 4 == 0
 *   and input_c * filter_h * filter_w <= 1280 (mcuq.plan.DEPTHWISE_ONE_PASS): within that the
 *   DSP path's channel chunk must hold every channel, so one pass covers them; grow the chunk or
 *   lower that bound together. Elementwise kernels marked "in place" read element i of every
 *   input before writing output element i, in increasing order (the planner uses offset 0).
 * - Cores with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7, M33, M55) run the int8
 *   CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD and AVERAGE_POOL_2D kernels on SIMD paths
 *   (SMLAD & co. through <arm_acle.h>, short inline-assembly loops beside their C twins), which
 *   keep their work buffers on the stack: at most 5 KB (CONV_2D: a 2.5 KB im2col column block of
 *   four 320-element or two 640-element rows, a 1.25 KB patch for windows copied first (across
 *   the image border, channels not in fours), 512 B of sums for four windows longer than 320
 *   elements; unpacked depthwise weights and their channels' two-word requantization table
 *   (1.1 KB), ADD's two 256-entry tables; see
 *   firmware/kernels/mcuq_support.h). Layers beyond those bounds (windows of more than 640
 *   elements, FC depth above 1280, depthwise windows over 25 taps or 640 channels, depth
 *   multipliers other than 1, grouped convolution, a bias that is not constant,
 *   average pooling windows over 255 taps) run the plain C path, as the host and Cortex-M0/M3
 *   always do. Both paths are bit-exact.
 * - Each parameter struct is, field for field, the host simulator's Params dataclass of the
 *   same name in mcuq/simulate (ConvParams -> mcuq_conv_params_t). The packer fills them with
 *   designated initializers, so a renamed field fails to compile. `const int32_t *` fields point
 *   to arrays whose length the field's comment gives; `dims` arrays have MCUQ_MAX_DIMS entries,
 *   padded in front with 1.
 * - Requantization is mcuq_requantize() / mcuq_requantize64() (mcuq_requantize.h): multiplier a
 *   Q31 value in [2^30, 2^31) (or 0), shift in [-31, 30], positive meaning a left shift
 *   ([-31, 7] with 64-bit accumulators). int32 accumulators wrap modulo 2^32 as TFLM's do.
 * - Kernels return MCUQ_OK or a negative mcuq_status_t; on error the output is unspecified.
 * - Integer kernels use no floating point. Only the I/O conversions mcuq_quantize_f32() and
 *   mcuq_dequantize_*() do, in single precision (an FPU such as Cortex-M4F/M7's, or soft float).
 */
#ifndef MCUQ_KERNELS_H
#define MCUQ_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MCUQ_MAX_DIMS 6

typedef enum {
    MCUQ_OK = 0,
    MCUQ_ERR_PARAMS = -1,      /* a parameter is outside the kernel's contract */
    MCUQ_ERR_RANGE = -2,       /* the data drive an intermediate out of range (TFLM fails too) */
    MCUQ_ERR_UNSUPPORTED = -3  /* no kernel for this op and type (for the runtime's dispatch) */
} mcuq_status_t;

/* ---- parameter structs ------------------------------------------------------------------- */

/* CONV_2D and DEPTHWISE_CONV_2D. Input [batches, input_h, input_w, input_c], output [batches,
 * output_h, output_w, output_c]. Window origin of output (oy, ox) is (oy * stride_h - pad_top,
 * ox * stride_w - pad_left); tap (ky, kx) reads row origin + ky * dilation_h (columns alike);
 * taps outside the image are skipped. Output channel c: acc = sum w * (x + input_offset) +
 * bias[c]; y = clamp(requantize(acc, multiplier[c], shift[c]) + output_offset, act_min, act_max).
 *
 * Pack-time data for the int8 fast paths (mcuq/simulate/conv.py channel_data()): channel_data[c]
 * = {b, M, r, h}, b = bias[c] (when bias_folded; else 0) + input_offset * sum of channel c's
 * weights, M = multiplier[c]; when r > 0, requantize(acc, M, shift[c]) =
 * (((h - (acc < 0)) * 2^32 + (2^30 ^ (acc & 2^31)) + acc * M) >> 32) >> r, else h = shift[c].
 * With the input offset in b, a tap outside the image counts as the value -input_offset.
 * A constant channel (an int8 CONV_2D channel whose weights are all 0, its bias folded) has the
 * row {0, 0, 1, 2 (y - output_offset)}: its output is y whatever the input (the formula above
 * gives it from acc = 0), and the int8 filter holds no row for it (the other channels' rows in
 * order; pack's tensor dtype MCUQ_INT8_PRUNED): kernels store y without reading weights.
 * shift_only: every multiplier is 2^30 (mcuq_requantize_pow2() applies).
 * Overlap: output may start min_shift bytes below the input (overlap contract above: one raster
 * pass, runs of <= 4 pixels; the DSP conv path gathers the windows of up to a column block of
 * runs, then writes those runs in order: input is only ever read earlier than the contract needs). */
typedef struct {
    int32_t batches;
    int32_t input_h;
    int32_t input_w;
    int32_t input_c;
    int32_t filter_h;
    int32_t filter_w;
    int32_t output_h;
    int32_t output_w;
    int32_t output_c;
    int32_t stride_h;
    int32_t stride_w;
    int32_t dilation_h;
    int32_t dilation_w;
    int32_t pad_top;
    int32_t pad_left;
    int32_t groups;            /* conv: input_c and output_c split into this many groups */
    int32_t depth_multiplier;  /* depthwise: output_c = input_c * depth_multiplier */
    int32_t input_offset;      /* -input zero point (0 for int16) */
    int32_t output_offset;     /* output zero point (0 for int16) */
    const int32_t *multiplier; /* [output_c] */
    const int32_t *shift;      /* [output_c] */
    int32_t act_min;
    int32_t act_max;
    int32_t accumulator_bits;  /* 32: int32 accumulator and bias; 64: int64 (16x8 only) */
    const int32_t *channel_data; /* [output_c][4] for int8 activations, else unused */
    int32_t bias_folded;       /* 1: channel_data's b includes bias[c] (the kernel ignores bias) */
    int32_t shift_only;        /* 1: every multiplier is 2^30 */
    int32_t shifts_fast;       /* 1: every channel_data row has r > 0 and M != 0 */
} mcuq_conv_params_t;

/* FULLY_CONNECTED: input read as [batches, depth], filter [units, depth], output [batches, units].
 * acc = sum (w + filter_offset) * (x + input_offset) + bias[o];
 * y = clamp(requantize(acc, multiplier[k], shift[k]) + output_offset, act_min, act_max) with
 * k = o when per_channel, else 0. channel_data, bias_folded, shift_only and shifts_fast as for
 * convolution, one channel_data row per unit, b = bias[o] + input_offset * sum_i (w[o][i] +
 * filter_offset) (filter_offset * sum x, which depends on the input, is added by the kernel).
 * Row-paired filter (mcuq_fully_connected_s8_paired(): filter_offset 0, depth a multiple of 4;
 * pack's paired_filter_order()): rows in pairs (a, b), per group of 4 inputs i0..i3 two words,
 * for inputs (i0, i2) and (i1, i3), each 16-bit lane holding byte a[i] ^ 0x80 then byte b[i];
 * pairs in twos, both pairs' words of a group together; a last odd row as is. */
typedef struct {
    int32_t batches;
    int32_t depth;
    int32_t units;
    int32_t per_channel;       /* 1: multiplier/shift have `units` entries; 0: one entry */
    int32_t input_offset;
    int32_t filter_offset;     /* -filter zero point per-tensor; 0 per-channel */
    int32_t output_offset;
    const int32_t *multiplier; /* [units] or [1] */
    const int32_t *shift;      /* [units] or [1] */
    int32_t act_min;
    int32_t act_max;
    int32_t accumulator_bits;  /* 32 or 64 as for convolution */
    const int32_t *channel_data; /* [units][4] for int8 activations, else unused */
    int32_t bias_folded;
    int32_t shift_only;
    int32_t shifts_fast;
} mcuq_fully_connected_params_t;

/* AVERAGE_POOL_2D and MAX_POOL_2D over raw values (input and output share scale and zero point).
 * Input [batches, input_h, input_w, channels], output [batches, output_h, output_w, channels];
 * windows as for convolution (dilation 1), padding taps excluded from max, sum and count.
 * Overlap: output may start min_shift bytes below the input (overlap contract above). */
typedef struct {
    int32_t batches;
    int32_t input_h;
    int32_t input_w;
    int32_t channels;
    int32_t output_h;
    int32_t output_w;
    int32_t filter_h;
    int32_t filter_w;
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_top;
    int32_t pad_left;
    int32_t act_min;
    int32_t act_max;
} mcuq_pool_params_t;

/* ADD. Inputs broadcast over their dims (per axis equal sizes, or one of them 1); output dims
 * are the larger of each pair. a = requantize((x1 + input1_offset) << left_shift,
 * input1_multiplier, input1_shift), b alike; y = clamp(requantize(a + b, output_multiplier,
 * output_shift) + output_offset, act_min, act_max). All three shifts are <= 0. */
typedef struct {
    const int32_t *input1_dims; /* [MCUQ_MAX_DIMS] */
    const int32_t *input2_dims; /* [MCUQ_MAX_DIMS] */
    int32_t left_shift;         /* 20 for int8, 15 for int16 */
    int32_t input1_offset;
    int32_t input1_multiplier;
    int32_t input1_shift;
    int32_t input2_offset;
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t act_min;
    int32_t act_max;
    int32_t shift_only;          /* 1: all three multipliers are 2^30 (mcuq_requantize_pow2()) */
} mcuq_add_params_t;

/* MUL, broadcasting as ADD: y = clamp(requantize((x1 + input1_offset) * (x2 + input2_offset),
 * multiplier, shift) + output_offset, act_min, act_max). */
typedef struct {
    const int32_t *input1_dims; /* [MCUQ_MAX_DIMS] */
    const int32_t *input2_dims; /* [MCUQ_MAX_DIMS] */
    int32_t input1_offset;
    int32_t input2_offset;
    int32_t output_offset;
    int32_t multiplier;
    int32_t shift;
    int32_t act_min;
    int32_t act_max;
} mcuq_mul_params_t;

/* QUANTIZE `size` elements to int`output_bits`, clamped to that type's range.
 * From float32: y = round_half_away(x / scale) + output_offset (float32 division).
 * From an integer type (scale 0): y = requantize(x + input_offset, multiplier, shift) + output_offset. */
typedef struct {
    int32_t size;
    int32_t output_bits;       /* 8, 16 or 32 (32 only from int8/int16) */
    int32_t input_offset;
    int32_t output_offset;
    int32_t multiplier;
    int32_t shift;
    float scale;               /* output scale for float32 input, else 0 */
} mcuq_quantize_params_t;

/* DEQUANTIZE `size` elements: y = scale * (x - zero_point), as float32. */
typedef struct {
    int32_t size;
    float scale;
    int32_t zero_point;
} mcuq_dequantize_params_t;

/* RESHAPE: copy `bytes` bytes. */
typedef struct {
    int32_t bytes;
} mcuq_reshape_params_t;

/* PAD: output dims = pad_before + input_dims + pad_after per axis; new elements = pad_value. */
typedef struct {
    const int32_t *input_dims; /* [MCUQ_MAX_DIMS] */
    const int32_t *pad_before; /* [MCUQ_MAX_DIMS] */
    const int32_t *pad_after;  /* [MCUQ_MAX_DIMS] */
    int32_t pad_value;         /* raw value of the element type */
} mcuq_pad_params_t;

/* CONCATENATION, raw copy: every tensor is read as [outer_size, axis, inner_size]; input k
 * fills output axis positions axis_offsets[k] .. axis_offsets[k + 1] - 1. */
typedef struct {
    int32_t outer_size;
    int32_t inner_size;
    int32_t num_inputs;
    const int32_t *axis_offsets; /* [num_inputs + 1]; the last is the output's axis size */
} mcuq_concatenation_params_t;

/* MEAN over the axes with reduce[i] = 1 (output dims: those axes set to 1). For each output,
 * S = int32 sum of the `count` raw inputs it covers;
 * y = clamp(requantize(S + input_offset * count, multiplier, shift) + output_offset) to the
 * type range (multiplier and shift already hold the 1/count). */
typedef struct {
    const int32_t *input_dims; /* [MCUQ_MAX_DIMS] */
    const int32_t *reduce;     /* [MCUQ_MAX_DIMS], 0 or 1 */
    int32_t count;
    int32_t input_offset;
    int32_t output_offset;
    int32_t multiplier;
    int32_t shift;
} mcuq_mean_params_t;

/* SOFTMAX over `rows` rows of `depth` int8 values (TFLM reference, gemmlowp fixed point):
 * d = x - max(row); entries with d < diff_min get the lowest output; else
 * e = exp(srdhm(d << input_left_shift, input_multiplier) as Q5.26) and
 * y = e / sum(e) with zero point -2^(output_bits - 1), scale 2^-output_bits. */
typedef struct {
    int32_t rows;
    int32_t depth;
    int32_t input_multiplier;
    int32_t input_left_shift;  /* in [0, 31] */
    int32_t diff_min;
    int32_t output_bits;       /* 8 or 16 */
} mcuq_softmax_params_t;

/* LOGISTIC / TANH on `size` int8 values: v = x - input_zero_point; v <= -radius gives -128,
 * v >= radius 127, else requantize(v, input_multiplier, input_left_shift) is a Q4.27 input of
 * gemmlowp's logistic (output zero point -128, scale 1/256) or tanh (0, 1/128). */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t input_multiplier;
    int32_t input_left_shift;  /* >= 0; may exceed 30 only when input_range_radius is 0 */
    int32_t input_range_radius;
} mcuq_logistic_params_t;

typedef mcuq_logistic_params_t mcuq_tanh_params_t;

/* ---- kernels ----------------------------------------------------------------------------- */

/* Convolution, int8 activations, int8 filter [output_c, filter_h, filter_w, input_c / groups],
 * bias [output_c] or NULL. MCUQ_ERR_PARAMS unless accumulator_bits is 32 and groups divides
 * input_c and output_c. */
mcuq_status_t mcuq_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, int8_t *output);

/* Convolution 16x8: int16 activations (offsets 0), int8 filter as above; bias is int32_t
 * [output_c] when accumulator_bits is 32, int64_t [output_c] when 64, or NULL. */
mcuq_status_t mcuq_conv2d_s16(const mcuq_conv_params_t *p, const int16_t *input, const int8_t *filter,
                              const void *bias, int16_t *output);

/* Depthwise convolution, int8: filter [1, filter_h, filter_w, output_c], bias [output_c] or
 * NULL; output channel c reads input channel c / depth_multiplier. MCUQ_ERR_PARAMS unless
 * accumulator_bits is 32 and output_c = input_c * depth_multiplier. */
mcuq_status_t mcuq_depthwise_conv2d_s8(const mcuq_conv_params_t *p, const int8_t *input,
                                       const int8_t *filter, const int32_t *bias, int8_t *output);

/* Depthwise convolution 16x8: as above with int16 activations, int64 bias [output_c] or NULL,
 * accumulator_bits 64. */
mcuq_status_t mcuq_depthwise_conv2d_s16(const mcuq_conv_params_t *p, const int16_t *input,
                                        const int8_t *filter, const int64_t *bias, int16_t *output);

/* Fully connected, int8: filter [units, depth], bias [units] or NULL; accumulator_bits 32. */
mcuq_status_t mcuq_fully_connected_s8(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                      const int8_t *filter, const int32_t *bias, int8_t *output);
/* The same with the filter stored row-paired (above; tensors of dtype MCUQ_INT8_PAIRED). */
mcuq_status_t mcuq_fully_connected_s8_paired(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                             const int8_t *filter, const int32_t *bias, int8_t *output);

/* Fully connected 16x8: bias int32_t [units] (accumulator_bits 32), int64_t [units] (64) or NULL. */
mcuq_status_t mcuq_fully_connected_s16(const mcuq_fully_connected_params_t *p, const int16_t *input,
                                       const int8_t *filter, const void *bias, int16_t *output);

/* Average pooling: sum / count rounded half away from zero, then clamped. MCUQ_ERR_RANGE if a
 * window holds no in-image tap. The int16 sum is int32: windows up to 65536 taps. */
mcuq_status_t mcuq_avg_pool_s8(const mcuq_pool_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_avg_pool_s16(const mcuq_pool_params_t *p, const int16_t *input, int16_t *output);

/* Max pooling: maximum over in-image taps (the type minimum if none), then clamped. */
mcuq_status_t mcuq_max_pool_s8(const mcuq_pool_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_max_pool_s16(const mcuq_pool_params_t *p, const int16_t *input, int16_t *output);

/* Elementwise ADD / MUL with broadcasting. Either input may be the output buffer when it has
 * the output's dims (in-place). */
mcuq_status_t mcuq_add_s8(const mcuq_add_params_t *p, const int8_t *input1, const int8_t *input2,
                          int8_t *output);
mcuq_status_t mcuq_add_s16(const mcuq_add_params_t *p, const int16_t *input1, const int16_t *input2,
                           int16_t *output);
mcuq_status_t mcuq_mul_s8(const mcuq_mul_params_t *p, const int8_t *input1, const int8_t *input2,
                          int8_t *output);
mcuq_status_t mcuq_mul_s16(const mcuq_mul_params_t *p, const int16_t *input1, const int16_t *input2,
                           int16_t *output);

/* QUANTIZE, named by the input type. The output is int8_t, int16_t or int32_t per
 * output_bits; MCUQ_ERR_PARAMS for another output_bits (f32 and s32 inputs: 8 or 16 only).
 * From float: quotients beyond the type range (infinities too) saturate, NaN gives the type
 * minimum. In place when input and output element sizes match. */
mcuq_status_t mcuq_quantize_f32(const mcuq_quantize_params_t *p, const float *input, void *output);
mcuq_status_t mcuq_quantize_s8(const mcuq_quantize_params_t *p, const int8_t *input, void *output);
mcuq_status_t mcuq_quantize_s16(const mcuq_quantize_params_t *p, const int16_t *input, void *output);
mcuq_status_t mcuq_quantize_s32(const mcuq_quantize_params_t *p, const int32_t *input, void *output);

/* DEQUANTIZE to float32 (exactly the host's float32(double(scale) * (x - zero_point))). */
mcuq_status_t mcuq_dequantize_s8(const mcuq_dequantize_params_t *p, const int8_t *input, float *output);
mcuq_status_t mcuq_dequantize_s16(const mcuq_dequantize_params_t *p, const int16_t *input,
                                  float *output);

/* RESHAPE: copies the bytes; nothing to do when input == output (planned in place). */
mcuq_status_t mcuq_reshape(const mcuq_reshape_params_t *p, const void *input, void *output);

/* PAD, by element type. */
mcuq_status_t mcuq_pad_s8(const mcuq_pad_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_pad_s16(const mcuq_pad_params_t *p, const int16_t *input, int16_t *output);
mcuq_status_t mcuq_pad_s32(const mcuq_pad_params_t *p, const int32_t *input, int32_t *output);

/* CONCATENATION: copies input number `index` (0 <= index < num_inputs, else MCUQ_ERR_PARAMS)
 * into its place in the output; call once per input. */
mcuq_status_t mcuq_concatenation_s8(const mcuq_concatenation_params_t *p, int32_t index,
                                    const int8_t *input, int8_t *output);
mcuq_status_t mcuq_concatenation_s16(const mcuq_concatenation_params_t *p, int32_t index,
                                     const int16_t *input, int16_t *output);
mcuq_status_t mcuq_concatenation_s32(const mcuq_concatenation_params_t *p, int32_t index,
                                     const int32_t *input, int32_t *output);

/* MEAN (int32 sums wrap as TFLM's). */
mcuq_status_t mcuq_mean_s8(const mcuq_mean_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_mean_s16(const mcuq_mean_params_t *p, const int16_t *input, int16_t *output);

/* SOFTMAX int8 -> int8 (output_bits 8) and int8 -> int16 (output_bits 16), else
 * MCUQ_ERR_PARAMS. MCUQ_ERR_RANGE when a row's sum of exponentials needs a shift above 31
 * (very long rows; TFLM aborts there). */
mcuq_status_t mcuq_softmax_s8(const mcuq_softmax_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_softmax_s8_s16(const mcuq_softmax_params_t *p, const int8_t *input, int16_t *output);

/* LOGISTIC and TANH, int8 -> int8; in place allowed. */
mcuq_status_t mcuq_logistic_s8(const mcuq_logistic_params_t *p, const int8_t *input, int8_t *output);
mcuq_status_t mcuq_tanh_s8(const mcuq_tanh_params_t *p, const int8_t *input, int8_t *output);

/* ---- int8 activations x int4 filters -------------------------------------------------------
 * The filter holds int4 values in [-8, 7] packed two per byte: element i (in the int8 kernel's
 * filter layout) in byte i / 2, low nibble first, as in a .tflite. Parameters, other buffers,
 * status codes and results are those of the int8 kernel above run on the unpacked filter (what
 * TFLM does with int4 filters). Filters of up to 1280 weights are unpacked once per call into
 * a stack buffer and run by that int8 kernel. Larger ones: on DSP cores CONV_2D (windows up to
 * 640 elements, groups 1) and FULLY_CONNECTED (depth up to 1280) unpack the weights in the
 * inner loop, one AND per two weights (firmware/kernels/mcuq_support_s4.h), with a 2.5 KB
 * column block and a 640-byte patch on the stack; otherwise plain C reads each nibble. */
mcuq_status_t mcuq_conv2d_s8_s4(const mcuq_conv_params_t *p, const int8_t *input, const uint8_t *filter,
                                const int32_t *bias, int8_t *output);
mcuq_status_t mcuq_depthwise_conv2d_s8_s4(const mcuq_conv_params_t *p, const int8_t *input,
                                          const uint8_t *filter, const int32_t *bias, int8_t *output);
mcuq_status_t mcuq_fully_connected_s8_s4(const mcuq_fully_connected_params_t *p, const int8_t *input,
                                         const uint8_t *filter, const int32_t *bias, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* MCUQ_KERNELS_H */
