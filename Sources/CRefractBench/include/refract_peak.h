#ifndef REFRACT_PEAK_H
#define REFRACT_PEAK_H
/* FP32 peak probe: runs `iterations` rounds of independent fused multiply-adds with the widest
   vector unit the CPU supports (AVX-512, else AVX2+FMA, else SSE) and returns the flops done.
   `width_out` receives the vector width in floats. Used by refract-bench only. */
double refract_peak_fma(long iterations, int *width_out);
#endif
