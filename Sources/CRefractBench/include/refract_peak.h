#ifndef REFRACT_PEAK_H
#define REFRACT_PEAK_H
/* FP32 peak probe: runs `iterations` rounds of independent fused multiply-adds with the widest
   vector unit the CPU supports (AVX-512, else AVX2+FMA, else SSE) and returns the flops done.
   `width_out` receives the vector width in floats. Used by refract-bench only. */
double refract_peak_fma(long iterations, int *width_out);
/* The same with vectors at most `max_width` floats wide (16: AVX-512, 8: AVX2+FMA): the peak of
   the instruction set a BLAS kernel set uses (Haswell kernels on an AVX-512 CPU run at the 8-wide peak). */
double refract_peak_fma_width(long iterations, int max_width, int *width_out);
#endif
