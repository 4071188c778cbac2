/* libFuzzer target for the firmware's request handling (firmware/app/main.c) with a packed model:
 * any byte stream is cut into frames by the parser and each frame is served (INFO, WRITE_TENSOR,
 * RUN, READ_TENSOR, READ_PROFILE, RESET and unknown types, with any payload), as on the board.
 * Built by tests/sanitized_build.py with ASan + UBSan against a pack output's mcuq_model.c, the
 * runtime and the kernels.
 *
 * Invariants: every byte the firmware sends parses back as frames with a correct CRC, one per
 * request, each a response to it (its type | 0x80, or ERROR) with its sequence number.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define main mcuq_app_main /* the app's own loop is not used here: frames are served one by one */
#include "../app/main.c"
#undef main

#include "fuzz_check.h"

static mcuq_parser_t replies;
static int reply_count;
static uint8_t reply_type, reply_seq;

void mcuq_port_init(void)
{
}

void mcuq_port_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        mcuq_frame_t f;
        mcuq_parser_push(&replies, data[i]);
        while (mcuq_parser_next(&replies, &f)) {
            reply_count++;
            reply_type = f.type;
            reply_seq = f.seq;
        }
    }
}

uint8_t mcuq_port_read_byte(void)
{
    abort(); /* frames come from LLVMFuzzerTestOneInput */
}

void mcuq_port_flush(void)
{
}

uint32_t mcuq_port_counter(void)
{
    static uint32_t ticks;
    return ticks += 7;
}

void mcuq_port_counter_sync(void)
{
}

uint8_t mcuq_port_counter_kind(void)
{
    return MCUQ_COUNTER_CYCLES;
}

uint32_t mcuq_port_counter_hz(void)
{
    return 1000000000u;
}

void mcuq_port_reset(void)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mcuq_parser_init(&parser);
    for (size_t i = 0; i < size; i++) {
        mcuq_frame_t req;
        mcuq_parser_push(&parser, data[i]);
        while (mcuq_parser_next(&parser, &req)) {
            mcuq_parser_init(&replies);
            reply_count = 0;
            serve(&req);
            CHECK(reply_count == 1);
            CHECK(reply_seq == req.seq);
            CHECK(reply_type == (uint8_t)(req.type | MCUQ_RESPONSE) || reply_type == MCUQ_ERROR);
        }
    }
    return 0;
}
