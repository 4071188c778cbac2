/* Framing of the mcuq serial protocol: see mcuq_protocol.h. */
#include "mcuq_protocol.h"

#define CRC32_POLY 0xEDB88320u /* IEEE 802.3, bit-reversed */

uint32_t mcuq_crc32(uint32_t crc, const uint8_t *data, uint32_t n)
{
    crc = ~crc;
    for (uint32_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (CRC32_POLY & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

void mcuq_parser_init(mcuq_parser_t *p)
{
    p->start = 0;
    p->end = 0;
}

void mcuq_parser_push(mcuq_parser_t *p, uint8_t byte)
{
    if (p->start == p->end) {
        p->start = p->end = 0;
    } else if (p->end == MCUQ_MAX_FRAME) {
        if (p->start == 0) { /* only if frames were left unread: drop the oldest byte */
            p->start = 1;
        }
        for (uint32_t i = p->start; i < p->end; i++) { /* move down: front to back */
            p->buf[i - p->start] = p->buf[i];
        }
        p->end -= p->start;
        p->start = 0;
    }
    p->buf[p->end++] = byte;
}

int mcuq_parser_next(mcuq_parser_t *p, mcuq_frame_t *frame)
{
    while (p->start < p->end) {
        const uint8_t *c = p->buf + p->start;
        uint32_t n = p->end - p->start;
        if (c[0] != MCUQ_SYNC0 || (n >= 2 && c[1] != MCUQ_SYNC1)) {
            p->start++;
            continue;
        }
        if (n < MCUQ_HEADER_BYTES) {
            return 0;
        }
        uint32_t length = mcuq_get_u16(c + 4);
        if (length > MCUQ_MAX_PAYLOAD) {
            p->start++;
            continue;
        }
        uint32_t total = MCUQ_HEADER_BYTES + length + MCUQ_CRC_BYTES;
        if (n < total) {
            return 0;
        }
        if (mcuq_crc32(0, c + 2, 4 + length) != mcuq_get_u32(c + MCUQ_HEADER_BYTES + length)) {
            p->start++; /* hunt for a sync pair inside the bad frame's bytes too */
            continue;
        }
        frame->type = c[2];
        frame->seq = c[3];
        frame->length = (uint16_t)length;
        frame->payload = c + MCUQ_HEADER_BYTES;
        p->start += total;
        return 1;
    }
    return 0;
}

int mcuq_frame_write(mcuq_write_fn write, uint8_t type, uint8_t seq, const uint8_t *head,
                     uint32_t head_len, const uint8_t *body, uint32_t body_len)
{
    if (head_len > MCUQ_MAX_PAYLOAD || body_len > MCUQ_MAX_PAYLOAD - head_len) {
        return -1;
    }
    uint8_t header[MCUQ_HEADER_BYTES] = {MCUQ_SYNC0, MCUQ_SYNC1, type, seq};
    mcuq_put_u16(header + 4, (uint16_t)(head_len + body_len));
    uint32_t crc = mcuq_crc32(0, header + 2, 4);
    crc = mcuq_crc32(crc, head, head_len);
    crc = mcuq_crc32(crc, body, body_len);
    uint8_t trailer[MCUQ_CRC_BYTES];
    mcuq_put_u32(trailer, crc);
    write(header, sizeof header);
    write(head, head_len);
    write(body, body_len);
    write(trailer, sizeof trailer);
    return 0;
}
