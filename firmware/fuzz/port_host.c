/* Host port of the firmware (firmware/ports/mcuq_port.h) for sanitizer runs: the whole app
 * (protocol server, runtime, kernels, packed model) runs as a Linux process whose "UART" is one
 * TCP connection on 127.0.0.1, so `mcuq verify DIR --port socket://127.0.0.1:PORT` talks to it
 * exactly as to QEMU's serial socket (tests/test_sanitizers.py builds it with ASan and UBSan).
 *
 * MCUQ_HOST_PORT (environment) is the TCP port to listen on, 0 or unset for any free one; the
 * port is printed as "listening PORT" on stdout, then one connection is accepted. The process
 * exits with status 0 when the host closes the connection or sends RESET. The counter is a
 * monotonic nanosecond clock, reported as cycles at 1 GHz.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mcuq_port.h"

static int conn = -1;

static void fail(const char *what)
{
    perror(what);
    exit(2);
}

void mcuq_port_init(void)
{
    const char *env = getenv("MCUQ_HOST_PORT");
    struct sockaddr_in addr = {0};
    socklen_t len = sizeof addr;
    int one = 1;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    if (server < 0) {
        fail("socket");
    }
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)(env ? atoi(env) : 0));
    if (bind(server, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(server, 1) != 0) {
        fail("bind");
    }
    if (getsockname(server, (struct sockaddr *)&addr, &len) != 0) {
        fail("getsockname");
    }
    printf("listening %u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);
    conn = accept(server, 0, 0);
    if (conn < 0) {
        fail("accept");
    }
    close(server);
}

void mcuq_port_write(const uint8_t *data, uint32_t n)
{
    while (n > 0) {
        ssize_t sent = send(conn, data, n, MSG_NOSIGNAL);
        if (sent <= 0) {
            exit(0); /* the host went away */
        }
        data += sent;
        n -= (uint32_t)sent;
    }
}

uint8_t mcuq_port_read_byte(void)
{
    static uint8_t buf[4096];
    static ssize_t have, next;
    if (next == have) {
        have = recv(conn, buf, sizeof buf, 0);
        next = 0;
        if (have <= 0) {
            exit(0); /* the host closed the connection */
        }
    }
    return buf[next++];
}

void mcuq_port_flush(void)
{
}

uint32_t mcuq_port_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
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
    exit(0);
}
