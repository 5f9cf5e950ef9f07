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
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define LOGLOSS_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define LOGLOSS_CLONES
#endif

/* exp(x) = 2^k p(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2]; relative error
 * ~1e-7.  Below ln(FLT_MIN) the result is 0 (exp(-inf) = 0 exactly); NaN stays NaN. */
static inline float fast_expf(float x) {
    const float hi = 88.0f, lo = -87.33654f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
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

typedef struct {
    const float *x;
    int64_t ldx;
    float *g; /* may equal x; NULL: loss only */
    int64_t ldg;
    const int64_t *target;
    int64_t n, c, ignore_index;
    float smoothing, scale;
    float *loss; /* (n,) */
    float *lse;  /* (n,) or NULL */
    int64_t row_begin, row_end;
} job_t;

LOGLOSS_CLONES
static void rows_kernel(const job_t *jb) {
    const int64_t c = jb->c;
    const float eps = jb->smoothing;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const float *xi = jb->x + i * jb->ldx;
        float *gi = jb->g ? jb->g + i * jb->ldg : NULL;
        const int64_t t = jb->target[i];
        const int ignored = (t == jb->ignore_index);
        float mx = -FLT_MAX, sumx = 0.0f;
#pragma omp simd reduction(max : mx) reduction(+ : sumx)
        for (int64_t k = 0; k < c; ++k) {
            mx = xi[k] > mx ? xi[k] : mx;
            sumx += xi[k];
        }
        const float xt = ignored ? 0.0f : xi[t];
        double sum = 0.0;
        if (gi && !ignored) {
#pragma omp simd reduction(+ : sum)
            for (int64_t k = 0; k < c; ++k) {
                const float e = fast_expf(xi[k] - mx);
                gi[k] = e;
                sum += e;
            }
        } else {
#pragma omp simd reduction(+ : sum)
            for (int64_t k = 0; k < c; ++k) sum += fast_expf(xi[k] - mx);
        }
        if (sumx != sumx) sum = NAN;
        const double lse = mx + log(sum);
        if (jb->lse) jb->lse[i] = (float)lse;
        if (ignored) {
            jb->loss[i] = 0.0f;
            if (gi) memset(gi, 0, (size_t)c * sizeof(float));
            continue;
        }
        /* eps = 0 skips the sum: 0 * (-inf) would be NaN for rows holding -inf logits */
        jb->loss[i] = (float)(lse - (1.0 - eps) * xt - (eps > 0.0f ? (double)eps / c * sumx : 0.0));
        if (!gi) continue;
        const float sc = (float)(jb->scale / sum), off = jb->scale * eps / (float)c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) gi[k] = gi[k] * sc - off;
        gi[t] -= jb->scale * (1.0f - eps);
    }
}

static void *rows_thread(void *arg) {
    rows_kernel((const job_t *)arg);
    return NULL;
}

#define MAX_THREADS 256

/* Returns 0 on success, the number of threads that could not start (work done inline) otherwise
 * never fails the computation. */
int logloss_ce_forward(const float *x, int64_t ldx, float *g, int64_t ldg, const int64_t *target,
                       int64_t n, int64_t c, int64_t ignore_index, float smoothing, float scale,
                       float *loss, float *lse, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    /* below ~256k elements a thread costs more than it saves */
    const int64_t work = n * c;
    int64_t max_useful = work / (1 << 18) + 1;
    if (nthreads > max_useful) nthreads = (int)max_useful;
    if (nthreads > n) nthreads = (int)(n > 0 ? n : 1);
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int k = 0; k < nthreads; ++k) {
        job_t jb = {x, ldx, g, ldg, target, n, c, ignore_index, smoothing, scale, loss, lse,
                    n * k / nthreads, n * (k + 1) / nthreads};
        jobs[k] = jb;
    }
    int failed = 0;
    for (int k = 1; k < nthreads; ++k) {
        started[k] = pthread_create(&tids[k], NULL, rows_thread, &jobs[k]) == 0;
        if (!started[k]) ++failed;
    }
    rows_kernel(&jobs[0]);
    for (int k = 1; k < nthreads; ++k) {
        if (started[k])
            pthread_join(tids[k], NULL);
        else
            rows_kernel(&jobs[k]);
    }
    return failed;
}
