/* rnnforge compiled kernels for inverse transform sampling (the notes' Ex2).
 *
 * Built on first use by rnnforge/_ckernels/__init__.py with the system C
 * compiler and loaded through ctypes; no Python or torch headers are needed.
 *
 * Uniforms: Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC'11), a counter
 * based generator: block b of a draw is the Philox function of the counter
 * (b, 0, 0, 0) under a 64-bit key taken from the caller's torch.Generator.
 * Each block gives two float64 uniforms with 53 random bits, so the stream
 * is the same whatever the number of threads.
 *
 * Inversion: the tables of rnnforge.sampling.inversion.NumericalInverse.
 *   - the cell table: G2 equal cells of [0, 1); on cell k, x = Q_k(t) with
 *     t = G2 u - k in [0, 1); a cell that holds an interval boundary has NaN
 *     coefficients and is evaluated by the interval path;
 *   - the interval path: guide table of G equal cells giving the interval
 *     directly (or where to start a short scan of the boundaries), then
 *     x = P_i(s), s = (u - U_i) / W_i, clamped to [a_i, b_i].
 */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#define PHILOX_M0 0xD2511F53ull
#define PHILOX_M1 0xCD9E8D57ull
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define LANES 32 /* Philox blocks per batch: 2 * LANES uniforms */

typedef struct {
    int64_t K;            /* number of intervals */
    int64_t G;            /* guide cells */
    int64_t ncoef;        /* polynomial order + 1 */
    const int64_t *guide; /* (G,) interval of each guide cell; -(f + 1) for a cell that
                           * holds a boundary, f = boundaries below its start */
    const double *bounds; /* (K - 1,) interior interval boundaries in u */
    const double *ustart; /* (K,) U_i */
    const double *invw;   /* (K,) 1 / W_i (0 for empty intervals) */
    const double *lo;     /* (K,) a_i */
    const double *hi;     /* (K,) b_i */
    const double *coef;   /* (K, ncoef) power form in s, constant term first */
    int64_t G2;           /* cells of the sampling table (0: none) */
    const double *cell;   /* (G2, ncoef) power form in t */
    const int64_t *cell_first; /* (G2,) number of boundaries below each cell's start */
    double support_lo;    /* ppf(0) */
    double support_hi;    /* ppf(1) */
} rf_pinv_table;

/* ---- Philox4x32-10 ------------------------------------------------------ */

void rf_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Uniforms 2*first .. 2*first + 2*LANES - 1 of the stream of `key`, in [0, 1).
 * Written lane by lane so that the compiler vectorizes the rounds. */
static void philox_uniforms(uint64_t first, uint64_t key, double *u)
{
    /* One lane per block, the ten rounds unrolled inside: the compiler then
     * vectorizes across lanes. 32-bit words live in 64-bit variables so that
     * the products are plain 64-bit multiplies (it does not vectorize a
     * widening 32 x 32 -> 64 multiply here). */
    const double scale = 1.0 / 9007199254740992.0; /* 2^-53 */
    const uint64_t key0 = key & 0xFFFFFFFFu, key1 = key >> 32;
    for (int l = 0; l < LANES; l++) {
        uint64_t b = first + (uint64_t)l;
        uint64_t c0 = b & 0xFFFFFFFFu, c1 = b >> 32, c2 = 0, c3 = 0;
        uint64_t k0 = key0, k1 = key1;
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = PHILOX_M0 * c0, p1 = PHILOX_M1 * c2;
            c0 = (p1 >> 32) ^ c1 ^ k0;
            c1 = p1 & 0xFFFFFFFFu;
            c2 = (p0 >> 32) ^ c3 ^ k1;
            c3 = p0 & 0xFFFFFFFFu;
            k0 = (k0 + PHILOX_W0) & 0xFFFFFFFFu;
            k1 = (k1 + PHILOX_W1) & 0xFFFFFFFFu;
        }
        u[2 * l] = (double)(((c0 << 32) | c1) >> 11) * scale;
        u[2 * l + 1] = (double)(((c2 << 32) | c3) >> 11) * scale;
    }
}

/* ---- inversion ----------------------------------------------------------- */

static inline double horner(const double *c, int64_t nc, double s)
{
    double x = c[nc - 1];
    for (int64_t j = nc - 2; j >= 0; j--) x = x * s + c[j];
    return x;
}

/* P_i(s) clamped to [a_i, b_i], for the interval i found by scanning up from i
 * (a lower bound: the number of boundaries below some point <= u) to the number
 * of boundaries < u, as torch.searchsorted (side left) would give it. */
static inline double interval_from(const rf_pinv_table *T, double u, int64_t i)
{
    while (i < T->K - 1 && T->bounds[i] < u) i++;
    double s = (u - T->ustart[i]) * T->invw[i];
    double x = horner(T->coef + i * T->ncoef, T->ncoef, s);
    if (x < T->lo[i]) x = T->lo[i];
    if (x > T->hi[i]) x = T->hi[i];
    return x;
}

/* Interval path for 0 <= u <= 1 (the caller handles the ends of ppf): the guide
 * cell gives the interval, or -(f + 1) when a boundary lies inside the cell,
 * f being the number of boundaries below the cell's start. */
static inline double interval_eval(const rf_pinv_table *T, double u)
{
    int64_t cell = (int64_t)(u * (double)T->G);
    if (cell > T->G - 1) cell = T->G - 1;
    const int64_t i = T->guide[cell];
    return interval_from(T, u, i < 0 ? -i - 1 : i);
}

/* x[j] = ppf(u[j]) for m <= 2 * LANES uniforms in [0, 1) through the cell
 * table. Horner runs lane-inner (one coefficient for every lane, then the
 * next), which the compiler vectorizes with gathers for any order; the few
 * lanes that fell in a boundary cell (NaN) are redone by the interval path. */
static void cells_eval(const rf_pinv_table *T, const double *restrict u, double *restrict x, int m)
{
    int64_t row[2 * LANES];
    double t[2 * LANES];
    const int64_t nc = T->ncoef;
    const double *restrict C = T->cell;
    const double G2 = (double)T->G2; /* exact: G2 is a power of two */
    for (int j = 0; j < m; j++) {
        double v = u[j] * G2;
        int64_t k = (int64_t)v;
        t[j] = v - (double)k;
        row[j] = k * nc;
    }
    for (int j = 0; j < m; j++) x[j] = C[row[j] + nc - 1];
    for (int64_t d = nc - 2; d >= 0; d--)
        for (int j = 0; j < m; j++) x[j] = x[j] * t[j] + C[row[j] + d];
    for (int j = 0; j < m; j++)
        if (x[j] != x[j]) x[j] = interval_from(T, u[j], T->cell_first[(int64_t)(u[j] * G2)]);
}

/* ---- threads --------------------------------------------------------------- */

typedef struct {
    const rf_pinv_table *T;
    const double *u;   /* ppf input, or NULL for sampling */
    uint64_t key;
    int64_t begin, end; /* elements (sampling: multiples of 2 * LANES) */
    double *out;
} job;

/* Draws (J->T set) or the bare uniforms (J->T NULL) of the stream of J->key. */
static void *sample_job(void *arg)
{
    const job *J = (const job *)arg;
    double u[2 * LANES];
    for (int64_t base = J->begin; base < J->end; base += 2 * LANES) {
        philox_uniforms((uint64_t)base / 2, J->key, u);
        int64_t m = J->end - base < 2 * LANES ? J->end - base : 2 * LANES;
        if (J->T)
            cells_eval(J->T, u, J->out + base, (int)m);
        else
            for (int64_t j = 0; j < m; j++) J->out[base + j] = u[j];
    }
    return 0;
}

static void *ppf_job(void *arg)
{
    const job *J = (const job *)arg;
    const rf_pinv_table *T = J->T;
    for (int64_t i = J->begin; i < J->end; i++) {
        double u = J->u[i];
        J->out[i] = u <= 0.0 ? T->support_lo : u >= 1.0 ? T->support_hi : interval_eval(T, u);
    }
    return 0;
}

#define MAX_THREADS 64

/* Ask for transparent huge pages on a large output that has not been touched
 * yet (as numpy does for its large arrays): its first touch then costs one
 * fault per 2 MiB instead of one per 4 KiB, a third of the time of a 1e7 draw.
 * Only a hint: ignored where unsupported. */
static void hugepage_hint(void *p, int64_t bytes)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)1 << 21;
    if (bytes < (int64_t)(4 * huge)) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t b = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (b > a) madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}

/* Split [0, n) into `threads` ranges whose starts are multiples of `align`
 * and run `fn` on each; returns 0, or -1 when a thread could not start (the
 * work is then finished on the calling thread, so the result is complete). */
static int run(void *(*fn)(void *), job proto, int64_t n, int threads, int64_t align)
{
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS];
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int64_t per = (n + threads - 1) / threads;
    per = (per + align - 1) / align * align;
    int rc = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = proto;
        jobs[t].begin = (int64_t)t * per < n ? (int64_t)t * per : n;
        jobs[t].end = jobs[t].begin + per < n ? jobs[t].begin + per : n;
        started[t] = 0;
    }
    for (int t = 1; t < threads; t++) {
        if (jobs[t].begin >= jobs[t].end) continue;
        if (pthread_create(&tid[t], 0, fn, &jobs[t]) == 0) started[t] = 1;
        else rc = -1;
    }
    fn(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], 0);
        else if (jobs[t].begin < jobs[t].end) fn(&jobs[t]);
    }
    return rc;
}

/* n draws of the table's distribution into out. */
int rf_pinv_sample(const rf_pinv_table *T, uint64_t key, int64_t n, double *out, int threads)
{
    job proto = {T, 0, key, 0, 0, out};
    hugepage_hint(out, n * (int64_t)sizeof(double));
    return run(sample_job, proto, n, threads, 2 * LANES);
}

/* ppf of n probabilities in [0, 1] (checked by the caller). */
int rf_pinv_ppf(const rf_pinv_table *T, const double *u, int64_t n, double *out, int threads)
{
    job proto = {T, u, 0, 0, 0, out};
    hugepage_hint(out, n * (int64_t)sizeof(double));
    return run(ppf_job, proto, n, threads, 1);
}

/* The first n uniforms of the stream of `key` (what rf_pinv_sample inverts). */
int rf_philox_uniform(uint64_t key, int64_t n, double *out, int threads)
{
    job proto = {0, 0, key, 0, 0, out};
    hugepage_hint(out, n * (int64_t)sizeof(double));
    return run(sample_job, proto, n, threads, 2 * LANES);
}
