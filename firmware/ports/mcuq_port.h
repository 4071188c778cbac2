/* The board port: what the app and the runtime need from a platform.
 *
 * One port_<platform>.c per UART family implements the byte I/O and the set-up; the core parts
 * every Cortex-M shares (vector table, reset handler, cycle or instruction counter, system
 * reset) live in mcuq_cortexm.c. The build selects the files and defines, from the board file:
 *   MCUQ_UART_BASE      base address of the UART the host talks to
 *   MCUQ_CLOCK_HZ       CPU clock (on QEMU the machine's SYSCLK)
 *   MCUQ_BOARD          board name, a string literal
 *   MCUQ_EMULATED       1 on QEMU boards: count instructions with SysTick (QEMU has no CYCCNT)
 *   MCUQ_BOARD_<NAME>   the board name in upper case, '-' as '_', for board-specific pins
 *   MCUQ_FIRMWARE_VERSION  the mcuq version, a string literal (INFO reports it)
 */
#ifndef MCUQ_PORT_H
#define MCUQ_PORT_H

#include <stdint.h>

/* Counter kinds, as INFO reports them (docs/protocol.md). */
#define MCUQ_COUNTER_CYCLES 0u       /* DWT->CYCCNT: one tick per CPU cycle */
#define MCUQ_COUNTER_INSTRUCTIONS 1u /* SysTick under QEMU -icount shift=0 */

/* Clocks, UART and counter; called once, first thing in main (the FPU is already on). */
void mcuq_port_init(void);

/* Send n bytes, blocking until the UART has taken them all. */
void mcuq_port_write(const uint8_t *data, uint32_t n);

/* Wait for and return the next received byte. */
uint8_t mcuq_port_read_byte(void);

/* Wait until the last written byte has left the UART (before a reset). */
void mcuq_port_flush(void);

/* Free-running 32-bit counter for profiling; differences are valid across wrap-around. */
uint32_t mcuq_port_counter(void);

/* Called right before a measured run: restarts SysTick under QEMU, so every run starts at the
 * same phase of a tick and identical code gives identical counts (else a count varies by a tick
 * with the instant the run starts); nothing on real chips. */
void mcuq_port_counter_sync(void);

/* The counter's kind (MCUQ_COUNTER_*) and its tick rate in Hz. Under QEMU -icount shift=0 one
 * instruction takes 1 ns, so a tick of a counter_hz counter is 1e9 / counter_hz instructions. */
uint8_t mcuq_port_counter_kind(void);
uint32_t mcuq_port_counter_hz(void);

/* Reset the whole chip (SYSRESETREQ); does not return. */
void mcuq_port_reset(void);

#endif /* MCUQ_PORT_H */
