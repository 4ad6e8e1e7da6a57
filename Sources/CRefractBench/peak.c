#include "refract_peak.h"
#if defined(__x86_64__)
#include <immintrin.h>

/* 12 independent accumulator chains hide FMA latency (4 cycles x 2 ports + slack). */
#define CHAINS 12

__attribute__((target("avx512f")))
static double peak_avx512(long iterations) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float sink = 0; float tmp[16];
    for (int i = 0; i < CHAINS; i++) { _mm512_storeu_ps(tmp, acc[i]); sink += tmp[0]; }
    return (double)iterations * CHAINS * 16 * 2 + (sink == 12345.f ? 1 : 0);
}

__attribute__((target("avx2,fma")))
static double peak_avx2(long iterations) {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float sink = 0; float tmp[8];
    for (int i = 0; i < CHAINS; i++) { _mm256_storeu_ps(tmp, acc[i]); sink += tmp[0]; }
    return (double)iterations * CHAINS * 8 * 2 + (sink == 12345.f ? 1 : 0);
}

double refract_peak_fma(long iterations, int *width_out) { return refract_peak_fma_width(iterations, 16, width_out); }

double refract_peak_fma_width(long iterations, int max_width, int *width_out) {
    __builtin_cpu_init();
    if (max_width >= 16 && __builtin_cpu_supports("avx512f")) { *width_out = 16; return peak_avx512(iterations); }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { *width_out = 8; return peak_avx2(iterations); }
    *width_out = 0;
    return 0;
}
#else
double refract_peak_fma(long iterations, int *width_out) { (void)iterations; *width_out = 0; return 0; }
double refract_peak_fma_width(long iterations, int max_width, int *width_out) {
    (void)iterations; (void)max_width; *width_out = 0; return 0;
}
#endif
