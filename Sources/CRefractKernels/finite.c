#include "refract_kernels.h"
#include <float.h>
#include <math.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define RF_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_MULTIVERSION
#endif

/* |v| <= FLT_MAX is false exactly for NaN (every comparison with NaN is false) and +-infinity. */
RF_MULTIVERSION
size_t rf_first_nonfinite(const float *x, size_t n) {
    const size_t block = 256;
    for (size_t start = 0; start < n; start += block) {
        size_t end = n - start < block ? n : start + block;
        int bad = 0;
        for (size_t i = start; i < end; i++) bad |= !(fabsf(x[i]) <= FLT_MAX);
        if (bad) {
            for (size_t i = start; i < end; i++) {
                if (!(fabsf(x[i]) <= FLT_MAX)) return i;
            }
        }
    }
    return n;
}
