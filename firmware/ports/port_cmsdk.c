/* Arm CMSDK APB UART: the MPS2/MPS3 FPGA images and their QEMU models (mps2-an500, mps2-an386,
 * mps3-an547). No clock set-up: the UART runs on the fixed SYSCLK (MCUQ_CLOCK_HZ). */
#include <stdint.h>

#include "mcuq_cortexm.h"
#include "mcuq_port.h"

#define UART_DATA MCUQ_REG(MCUQ_UART_BASE + 0x00u)
#define UART_STATE MCUQ_REG(MCUQ_UART_BASE + 0x04u)
#define UART_CTRL MCUQ_REG(MCUQ_UART_BASE + 0x08u)
#define UART_BAUDDIV MCUQ_REG(MCUQ_UART_BASE + 0x10u)

#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)

#define BAUD 115200u
#define MIN_BAUDDIV 16u /* the UART's (and QEMU's) lower limit */

void mcuq_port_init(void)
{
    uint32_t div = MCUQ_CLOCK_HZ / BAUD;
    UART_BAUDDIV = div < MIN_BAUDDIV ? MIN_BAUDDIV : div;
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN;
}

void mcuq_port_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        while (UART_STATE & STATE_TX_FULL) {
        }
        UART_DATA = data[i];
    }
}

uint8_t mcuq_port_read_byte(void)
{
    while (!(UART_STATE & STATE_RX_FULL)) {
    }
    return (uint8_t)UART_DATA;
}

void mcuq_port_flush(void)
{
    while (UART_STATE & STATE_TX_FULL) {
    }
}
