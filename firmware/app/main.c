/* The mcuq firmware: greet the host with HELLO, then answer its requests (docs/protocol.md)
 * one at a time, running the packed model (mcuq_model.c) with the runtime on a static arena.
 * The build defines MCUQ_BOARD and MCUQ_FIRMWARE_VERSION (see firmware/ports/mcuq_port.h). */
#include <stdint.h>
#include <string.h>

#include "mcuq_model.h"
#include "mcuq_port.h"
#include "mcuq_protocol.h"
#include "mcuq_runtime.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensors and counts go on the wire as they lie in memory: little endian only"
#endif

#define NAME_BYTES 16u
#define SHA256_BYTES 32u
#define INFO_FIXED_BYTES (2u + 1u + 2u + 4u + 2u + 1u + 1u + SHA256_BYTES + 2u * NAME_BYTES)
#define INFO_IO_BYTES (2u + 1u + 1u + 16u + 4u + 4u)
#define INFO_BYTES (INFO_FIXED_BYTES + INFO_IO_BYTES * (MCUQ_NUM_INPUTS + MCUQ_NUM_OUTPUTS))
#define MAX_PROFILE_COUNT (MCUQ_MAX_PAYLOAD / 4u)

#if INFO_BYTES > MCUQ_MAX_PAYLOAD
#error "too many graph inputs and outputs for one INFO frame"
#endif

static uint8_t arena[MCUQ_ARENA_BYTES > 0 ? MCUQ_ARENA_BYTES : 1] __attribute__((aligned(MCUQ_ARENA_ALIGN)));
static uint32_t node_counts[MCUQ_NUM_NODES];
static uint8_t info[INFO_BYTES];
static mcuq_parser_t parser;

static void respond(const mcuq_frame_t *req, const uint8_t *head, uint32_t head_len, const uint8_t *body,
                    uint32_t body_len)
{
    mcuq_frame_write(mcuq_port_write, (uint8_t)(req->type | MCUQ_RESPONSE), req->seq, head, head_len, body,
                     body_len);
}

/* An ERROR frame with a string literal as the reason (its length known at compile time). */
#define refuse(req, code, reason) refuse_n(req, code, reason, sizeof(reason) - 1u)

static void refuse_n(const mcuq_frame_t *req, uint8_t code, const char *reason, uint32_t len)
{
    mcuq_frame_write(mcuq_port_write, MCUQ_ERROR, req->seq, &code, 1, (const uint8_t *)reason, len);
}

/* Counter ticks in the units INFO promises (counter_scale 1): cycles as they are; SysTick
 * ticks under QEMU -icount shift=0 become instructions (one per virtual nanosecond): times
 * 1e9 / MCUQ_CLOCK_HZ, in lowest terms from the build, so no 64-bit division is linked when the
 * clock divides 1e9 up to a power of two (every QEMU board). */
static uint64_t to_units(uint64_t ticks)
{
#if MCUQ_EMULATED
    return ticks * MCUQ_TICK_NS_NUM / MCUQ_TICK_NS_DEN;
#else
    return ticks;
#endif
}

/* INFO's fixed fields as the build knows them, little endian; the counter kind byte is the port's. */
#define HEX(c) ((c) <= '9' ? (c) - '0' : ((c) | 0x20) - 'a' + 10)
#define SHA(i) (uint8_t)(HEX(MCUQ_MODEL_SHA256[2 * (i)]) * 16 + HEX(MCUQ_MODEL_SHA256[2 * (i) + 1]))
#define SHA4(i) SHA(i), SHA(i + 1), SHA(i + 2), SHA(i + 3)
#define U16(v) (uint8_t)((v) & 0xFFu), (uint8_t)((v) >> 8 & 0xFFu)

static const struct {
    uint8_t head[INFO_FIXED_BYTES - 2u * NAME_BYTES];
    char board[NAME_BYTES];   /* zero padded (cut if longer) */
    char version[NAME_BYTES];
} info_fixed = {{U16(MCUQ_PROTOCOL_VERSION), 0, U16(1u) /* counter_scale: to_units applied */,
                 U16(MCUQ_ARENA_BYTES & 0xFFFFu), U16(MCUQ_ARENA_BYTES >> 16), U16(MCUQ_NUM_NODES),
                 MCUQ_NUM_INPUTS, MCUQ_NUM_OUTPUTS, SHA4(0), SHA4(4), SHA4(8), SHA4(12), SHA4(16), SHA4(20),
                 SHA4(24), SHA4(28)},
                MCUQ_BOARD,
                MCUQ_FIRMWARE_VERSION};
#define COUNTER_KIND_AT 2

static uint8_t *put_io(uint8_t *p, const mcuq_io_t *io)
{
    const mcuq_tensor_t *t = &mcuq_tensors[io->tensor];
    uint32_t scale_bits;
    memcpy(&scale_bits, &io->scale, sizeof scale_bits);
    p = mcuq_put_u16(p, (uint16_t)io->tensor);
    *p++ = t->dtype;
    *p++ = t->rank;
    for (int d = 0; d < 4; d++) {
        p = mcuq_put_u32(p, (uint32_t)t->shape[d]);
    }
    p = mcuq_put_u32(p, scale_bits);
    return mcuq_put_u32(p, (uint32_t)io->zero_point);
}

static void on_info(const mcuq_frame_t *req)
{
    const uint8_t *fixed = (const uint8_t *)&info_fixed;
    uint8_t *p = info;
    for (uint32_t i = 0; i < sizeof info_fixed; i++) {
        *p++ = fixed[i];
    }
    info[COUNTER_KIND_AT] = mcuq_port_counter_kind();
    for (int i = 0; i < MCUQ_NUM_INPUTS; i++) {
        p = put_io(p, &mcuq_inputs[i]);
    }
    for (int i = 0; i < MCUQ_NUM_OUTPUTS; i++) {
        p = put_io(p, &mcuq_outputs[i]);
    }
    respond(req, info, (uint32_t)(p - info), 0, 0);
}

/* The tensor's bytes [offset, offset + n) if they exist, else 0 (and an error sent). */
static uint8_t *tensor_range(const mcuq_frame_t *req, uint32_t slot, uint32_t offset, uint32_t n)
{
    if (slot >= MCUQ_NUM_TENSORS) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "no such tensor slot");
        return 0;
    }
    uint32_t bytes = (uint32_t)mcuq_tensor_bytes((int)slot);
    if (offset > bytes || n > bytes - offset) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "range outside the tensor");
        return 0;
    }
    return (uint8_t *)mcuq_tensor_data(arena, (int)slot) + offset;
}

static void on_write_tensor(const mcuq_frame_t *req)
{
    if (req->length < 6) {
        refuse(req, MCUQ_ERR_BAD_REQUEST, "WRITE_TENSOR needs slot and offset");
        return;
    }
    uint32_t slot = mcuq_get_u16(req->payload);
    if (slot < MCUQ_NUM_TENSORS && mcuq_tensors[slot].data != 0) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "tensor is constant (in flash)");
        return;
    }
    uint32_t n = req->length - 6u;
    uint8_t *dst = tensor_range(req, slot, mcuq_get_u32(req->payload + 2), n);
    if (dst) {
        for (uint32_t i = 0; i < n; i++) {
            dst[i] = req->payload[6 + i];
        }
        respond(req, 0, 0, 0, 0);
    }
}

static void on_run(const mcuq_frame_t *req)
{
    if (req->length != 2) {
        refuse(req, MCUQ_ERR_BAD_REQUEST, "RUN needs last_node i16");
        return;
    }
    int last = (int16_t)mcuq_get_u16(req->payload);
    if (last < -1 || last >= MCUQ_NUM_NODES) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "last_node out of range");
        return;
    }
    if (last < 0) {
        last = MCUQ_NUM_NODES - 1;
    }
    for (int i = 0; i < MCUQ_NUM_NODES; i++) {
        node_counts[i] = 0;
    }
    int failed = -1;
    mcuq_port_counter_sync();
    mcuq_status_t status = mcuq_run_nodes(arena, 0, last, node_counts, &failed);
    uint64_t total = 0;
    for (int i = 0; i <= last; i++) {
        total += node_counts[i];
        uint64_t units = to_units(node_counts[i]);
        node_counts[i] = units > UINT32_MAX ? UINT32_MAX : (uint32_t)units;
    }
    if (status != MCUQ_OK) {
        uint8_t out[4] = {MCUQ_ERR_KERNEL};
        mcuq_put_u16(out + 1, (uint16_t)failed);
        out[3] = (uint8_t)(int8_t)status;
        static const char unsupported[] = "no kernel for this op and type";
        static const char range[] = "intermediate value out of range";
        static const char params[] = "parameters outside the kernel's contract";
        const char *why = status == MCUQ_ERR_UNSUPPORTED ? unsupported : status == MCUQ_ERR_RANGE ? range : params;
        uint32_t len = status == MCUQ_ERR_UNSUPPORTED ? sizeof unsupported - 1u
                       : status == MCUQ_ERR_RANGE     ? sizeof range - 1u
                                                      : sizeof params - 1u;
        mcuq_frame_write(mcuq_port_write, MCUQ_ERROR, req->seq, out, sizeof out, (const uint8_t *)why, len);
        return;
    }
    total = to_units(total);
    uint8_t out[11] = {0}; /* status MCUQ_OK */
    mcuq_put_u16(out + 1, (uint16_t)(last + 1));
    mcuq_put_u32(out + 3, (uint32_t)total);
    mcuq_put_u32(out + 7, (uint32_t)(total >> 32));
    respond(req, out, sizeof out, 0, 0);
}

static void on_read_tensor(const mcuq_frame_t *req)
{
    if (req->length != 8) {
        refuse(req, MCUQ_ERR_BAD_REQUEST, "READ_TENSOR needs slot, offset, length");
        return;
    }
    uint32_t n = mcuq_get_u16(req->payload + 6);
    if (n > MCUQ_MAX_PAYLOAD) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "length above MAX_PAYLOAD");
        return;
    }
    const uint8_t *src = tensor_range(req, mcuq_get_u16(req->payload), mcuq_get_u32(req->payload + 2), n);
    if (src) {
        respond(req, 0, 0, src, n);
    }
}

static void on_read_profile(const mcuq_frame_t *req)
{
    if (req->length != 4) {
        refuse(req, MCUQ_ERR_BAD_REQUEST, "READ_PROFILE needs first_node, count");
        return;
    }
    uint32_t first = mcuq_get_u16(req->payload), count = mcuq_get_u16(req->payload + 2);
    if (count > MAX_PROFILE_COUNT || first > MCUQ_NUM_NODES || count > MCUQ_NUM_NODES - first) {
        refuse(req, MCUQ_ERR_BAD_ARGUMENT, "nodes out of range");
        return;
    }
    respond(req, 0, 0, (const uint8_t *)(node_counts + first), 4u * count);
}

static void on_reset(const mcuq_frame_t *req)
{
    respond(req, 0, 0, 0, 0);
    mcuq_port_flush();
    mcuq_port_reset();
}

static void serve(const mcuq_frame_t *req)
{
    switch (req->type) {
    case MCUQ_INFO:
        on_info(req);
        break;
    case MCUQ_WRITE_TENSOR:
        on_write_tensor(req);
        break;
    case MCUQ_RUN:
        on_run(req);
        break;
    case MCUQ_READ_TENSOR:
        on_read_tensor(req);
        break;
    case MCUQ_READ_PROFILE:
        on_read_profile(req);
        break;
    case MCUQ_RESET:
        on_reset(req);
        break;
    default:
        refuse(req, MCUQ_ERR_BAD_REQUEST, "unknown request type");
        break;
    }
}

int main(void)
{
    static const uint8_t hello[6] = {'m', 'c', 'u', 'q', MCUQ_PROTOCOL_VERSION & 0xFF, MCUQ_PROTOCOL_VERSION >> 8};
    mcuq_port_init();
    mcuq_parser_init(&parser);
    mcuq_frame_write(mcuq_port_write, MCUQ_HELLO, 0, hello, sizeof hello, 0, 0);
    for (;;) {
        mcuq_frame_t req;
        while (!mcuq_parser_next(&parser, &req)) {
            mcuq_parser_push(&parser, mcuq_port_read_byte());
        }
        serve(&req);
    }
}
