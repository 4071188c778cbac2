/* STM32F4 USART, as QEMU's netduinoplus2 (STM32F405) models it. QEMU needs no clock, GPIO or
 * baud set-up and drops received bytes unless UE and RE are set; a real STM32F4 would also need
 * its RCC clock tree, the USART clock enable and the pins' alternate function (see
 * port_stm32f7.c for how). */
#include <stdint.h>

#include "mcuq_cortexm.h"
#include "mcuq_port.h"

#define USART_SR MCUQ_REG(MCUQ_UART_BASE + 0x00u)
#define USART_DR MCUQ_REG(MCUQ_UART_BASE + 0x04u)
#define USART_CR1 MCUQ_REG(MCUQ_UART_BASE + 0x0Cu)

#define SR_RXNE (1u << 5)
#define SR_TC (1u << 6)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_UE (1u << 13)

void mcuq_port_init(void) { USART_CR1 = CR1_UE | CR1_TE | CR1_RE; }

void mcuq_port_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        while (!(USART_SR & SR_TXE)) {
        }
        USART_DR = data[i];
    }
}

uint8_t mcuq_port_read_byte(void)
{
    while (!(USART_SR & SR_RXNE)) {
    }
    return (uint8_t)USART_DR;
}

void mcuq_port_flush(void)
{
    while (!(USART_SR & SR_TC)) {
    }
}
