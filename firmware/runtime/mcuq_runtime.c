/* mcuq runtime: one switch per node over the const node table (contract in mcuq_runtime.h). */
#include "mcuq_runtime.h"

#include <stddef.h>

#include "mcuq_model.h"

#define NO_TYPE 0xFFu

/* A kernel call, compiled only when the packed model uses that kernel (MCUQ_USE_<kernel> in
 * mcuq_model.h, from mcuq/pack.py's dispatch table): unused kernels are never referenced, so
 * --gc-sections leaves them out; a node whose kernel is not compiled in gets UNSUPPORTED. */
#define MCUQ_CALL(kernel, args) (MCUQ_USE_##kernel ? kernel args : MCUQ_ERR_UNSUPPORTED)

void *mcuq_tensor_data(uint8_t *arena, int slot)
{
    if (slot < 0 || slot >= MCUQ_NUM_TENSORS) {
        return NULL;
    }
    const mcuq_tensor_t *t = &mcuq_tensors[slot];
    return t->data != NULL ? (void *)t->data : arena + t->arena_offset;
}

int32_t mcuq_tensor_bytes(int slot)
{
    return slot < 0 || slot >= MCUQ_NUM_TENSORS ? -1 : mcuq_tensors[slot].bytes;
}

/* Input k of node n (NULL when absent) and its type (NO_TYPE when absent). */
static const void *input(uint8_t *arena, const mcuq_node_t *n, int k)
{
    return k < n->num_inputs ? mcuq_tensor_data(arena, n->inputs[k]) : NULL;
}

static uint8_t input_type(const mcuq_node_t *n, int k)
{
    return k < n->num_inputs && n->inputs[k] >= 0 ? mcuq_tensors[n->inputs[k]].dtype : NO_TYPE;
}

static mcuq_status_t concatenate(uint8_t *arena, const mcuq_node_t *n, uint8_t type, void *out)
{
    for (int k = 0; k < n->num_inputs; k++) {
        const void *in = input(arena, n, k);
        mcuq_status_t s = type == MCUQ_INT8    ? MCUQ_CALL(mcuq_concatenation_s8, (n->params, k, in, out))
                          : type == MCUQ_INT16 ? MCUQ_CALL(mcuq_concatenation_s16, (n->params, k, in, out))
                          : type == MCUQ_INT32 ? MCUQ_CALL(mcuq_concatenation_s32, (n->params, k, in, out))
                                               : MCUQ_ERR_UNSUPPORTED;
        if (s != MCUQ_OK) {
            return s;
        }
    }
    return MCUQ_OK;
}

/* Node n's kernel, picked by op and by the type of its first input (SOFTMAX: of its output;
 * int8 convolutions and fully connected layers: of their filter too, int8, packed int4 or, for
 * fully connected, row-paired int8). */
static mcuq_status_t run_node(uint8_t *arena, const mcuq_node_t *n)
{
    const void *p = n->params;
    const void *in0 = input(arena, n, 0), *in1 = input(arena, n, 1), *in2 = input(arena, n, 2);
    void *out = mcuq_tensor_data(arena, n->outputs[0]);
    uint8_t type = input_type(n, 0), out_type = mcuq_tensors[n->outputs[0]].dtype;
    int s8 = type == MCUQ_INT8, s16 = type == MCUQ_INT16;
    int s4 = s8 && input_type(n, 1) == MCUQ_INT4, paired = s8 && input_type(n, 1) == MCUQ_INT8_PAIRED;

    switch (n->op) {
    case MCUQ_OP_CONV_2D:
        return s4    ? MCUQ_CALL(mcuq_conv2d_s8_s4, (p, in0, in1, in2, out))
               : s8  ? MCUQ_CALL(mcuq_conv2d_s8, (p, in0, in1, in2, out))
               : s16 ? MCUQ_CALL(mcuq_conv2d_s16, (p, in0, in1, in2, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_DEPTHWISE_CONV_2D:
        return s4    ? MCUQ_CALL(mcuq_depthwise_conv2d_s8_s4, (p, in0, in1, in2, out))
               : s8  ? MCUQ_CALL(mcuq_depthwise_conv2d_s8, (p, in0, in1, in2, out))
               : s16 ? MCUQ_CALL(mcuq_depthwise_conv2d_s16, (p, in0, in1, in2, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_FULLY_CONNECTED:
        return s4       ? MCUQ_CALL(mcuq_fully_connected_s8_s4, (p, in0, in1, in2, out))
               : paired ? MCUQ_CALL(mcuq_fully_connected_s8_paired, (p, in0, in1, in2, out))
               : s8     ? MCUQ_CALL(mcuq_fully_connected_s8, (p, in0, in1, in2, out))
               : s16    ? MCUQ_CALL(mcuq_fully_connected_s16, (p, in0, in1, in2, out))
                        : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_AVERAGE_POOL_2D:
        return s8    ? MCUQ_CALL(mcuq_avg_pool_s8, (p, in0, out))
               : s16 ? MCUQ_CALL(mcuq_avg_pool_s16, (p, in0, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_MAX_POOL_2D:
        return s8    ? MCUQ_CALL(mcuq_max_pool_s8, (p, in0, out))
               : s16 ? MCUQ_CALL(mcuq_max_pool_s16, (p, in0, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_ADD:
        return s8    ? MCUQ_CALL(mcuq_add_s8, (p, in0, in1, out))
               : s16 ? MCUQ_CALL(mcuq_add_s16, (p, in0, in1, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_MUL:
        return s8    ? MCUQ_CALL(mcuq_mul_s8, (p, in0, in1, out))
               : s16 ? MCUQ_CALL(mcuq_mul_s16, (p, in0, in1, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_QUANTIZE:
        return type == MCUQ_FLOAT32 ? MCUQ_CALL(mcuq_quantize_f32, (p, in0, out))
               : s8                 ? MCUQ_CALL(mcuq_quantize_s8, (p, in0, out))
               : s16                ? MCUQ_CALL(mcuq_quantize_s16, (p, in0, out))
               : type == MCUQ_INT32 ? MCUQ_CALL(mcuq_quantize_s32, (p, in0, out))
                                    : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_DEQUANTIZE:
        return s8    ? MCUQ_CALL(mcuq_dequantize_s8, (p, in0, out))
               : s16 ? MCUQ_CALL(mcuq_dequantize_s16, (p, in0, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_RESHAPE:
        return MCUQ_CALL(mcuq_reshape, (p, in0, out));
    case MCUQ_OP_PAD:
        return s8                   ? MCUQ_CALL(mcuq_pad_s8, (p, in0, out))
               : s16                ? MCUQ_CALL(mcuq_pad_s16, (p, in0, out))
               : type == MCUQ_INT32 ? MCUQ_CALL(mcuq_pad_s32, (p, in0, out))
                                    : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_CONCATENATION:
        return concatenate(arena, n, type, out);
    case MCUQ_OP_MEAN:
        return s8    ? MCUQ_CALL(mcuq_mean_s8, (p, in0, out))
               : s16 ? MCUQ_CALL(mcuq_mean_s16, (p, in0, out))
                     : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_SOFTMAX:
        return !s8                        ? MCUQ_ERR_UNSUPPORTED
               : out_type == MCUQ_INT8  ? MCUQ_CALL(mcuq_softmax_s8, (p, in0, out))
               : out_type == MCUQ_INT16 ? MCUQ_CALL(mcuq_softmax_s8_s16, (p, in0, out))
                                        : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_LOGISTIC:
        return s8 ? MCUQ_CALL(mcuq_logistic_s8, (p, in0, out)) : MCUQ_ERR_UNSUPPORTED;
    case MCUQ_OP_TANH:
        return s8 ? MCUQ_CALL(mcuq_tanh_s8, (p, in0, out)) : MCUQ_ERR_UNSUPPORTED;
    default:
        return MCUQ_ERR_UNSUPPORTED;
    }
}

mcuq_status_t mcuq_run_nodes(uint8_t *arena, int first_node, int last_node, uint32_t *node_counts,
                             int *failed_node)
{
    if (failed_node != NULL) {
        *failed_node = -1;
    }
    if (((uintptr_t)arena & (MCUQ_ARENA_ALIGN - 1)) != 0 || first_node < 0 || first_node > last_node ||
        last_node >= MCUQ_NUM_NODES) {
        return MCUQ_ERR_PARAMS;
    }
    for (int k = first_node; k <= last_node; k++) {
        uint32_t start = mcuq_port_counter();
        mcuq_status_t s = run_node(arena, &mcuq_nodes[k]);
        if (node_counts != NULL) {
            node_counts[k] = mcuq_port_counter() - start;
        }
        if (s != MCUQ_OK) {
            if (failed_node != NULL) {
                *failed_node = k;
            }
            return s;
        }
    }
    return MCUQ_OK;
}

mcuq_status_t mcuq_run(uint8_t *arena, int last_node, uint32_t *node_counts)
{
    if (last_node < -1) {
        return MCUQ_ERR_PARAMS;
    }
    return mcuq_run_nodes(arena, 0, last_node == -1 ? MCUQ_NUM_NODES - 1 : last_node, node_counts, NULL);
}
