/* libFuzzer target for the frame parser and writer (firmware/app/mcuq_protocol.c).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ifirmware/app \
 *       firmware/fuzz/fuzz_frame_parser.c firmware/app/mcuq_protocol.c -o fuzz_frame_parser
 *
 * 1. Any byte stream: every frame the parser hands out lies inside its buffer, starts with the
 *    sync pair, has a legal length and a correct CRC.
 * 2. A frame written by mcuq_frame_write from the input, sent after noise without sync bytes
 *    and after a copy of itself with one byte corrupted, is found again, once, byte for byte
 *    (unless the corruption made another valid frame that overlaps it, which is then returned).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "mcuq_protocol.h"

static mcuq_parser_t parser;
static uint8_t written[MCUQ_MAX_FRAME];
static uint32_t written_len;

static void collect(const uint8_t *data, uint32_t n)
{
    CHECK(written_len + n <= sizeof written);
    if (n > 0) {
        memcpy(written + written_len, data, n);
    }
    written_len += n;
}

static void check_frame(const mcuq_frame_t *f)
{
    CHECK(f->length <= MCUQ_MAX_PAYLOAD);
    const uint8_t *start = f->payload - MCUQ_HEADER_BYTES;
    CHECK(start >= parser.buf);
    CHECK(f->payload + f->length + MCUQ_CRC_BYTES <= parser.buf + sizeof parser.buf);
    CHECK(start[0] == MCUQ_SYNC0 && start[1] == MCUQ_SYNC1);
    CHECK(start[2] == f->type && start[3] == f->seq && mcuq_get_u16(start + 4) == f->length);
    CHECK(mcuq_crc32(0, start + 2, 4u + f->length) == mcuq_get_u32(f->payload + f->length));
}

/* Push bytes; count frames equal to the one in `written` and other frames. */
static void feed(const uint8_t *data, size_t n, int *same, int *other)
{
    for (size_t i = 0; i < n; i++) {
        mcuq_frame_t f;
        mcuq_parser_push(&parser, data[i]);
        while (mcuq_parser_next(&parser, &f)) {
            check_frame(&f);
            uint32_t total = MCUQ_HEADER_BYTES + f.length + MCUQ_CRC_BYTES;
            if (total == written_len && memcmp(f.payload - MCUQ_HEADER_BYTES, written, total) == 0) {
                (*same)++;
            } else {
                (*other)++;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int same = 0, other = 0;
    written_len = 0;
    mcuq_parser_init(&parser);
    feed(data, size, &same, &other);

    if (size < 6) {
        return 0;
    }
    /* A frame from the input: type, seq, how the payload splits into head and body, where to
     * corrupt the copy, then the payload itself. */
    uint8_t type = data[0], seq = data[1];
    size_t payload_len = size - 6 > MCUQ_MAX_PAYLOAD ? MCUQ_MAX_PAYLOAD : size - 6;
    size_t head_len = payload_len ? data[2] % (payload_len + 1) : 0;
    const uint8_t *payload = data + 6;
    CHECK(mcuq_frame_write(collect, type, seq, payload, (uint32_t)head_len, payload + head_len,
                           (uint32_t)(payload_len - head_len)) == 0);
    CHECK(written_len == MCUQ_HEADER_BYTES + payload_len + MCUQ_CRC_BYTES);
    CHECK(mcuq_frame_write(collect, type, seq, payload, MCUQ_MAX_PAYLOAD, payload, 1) == -1);
    CHECK(written_len == MCUQ_HEADER_BYTES + payload_len + MCUQ_CRC_BYTES); /* nothing written */

    static uint8_t noise[64], corrupt[MCUQ_MAX_FRAME], padding[MCUQ_MAX_FRAME];
    size_t noise_len = data[3] % sizeof noise;
    for (size_t i = 0; i < noise_len; i++) {
        uint8_t b = data[(i + 6) % size];
        noise[i] = b == MCUQ_SYNC0 ? 0 : b;
    }
    memcpy(corrupt, written, written_len);
    corrupt[mcuq_get_u16(data + 4) % written_len] ^= (uint8_t)(data[3] | 1);

    same = other = 0;
    mcuq_parser_init(&parser);
    feed(noise, noise_len, &same, &other);
    CHECK(same == 0 && other == 0);
    feed(corrupt, written_len, &same, &other);
    feed(written, written_len, &same, &other);
    feed(padding, sizeof padding, &same, &other); /* completes whatever a corrupted length awaits */
    CHECK(same == 1 || (same == 0 && other >= 1)); /* only a frame overlapping ours may hide it */
    return 0;
}
