/* What every Cortex-M board shares: vector table, reset handler (FPU on before any float,
 * .data copied from flash, .bss zeroed), the profiling counter and the system reset.
 *
 * The counter is DWT->CYCCNT (CPU cycles) on real chips. QEMU does not implement CYCCNT, so
 * emulated boards (MCUQ_EMULATED) count with SysTick on the processor clock: run under
 * -icount shift=0, one guest instruction is one virtual nanosecond, which makes SysTick a
 * deterministic instruction counter. SysTick is 24 bits wide; its interrupt counts wraps.
 */
#include <stddef.h>
#include <stdint.h>

#include "mcuq_cortexm.h"
#include "mcuq_port.h"

#ifndef MCUQ_EMULATED
#define MCUQ_EMULATED 0
#endif

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
int main(void);

typedef void (*mcuq_vector_t)(void);

void mcuq_reset_handler(void);
static void fault_handler(void);
static void counter_start(void);
#if MCUQ_EMULATED
static void systick_handler(void);
#else
#define systick_handler fault_handler /* SysTick stays off */
#endif

/* Core exceptions only: the firmware enables no peripheral interrupt. */
__attribute__((section(".vectors"), used)) const mcuq_vector_t mcuq_vectors[16] = {
    (mcuq_vector_t)(uintptr_t)_estack, /* initial stack pointer */
    mcuq_reset_handler,
    fault_handler, /* NMI */
    fault_handler, /* HardFault */
    fault_handler, /* MemManage */
    fault_handler, /* BusFault */
    fault_handler, /* UsageFault */
    fault_handler, /* SecureFault (Armv8-M) */
    0, 0, 0,
    fault_handler, /* SVCall */
    fault_handler, /* DebugMonitor */
    0,
    fault_handler, /* PendSV */
    systick_handler,
};

/* A fault leaves the board silent: the host times out and reports it. */
static void fault_handler(void)
{
    for (;;) {
    }
}

#if MCUQ_EMULATED

static volatile uint32_t systick_wraps;

static void systick_handler(void) { systick_wraps++; }

static void counter_start(void)
{
    SYST_RVR = SYST_MAX;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE;
}

uint32_t mcuq_port_counter(void)
{
    uint32_t primask = mcuq_irq_save();
    uint32_t wraps = systick_wraps;
    uint32_t value = SYST_CVR;
    if (SCB_ICSR & SCB_ICSR_PENDSTSET) { /* wrapped, handler not run yet: value may predate it */
        wraps++;
        value = SYST_CVR;
    }
    mcuq_irq_restore(primask);
    return (wraps << 24) + (SYST_MAX - value);
}

void mcuq_port_counter_sync(void)
{
    uint32_t primask = mcuq_irq_save();
    SYST_CVR = 0; /* reads 0 until the next tick edge reloads it, one period after this write */
    while (SYST_CVR == 0) {
    }
    SCB_ICSR = SCB_ICSR_PENDSTCLR;
    systick_wraps = 0;
    mcuq_irq_restore(primask);
}

uint8_t mcuq_port_counter_kind(void) { return MCUQ_COUNTER_INSTRUCTIONS; }

#else

static void counter_start(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = DWT_LAR_KEY; /* Cortex-M7 ignores CYCCNTENA writes until the DWT is unlocked */
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
}

uint32_t mcuq_port_counter(void) { return DWT_CYCCNT; }

void mcuq_port_counter_sync(void) {}

uint8_t mcuq_port_counter_kind(void) { return MCUQ_COUNTER_CYCLES; }

#endif

uint32_t mcuq_port_counter_hz(void) { return MCUQ_CLOCK_HZ; }

void mcuq_port_reset(void)
{
    mcuq_dsb();
    SCB_AIRCR = SCB_AIRCR_VECTKEY | (SCB_AIRCR & SCB_AIRCR_PRIGROUP) | SCB_AIRCR_SYSRESETREQ;
    mcuq_dsb();
    for (;;) {
    }
}

#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB >= 2
/* memset, in place of newlib-nano's (162 bytes; the depthwise kernel pads with it): bytes up to
 * a word boundary, then 16 bytes per iteration (two STRDs), words, and the last bytes. 70 bytes,
 * and fewer instructions than newlib's at every length from a word-aligned start. */
__attribute__((naked)) void *memset(void *dst, int c, size_t n)
{
    (void)dst;
    (void)c;
    (void)n;
    __asm volatile("    mov    r3, r0\n"
                   "    uxtb   r1, r1\n"
                   "    orr    r1, r1, r1, lsl #8\n"
                   "    orr    r1, r1, r1, lsl #16\n"
                   "1:  tst    r3, #3\n"
                   "    beq    2f\n"
                   "    cbz    r2, 5f\n"
                   "    strb   r1, [r3], #1\n"
                   "    subs   r2, #1\n"
                   "    b      1b\n"
                   "2:  subs   r2, #16\n" /* r2 = bytes left - 16 */
                   "    blo    3f\n"
                   "20: strd   r1, r1, [r3], #8\n"
                   "    strd   r1, r1, [r3], #8\n"
                   "    subs   r2, #16\n"
                   "    bhs    20b\n"
                   "3:  adds   r2, #12\n" /* bytes left - 4 */
                   "    blo    4f\n"
                   "30: str    r1, [r3], #4\n"
                   "    subs   r2, #4\n"
                   "    bhs    30b\n"
                   "4:  adds   r2, #4\n" /* bytes left, 0 to 3 */
                   "    beq    5f\n"
                   "40: strb   r1, [r3], #1\n"
                   "    subs   r2, #1\n"
                   "    bne    40b\n"
                   "5:  bx     lr\n");
}
#endif

void mcuq_reset_handler(void)
{
    SCB_CPACR |= SCB_CPACR_CP10_CP11; /* FPU (and MVE) access, before any float instruction */
    mcuq_dsb();
    mcuq_isb();
    for (uint32_t *src = _sidata, *dst = _sdata; dst < _edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = _sbss; dst < _ebss;) {
        *dst++ = 0;
    }
    SCB_VTOR = (uint32_t)(uintptr_t)mcuq_vectors;
    counter_start();
    main();
    for (;;) {
    }
}
