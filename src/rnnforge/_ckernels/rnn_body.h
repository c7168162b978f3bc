/* The sequential loops of the fused engine for one floating type.
 *
 * Included twice by rnn.c, with `real` = float (SUF = _f32) and double
 * (SUF = _f64). Every buffer is the fused engine's own, contiguous and
 * time-major; see rnnforge/engines/fused/ (lstm.py, gru.py, rnn.py) for what each holds. `bs`
 * gives the live rows of each step (sorted batch, longest first) or is NULL
 * when every sequence has all T steps. Each call runs the rows [r0, r1) of
 * the batch: the rows of a recurrence never meet, so the caller can run
 * disjoint row ranges on several threads at once.
 *
 * The recurrent products sweep the rows of the weight matrix (contiguous,
 * vectorized) with the outputs held in registers, four batch rows at a time,
 * so each weight is loaded once per four rows and there is no call overhead.
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

/* y (n) += x (m) W, W (m, n) row-major. Blocks of VB outputs stay in registers
 * while the m rows stream past (one pass over W, no stores inside the k loop). */
#define VB (512 / (int)sizeof(real)) /* 128 floats or 64 doubles: eight 512-bit registers */
static inline void FN(vecmat_acc)(real *restrict y, const real *restrict x, const real *restrict W,
                                  int64_t m, int64_t n)
{
    int64_t j0 = 0;
    for (; j0 + VB <= n; j0 += VB) {
        real acc[VB];
        for (int j = 0; j < VB; j++) acc[j] = y[j0 + j];
        for (int64_t k = 0; k < m; k++) {
            const real xk = x[k];
            const real *restrict w = W + k * n + j0;
            for (int j = 0; j < VB; j++) acc[j] += xk * w[j];
        }
        for (int j = 0; j < VB; j++) y[j0 + j] = acc[j];
    }
    if (j0 < n) {
        for (int64_t k = 0; k < m; k++) {
            const real xk = x[k];
            const real *restrict w = W + k * n;
            for (int64_t j = j0; j < n; j++) y[j] += xk * w[j];
        }
    }
}
#undef VB

/* Y[r] (n) += X[r] (m) W for rows r < nb (row strides ldy, ldx). Four rows at
 * a time share each load of W: their accumulators (4 rows x NVEC vectors) are
 * explicit vector variables, so they stay in registers; the column block of W
 * (m x JB) is the outer loop, so it stays in cache while every group of rows
 * passes over it. Rows left over (nb % 4) and columns left over (n % JB) take
 * the plain paths. */
typedef real FN(vec) __attribute__((vector_size(VBYTES), aligned(sizeof(real))));
#define VL (VBYTES / (int)sizeof(real))
#define JB (NVEC * VL)
#define KB (32768 / (JB * (int)sizeof(real))) /* rows of W per block: 32 KiB of it, in L1 */
static inline void FN(matacc)(real *restrict Y, int64_t ldy, const real *restrict X, int64_t ldx,
                              const real *restrict W, int64_t nb, int64_t m, int64_t n)
{
    typedef FN(vec) vec;
    const int64_t nb4 = nb / 4 * 4;
    int64_t j0 = 0;
    for (; j0 + JB <= n; j0 += JB)
    for (int64_t k0 = 0; k0 < m; k0 += KB) {     /* a KB x JB block of W stays in L1 */
        const int64_t k1 = k0 + KB < m ? k0 + KB : m;
        for (int64_t r = 0; r < nb4; r += 4) {
            real *y[4];
            const real *x[4];
            for (int q = 0; q < 4; q++) { y[q] = Y + (r + q) * ldy + j0; x[q] = X + (r + q) * ldx; }
            vec acc[4][NVEC];
            for (int q = 0; q < 4; q++)
                for (int v = 0; v < NVEC; v++) acc[q][v] = *(const vec *)(y[q] + v * VL);
            for (int64_t k = k0; k < k1; k++) {
                const real *w = W + k * n + j0;
                vec wv[NVEC];
                for (int v = 0; v < NVEC; v++) wv[v] = *(const vec *)(w + v * VL);
                for (int q = 0; q < 4; q++) {
                    const real xq = x[q][k];
                    for (int v = 0; v < NVEC; v++) acc[q][v] += xq * wv[v];
                }
            }
            for (int q = 0; q < 4; q++)
                for (int v = 0; v < NVEC; v++) *(vec *)(y[q] + v * VL) = acc[q][v];
        }
    }
    for (int64_t r = 0; r < nb4; r++) {          /* columns left over (n % JB) */
        real *yr = Y + r * ldy;
        const real *xr = X + r * ldx;
        for (int64_t k = 0; k < m; k++) {
            const real xk = xr[k];
            const real *restrict w = W + k * n;
            for (int64_t j = j0; j < n; j++) yr[j] += xk * w[j];
        }
    }
    for (int64_t r = nb4; r < nb; r++) FN(vecmat_acc)(Y + r * ldy, X + r * ldx, W, m, n);
}
#undef KB
#undef JB
#undef VL

/* End of the rows [r0, r1) that are live at step t (bs: live rows per step, or NULL). */
static inline int64_t FN(live)(const int64_t *bs, int64_t t, int64_t B, int64_t r1)
{
    const int64_t b_t = bs ? bs[t] : B;
    return b_t < r1 ? b_t : r1;
}

/* r1 < 0 asks a function to run all the rows [0, B) itself, in blocks of four
 * rows (ROWS_IN_BLOCKS: of `rows`) handed out to -r1 OpenMP threads as they come free (the process's OpenMP
 * runtime: torch's own, whose workers are already up and spinning after its last
 * parallel op, so they take the blocks at once rather than compete for the cores). */
#ifndef ROWS_IN_PARALLEL
#define ROWS_IN_PARALLEL(self_call) ROWS_IN_BLOCKS(self_call, 4)
#define ROWS_IN_BLOCKS(self_call, rows)                                               \
    if (r1 < 0) {                                                                     \
        int64_t next_ = 0;                                                            \
        const int nth_ = (int)-r1;                                                    \
        const int64_t step_ = (rows);                                                 \
        _Pragma("omp parallel num_threads(nth_)")                                     \
        {                                                                             \
            int64_t c;                                                                \
            while ((c = __atomic_fetch_add(&next_, step_, __ATOMIC_RELAXED)) < B) {   \
                const int64_t e = c + step_ < B ? c + step_ : B;                      \
                self_call;                                                            \
            }                                                                         \
        }                                                                             \
        return;                                                                       \
    }
#endif
/* The packed LSTM loops read all the weights once per step and block of rows: blocks of
 * a thread's share of the rows (a multiple of 4) rather than 4, so each pass of the
 * weights serves more rows. */
#ifndef LSTM_ROWS_PER_BLOCK
#define LSTM_ROWS_PER_BLOCK(B, nth) (((B) + 4 * (nth) - 1) / (4 * (nth)) * 4)
#endif

/* dst (cols x rows, row stride ldd) = src (rows x cols, row stride lds) transposed, in
 * 16 x 16 tiles (each tile's source and destination rows stay in L1). For the operand
 * of the weight gradients' product (fused/steps.py): torch's strided copy of the same
 * transpose runs at a fraction of the memory's speed. */
void FN(rf_transpose)(int64_t rows, int64_t cols, const real *src, int64_t lds, real *dst, int64_t ldd)
{
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int64_t r1 = r0 + 16 < rows ? r0 + 16 : rows;
        for (int64_t c0 = 0; c0 < cols; c0 += 16) {
            const int64_t c1 = c0 + 16 < cols ? c0 + 16 : cols;
            for (int64_t c = c0; c < c1; c++)
                for (int64_t r = r0; r < r1; r++) dst[c * ldd + r] = src[r * lds + c];
        }
    }
}

/* ---- LSTM ---------------------------------------------------------------- */

/* The LSTM forward as one product per step with the cell fused into its epilogue.
 *
 * A step's pre-activations are [x_t, h_{t-1}] (I + H) times the stacked weights
 * [W_ih; W_hh]^T plus the bias: one product over K = I + H, so no projection
 * buffer is written and read back. The weights come packed by the caller
 * (fused/lstm.py, once per call or once while the weights stand) in panels of PVL
 * units: panel j holds, for each k < K, the i, f, C~, o weights of units
 * [j PVL, (j + 1) PVL) side by side (4 PVL contiguous values; units past H are
 * zero), so a panel's rows are read in order, and a block of PKB of them (128 KiB:
 * all of K up to 512 + 512 in float) stays in L2 while every group of LSTM_MR
 * batch rows streams it, each group summing its whole block in registers. (Blocks
 * of 32 KiB kept in L1 ran 2-5% slower on an AMD EPYC, Zen 5: each block costs
 * every group a store and reload of its accumulators, and a 32 KiB block and the
 * rows' 16 KiB share a 48 KiB L1.) The four gates of a unit then meet in
 * one row group's accumulators, and the cell arithmetic runs on them as soon
 * as the last block is summed: pre-activations never reach memory.
 *
 * x (T, B, I); wp (ceil(H / PVL), K, 4 PVL); bp (ceil(H / PVL), 4 PVL), the
 * bias packed alike; h0, c0 (B, H). Out: C, out (T, B, H); and, where not NULL
 * (a backward will run), gates (T, B, 4H): the activations i, f, C~, o, and
 * tC (T, B, H): tanh(C). */
#define PVL (VBYTES / (int)sizeof(real))
#define PW (4 * PVL)
#ifndef LSTM_KB_BYTES
#define LSTM_KB_BYTES 131072
#endif
#define PKB (LSTM_KB_BYTES / (PW * (int)sizeof(real)))

/* The units of a panel, for the packing in fused/lstm.py. */
int64_t FN(rf_lstm_panel)(void) { return PVL; }

/* wp (ceil(H / PVL), I + Hk, PW) from w_ih (4H, I) and w_hh (4H, Hk) (Hk = H, or 0 and
 * w_hh unused): the forward's panels, zero past H. A panel's PW source rows are read
 * 16 columns at a time, so the 16 panel rows being written stay in L1 (a blocked
 * transpose; torch's strided copy of the same permutation is several times slower). */
void FN(rf_lstm_pack)(int64_t H, int64_t I, int64_t Hk, const real *w_ih, const real *w_hh, real *wp)
{
    const int64_t K = I + Hk, NP = (H + PVL - 1) / PVL;
    for (int64_t j = 0; j < NP; j++) {
        real *panel = wp + j * K * PW;
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
            const int64_t k1 = k0 + 16 < K ? k0 + 16 : K;
            for (int64_t g = 0; g < 4; g++)
                for (int64_t u = 0; u < PVL; u++) {
                    real *d = panel + g * PVL + u;
                    if (j * PVL + u >= H) {
                        for (int64_t k = k0; k < k1; k++) d[k * PW] = 0;
                        continue;
                    }
                    const int64_t row = g * H + j * PVL + u;
                    for (int64_t k = k0; k < k1; k++)
                        d[k * PW] = k < I ? w_ih[row * I + k] : w_hh[row * Hk + k - I];
                }
        }
    }
}

/* acc (nr rows x PW) += src rows (k in [0, nk)) x panel (nk x PW); init: start from
 * the packed bias (or zero where it is NULL) instead of acc. nr is a constant
 * after inlining, so the nr x 4 accumulators live in registers. */
static inline __attribute__((always_inline)) void FN(ptile)(const int nr, real *restrict acc, int init,
        const real *restrict bias, const real *const *src, const real *restrict panel, int64_t nk,
        const real *const *src2, int64_t nk2)
{
    typedef FN(vec) vec;
    vec a[LSTM_MR][4];
    for (int q = 0; q < nr; q++)
        for (int v = 0; v < 4; v++)
            a[q][v] = !init ? *(const vec *)(acc + q * PW + v * PVL)
                    : bias ? *(const vec *)(bias + v * PVL) : (vec){0};
    for (int64_t k = 0; k < nk; k++) {
        vec w[4];
        for (int v = 0; v < 4; v++) w[v] = *(const vec *)(panel + k * PW + v * PVL);
        for (int q = 0; q < nr; q++) {
            const real s = src[q][k];
            for (int v = 0; v < 4; v++) a[q][v] += s * w[v];
        }
    }
    panel += nk * PW;
    for (int64_t k = 0; k < nk2; k++) {         /* the second source's rows, if any */
        vec w[4];
        for (int v = 0; v < 4; v++) w[v] = *(const vec *)(panel + k * PW + v * PVL);
        for (int q = 0; q < nr; q++) {
            const real s = src2[q][k];
            for (int v = 0; v < 4; v++) a[q][v] += s * w[v];
        }
    }
    for (int q = 0; q < nr; q++)
        for (int v = 0; v < 4; v++) *(vec *)(acc + q * PW + v * PVL) = a[q][v];
}

/* The cell on one row's PW pre-activations (i, f, C~, o of nu units). */
static inline void FN(lstm_cell)(int64_t nu, int64_t H, const real *restrict pre, const real *restrict cp,
                                 real *restrict c, real *restrict h, real *restrict g, real *restrict tc)
{
    if (g) {
        for (int64_t u = 0; u < nu; u++) {
            const real i = FN(lstm_sigmoid)(pre[u]), f = FN(lstm_sigmoid)(pre[PVL + u]);
            const real n = FN(lstm_tanh)(pre[2 * PVL + u]), o = FN(lstm_sigmoid)(pre[3 * PVL + u]);
            const real cc = f * cp[u] + i * n, th = FN(lstm_tanh)(cc);
            c[u] = cc; h[u] = o * th; tc[u] = th;
            g[u] = i; g[H + u] = f; g[2 * H + u] = n; g[3 * H + u] = o;
        }
    } else {
        for (int64_t u = 0; u < nu; u++) {
            const real i = FN(lstm_sigmoid)(pre[u]), f = FN(lstm_sigmoid)(pre[PVL + u]);
            const real n = FN(lstm_tanh)(pre[2 * PVL + u]), o = FN(lstm_sigmoid)(pre[3 * PVL + u]);
            const real cc = f * cp[u] + i * n;
            c[u] = cc; h[u] = o * FN(lstm_tanh)(cc);
        }
    }
}

/* Rows of group g when n rows are split into ceil(n / LSTM_MR) groups of nearly equal
 * size (32 rows: 6, 6, 5, 5, 5, 5 rather than five of 6 and a slow one of 2). */
static inline int FN(group)(int64_t n, int64_t g)
{
    const int64_t ng = (n + LSTM_MR - 1) / LSTM_MR;
    return (int)(n / ng + (g < n % ng));
}

#define PTILE_CASE(n) case n: FN(ptile)(n, acc, init, bias, src, panel, nk, 0, 0); break;
static void FN(ptile_any)(int nr, real *acc, int init, const real *bias, const real *const *src,
                          const real *panel, int64_t nk)
{
    switch (nr) {
    PTILE_CASE(1)
#if LSTM_MR >= 2
    PTILE_CASE(2)
#endif
#if LSTM_MR >= 3
    PTILE_CASE(3)
#endif
#if LSTM_MR >= 4
    PTILE_CASE(4)
#endif
#if LSTM_MR >= 5
    PTILE_CASE(5)
#endif
#if LSTM_MR >= 6
    PTILE_CASE(6)
#endif
#if LSTM_MR >= 7
    PTILE_CASE(7)
#endif
#if LSTM_MR >= 8
    PTILE_CASE(8)
#endif
    default: break;
    }
}
#undef PTILE_CASE

/* ptile_any over two sources in one pass: k in [0, nk) from src, then [nk, nk + nk2) from
 * src2 (x_t, then h_{t-1}), the accumulators kept in registers between them. For 3 or more
 * rows (2-3% faster at B = 8..32 than a pass per source); with 1 or 2 rows, whose short
 * chains of multiply-adds bound the time, the single-source passes ran 30% faster. */
#define PTILE2_CASE(n) case n: FN(ptile)(n, acc, init, bias, src, panel, nk, src2, nk2); break;
static void FN(ptile2_any)(int nr, real *acc, int init, const real *bias, const real *const *src,
                           const real *panel, int64_t nk, const real *const *src2, int64_t nk2)
{
    switch (nr) {
#if LSTM_MR >= 3
    PTILE2_CASE(3)
#endif
#if LSTM_MR >= 4
    PTILE2_CASE(4)
#endif
#if LSTM_MR >= 5
    PTILE2_CASE(5)
#endif
#if LSTM_MR >= 6
    PTILE2_CASE(6)
#endif
#if LSTM_MR >= 7
    PTILE2_CASE(7)
#endif
#if LSTM_MR >= 8
    PTILE2_CASE(8)
#endif
    default: break;
    }
}
#undef PTILE2_CASE

void FN(rf_lstm_forward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                                int64_t I, const real *x, const real *wp, const real *bp,
                                const real *h0, const real *c0, real *gates, real *C, real *tC, real *out)
{
    ROWS_IN_BLOCKS(FN(rf_lstm_forward)(T, B, H, bs, c, e, I, x, wp, bp, h0, c0, gates, C, tC, out),
                   LSTM_ROWS_PER_BLOCK(B, nth_));
    const int64_t K = I + H, NP = (H + PVL - 1) / PVL;
    real acc[(r1 > r0 ? r1 - r0 : 1) * PW] __attribute__((aligned(64)));
    for (int64_t t = 0; t < T; t++) {
        const int64_t e = FN(live)(bs, t, B, r1);
        if (e <= r0) continue;
        const real *hprev = t ? out + (t - 1) * B * H : h0;
        const real *cprev = t ? C + (t - 1) * B * H : c0;
        for (int64_t j = 0; j < NP; j++) {
            const real *panel = wp + j * K * PW;
            for (int64_t k0 = 0; k0 < K; k0 += PKB) {
                const int64_t k1 = k0 + PKB < K ? k0 + PKB : K;
                for (int64_t r = r0, g = 0; r < e; r += FN(group)(e - r0, g++)) {
                    const int nr = FN(group)(e - r0, g);
                    /* the block [k0, k1) may straddle x_t and h_{t-1}: at most two pieces */
                    if (nr >= 3 && k0 < I && k1 > I) {
                        const real *src[LSTM_MR], *src2[LSTM_MR];
                        for (int q = 0; q < nr; q++) {
                            src[q] = x + ((t * B + r + q) * I + k0);
                            src2[q] = hprev + (r + q) * H;
                        }
                        FN(ptile2_any)(nr, acc + (r - r0) * PW, k0 == 0, bp ? bp + j * PW : 0, src,
                                       panel + k0 * PW, I - k0, src2, k1 - I);
                        continue;
                    }
                    for (int64_t ks = k0; ks < k1;) {
                        const int from_x = ks < I;
                        const int64_t ke = from_x && k1 > I ? I : k1;
                        const real *src[LSTM_MR];
                        for (int q = 0; q < nr; q++)
                            src[q] = from_x ? x + ((t * B + r + q) * I + ks) : hprev + ((r + q) * H + ks - I);
                        FN(ptile_any)(nr, acc + (r - r0) * PW, ks == 0, bp ? bp + j * PW : 0, src,
                                      panel + ks * PW, ke - ks);
                        ks = ke;
                    }
                }
            }
            const int64_t u0 = j * PVL, nu = H - u0 < PVL ? H - u0 : PVL;
            for (int64_t b = r0; b < e; b++) {
                const int64_t o = (t * B + b) * H + u0;
                FN(lstm_cell)(nu, H, acc + (b - r0) * PW, cprev + b * H + u0, C + o, out + o,
                              gates ? gates + (t * B + b) * 4 * H + u0 : 0, tC ? tC + o : 0);
            }
        }
    }
}
/* The LSTM backward loop with the recurrent product packed like the forward's and the
 * step's gradient arithmetic in its epilogue.
 *
 * dh_{t-1} = dH_{t-1} + dG_t W_hh is formed PW units at a time (wb: W_hh's columns in
 * panels of PW, (ceil(H / PW), 4H, PW), zero past H); as soon as a block of units
 * of dh_{t-1} is summed, the gradients of step t-1's pre-activations and dC_{t-2}
 * follow for those units (they read only the same units of the activations, C and
 * dC), so dh never reaches memory. Rows live at t-1 but not at t take dH_{t-1}
 * alone. gates (T, B, 4H): the activations i, f, C~, o; C, tC (T, B, H): memory and
 * tanh(memory); c0 (B, H); dH (T, B, H): the gradient reaching each output from above
 * (only read). dc (B, H): in, dC_n; out, dC_0. dG (T, B, 4H): out, the gradients of the
 * pre-activations (the caller forms dh0 = dG_0 W_hh). */
static inline void FN(lstm_cell_bwd)(int64_t nu, int64_t H, const real *restrict dh, const real *restrict a,
                                     const real *restrict cp, const real *restrict tc,
                                     real *restrict d, real *restrict g)
{
    for (int64_t k = 0; k < nu; k++) {
        const real i = a[k], f = a[H + k], n = a[2 * H + k], o = a[3 * H + k], th = tc[k];
        const real dck = d[k] + dh[k] * (o - o * th * th);
        g[k] = dck * (n * (i - i * i));
        g[H + k] = dck * ((f - f * f) * cp[k]);
        g[2 * H + k] = dck * (i - i * n * n);
        g[3 * H + k] = dh[k] * (th * (o - o * o));
        d[k] = dck * f;
    }
}

void FN(rf_lstm_backward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                                 const real *wb, const real *gates, const real *C, const real *tC,
                                 const real *c0, const real *dH, real *dc, real *dG)
{
    ROWS_IN_BLOCKS(FN(rf_lstm_backward)(T, B, H, bs, c, e, wb, gates, C, tC, c0, dH, dc, dG),
                   LSTM_ROWS_PER_BLOCK(B, nth_));
    const int64_t G = 4 * H, NP = (H + PW - 1) / PW;
    real acc[(r1 > r0 ? r1 - r0 : 1) * PW] __attribute__((aligned(64)));
#define LSTM_BWD_ROW(s, b, u0, nu, dh)                                                              \
    FN(lstm_cell_bwd)(nu, H, dh, gates + ((s) * B + (b)) * G + (u0),                                 \
                      ((s) ? C + ((s) - 1) * B * H : c0) + (b) * H + (u0), tC + ((s) * B + (b)) * H + (u0), \
                      dc + (b) * H + (u0), dG + ((s) * B + (b)) * G + (u0))
    {
        const int64_t e = FN(live)(bs, T - 1, B, r1);
        for (int64_t b = r0; b < e; b++) LSTM_BWD_ROW(T - 1, b, 0, H, dH + ((T - 1) * B + b) * H);
    }
    for (int64_t t = T - 1; t >= 1; t--) {
        const int64_t e = FN(live)(bs, t, B, r1), ep = FN(live)(bs, t - 1, B, r1);
        if (ep <= r0) continue;
        for (int64_t j = 0; j < NP; j++) {
            const int64_t u0 = j * PW, nu = H - u0 < PW ? H - u0 : PW;
            const real *panel = wb + j * G * PW;
            for (int64_t b = r0; b < ep; b++) {
                const real *src = dH + ((t - 1) * B + b) * H + u0;
                real *a = acc + (b - r0) * PW;
                for (int64_t u = 0; u < nu; u++) a[u] = src[u];
                for (int64_t u = nu; u < PW; u++) a[u] = 0;
            }
            for (int64_t k0 = 0; k0 < G; k0 += PKB) {
                const int64_t k1 = k0 + PKB < G ? k0 + PKB : G;
                for (int64_t r = r0, g = 0; r < e; r += FN(group)(e - r0, g++)) {
                    const int nr = FN(group)(e - r0, g);
                    const real *src[LSTM_MR];
                    for (int q = 0; q < nr; q++) src[q] = dG + (t * B + r + q) * G + k0;
                    FN(ptile_any)(nr, acc + (r - r0) * PW, 0, 0, src, panel + k0 * PW, k1 - k0);
                }
            }
            for (int64_t b = r0; b < ep; b++) LSTM_BWD_ROW(t - 1, b, u0, nu, acc + (b - r0) * PW);
        }
    }
#undef LSTM_BWD_ROW
}

#undef PKB
#undef PW
#undef PVL

/* ---- GRU ------------------------------------------------------------------ */

/* gates (T, B, 3H): in, the input projections; out, the activations r, s, z~.
 * hg (T, B, 3H): out, gamma z_prev per gate (+ b_gamma on the candidate).
 * out (T, B, H). wt (H, 3H) = W_hh^T; b_hh (H) or NULL. */
void FN(rf_gru_forward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                        const real *h0, const real *wt, const real *b_hh,
                        real *gates, real *hg, real *out)
{
    ROWS_IN_PARALLEL(FN(rf_gru_forward)(T, B, H, bs, c, e, h0, wt, b_hh, gates, hg, out));
    const int64_t G = 3 * H;
    for (int64_t t = 0; t < T; t++) {
        const int64_t e = FN(live)(bs, t, B, r1);
        if (e <= r0) continue;
        const real *hprev = t ? out + (t - 1) * B * H : h0;
        for (int64_t j = r0 * G; j < e * G; j++) hg[t * B * G + j] = 0;
        FN(matacc)(hg + (t * B + r0) * G, G, hprev + r0 * H, H, wt, e - r0, H, G);
        for (int64_t b = r0; b < e; b++) {
            const real *hp = hprev + b * H;
            real *g = gates + (t * B + b) * G, *q = hg + (t * B + b) * G, *h = out + (t * B + b) * H;
            if (b_hh)
                for (int64_t k = 0; k < H; k++) q[2 * H + k] += b_hh[k];
            for (int64_t j = 0; j < 2 * H; j++) g[j] += q[j];
            FN(vsigmoid)(g, 2 * H);                                   /* r, s */
            for (int64_t k = 0; k < H; k++) g[2 * H + k] += g[k] * q[2 * H + k];
            FN(vtanh)(g + 2 * H, H);                                  /* z~ */
            for (int64_t k = 0; k < H; k++) {
                const real n = g[2 * H + k];
                h[k] = n + g[H + k] * (hp[k] - n);                   /* s z_prev + (1 - s) z~ */
            }
        }
    }
}

/* The GRU backward loop for t = T-1 .. 1 (the caller does t = 0).
 * Kx (T, B, 3, H): the input-side factors; gates (T, B, 3H): r, s, z~;
 * dH (T, B, H) completed in place; dHG (T, B, 3, H): out, the recurrent-side
 * gradients of the pre-activations. w_hh (3H, H). */
void FN(rf_gru_backward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                         const real *w_hh, const real *Kx, const real *gates,
                         real *dH, real *dHG)
{
    ROWS_IN_PARALLEL(FN(rf_gru_backward)(T, B, H, bs, c, e, w_hh, Kx, gates, dH, dHG));
    const int64_t G = 3 * H;
    for (int64_t t = T - 1; t >= 1; t--) {
        const int64_t e = FN(live)(bs, t, B, r1);
        if (e <= r0) continue;
        for (int64_t b = r0; b < e; b++) {
            const real *kx = Kx + (t * B + b) * G, *g = gates + (t * B + b) * G;
            const real *dh = dH + (t * B + b) * H;
            real *q = dHG + (t * B + b) * G, *dp = dH + ((t - 1) * B + b) * H;
            for (int64_t k = 0; k < H; k++) {
                q[k] = dh[k] * kx[k];
                q[H + k] = dh[k] * kx[H + k];
                q[2 * H + k] = dh[k] * kx[2 * H + k] * g[k];        /* inside r (.) */
                dp[k] += dh[k] * g[H + k];                            /* through s z_prev */
            }
        }
        FN(matacc)(dH + ((t - 1) * B + r0) * H, H, dHG + (t * B + r0) * G, G, w_hh, e - r0, G, H);
    }
}

/* ---- RNN (tanh or sigmoid) ------------------------------------------------- */

/* out (T, B, H): in, the input projections (or, when x is given, nothing: the
 * projection b + x_t W_ih^T of each live row is formed here, step by step, by
 * the thread that owns the row; no torch GEMM runs just before the loop, whose
 * OpenMP workers would then spin on the other core); out, z.
 * wt (H, H) = W_hh^T; x (T, B, I) or NULL; wit (I, H) = W_ih^T; b (H) or NULL. */
void FN(rf_rnn_forward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                        int sigmoid, const real *h0, const real *wt, real *out, const real *x, int64_t I,
                        const real *wit, const real *b)
{
    ROWS_IN_PARALLEL(FN(rf_rnn_forward)(T, B, H, bs, c, e, sigmoid, h0, wt, out, x, I, wit, b));
    for (int64_t t = 0; t < T; t++) {
        const int64_t e = FN(live)(bs, t, B, r1);
        if (e <= r0) continue;
        real *h = out + (t * B + r0) * H;
        if (x) { /* the input projection of these rows, here rather than as one torch GEMM */
            for (int64_t r = 0; r < e - r0; r++)
                for (int64_t k = 0; k < H; k++) h[r * H + k] = b ? b[k] : 0;
            FN(matacc)(h, H, x + (t * B + r0) * I, I, wit, e - r0, I, H);
        }
        FN(matacc)(h, H, (t ? out + (t - 1) * B * H : h0) + r0 * H, H, wt, e - r0, H, H);
        if (sigmoid) FN(vsigmoid)(h, (e - r0) * H); else FN(vtanh)(h, (e - r0) * H);
    }
}

/* The RNN backward loop for t = T-1 .. 1. Kd (T, B, H): the activation's
 * derivative; dH completed in place; dP (T, B, H): out, dH * Kd. w_hh (H, H). */
void FN(rf_rnn_backward)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                         const real *w_hh, const real *Kd, real *dH, real *dP)
{
    ROWS_IN_PARALLEL(FN(rf_rnn_backward)(T, B, H, bs, c, e, w_hh, Kd, dH, dP));
    for (int64_t t = T - 1; t >= 1; t--) {
        const int64_t e = FN(live)(bs, t, B, r1);
        if (e <= r0) continue;
        for (int64_t b = r0; b < e; b++) {
            const real *kd = Kd + (t * B + b) * H, *dh = dH + (t * B + b) * H;
            real *p = dP + (t * B + b) * H;
            for (int64_t k = 0; k < H; k++) p[k] = dh[k] * kd[k];
        }
        FN(matacc)(dH + ((t - 1) * B + r0) * H, H, dP + (t * B + r0) * H, H, w_hh, e - r0, H, H);
    }
}

/* The RNN backward without padding, straight from the output gradients: for
 * t = T-1 .. 0, dP_t = (d_out_t [+ d_hn at T-1] + dP_{t+1} W_hh) * f'(z_t), with
 * f'(z) = z(1 - z) (sigmoid) or 1 - z^2 (tanh) formed from the saved outputs z.
 * dP (T, B, H) is its own scratch: no gradient buffer, no copy of d_out.
 * d_out (T, B, H), d_hn (B, H), out = z (T, B, H), w_hh (H, H). */
void FN(rf_rnn_backward_direct)(int64_t T, int64_t B, int64_t H, const int64_t *bs, int64_t r0, int64_t r1,
                                int sigmoid, const real *w_hh, const real *out, const real *d_out,
                                const real *d_hn, real *dP)
{
    ROWS_IN_PARALLEL(FN(rf_rnn_backward_direct)(T, B, H, bs, c, e, sigmoid, w_hh, out, d_out, d_hn, dP));
    (void)bs; /* no padding here: every row is live at every step */
    if (r1 <= r0) return;
    for (int64_t t = T - 1; t >= 0; t--) {
        real *p = dP + (t * B + r0) * H;
        const real *g = d_out + (t * B + r0) * H, *z = out + (t * B + r0) * H;
        const int64_t n = (r1 - r0) * H;
        for (int64_t k = 0; k < n; k++) p[k] = g[k];
        if (t == T - 1)
            for (int64_t k = 0; k < n; k++) p[k] += d_hn[r0 * H + k];
        else
            FN(matacc)(p, H, dP + ((t + 1) * B + r0) * H, H, w_hh, r1 - r0, H, H);
        if (sigmoid)
            for (int64_t k = 0; k < n; k++) p[k] *= z[k] - z[k] * z[k];
        else
            for (int64_t k = 0; k < n; k++) p[k] *= 1 - z[k] * z[k];
    }
}

#undef FN
#undef CAT
#undef CAT_
