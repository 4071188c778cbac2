/* CHECK(cond): abort() when an invariant of a fuzz target fails, so libFuzzer records the input. */
#ifndef MCUQ_FUZZ_CHECK_H
#define MCUQ_FUZZ_CHECK_H

#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif /* MCUQ_FUZZ_CHECK_H */
