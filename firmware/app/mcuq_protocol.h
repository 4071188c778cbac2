/* Framing of the mcuq serial protocol (docs/protocol.md): parser and writer.
 *
 * Frame: sync 0xA5 0x5A, type u8, seq u8, length u16, payload[length], CRC-32 u32 (zlib's
 * CRC-32 over type, seq, length and payload); all little endian, length <= MCUQ_MAX_PAYLOAD.
 *
 * The parser takes one byte at a time and needs no clock. It keeps the bytes of the frame it is
 * assembling, so when a frame turns out bad (length too large, CRC wrong) it hunts for the next
 * sync pair from the byte after the bad frame's sync, not after its end: a frame hidden inside
 * the bytes of a corrupted one is still found. Platform independent (the fuzz target runs it on
 * the host).
 */
#ifndef MCUQ_PROTOCOL_H
#define MCUQ_PROTOCOL_H

#include <stdint.h>

#define MCUQ_PROTOCOL_VERSION 1u
#define MCUQ_SYNC0 0xA5u
#define MCUQ_SYNC1 0x5Au
#define MCUQ_MAX_PAYLOAD 1024u
#define MCUQ_HEADER_BYTES 6u /* sync, type, seq, length */
#define MCUQ_CRC_BYTES 4u
#define MCUQ_MAX_FRAME (MCUQ_HEADER_BYTES + MCUQ_MAX_PAYLOAD + MCUQ_CRC_BYTES)

/* Frame types */
#define MCUQ_HELLO 0x40u
#define MCUQ_INFO 0x01u
#define MCUQ_WRITE_TENSOR 0x02u
#define MCUQ_RUN 0x03u
#define MCUQ_READ_TENSOR 0x04u
#define MCUQ_READ_PROFILE 0x05u
#define MCUQ_RESET 0x06u
#define MCUQ_RESPONSE 0x80u /* response type = request type | MCUQ_RESPONSE */
#define MCUQ_ERROR 0xFFu

/* Error codes (first byte of an MCUQ_ERROR payload) */
#define MCUQ_ERR_BAD_REQUEST 1u
#define MCUQ_ERR_BAD_ARGUMENT 2u
#define MCUQ_ERR_KERNEL 3u

/* A received frame; payload points into the parser and is valid until its next push. */
typedef struct {
    uint8_t type;
    uint8_t seq;
    uint16_t length;
    const uint8_t *payload;
} mcuq_frame_t;

typedef struct {
    uint8_t buf[MCUQ_MAX_FRAME];
    uint32_t start; /* first byte of the candidate frame in buf */
    uint32_t end;   /* one past the last byte received */
} mcuq_parser_t;

/* Writes bytes to the link (the port's mcuq_port_write on the target). */
typedef void (*mcuq_write_fn)(const uint8_t *data, uint32_t n);

/* CRC-32 (IEEE 802.3, reflected, as zlib.crc32): continue from crc, 0 to start. */
uint32_t mcuq_crc32(uint32_t crc, const uint8_t *data, uint32_t n);

void mcuq_parser_init(mcuq_parser_t *p);

/* Add one received byte. Call mcuq_parser_next after each push: a full buffer of unread bytes
 * loses its oldest byte. */
void mcuq_parser_push(mcuq_parser_t *p, uint8_t byte);

/* Take the next complete, valid frame from the bytes pushed so far: 1 and *frame filled, or 0
 * when more bytes are needed. Bad frames and bytes between frames are dropped on the way. */
int mcuq_parser_next(mcuq_parser_t *p, mcuq_frame_t *frame);

/* Send one frame whose payload is head (head_len bytes) followed by body (body_len bytes);
 * either may be empty. Returns 0, or -1 (nothing sent) when the payload exceeds the maximum. */
int mcuq_frame_write(mcuq_write_fn write, uint8_t type, uint8_t seq, const uint8_t *head,
                     uint32_t head_len, const uint8_t *body, uint32_t body_len);

/* Little-endian field access for payloads (which have no alignment). */
static inline uint16_t mcuq_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t mcuq_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint8_t *mcuq_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static inline uint8_t *mcuq_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

#endif /* MCUQ_PROTOCOL_H */
