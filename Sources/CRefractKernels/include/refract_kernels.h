#ifndef REFRACT_KERNELS_H
#define REFRACT_KERNELS_H
/* Elementwise and row-wise float32 kernels of Refract's forward pass. They are written in C so
   that each can be compiled for several instruction sets (AVX-512, AVX2+FMA, baseline) and
   picked at run time (GCC/Clang function multi-versioning), which Swift cannot do without
   unsafe build flags. Plain reference versions live in Swift (RefractTensor/ReferenceKernels).
   All pointers are to dense row-major float arrays. */
#include <stddef.h>

/* exp(x) to ~2 ulp and erf(x) to ~2e-7 absolute, for one value (used by tests). */
float rf_exp(float x);
float rf_erf(float x);

/* In place: x = 0.5 x (1 + erf(x / sqrt 2)). */
void rf_gelu(float *x, size_t n);
/* In place: x = x * sigmoid(1.702 x). */
void rf_quick_gelu(float *x, size_t n);
/* GELU, tanh approximation (timm gelu_tanh): x·sigmoid(2·sqrt(2/pi)·(x + 0.044715·x^3)). */
void rf_gelu_tanh(float *x, size_t n);
/* SiLU x·sigmoid(x); the logistic sigmoid. */
void rf_silu(float *x, size_t n);
void rf_sigmoid(float *x, size_t n);
/* Row-wise softmax of scale*x over the first valid(r) entries of each of `rows` rows (stride ld);
   valid(r) = cols, or min(cols, r + row_offset + 1) when causal; masked entries become 0. */
void rf_softmax_rows(float *x, size_t rows, size_t cols, size_t ld, float scale, int causal, size_t row_offset);
/* Row-wise LayerNorm (biased variance, two passes): y = (x - mean) / sqrt(var + eps) * g + b. y may alias x. */
void rf_layer_norm(const float *x, float *y, size_t rows, size_t d, const float *g, const float *b, float eps);

/* Instruction-set features the CPU has and the operating system has enabled (CPUID with the
   XGETBV check, as the compiler's run-time dispatch sees them), as RF_CPU_* bits; 0 off x86-64. */
#define RF_CPU_AVX 1
#define RF_CPU_AVX2 2
#define RF_CPU_FMA 4
#define RF_CPU_AVX512F 8
#define RF_CPU_AVX512CD 16
#define RF_CPU_AVX512BW 32
#define RF_CPU_AVX512DQ 64
#define RF_CPU_AVX512VL 128
#define RF_CPU_AVX512BF16 256
#define RF_CPU_SSE3 512
unsigned rf_cpu_features(void);
/* Index of the first element of x[0..<n] that is NaN or +-infinity, or n when all are finite.
   Blocks of 256 are screened with a branch-free (vectorised) test; only a block that holds a bad
   value is scanned element by element. */
size_t rf_first_nonfinite(const float *x, size_t n);
/* Copies up to `length` bytes from in_fd to out_fd at their file offsets, in the kernel
 * (copy_file_range(2) on Linux). Returns the bytes copied, 0 at the end of in_fd, or -1 with
 * errno set (ENOSYS where there is no such call: copy with read/write instead). */
long rf_copy_file_range(int in_fd, int out_fd, unsigned long length);

#endif
