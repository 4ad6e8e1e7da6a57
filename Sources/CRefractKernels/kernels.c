#include "refract_kernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define RF_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RF_MULTIVERSION
#endif

/* exp: n = round(x / ln2) by the 1.5*2^23 trick, Cody-Waite reduction, degree-6 polynomial. */
static inline float exp_inline(float x) {
    x = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
    const float magic = 12582912.0f;
    float shifted = x * 1.44269504f + magic;
    float n = shifted - magic;
    int32_t ni; uint32_t sb, mb; float m = magic;
    memcpy(&sb, &shifted, 4); memcpy(&mb, &m, 4);
    ni = (int32_t)(sb - mb);
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = (p * r * r + r) + 1.0f;
    uint32_t bits = (uint32_t)(ni + 127) << 23;
    float scale; memcpy(&scale, &bits, 4);
    return er * scale;
}

/* erf = 1 - erfc(|x|), erfc by the Chebyshev-fitted t*exp(-x^2 - 1.26551223 + t*Q(t)), t = 1/(1+|x|/2). */
static inline float erf_inline(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.5f * ax);
    float q = 0.17087277f;
    q = q * t - 0.82215223f;
    q = q * t + 1.48851587f;
    q = q * t - 1.13520398f;
    q = q * t + 0.27886807f;
    q = q * t - 0.18628806f;
    q = q * t + 0.09678418f;
    q = q * t + 0.37409196f;
    q = q * t + 1.00002368f;
    float erfc = t * exp_inline(-ax * ax - 1.26551223f + t * q);
    float v = 1.0f - erfc;
    return x < 0 ? -v : v;
}

float rf_exp(float x) { return exp_inline(x); }
float rf_erf(float x) { return erf_inline(x); }

RF_MULTIVERSION
void rf_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erf_inline(v * 0.70710678118654752f));
    }
}

RF_MULTIVERSION
void rf_quick_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + exp_inline(-1.702f * v));
    }
}

/* GELU with the tanh approximation (timm "gelu_tanh", TF MaxViT): 0.5·x·(1 + tanh(u)),
   u = sqrt(2/pi)·(x + 0.044715·x^3), computed as x·sigmoid(2u). */
RF_MULTIVERSION
void rf_gelu_tanh(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + exp_inline(-2.0f * u));
    }
}

/* SiLU x·sigmoid(x) and the logistic sigmoid. */
RF_MULTIVERSION
void rf_silu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + exp_inline(-v));
    }
}

RF_MULTIVERSION
void rf_sigmoid(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + exp_inline(-x[i]));
}

/* Reductions with 16 independent partial results so the compiler can vectorise them without
   -ffast-math (the summation order is fixed, so results are deterministic). */
#define RF_LANES 16

static inline float sum_lanes(const float *x, size_t n) {
    float acc[RF_LANES] = {0};
    size_t i = 0;
    for (; i + RF_LANES <= n; i += RF_LANES)
        for (int l = 0; l < RF_LANES; l++) acc[l] += x[i + l];
    float s = 0;
    for (; i < n; i++) s += x[i];
    for (int l = 0; l < RF_LANES; l++) s += acc[l];
    return s;
}

static inline float max_lanes(const float *x, size_t n) {
    float acc[RF_LANES];
    for (int l = 0; l < RF_LANES; l++) acc[l] = -INFINITY;
    size_t i = 0;
    for (; i + RF_LANES <= n; i += RF_LANES)
        for (int l = 0; l < RF_LANES; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
    float m = -INFINITY;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int l = 0; l < RF_LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

static inline float centred_sq_lanes(const float *x, size_t n, float mean) {
    float acc[RF_LANES] = {0};
    size_t i = 0;
    for (; i + RF_LANES <= n; i += RF_LANES)
        for (int l = 0; l < RF_LANES; l++) { float c = x[i + l] - mean; acc[l] += c * c; }
    float s = 0;
    for (; i < n; i++) { float c = x[i] - mean; s += c * c; }
    for (int l = 0; l < RF_LANES; l++) s += acc[l];
    return s;
}

RF_MULTIVERSION
void rf_softmax_rows(float *x, size_t rows, size_t cols, size_t ld, float scale, int causal, size_t row_offset) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * ld;
        size_t valid = cols;
        if (causal && r + row_offset + 1 < cols) valid = r + row_offset + 1;
        float m = max_lanes(row, valid);
        for (size_t j = 0; j < valid; j++) row[j] = exp_inline((row[j] - m) * scale);
        float inv = 1.0f / sum_lanes(row, valid);
        for (size_t j = 0; j < valid; j++) row[j] *= inv;
        for (size_t j = valid; j < cols; j++) row[j] = 0;
    }
}

RF_MULTIVERSION
void rf_layer_norm(const float *x, float *y, size_t rows, size_t d, const float *g, const float *b, float eps) {
    float inv_d = 1.0f / (float)d;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float mean = sum_lanes(xr, d) * inv_d;
        float inv = 1.0f / sqrtf(centred_sq_lanes(xr, d, mean) * inv_d + eps);
        for (size_t j = 0; j < d; j++) yr[j] = (xr[j] - mean) * inv * g[j] + b[j];
    }
}

/* CPU features for the BLAS kernel choice (RefractTensor/CPUFeatures.swift). */
unsigned rf_cpu_features(void) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    __builtin_cpu_init();
    unsigned f = 0;
    if (__builtin_cpu_supports("sse3")) f |= RF_CPU_SSE3;
    if (__builtin_cpu_supports("avx")) f |= RF_CPU_AVX;
    if (__builtin_cpu_supports("avx2")) f |= RF_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= RF_CPU_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= RF_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512cd")) f |= RF_CPU_AVX512CD;
    if (__builtin_cpu_supports("avx512bw")) f |= RF_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512dq")) f |= RF_CPU_AVX512DQ;
    if (__builtin_cpu_supports("avx512vl")) f |= RF_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512bf16")) f |= RF_CPU_AVX512BF16;
    return f;
#else
    return 0;
#endif
}
