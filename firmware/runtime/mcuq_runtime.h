/* mcuq runtime: runs the packed model (mcuq_model.c) node by node over one static arena.
 *
 * The runtime is a loop over the const node table `mcuq_nodes`: each node's op and tensor types
 * pick one kernel of mcuq_kernels.h, which gets the node's const params struct and its tensors'
 * data. There is no interpreter, op resolver or allocation; the kernels need no scratch memory.
 *
 * Arena: MCUQ_ARENA_BYTES (mcuq_model.h) bytes owned by the caller, 16-byte aligned. Tensor
 * `slot` is an index into `mcuq_tensors`: constant tensors live in flash (`data` set), the others
 * at `arena + arena_offset`. Because the plan reuses arena bytes, a tensor is only valid from the
 * node that writes it until the last node that reads it; run up to node k to read node k's output.
 */
#ifndef MCUQ_RUNTIME_H
#define MCUQ_RUNTIME_H

#include <stdint.h>

#include "mcuq_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MCUQ_ARENA_ALIGN 16

/* Run nodes 0..last_node (-1: every node) on `arena`, whose graph inputs the caller has written.
 * If node_counts is not NULL, node_counts[k] gets the mcuq_port_counter() ticks node k took
 * (entries past the last node run are left as they were). Returns MCUQ_OK, MCUQ_ERR_PARAMS for
 * a misaligned arena or last_node out of range, else the status of the first failing node
 * (MCUQ_ERR_UNSUPPORTED when no kernel takes its op and types), where it stops. */
mcuq_status_t mcuq_run(uint8_t *arena, int last_node, uint32_t *node_counts);

/* Run nodes first_node..last_node only (both in range, first_node <= last_node); the arena must
 * hold what nodes 0..first_node - 1 left there. On failure, *failed_node (if not NULL) gets the
 * failing node's index, else -1; otherwise as mcuq_run. */
mcuq_status_t mcuq_run_nodes(uint8_t *arena, int first_node, int last_node, uint32_t *node_counts,
                             int *failed_node);

/* Where tensor `slot` lives (in flash for constants: never write through it), or NULL when
 * slot is not in the tensor table. */
void *mcuq_tensor_data(uint8_t *arena, int slot);

/* The byte size of tensor `slot`, or -1 when slot is not in the tensor table. */
int32_t mcuq_tensor_bytes(int slot);

/* Free-running 32-bit tick counter; differences are valid across wrap-around. Provided by the
 * board port (firmware/ports) on the target, and by the host build (mcuq/hostsim.py). */
uint32_t mcuq_port_counter(void);

#ifdef __cplusplus
}
#endif

#endif /* MCUQ_RUNTIME_H */
