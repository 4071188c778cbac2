/* The few Cortex-M core registers the firmware uses (no CMSIS: see docs in mcuq_port.h). */
#ifndef MCUQ_CORTEXM_H
#define MCUQ_CORTEXM_H

#include <stdint.h>

#define MCUQ_REG(addr) (*(volatile uint32_t *)(addr))

/* System control block */
#define SCB_CPUID MCUQ_REG(0xE000ED00u)
#define SCB_ICSR MCUQ_REG(0xE000ED04u)
#define SCB_VTOR MCUQ_REG(0xE000ED08u)
#define SCB_AIRCR MCUQ_REG(0xE000ED0Cu)
#define SCB_CCR MCUQ_REG(0xE000ED14u)
#define SCB_CCSIDR MCUQ_REG(0xE000ED80u)
#define SCB_CSSELR MCUQ_REG(0xE000ED84u)
#define SCB_CPACR MCUQ_REG(0xE000ED88u)
#define SCB_ICIALLU MCUQ_REG(0xE000EF50u)
#define SCB_DCISW MCUQ_REG(0xE000EF60u)

#define SCB_ICSR_PENDSTSET (1u << 26)
#define SCB_ICSR_PENDSTCLR (1u << 25)
#define SCB_AIRCR_VECTKEY (0x05FAu << 16)
#define SCB_AIRCR_PRIGROUP (7u << 8)
#define SCB_AIRCR_SYSRESETREQ (1u << 2)
#define SCB_CCR_DC (1u << 16)
#define SCB_CCR_IC (1u << 17)
#define SCB_CPACR_CP10_CP11 (0xFu << 20)

/* SysTick */
#define SYST_CSR MCUQ_REG(0xE000E010u)
#define SYST_RVR MCUQ_REG(0xE000E014u)
#define SYST_CVR MCUQ_REG(0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2) /* processor clock */
#define SYST_MAX 0x00FFFFFFu

/* Debug and trace: cycle counter */
#define DEMCR MCUQ_REG(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL MCUQ_REG(0xE0001000u)
#define DWT_CYCCNT MCUQ_REG(0xE0001004u)
#define DWT_LAR MCUQ_REG(0xE0001FB0u)
#define DWT_CTRL_CYCCNTENA (1u << 0)
#define DWT_LAR_KEY 0xC5ACCE55u

static inline void mcuq_dsb(void) { __asm volatile("dsb 0xF" ::: "memory"); }
static inline void mcuq_isb(void) { __asm volatile("isb 0xF" ::: "memory"); }

/* Mask interrupts; returns the previous PRIMASK for mcuq_irq_restore. */
static inline uint32_t mcuq_irq_save(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

static inline void mcuq_irq_restore(uint32_t primask)
{
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

#endif /* MCUQ_CORTEXM_H */
