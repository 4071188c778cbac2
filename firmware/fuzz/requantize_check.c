/* Runs the firmware's requantize functions (firmware/include/mcuq_requantize.h) on records read
 * from stdin, for tests/test_sanitizers.py to compare with the Python twin and TFLM's rule under
 * UndefinedBehaviorSanitizer:
 *
 *   in:  int32 x, int32 multiplier, int32 shift      (little endian, 12 bytes a record)
 *   out: int32 mcuq_requantize(x, multiplier, shift), int32 mcuq_requantize_pow2(x, shift)
 */
#include <stdint.h>
#include <stdio.h>

#include "mcuq_requantize.h"

int main(void)
{
    int32_t rec[3];
    while (fread(rec, sizeof rec, 1, stdin) == 1) {
        const int32_t out[2] = {mcuq_requantize(rec[0], rec[1], rec[2]), mcuq_requantize_pow2(rec[0], rec[2])};
        if (fwrite(out, sizeof out, 1, stdout) != 1) {
            return 1;
        }
    }
    return ferror(stdin) ? 1 : 0;
}
