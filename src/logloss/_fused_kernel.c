/* Fused cross-entropy kernel for logloss.fused (loaded with ctypes, compiled on first use).
 *
 * For each row i of an (n, c) float32 matrix x with target t_i:
 *
 *   lse_i  = m_i + log(sum_j exp(x_ij - m_i)),  m_i = max_j x_ij
 *   loss_i = lse_i - (1 - eps) x_it - eps/c sum_j x_ij  (label smoothing eps; 0 if t_i ignored)
 *   g_ij   = scale (softmax(x_i)_j - (1 - eps) [j == t_i] - eps/c)    (0 if t_i ignored)
 *
 * Three sweeps per row, but only the first reads memory: a row (<= 512 KiB at 131072 classes)
 * and its gradient stay in L2, so the matrix is read once and written once.
 *   1. max and sum of x (read from memory)
 *   2. e_j = exp(x_j - m) written to g, s = sum e_j (accumulated in double: float32 sums of
 *      32768 terms lose ~5 ulp of lse, as PyTorch's float32 does)
 *   3. g_j = e_j * scale / s - scale eps / c, then g_t -= scale (1 - eps)
 * One exp per element.  (An online max/sum in a single read sweep needs a second exp per element
 * and measured 2.6x slower per core here; it only pays when a row no longer fits in cache.)
 *
 * bfloat16 rows are read and written as bfloat16 and computed in float32 (sweep 2 then only
 * sums, and sweep 3 recomputes the exp, so the gradient is rounded once).
 *
 * g may alias x (the gradient is then written over the logits).  Rows are split over POSIX
 * threads.  The exponential is an inline Cephes-style polynomial, so the loops vectorise for
 * whatever vector unit the running CPU has: target_clones builds AVX-512, AVX2+FMA and baseline
 * x86-64 versions and the loader picks one at run time.  No -ffast-math: -inf and NaN logits keep
 * their IEEE meaning, and the reductions are reassociated only where `omp simd` says so.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define LOGLOSS_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define LOGLOSS_CLONES
#endif

/* exp(x) = 2^k p(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2]; relative error
 * ~1e-7.  Below ln(FLT_MIN) the result is 0 (exp(-inf) = 0 exactly).  A NaN x gives a tiny
 * finite number, not NaN: the row functions flag NaN rows themselves in their first sweep (an
 * explicit check there is cheaper than a NaN-safe k in every exp). */
#define BLOCK 512 /* elements per float partial sum */

static inline float fast_expf(float x) {
    const float hi = 88.0f, lo = -87.33654f;
    float xc = x > hi ? hi : x;
    xc = xc >= lo ? xc : lo; /* NaN -> lo: converting a NaN k to int32_t would be undefined */
    /* round to nearest by the 1.5 * 2^23 trick (valid for |y| < 2^22) */
    float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    float y = p * two_k;
    return x < lo ? 0.0f : y;
}

static inline float bf16_to_float(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* round to nearest even, as torch does; NaN stays a (quiet) NaN */
static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
    const uint32_t out = (bits & 0x7FFFFFFFu) > 0x7F800000u ? (bits | 0x00400000u) : rounded;
    return (uint16_t)(out >> 16);
}

enum { DTYPE_FLOAT32 = 0, DTYPE_BFLOAT16 = 1 };

typedef struct job {
    const void *x; /* (n, c) rows, leading stride ldx elements */
    int64_t ldx;
    void *g; /* may equal x; NULL: loss only */
    int64_t ldg;
    const int64_t *target;
    int64_t n, c, ignore_index;
    float smoothing, scale;
    float *loss; /* (n,) */
    int64_t row_begin, row_end; /* the block of rows being computed */
    int64_t *next_row;          /* shared: first row no thread has taken yet */
    int64_t step;               /* rows taken at a time */
    void (*run)(struct job *);  /* rows_float32 or rows_bfloat16 */
    float *scratch;             /* bfloat16: one float32 row per thread */
} job_t;

/* A target outside [0, c) that is not ignore_index (Python rejects these before calling, so this
 * is defence in depth): NaN loss and gradient row instead of a read outside the row. */
static void bad_row_float32(const job_t *jb, float *gi, int64_t i) {
    jb->loss[i] = NAN;
    if (gi)
        for (int64_t k = 0; k < jb->c; ++k) gi[k] = NAN;
}

/* float32 rows.  Sweep 2 stores e = exp(x - max) in g, sweep 3 rescales it: one exp per
 * element.  (Streaming stores to g through a scratch row for e were tried: no measurable gain.) */
LOGLOSS_CLONES
static void rows_float32(job_t *jb) {
    const int64_t c = jb->c;
    const float eps = jb->smoothing;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const float *xi = (const float *)jb->x + i * jb->ldx;
        float *gi = jb->g ? (float *)jb->g + i * jb->ldg : NULL;
        const int64_t t = jb->target[i];
        if (t == jb->ignore_index) {
            jb->loss[i] = 0.0f;
            if (gi) memset(gi, 0, (size_t)c * sizeof(float));
            continue;
        }
        if (t < 0 || t >= c) { /* validated in Python; never read outside the row */
            bad_row_float32(jb, gi, i);
            continue;
        }
        /* sweep 1: max, a NaN flag (the max skips NaN) and, with smoothing, the sum of x
         * (blocks of BLOCK elements summed in float, vectorised, the block sums in double) */
        float mx = -FLT_MAX;
        double sumx = 0.0;
        int nan = 0;
        if (eps > 0.0f) {
            for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
                const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
                float bs = 0.0f;
#pragma omp simd reduction(max : mx) reduction(+ : bs) reduction(| : nan)
                for (int64_t k = k0; k < k1; ++k) {
                    mx = xi[k] > mx ? xi[k] : mx;
                    bs += xi[k];
                    nan |= xi[k] != xi[k];
                }
                sumx += bs;
            }
        } else {
#pragma omp simd reduction(max : mx) reduction(| : nan)
            for (int64_t k = 0; k < c; ++k) {
                mx = xi[k] > mx ? xi[k] : mx;
                nan |= xi[k] != xi[k];
            }
        }
        const float xt = xi[t]; /* read before g (possibly x itself) is written */
        /* sweep 2: e = exp(x - max) and their sum */
        double sum = 0.0;
        for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
            const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
            float bs = 0.0f;
            if (gi) {
#pragma omp simd reduction(+ : bs)
                for (int64_t k = k0; k < k1; ++k) {
                    const float e = fast_expf(xi[k] - mx);
                    gi[k] = e;
                    bs += e;
                }
            } else {
#pragma omp simd reduction(+ : bs)
                for (int64_t k = k0; k < k1; ++k) bs += fast_expf(xi[k] - mx);
            }
            sum += bs;
        }
        /* a NaN logit, or +inf (x - max = inf - inf): NaN loss and gradient row, as PyTorch */
        if (nan || mx == INFINITY) sum = NAN;
        const double lse = mx + log(sum);
        /* eps = 0 skips the sum: 0 * (-inf) would be NaN for rows holding -inf logits */
        jb->loss[i] = (float)(lse - (1.0 - eps) * xt - (eps > 0.0f ? (double)eps / c * sumx : 0.0));
        if (!gi) continue;
        /* sweep 3: normalise, smooth, subtract the target */
        const float sc = (float)(jb->scale / sum), off = jb->scale * eps / (float)c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) gi[k] = gi[k] * sc - off;
        gi[t] -= jb->scale * (1.0f - eps);
    }
}

/* bfloat16 rows, float32 arithmetic.  e = exp(x - max) goes to a float32 scratch row (in L2)
 * rather than to g, so the gradient is rounded to bfloat16 once. */
LOGLOSS_CLONES
static void rows_bfloat16_scratch(const job_t *jb, float *e) {
    const int64_t c = jb->c;
    const float eps = jb->smoothing;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const uint16_t *xi = (const uint16_t *)jb->x + i * jb->ldx;
        uint16_t *gi = jb->g ? (uint16_t *)jb->g + i * jb->ldg : NULL;
        const int64_t t = jb->target[i];
        if (t == jb->ignore_index) {
            jb->loss[i] = 0.0f;
            if (gi) memset(gi, 0, (size_t)c * sizeof(uint16_t));
            continue;
        }
        if (t < 0 || t >= c) { /* validated in Python; never read outside the row */
            jb->loss[i] = NAN;
            if (gi)
                for (int64_t k = 0; k < c; ++k) gi[k] = 0x7FC0u; /* bfloat16 quiet NaN */
            continue;
        }
        float mx = -FLT_MAX;
        double sumx = 0.0;
        for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
            const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
            float bs = 0.0f;
#pragma omp simd reduction(max : mx) reduction(+ : bs)
            for (int64_t k = k0; k < k1; ++k) {
                const float v = bf16_to_float(xi[k]);
                mx = v > mx ? v : mx;
                bs += v;
            }
            sumx += bs;
        }
        const float xt = bf16_to_float(xi[t]);
        double sum = 0.0;
        for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
            const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
            float bs = 0.0f;
#pragma omp simd reduction(+ : bs)
            for (int64_t k = k0; k < k1; ++k) {
                const float ek = fast_expf(bf16_to_float(xi[k]) - mx);
                e[k] = ek;
                bs += ek;
            }
            sum += bs;
        }
        /* a NaN logit (the max skips it, the sum does not) or +inf: NaN loss and gradient */
        if (sumx != sumx || mx == INFINITY) sum = NAN;
        const double lse = mx + log(sum);
        jb->loss[i] = (float)(lse - (1.0 - eps) * xt - (eps > 0.0f ? (double)eps / c * sumx : 0.0));
        if (!gi) continue;
        const float sc = (float)(jb->scale / sum), off = jb->scale * eps / (float)c;
        e[t] -= (float)((1.0 - eps) * sum); /* then e[t] sc - off = scale (p_t - (1 - eps)) - off */
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) gi[k] = float_to_bf16(e[k] * sc - off);
    }
}

static void rows_bfloat16(job_t *jb) { rows_bfloat16_scratch(jb, jb->scratch); }

/* Take blocks of `step` rows from the shared counter until none are left: a thread that the OS
 * schedules late (the cores are shared) simply takes fewer blocks. */
static void *worker(void *arg) {
    job_t *jb = (job_t *)arg;
    if (jb->run == rows_bfloat16) {
        jb->scratch = malloc((size_t)(jb->c > 0 ? jb->c : 1) * sizeof(float));
        if (!jb->scratch) return NULL; /* takes no rows; the caller checks that all were done */
    }
    for (;;) {
        const int64_t r0 = __atomic_fetch_add(jb->next_row, jb->step, __ATOMIC_RELAXED);
        if (r0 >= jb->n) break;
        jb->row_begin = r0;
        jb->row_end = r0 + jb->step < jb->n ? r0 + jb->step : jb->n;
        jb->run(jb);
    }
    free(jb->scratch);
    jb->scratch = NULL;
    return NULL;
}

#define MAX_THREADS 256

/* The loss of each row into loss[0..n) and, when g is not NULL, the gradient into g.
 * dtype: 0 float32, 1 bfloat16 (x and g alike).  Up to nthreads threads share the rows.
 * Returns the number of threads that could not be started (the others did their rows), -1 for
 * an unknown dtype (nothing computed), -2 when rows were left undone because no thread could
 * allocate its scratch row.  A thread without scratch takes no rows, so when another thread
 * got one and did all the rows, that is not an error. */
int logloss_ce_forward(const void *x, int64_t ldx, void *g, int64_t ldg, const int64_t *target,
                       int64_t n, int64_t c, int64_t ignore_index, float smoothing, float scale,
                       float *loss, int dtype, int nthreads) {
    void (*run)(job_t *);
    if (dtype == DTYPE_FLOAT32)
        run = rows_float32;
    else if (dtype == DTYPE_BFLOAT16)
        run = rows_bfloat16;
    else
        return -1;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    /* a thread costs ~50 us to start and, on a busy machine, up to a scheduler tick to join:
     * worth it only from ~1M elements (~1 ms of work) per thread */
    const int64_t max_useful = n * c / (1 << 20) + 1;
    if (nthreads > max_useful) nthreads = (int)max_useful;
    if (nthreads > n) nthreads = (int)(n > 0 ? n : 1);
    int64_t next_row = 0;
    const int64_t step = c >= (1 << 16) ? 1 : (1 << 16) / (c > 0 ? c : 1); /* ~64k elements */
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int k = 0; k < nthreads; ++k) {
        job_t jb = {x, ldx, g, ldg, target, n, c, ignore_index, smoothing, scale, loss, 0, 0,
                    &next_row, step, run, NULL};
        jobs[k] = jb;
    }
    int failed = 0;
    for (int k = 1; k < nthreads; ++k) {
        started[k] = pthread_create(&tids[k], NULL, worker, &jobs[k]) == 0;
        if (!started[k]) ++failed;
    }
    worker(&jobs[0]);
    for (int k = 1; k < nthreads; ++k)
        if (started[k]) pthread_join(tids[k], NULL);
    /* next_row only passes n once threads that had their scratch row took every row */
    if (__atomic_load_n(&next_row, __ATOMIC_RELAXED) < n) return -2;
    return failed;
}
