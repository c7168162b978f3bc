/* rnnforge compiled kernels: the sequential loops of the fused recurrent engine.
 *
 * At small batch sizes a step of an RNN, GRU or LSTM is a matrix-vector product
 * and a few dozen elementwise operations; launched one torch op at a time the
 * per-op overhead is most of the step. These functions run a whole loop over
 * time in C instead: everything else (the GRU's input projection, the Jacobian
 * factors, the weight gradients) stays one large torch op in
 * rnnforge/engines/fused/ (lstm.py, gru.py, rnn.py), which own the buffers passed in.
 * The LSTM's loops take their weights packed in panels (rnn_body.h,
 * rf_lstm_forward): the forward forms the input projection step by step in
 * the same product as the recurrent one, and both loops run the cell's arithmetic
 * in the product's epilogue.
 *
 * The activations use a vectorizable expm1: Cody-Waite range reduction to
 * |r| <= ln2/2 and a Taylor polynomial (degree 7 in float, 13 in double; the
 * truncation error is below half an ulp); sigmoid and tanh are written with
 * expm1 so that they keep their relative accuracy near 0. NaN propagates. The LSTM
 * loop's float cell runs cheaper ones (lstm_tanh_f32, lstm_sigmoid_f32 below).
 */
#include <stdint.h>

#define LN2_HI 0.693145751953125
#define LN2_LO 1.42860682030941723212e-6
#define LOG2E 1.44269504088896340736

/* ---- float ---------------------------------------------------------------- */

/* exp(x) - 1, accurate near 0 (then it is the polynomial q itself) */
static inline float expm1_f32(float x0)
{
    const float x = x0 < -87.0f ? -87.0f : (x0 > 88.0f ? 88.0f : x0);
    const float k = (x * (float)LOG2E + 0x1.8p23f) - 0x1.8p23f;   /* round to nearest */
    const float r = (x - k * (float)LN2_HI) - k * (float)LN2_LO;
    /* q = exp(r) - 1 = r + r^2/2! + ... + r^7/7! */
    float q = 1.0f / 5040;
    q = q * r + 1.0f / 720; q = q * r + 1.0f / 120; q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6; q = q * r + 0.5f; q = q * r + 1.0f; q = q * r;
    const int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);   /* 2^k */
    const float em = k == 0.0f ? q : (1.0f + q) * scale - 1.0f;
    return x0 > 88.8f ? __builtin_inff() : em;                /* overflow, as expm1f */
}

/* 1 / (1 + e^-x) = 1 / (2 + expm1(-x)) */
static inline float sigmoid_f32(float x) { return 1.0f / (2.0f + expm1_f32(-x)); }

/* tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), with the sign of x */
static inline float tanh_f32(float x)
{
    const float ax = x < 0 ? -x : x;
    const float em = expm1_f32(-2.0f * ax);
    const float t = -em / (2.0f + em);
    return x < 0 ? -t : (x == x ? t : x);
}

static void vsigmoid_f32(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = sigmoid_f32(x[i]); }
static void vtanh_f32(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = tanh_f32(x[i]); }

/* ---- double --------------------------------------------------------------- */

static inline double expm1_f64(double x0)
{
    const double x = x0 < -708.0 ? -708.0 : (x0 > 709.0 ? 709.0 : x0);
    const double k = (x * LOG2E + 0x1.8p52) - 0x1.8p52;          /* round to nearest */
    const double r = (x - k * LN2_HI) - k * LN2_LO;
    /* q = exp(r) - 1 = r + r^2/2! + ... + r^13/13! */
    double q = 1.0 / 6227020800.0;
    q = q * r + 1.0 / 479001600.0; q = q * r + 1.0 / 39916800.0; q = q * r + 1.0 / 3628800.0;
    q = q * r + 1.0 / 362880.0; q = q * r + 1.0 / 40320.0; q = q * r + 1.0 / 5040.0;
    q = q * r + 1.0 / 720.0; q = q * r + 1.0 / 120.0; q = q * r + 1.0 / 24.0;
    q = q * r + 1.0 / 6.0; q = q * r + 0.5; q = q * r + 1.0; q = q * r;
    const int64_t bits = ((int64_t)k + 1023) << 52;
    double scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);   /* 2^k */
    const double em = k == 0.0 ? q : (1.0 + q) * scale - 1.0;
    return x0 > 709.79 ? __builtin_inf() : em;                 /* overflow, as expm1 */
}

static inline double sigmoid_f64(double x) { return 1.0 / (2.0 + expm1_f64(-x)); }

static inline double tanh_f64(double x)
{
    const double ax = x < 0 ? -x : x;
    const double em = expm1_f64(-2.0 * ax);
    const double t = -em / (2.0 + em);
    return x < 0 ? -t : (x == x ? t : x);
}

static inline double lstm_sigmoid_f64(double x) { return sigmoid_f64(x); }
static inline double lstm_tanh_f64(double x) { return tanh_f64(x); }

static void vsigmoid_f64(double *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = sigmoid_f64(x[i]); }
static void vtanh_f64(double *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = tanh_f64(x[i]); }

/* The LSTM cell's float activations (rnn_body.h, lstm_cell): a rational tanh, and the
 * sigmoid as 0.5 + 0.5 tanh(x / 2), within 3e-7 of the exact values (absolute; relative
 * near 0 for tanh), against the 4 ulps of the ones above but with about half their
 * instructions (one division, no exponent arithmetic): the five activations of a unit
 * take a sixth of the forward loop's time with the expm1 forms. The rational is Eigen's
 * (x P(x^2) / Q(x^2), degrees 13 and 6), accurate to 3e-8 up to |x| = 9 in exact arithmetic,
 * where tanh is 1 within 3e-8: the input is clamped there (NaN passes the clamp). */
static inline float lstm_tanh_f32(float x0)
{
    const float x = x0 < -9.0f ? -9.0f : (x0 > 9.0f ? 9.0f : x0);
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f; p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f; p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f; p = p * x2 + 4.89352455891786e-03f;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f; q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return x * p / q;
}
static inline float lstm_sigmoid_f32(float x) { return 0.5f + 0.5f * lstm_tanh_f32(0.5f * x); }

/* Elementwise entry points, for the tests of the activations themselves. */
void rf_sigmoid_f32(float *x, int64_t n) { vsigmoid_f32(x, n); }
void rf_tanh_f32(float *x, int64_t n) { vtanh_f32(x, n); }
void rf_sigmoid_f64(double *x, int64_t n) { vsigmoid_f64(x, n); }
void rf_lstm_tanh_f32(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = lstm_tanh_f32(x[i]); }
void rf_lstm_sigmoid_f32(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = lstm_sigmoid_f32(x[i]); }
void rf_tanh_f64(double *x, int64_t n) { vtanh_f64(x, n); }

/* ---- the loops, once per type ------------------------------------------------ */

/* Register blocking of the matrix products: 16 accumulator vectors where the CPU
 * has 32 vector registers (AVX-512), 8 where it has 16. */
#if defined(__AVX512F__)
#define VBYTES 64
#define NVEC 4
#else
#define VBYTES 32
#define NVEC 2
#endif
/* Batch rows per pass of the packed LSTM product: LSTM_MR x 4 accumulator vectors
 * plus the 4 weight vectors fit the register file (32 or 16 vectors; the row's
 * value is a broadcast operand of the multiply-add). Measured on an AMD EPYC
 * (Zen 5), float32, B=32: 4 rows 135-150 GFLOP/s, 5 rows 180, 6 rows 185, 7 rows 170. */
#ifndef LSTM_MR
#if defined(__AVX512F__)
#define LSTM_MR 6
#else
#define LSTM_MR 3
#endif
#endif

#define real float
#define SUF _f32
#include "rnn_body.h"
#undef real
#undef SUF

#define real double
#define SUF _f64
#include "rnn_body.h"
#undef real
#undef SUF
