/* STM32F7 (NUCLEO-F767ZI, STM32F746G-DISCO): 216 MHz from the internal 16 MHz oscillator
 * through the PLL (same on both boards, whatever crystal they carry), Cortex-M7 caches on, and
 * the USART wired to the ST-LINK's virtual COM port at 115200 8N1. No QEMU machine models an
 * STM32F7, so this port is only compiled and linked here; it runs on the boards. */
#include <stdint.h>

#include "mcuq_cortexm.h"
#include "mcuq_port.h"

#define RCC_BASE 0x40023800u
#define RCC_CR MCUQ_REG(RCC_BASE + 0x00u)
#define RCC_PLLCFGR MCUQ_REG(RCC_BASE + 0x04u)
#define RCC_CFGR MCUQ_REG(RCC_BASE + 0x08u)
#define RCC_AHB1ENR MCUQ_REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR MCUQ_REG(RCC_BASE + 0x40u)
#define RCC_APB2ENR MCUQ_REG(RCC_BASE + 0x44u)

#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_CFGR_SW_PLL 2u
#define RCC_CFGR_SWS_MASK (3u << 2)
#define RCC_CFGR_SWS_PLL (2u << 2)
#define RCC_CFGR_PPRE1_DIV4 (5u << 10)
#define RCC_CFGR_PPRE2_DIV2 (4u << 13)
#define RCC_APB1ENR_USART3EN (1u << 18)
#define RCC_APB1ENR_PWREN (1u << 28)
#define RCC_APB2ENR_USART1EN (1u << 4)

/* HSI 16 MHz / M 8 * N 216 = VCO 432 MHz; / P 2 = 216 MHz SYSCLK; / Q 9 = 48 MHz. */
#define PLL_M 8u
#define PLL_N 216u
#define PLL_Q 9u
#define PLLCFGR_KEEP 0xF0000000u /* PLLR (F76x) and reserved bits: keep their reset values */
#define APB1_HZ (MCUQ_CLOCK_HZ / 4u)
#define APB2_HZ (MCUQ_CLOCK_HZ / 2u)

#define PWR_CR1 MCUQ_REG(0x40007000u)
#define PWR_CSR1 MCUQ_REG(0x40007004u)
#define PWR_CR1_VOS_SCALE1 (3u << 14)
#define PWR_CR1_ODEN (1u << 16)
#define PWR_CR1_ODSWEN (1u << 17)
#define PWR_CSR1_ODRDY (1u << 16)
#define PWR_CSR1_ODSWRDY (1u << 17)

#define FLASH_ACR MCUQ_REG(0x40023C00u)
#define FLASH_ACR_LATENCY_7WS 7u /* 210-216 MHz at 2.7-3.6 V */
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ARTEN (1u << 9)

#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIOD_BASE 0x40020C00u
#define GPIO_MODER(b) MCUQ_REG((b) + 0x00u)
#define GPIO_OSPEEDR(b) MCUQ_REG((b) + 0x08u)
#define GPIO_PUPDR(b) MCUQ_REG((b) + 0x0Cu)
#define GPIO_AFR(b, pin) MCUQ_REG((b) + 0x20u + 4u * ((pin) >> 3))
#define GPIO_AF7_USART 7u
#define GPIO_PULL_UP 1u

#define USART_CR1 MCUQ_REG(MCUQ_UART_BASE + 0x00u)
#define USART_BRR MCUQ_REG(MCUQ_UART_BASE + 0x0Cu)
#define USART_ISR MCUQ_REG(MCUQ_UART_BASE + 0x1Cu)
#define USART_ICR MCUQ_REG(MCUQ_UART_BASE + 0x20u)
#define USART_RDR MCUQ_REG(MCUQ_UART_BASE + 0x24u)
#define USART_TDR MCUQ_REG(MCUQ_UART_BASE + 0x28u)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TC (1u << 6)
#define USART_ISR_TXE (1u << 7)
#define USART_ICR_ORECF (1u << 3)
#define BAUD 115200u

/* Which pins carry the virtual COM port, per board. */
#if defined(MCUQ_BOARD_STM32F7) /* NUCLEO-F767ZI: USART3 on PD8 (TX) / PD9 (RX) */
#define UART_PCLK_HZ APB1_HZ
#define UART_CLOCK_ON() (RCC_APB1ENR |= RCC_APB1ENR_USART3EN)
#define GPIO_CLOCKS_ON() (RCC_AHB1ENR |= 1u << 3)
#define TX_PORT GPIOD_BASE
#define TX_PIN 8u
#define RX_PORT GPIOD_BASE
#define RX_PIN 9u
#elif defined(MCUQ_BOARD_STM32F746_DISCO) /* 32F746GDISCOVERY: USART1 on PA9 (TX) / PB7 (RX) */
#define UART_PCLK_HZ APB2_HZ
#define UART_CLOCK_ON() (RCC_APB2ENR |= RCC_APB2ENR_USART1EN)
#define GPIO_CLOCKS_ON() (RCC_AHB1ENR |= (1u << 0) | (1u << 1))
#define TX_PORT GPIOA_BASE
#define TX_PIN 9u
#define RX_PORT GPIOB_BASE
#define RX_PIN 7u
#else
#error "port_stm32f7.c: no UART pins for this board"
#endif

static void clock_216mhz(void)
{
    RCC_APB1ENR |= RCC_APB1ENR_PWREN;
    (void)RCC_APB1ENR; /* the enable takes effect before the next PWR access */
    PWR_CR1 |= PWR_CR1_VOS_SCALE1;
    RCC_PLLCFGR = (RCC_PLLCFGR & PLLCFGR_KEEP) | PLL_M | (PLL_N << 6) | (PLL_Q << 24); /* P = 2, source HSI */
    RCC_CR |= RCC_CR_PLLON;
    while (!(RCC_CR & RCC_CR_PLLRDY)) {
    }
    PWR_CR1 |= PWR_CR1_ODEN; /* over-drive: needed above 180 MHz */
    while (!(PWR_CSR1 & PWR_CSR1_ODRDY)) {
    }
    PWR_CR1 |= PWR_CR1_ODSWEN;
    while (!(PWR_CSR1 & PWR_CSR1_ODSWRDY)) {
    }
    FLASH_ACR = FLASH_ACR_LATENCY_7WS | FLASH_ACR_PRFTEN | FLASH_ACR_ARTEN;
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_7WS) {
    }
    RCC_CFGR = RCC_CFGR_PPRE1_DIV4 | RCC_CFGR_PPRE2_DIV2 | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL) {
    }
}

static void caches_on(void)
{
    mcuq_dsb();
    mcuq_isb();
    SCB_ICIALLU = 0;
    SCB_CSSELR = 0; /* level 1 data cache */
    mcuq_dsb();
    uint32_t ccsidr = SCB_CCSIDR;
    uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    uint32_t set_shift = (ccsidr & 7u) + 4u;           /* log2 of the line size in bytes */
    uint32_t way_shift = (uint32_t)__builtin_clz(ways - 1u); /* ways in the top bits */
    for (uint32_t way = 0; way < ways; way++) {
        for (uint32_t set = 0; set < sets; set++) {
            SCB_DCISW = (way << way_shift) | (set << set_shift);
        }
    }
    mcuq_dsb();
    SCB_CCR |= SCB_CCR_IC | SCB_CCR_DC;
    mcuq_dsb();
    mcuq_isb();
}

static void pin_af7(uint32_t port, uint32_t pin)
{
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2u * pin))) | (2u << (2u * pin));
    GPIO_OSPEEDR(port) |= 3u << (2u * pin);
    GPIO_AFR(port, pin) = (GPIO_AFR(port, pin) & ~(0xFu << (4u * (pin & 7u)))) |
                          (GPIO_AF7_USART << (4u * (pin & 7u)));
}

void mcuq_port_init(void)
{
    clock_216mhz();
    caches_on();
    GPIO_CLOCKS_ON();
    UART_CLOCK_ON();
    (void)RCC_AHB1ENR; /* read back: the clocks run before the GPIO and USART writes below */
    pin_af7(TX_PORT, TX_PIN);
    pin_af7(RX_PORT, RX_PIN);
    GPIO_PUPDR(RX_PORT) = (GPIO_PUPDR(RX_PORT) & ~(3u << (2u * RX_PIN))) | (GPIO_PULL_UP << (2u * RX_PIN));
    USART_BRR = (UART_PCLK_HZ + BAUD / 2u) / BAUD;
    USART_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
}

void mcuq_port_write(const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        while (!(USART_ISR & USART_ISR_TXE)) {
        }
        USART_TDR = data[i];
    }
}

uint8_t mcuq_port_read_byte(void)
{
    for (;;) {
        uint32_t isr = USART_ISR;
        if (isr & USART_ISR_RXNE) {
            return (uint8_t)USART_RDR;
        }
        if (isr & USART_ISR_ORE) { /* a lost byte: the frame's CRC fails and the host retries */
            USART_ICR = USART_ICR_ORECF;
        }
    }
}

void mcuq_port_flush(void)
{
    while (!(USART_ISR & USART_ISR_TC)) {
    }
}
