/* Fused cross-entropy row kernel for logloss.fused (loaded with ctypes, compiled on first use).
 *
 * For each row i of an (n, c) float32 or bfloat16 matrix x (see fused/rows.py for the contract):
 *
 *   z_ij   = cap tanh(x_ij / cap)  (softcap cap > 0), else x_ij
 *   lse_i  = m_i + log(sum_j exp(z_ij - m_i)),  m_i = max_j z_ij   (or given: lse_in[i])
 *   q'_ij  = (1 - eps) q_ij + eps / C            (q_i: the one-hot of the target t_i, or a row
 *                                                 of class probabilities; C = n_classes >= c)
 *   A_i    = sum_j w_j q'_ij                      (w: class weights, 1 without)
 *   loss_i = A_i lse_i - sum_j w_j q'_ij z_ij     (0 for an ignored row)
 *   g_ij   = [(scale A_i + 2 z_loss z_scale lse_i) p_ij - scale w_j q'_ij] dz_ij/dx_ij
 *            p_ij = exp(z_ij - lse_i),  dz/dx = 1 - (z / cap)^2 with a softcap, else 1
 *
 * (the z-loss z_loss lse_i^2 itself is added by the caller, from lse_out).  With index targets
 * and no weights this is loss_i = lse_i - (1 - eps) x_it - eps/C sum_j x_ij.  Products are
 * plain IEEE products, as PyTorch's: a zero coefficient times a -inf logit is NaN.
 *
 * Three sweeps per row, but only the first reads memory: a row (<= 512 KiB at 131072 classes)
 * and its scratch rows stay in L2, so the matrix is read once and written once.
 *   1. max (and the sums of the loss's linear part) of z, read from memory
 *   2. e_j = exp(z_j - m) into a per-thread float32 scratch row, and S = sum_j e_j (accumulated
 *      in double: float32 sums of 32768 terms lose ~5 ulp of lse, as PyTorch's float32 does)
 *   3. g_j from e_j, then the target's entry
 * One exp per element (two with a softcap: its tanh).  An online max/sum in a single read sweep
 * needs a second exp per element and measured 2.6x slower per core here.
 *
 * Two implementations, chosen per call:
 * - rows_avx512 (x86-64 CPUs with AVX-512 F, BW and VL): intrinsics, for the options that only
 *   change per-row scalars (index targets, eps, a target weight when eps = 0, z-loss, a given
 *   lse, shards): ~1.1x a copy of the matrix.
 * - rows_portable (every CPU; and every call with a softcap, probability targets, or class
 *   weights with smoothing): plain C loops with an inline Cephes-style polynomial exp that the
 *   compiler vectorises for the running CPU (target_clones: AVX-512, AVX2+FMA and baseline
 *   x86-64 versions, picked by the loader).
 * No -ffast-math: -inf and NaN logits keep their IEEE meaning, and the reductions are
 * reassociated only where `omp simd` (or the intrinsics) say so.  g may alias x.  Rows are split
 * over POSIX threads.
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

/* x86-64 with GCC or clang: an AVX-512 path in intrinsics, picked at run time */
#if defined(__x86_64__) && defined(__GNUC__)
#define LOGLOSS_X86_INTRINSICS 1
#include <immintrin.h>
#else
#define LOGLOSS_X86_INTRINSICS 0
#endif

#define INLINE static inline __attribute__((always_inline))

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

/* tanh(y): Cephes' odd polynomial for |y| < 0.625 (relative error ~1e-7, no cancellation near
 * 0), else 1 - 2 / (exp(2|y|) + 1) with y's sign; +-inf give +-1, NaN stays NaN. */
INLINE float fast_tanhf(float y) {
    const float ay = y < 0.0f ? -y : y, y2 = y * y;
    float p = -5.70498872745e-3f;
    p = p * y2 + 2.06390887954e-2f;
    p = p * y2 - 5.37397155531e-2f;
    p = p * y2 + 1.33314422036e-1f;
    p = p * y2 - 3.33332819422e-1f;
    const float small = y + y * y2 * p;
    const float big = 1.0f - 2.0f / (fast_expf(2.0f * ay) + 1.0f);
    return ay >= 0.625f ? (y < 0.0f ? -big : big) : small; /* NaN takes `small`: NaN */
}

/* element k of a float32 or bfloat16 row, as float; and the store back, rounded once */
INLINE float load_f(const void *x, int64_t k, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)x)[k]) : ((const float *)x)[k];
}

INLINE void store_f(void *g, int64_t k, float v, int bf16) {
    if (bf16)
        ((uint16_t *)g)[k] = float_to_bf16(v);
    else
        ((float *)g)[k] = v;
}

enum { DTYPE_FLOAT32 = 0, DTYPE_BFLOAT16 = 1 };
enum { FLAG_PORTABLE = 1, FLAG_STREAM = 2, FLAG_SHARD = 4 };

/* The call's arguments, mirrored field by field by cpu_kernel.CeArgs (ctypes). */
typedef struct ce_args {
    const void *x;         /* (n, c) logits, row stride ldx elements */
    void *g;               /* (n, c) gradient, row stride ldg (may equal x), or NULL: loss only */
    const int64_t *target; /* (n,) class indices, or NULL with probs */
    const float *probs;    /* (n, c) float32 class probabilities, row stride ldp, or NULL */
    const float *weight;   /* (c,) class weights, or NULL */
    float *loss;           /* (n,) out: A lse - sum_j w_j q'_j z_j */
    double *lse_out;       /* (n,) out: the lse each row used (double), or NULL */
    const double *lse_in;  /* (n,) given lse (e.g. over all shards, double), or NULL */
    int64_t ldx, ldg, ldp;
    int64_t n, c, ignore_index, n_classes; /* n_classes: the C of eps / C (>= c for a shard) */
    float smoothing, scale, z_loss, z_scale, softcap; /* softcap 0: none */
    int32_t dtype, nthreads, flags;
} ce_args_t;

typedef struct job {
    const ce_args_t *a;
    const float *w;            /* class weights; ones for general rows without; else NULL */
    double weight_sum;         /* sum of the weights of these c columns (c without weights) */
    int general;               /* softcap, probabilities or weights with smoothing */
    int64_t row_begin, row_end; /* the block of rows being computed */
    int64_t *next_row;         /* shared: first row no thread has taken yet */
    int64_t step;              /* rows taken at a time */
    void (*run)(struct job *); /* rows_portable_* or rows_*_avx512 */
    float *scratch;            /* e (and z for general rows), per thread, 64-aligned */
    int64_t scratch_row;       /* floats from e to z in scratch */
    int stream;                /* rows_*_avx512: streaming stores for the gradient */
} job_t;

/* What row i's target says.  ROW_TARGET: class t of these columns; ROW_NO_TARGET: no class of
 * these columns (probability targets, or with FLAG_SHARD a class of another shard); ROW_IGNORED;
 * ROW_BAD: outside [0, c) (the Python side rejects these: defence in depth, never read outside
 * the row). */
enum { ROW_TARGET, ROW_NO_TARGET, ROW_IGNORED, ROW_BAD };

INLINE int row_target(const ce_args_t *a, int64_t i, int64_t *t) {
    if (!a->target) return ROW_NO_TARGET;
    *t = a->target[i];
    if (*t == a->ignore_index) return ROW_IGNORED;
    if (*t >= 0 && *t < a->c) return ROW_TARGET;
    return (a->flags & FLAG_SHARD) ? ROW_NO_TARGET : ROW_BAD;
}

/* An ignored row (loss, lse and gradient 0) or a bad one (all NaN). */
static void fill_row(const ce_args_t *a, void *gi, int64_t i, int bf16, int bad) {
    a->loss[i] = bad ? NAN : 0.0f;
    if (a->lse_out) a->lse_out[i] = bad ? NAN : 0.0;
    if (!gi) return;
    if (!bad)
        memset(gi, 0, (size_t)a->c * (bf16 ? 2 : 4));
    else
        for (int64_t k = 0; k < a->c; ++k) store_f(gi, k, NAN, bf16);
}

/* Row i's logits and gradient rows and its target (kind and class); an ignored or bad row is
 * written here and 0 returned (nothing more to do for it). */
INLINE int start_row(const ce_args_t *a, int64_t i, int bf16, const char **xi, char **gi,
                     int64_t *t, int *kind) {
    const size_t size = bf16 ? 2 : 4;
    *xi = (const char *)a->x + (size_t)(i * a->ldx) * size;
    *gi = a->g ? (char *)a->g + (size_t)(i * a->ldg) * size : NULL;
    *t = -1;
    *kind = row_target(a, i, t);
    if (*kind == ROW_IGNORED || *kind == ROW_BAD) {
        fill_row(a, *gi, i, bf16, *kind == ROW_BAD);
        return 0;
    }
    return 1;
}

/* The per-row numbers the sweeps produce (see the formulas at the top). */
typedef struct row_sums {
    float shift; /* the max of z, or the given lse rounded to float: sweep 2's exp(z - shift) */
    double sum;  /* sum of exp(z - shift); NaN for a row holding NaN (or +inf without a cap) */
    double coef; /* A = sum_j w_j q'_j, the multiplier of lse in the loss */
    double lin;  /* sum_j w_j q'_j z_j */
} row_sums_t;

/* A and the linear part for an index target: w_t q' = (1 - eps) w_t [j == t] + eps/C w_j.
 * ROW_NO_TARGET has no (1 - eps) term (never reads x_t). */
INLINE void index_terms(const job_t *jb, int kind, float wt, float zt, double sum_wz,
                        row_sums_t *r) {
    const ce_args_t *a = jb->a;
    const double eps = a->smoothing, eps_c = eps / (double)a->n_classes;
    r->coef = (kind == ROW_TARGET ? (1.0 - eps) * wt : 0.0) + eps_c * jb->weight_sum;
    r->lin = (kind == ROW_TARGET ? (1.0 - eps) * wt * (double)zt : 0.0);
    if (eps > 0.0) r->lin += eps_c * sum_wz; /* skipped at 0 as PyTorch: 0 * sum(-inf) is NaN */
}

/* Writes loss_i (and lse_i) and returns the gradient's multiplier of e_j:
 * (scale A + 2 z_loss z_scale lse) / S, with lse = shift + lo.  Computed: lo = log S, S =
 * sum_j e_j.  Given: e_j = exp(z_j - hi) for hi = (float)lse, lo = lse - hi (exact in double)
 * and S = exp(lo): the part of the lse below float's resolution joins the row's scale, so
 * p_j = e_j / S keeps float accuracy at any magnitude (hi alone is off by up to half an ulp:
 * 5e-4 at 1e4), at no cost per element.  The loss is (A shift - lin) + A lo: for a target at
 * the row max shift - z_t is exact, so a loss far below the lse's ulp keeps its relative
 * accuracy.  A shard's gradient takes the whole row's A, 1 (shards have no class weights),
 * while its loss row keeps its own share of A, so that the shards' loss rows add up to the
 * row's loss. */
INLINE float finish_row(const ce_args_t *a, int64_t i, const row_sums_t *r) {
    const double shift = (double)r->shift;
    const double lo = a->lse_in ? (r->sum != r->sum ? NAN : a->lse_in[i] - shift) : log(r->sum);
    const double lse = shift + lo;
    a->loss[i] = (float)((r->coef * shift - r->lin) + r->coef * lo);
    if (a->lse_out) a->lse_out[i] = lse;
    const double total = a->lse_in ? exp(lo) : r->sum;
    const double coef = (a->flags & FLAG_SHARD) ? 1.0 : r->coef;
    return (float)((a->scale * coef + 2.0 * a->z_loss * a->z_scale * lse) / total);
}

/* ---- portable rows ------------------------------------------------------------------------ */

/* Sweep 1 (plain rows): max of x, a NaN flag (the max skips NaN) and, if asked, the sum of x
 * (blocks of BLOCK elements summed in float, vectorised, the block sums in double). */
INLINE void sweep_max(const void *x, int64_t c, int with_sum, int bf16, float *mx, double *sum,
                      int *nan) {
    float m = -FLT_MAX;
    double total = 0.0;
    int bad = 0;
    for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
        const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
        float bs = 0.0f;
        if (with_sum) {
#pragma omp simd reduction(max : m) reduction(+ : bs) reduction(| : bad)
            for (int64_t k = k0; k < k1; ++k) {
                const float v = load_f(x, k, bf16);
                m = v > m ? v : m;
                bs += v;
                bad |= v != v;
            }
        } else {
#pragma omp simd reduction(max : m) reduction(| : bad)
            for (int64_t k = k0; k < k1; ++k) {
                const float v = load_f(x, k, bf16);
                m = v > m ? v : m;
                bad |= v != v;
            }
        }
        total += bs;
    }
    *mx = m;
    *sum = total;
    *nan = bad;
}

/* Sweep 1 (general rows): z = cap tanh(x / cap) (or x) as float32 into zs, max, NaN flag. */
INLINE void sweep_load(const void *x, int64_t c, float cap, int bf16, float *zs, float *mx,
                       int *nan) {
    float m = -FLT_MAX;
    int bad = 0;
    if (cap > 0.0f) {
        const float inv = 1.0f / cap;
#pragma omp simd reduction(max : m) reduction(| : bad)
        for (int64_t k = 0; k < c; ++k) {
            const float v = cap * fast_tanhf(load_f(x, k, bf16) * inv);
            zs[k] = v;
            m = v > m ? v : m;
            bad |= v != v;
        }
    } else {
#pragma omp simd reduction(max : m) reduction(| : bad)
        for (int64_t k = 0; k < c; ++k) {
            const float v = load_f(x, k, bf16);
            zs[k] = v;
            m = v > m ? v : m;
            bad |= v != v;
        }
    }
    *mx = m;
    *nan = bad;
}

/* Sums of a general row's loss: sum_j w_j z_j (index targets), or for probabilities
 * A = sum_j w_j q'_j and sum_j w_j q'_j z_j; blocks in float, their sums in double. */
INLINE void sweep_sums(const float *zs, const float *w, const float *q, int64_t c, float eps,
                       float eps_c, double *coef, double *lin) {
    double ta = 0.0, tl = 0.0;
    for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
        const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
        float ba = 0.0f, bl = 0.0f;
        if (q) {
#pragma omp simd reduction(+ : ba, bl)
            for (int64_t k = k0; k < k1; ++k) {
                const float wq = w[k] * ((1.0f - eps) * q[k] + eps_c);
                ba += wq;
                bl += wq * zs[k];
            }
        } else {
#pragma omp simd reduction(+ : bl)
            for (int64_t k = k0; k < k1; ++k) bl += w[k] * zs[k];
        }
        ta += ba;
        tl += bl;
    }
    *coef = ta;
    *lin = tl;
}

/* Sweep 2: e = exp(z - shift) into e, returning their sum. */
INLINE double sweep_exp(const void *z, int64_t c, float shift, int bf16, float *e) {
    double sum = 0.0;
    for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
        const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
        float bs = 0.0f;
#pragma omp simd reduction(+ : bs)
        for (int64_t k = k0; k < k1; ++k) {
            const float ek = fast_expf(load_f(z, k, bf16) - shift);
            e[k] = ek;
            bs += ek;
        }
        sum += bs;
    }
    return sum;
}

/* Sweeps 1 and 2 of a plain row (index targets, no softcap, weights only when eps = 0). */
INLINE void plain_row(const job_t *jb, const void *xi, int kind, int64_t t, int64_t i, int bf16,
                      row_sums_t *r) {
    const ce_args_t *a = jb->a;
    float mx;
    double sumx;
    int nan;
    sweep_max(xi, a->c, a->smoothing > 0.0f, bf16, &mx, &sumx, &nan);
    const float wt = kind == ROW_TARGET && jb->w ? jb->w[t] : 1.0f;
    index_terms(jb, kind, wt, kind == ROW_TARGET ? load_f(xi, t, bf16) : 0.0f, sumx, r);
    r->shift = a->lse_in ? (float)a->lse_in[i] : mx;
    r->sum = sweep_exp(xi, a->c, r->shift, bf16, jb->scratch);
    /* a NaN logit, or +inf (x - max = inf - inf): NaN loss and gradient row, as PyTorch */
    if (nan || mx == INFINITY) r->sum = NAN;
}

/* Sweeps 1 and 2 of a general row: z (capped) into the scratch, the loss's sums, exp. */
INLINE void general_row(const job_t *jb, const void *xi, int kind, int64_t t, int64_t i,
                        int bf16, row_sums_t *r) {
    const ce_args_t *a = jb->a;
    float *zs = jb->scratch + jb->scratch_row, mx;
    int nan;
    sweep_load(xi, a->c, a->softcap, bf16, zs, &mx, &nan);
    const float eps_c = (float)((double)a->smoothing / (double)a->n_classes);
    const float *q = a->probs ? a->probs + i * a->ldp : NULL;
    double coef = 0.0, lin = 0.0;
    if (q || a->smoothing > 0.0f) sweep_sums(zs, jb->w, q, a->c, a->smoothing, eps_c, &coef, &lin);
    if (q) {
        r->coef = coef;
        r->lin = lin;
    } else {
        const float wt = kind == ROW_TARGET ? jb->w[t] : 0.0f;
        index_terms(jb, kind, wt, kind == ROW_TARGET ? zs[t] : 0.0f, lin, r);
    }
    r->shift = a->lse_in ? (float)a->lse_in[i] : mx;
    r->sum = sweep_exp(zs, a->c, r->shift, 0, jb->scratch);
    if (nan || mx == INFINITY) r->sum = NAN;
}

/* Sweep 3 of a general row: g = (e sc - scale w (eps/C + (1 - eps) q)) dz/dx, dz/dx =
 * 1 - (z / cap)^2 with a softcap; for index targets q = 0 here (the target's entry comes after). */
INLINE void store_general(const job_t *jb, void *g, const float *q, float sc, int bf16) {
    const ce_args_t *a = jb->a;
    const float *e = jb->scratch, *zs = jb->scratch + jb->scratch_row, *w = jb->w;
    const float s_off = (float)(a->scale * (double)a->smoothing / (double)a->n_classes);
    const float s_q = a->scale * (1.0f - a->smoothing), inv = a->softcap > 0 ? 1 / a->softcap : 0;
    const int64_t c = a->c;
    if (q && inv > 0.0f) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
            const float u = zs[k] * inv;
            store_f(g, k, (e[k] * sc - w[k] * (s_off + s_q * q[k])) * (1.0f - u * u), bf16);
        }
    } else if (q) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) store_f(g, k, e[k] * sc - w[k] * (s_off + s_q * q[k]), bf16);
    } else if (inv > 0.0f) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
            const float u = zs[k] * inv;
            store_f(g, k, (e[k] * sc - w[k] * s_off) * (1.0f - u * u), bf16);
        }
    } else {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) store_f(g, k, e[k] * sc - w[k] * s_off, bf16);
    }
}

/* The target's entry of a general row, from float32, rounded once. */
INLINE float general_target_entry(const job_t *jb, int64_t t, float sc) {
    const ce_args_t *a = jb->a;
    const float *e = jb->scratch, *zs = jb->scratch + jb->scratch_row;
    const float s_off = (float)(a->scale * (double)a->smoothing / (double)a->n_classes);
    const float wt = jb->w[t];
    const float gt = (e[t] * sc - wt * s_off) - a->scale * (1.0f - a->smoothing) * wt;
    const float u = a->softcap > 0.0f ? zs[t] / a->softcap : 0.0f;
    return gt * (1.0f - u * u);
}

/* Sweep 3 of a plain row: g = e sc - scale eps / C (no weights: plain rows with weights have
 * eps = 0), then the target's entry (e_t sc - off) - scale (1 - eps) w_t, rounded once (C = 1
 * with smoothing gives exactly 0). */
INLINE void store_plain(const job_t *jb, void *g, int kind, int64_t t, float sc, int bf16) {
    const ce_args_t *a = jb->a;
    const float *e = jb->scratch;
    const float off = (float)(a->scale * (double)a->smoothing / (double)a->n_classes);
#pragma omp simd
    for (int64_t k = 0; k < a->c; ++k) store_f(g, k, e[k] * sc - off, bf16);
    if (kind != ROW_TARGET) return;
    const float wt = jb->w ? jb->w[t] : 1.0f;
    store_f(g, t, (e[t] * sc - off) - a->scale * (1.0f - a->smoothing) * wt, bf16);
}

INLINE void rows_portable(job_t *jb, int bf16) {
    const ce_args_t *a = jb->a;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const char *xi;
        char *gi;
        int64_t t;
        int kind;
        if (!start_row(a, i, bf16, &xi, &gi, &t, &kind)) continue;
        row_sums_t r;
        if (jb->general)
            general_row(jb, xi, kind, t, i, bf16, &r);
        else
            plain_row(jb, xi, kind, t, i, bf16, &r); /* reads x_t before g (maybe x) is written */
        const float sc = finish_row(a, i, &r);
        if (!gi) continue;
        if (!jb->general) {
            store_plain(jb, gi, kind, t, sc, bf16);
            continue;
        }
        store_general(jb, gi, a->probs ? a->probs + i * a->ldp : NULL, sc, bf16);
        if (kind == ROW_TARGET) store_f(gi, t, general_target_entry(jb, t, sc), bf16);
    }
}

LOGLOSS_CLONES
static void rows_portable_float32(job_t *jb) { rows_portable(jb, 0); }

LOGLOSS_CLONES
static void rows_portable_bfloat16(job_t *jb) { rows_portable(jb, 1); }

#if LOGLOSS_X86_INTRINSICS
/* Plain float32 and bfloat16 rows with AVX-512 intrinsics (chosen at run time on CPUs with
 * AVX-512 F, BW and VL: every AVX-512 server CPU since 2017).
 *
 * The portable rows leave the vector code to the compiler, which spends ~2 cycles per element
 * on its exp (clamps, an int conversion and a shift, no FMA under -std=c11): the float32 kernel
 * was compute-bound at ~1.3x a plain copy.  Here exp is 13 vector instructions per 16 floats
 * (vscalefps builds p 2^k without integer tricks, a compare mask zeroes exp below ln FLT_MIN),
 * so the row sweeps run at about memory speed:
 *   1. max (and, with smoothing, sum) of x: the one read of the row from memory
 *   2. e = exp(x - max) into a per-thread float32 scratch row (in cache) and their sum
 *   3. g = e sc - scale eps / C, written with streaming stores when `stream` is set: the
 *      gradient's cache lines are then never read from memory before being overwritten (a
 *      normal store first fetches each line: one extra read of the matrix); then the target's
 *      entry.
 * bfloat16 rows are widened to float32 on load (a shift) and rounded to nearest even on store,
 * once, as the portable loop does.  NaN and +inf logits need no flag: exp(NaN) and
 * exp(inf - inf) are NaN, so the sum is NaN, as PyTorch's row is.  Every helper takes `bf16` as
 * a constant and is inlined into rows_float32_avx512 / rows_bfloat16_avx512, so each gets its
 * own loops. */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define AVX512_INLINE AVX512 static inline __attribute__((always_inline))

AVX512_INLINE __m512 exp_avx512(__m512 x) {
    /* x - max <= 0, or NaN.  exp(x) = 2^k e^r: k = round(x / ln 2) by adding and subtracting
     * 1.5 * 2^23 (exact for |x / ln 2| < 2^22), r = x - k ln 2 in two steps (Cody-Waite, so r
     * is exact to ~1e-10 even for k = -126), e^r = 1 + r + r^2 P(r) with Cephes' degree-5 P
     * (|r| <= ln 2 / 2: ~1e-7 relative, as the portable fast_expf), 2^k by vscalefps.  Zero below
     * ln(FLT_MIN) and for -inf (the compare mask), NaN stays NaN. */
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_NLT_UQ);
    const __m512 k = _mm512_sub_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f)); /* 1 + r + r^2 P(r), Horner's way */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(keep, p, k);
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

AVX512_INLINE __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* float32 -> bfloat16, round to nearest even, NaN stays a quiet NaN (as float_to_bf16) */
AVX512_INLINE __m256i narrow_bf16(__m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i out = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    out = _mm512_mask_mov_epi32(out, nan, _mm512_or_si512(bits, _mm512_set1_epi32(0x00400000)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(out, 16));
}

/* 16 elements of x (float32 or bfloat16) from element k, as float32; masked: `fill` elsewhere */
AVX512_INLINE __m512 load16(const void *x, int64_t k, int bf16) {
    if (bf16) return widen_bf16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)x + k)));
    return _mm512_loadu_ps((const float *)x + k);
}

AVX512_INLINE __m512 load16_masked(const void *x, int64_t k, __mmask16 m, __m512 fill, int bf16) {
    if (bf16)
        return _mm512_mask_mov_ps(
            fill, m, widen_bf16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)x + k)));
    return _mm512_mask_loadu_ps(fill, m, (const float *)x + k);
}

AVX512_INLINE void store16(void *g, int64_t k, __m512 v, int bf16, int stream) {
    if (bf16) {
        __m256i *at = (__m256i *)((uint16_t *)g + k);
        if (stream)
            _mm256_stream_si256(at, narrow_bf16(v));
        else
            _mm256_storeu_si256(at, narrow_bf16(v));
    } else if (stream) {
        _mm512_stream_ps((float *)g + k, v);
    } else {
        _mm512_storeu_ps((float *)g + k, v);
    }
}

AVX512_INLINE void store16_masked(void *g, int64_t k, __mmask16 m, __m512 v, int bf16) {
    if (bf16)
        _mm256_mask_storeu_epi16((uint16_t *)g + k, m, narrow_bf16(v));
    else
        _mm512_mask_storeu_ps((float *)g + k, m, v);
}

/* Sweep 1: max (vmaxps returns its second operand when either is NaN, so the running max skips
 * NaN) and, with smoothing, the sum of x (float per block, then double). */
AVX512_INLINE void row_max_sum_avx512(const void *x, int64_t c, int with_sum, int bf16,
                                      float *mx, double *sumx) {
    const __m512 lowest = _mm512_set1_ps(-FLT_MAX);
    __m512 m0 = lowest, m1 = lowest;
    double total = 0.0;
    for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
        const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0;
        int64_t k = k0;
        for (; k + 32 <= k1; k += 32) {
            const __m512 a = load16(x, k, bf16), b = load16(x, k + 16, bf16);
            m0 = _mm512_max_ps(a, m0);
            m1 = _mm512_max_ps(b, m1);
            if (with_sum) {
                s0 = _mm512_add_ps(s0, a);
                s1 = _mm512_add_ps(s1, b);
            }
        }
        for (; k < k1; k += 16) {
            const __mmask16 mk = tail_mask(k1 - k);
            const __m512 a = load16_masked(x, k, mk, lowest, bf16);
            m0 = _mm512_max_ps(a, m0);
            if (with_sum) s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(mk, a));
        }
        if (with_sum) total += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    }
    *mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    *sumx = total;
}

/* Sweep 2 (the row now in cache): e = exp(x - mx) into scratch, returning their sum (float per
 * block, then double).  (Reading the next row from memory in this same loop, so that memory and
 * arithmetic overlap, measured ~8% slower here than the sweeps one after the other; prefetching
 * the next row into L2 from here changed nothing.) */
AVX512_INLINE double row_exp_avx512(const void *x, int64_t c, float mx, float *e, int bf16) {
    const __m512 vm = _mm512_set1_ps(mx);
    double sum = 0.0;
    for (int64_t k0 = 0; k0 < c; k0 += BLOCK) {
        const int64_t k1 = k0 + BLOCK < c ? k0 + BLOCK : c;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0;
        int64_t k = k0;
        for (; k + 32 <= k1; k += 32) {
            const __m512 a = exp_avx512(_mm512_sub_ps(load16(x, k, bf16), vm));
            const __m512 b = exp_avx512(_mm512_sub_ps(load16(x, k + 16, bf16), vm));
            _mm512_store_ps(e + k, a);
            _mm512_store_ps(e + k + 16, b);
            s0 = _mm512_add_ps(s0, a);
            s1 = _mm512_add_ps(s1, b);
        }
        for (; k < k1; k += 16) {
            const __mmask16 mk = tail_mask(k1 - k);
            const __m512 v = load16_masked(x, k, mk, _mm512_setzero_ps(), bf16);
            const __m512 a = _mm512_maskz_mov_ps(mk, exp_avx512(_mm512_sub_ps(v, vm)));
            _mm512_mask_store_ps(e + k, mk, a);
            s0 = _mm512_add_ps(s0, a);
        }
        sum += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    }
    return sum;
}

/* Sweep 3: g[0..c) = e * sc - off; masked stores up to the alignment streaming stores need
 * (64 bytes for float32, 32 for bfloat16), then whole vectors, then a masked tail. */
AVX512_INLINE void store_gradient_avx512(void *g, const float *e, int64_t c, float sc, float off,
                                         int bf16, int stream) {
    const __m512 vs = _mm512_set1_ps(sc), vo = _mm512_set1_ps(off);
    const uintptr_t align = bf16 ? 32 : 64, size = bf16 ? 2 : 4;
    int64_t k = 0;
    const int64_t head = (int64_t)((align - (uintptr_t)g % align) % align / size);
    if (head > 0) {
        k = head < c ? head : c;
        const __mmask16 m = tail_mask(k);
        store16_masked(g, 0, m, _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, e), vs, vo), bf16);
    }
    if (stream) { /* g + k is aligned now (g itself is element-aligned, as every tensor) */
        for (; k + 16 <= c; k += 16)
            store16(g, k, _mm512_fmsub_ps(_mm512_loadu_ps(e + k), vs, vo), bf16, 1);
    } else {
        for (; k + 16 <= c; k += 16)
            store16(g, k, _mm512_fmsub_ps(_mm512_loadu_ps(e + k), vs, vo), bf16, 0);
    }
    if (k < c) {
        const __mmask16 m = tail_mask(c - k);
        store16_masked(g, k, m, _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, e + k), vs, vo), bf16);
    }
}

AVX512_INLINE void rows_avx512(job_t *jb, int bf16) {
    const ce_args_t *a = jb->a;
    const int64_t c = a->c;
    float *e = jb->scratch;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const char *xi;
        char *gi;
        int64_t t;
        int kind;
        if (!start_row(a, i, bf16, &xi, &gi, &t, &kind)) continue;
        float mx;
        double sumx;
        row_max_sum_avx512(xi, c, a->smoothing > 0.0f, bf16, &mx, &sumx);
        const float wt = kind == ROW_TARGET && jb->w ? jb->w[t] : 1.0f;
        const float xt = kind == ROW_TARGET
                             ? _mm512_cvtss_f32(load16_masked(xi, t, 1, _mm512_setzero_ps(), bf16))
                             : 0.0f;
        row_sums_t r;
        index_terms(jb, kind, wt, xt, sumx, &r);
        r.shift = a->lse_in ? (float)a->lse_in[i] : mx;
        r.sum = row_exp_avx512(xi, c, r.shift, e, bf16); /* before g (maybe x) is written */
        /* +inf max: x - max is NaN for the inf itself (-inf - inf = -inf elsewhere), so the sum
         * is NaN already; said explicitly, as the portable loop does */
        if (mx == INFINITY) r.sum = NAN;
        const float sc = finish_row(a, i, &r);
        if (!gi) continue;
        const float off = (float)(a->scale * (double)a->smoothing / (double)a->n_classes);
        store_gradient_avx512(gi, e, c, sc, off, bf16, jb->stream);
        if (jb->stream) _mm_sfence(); /* the streamed line holding g_t is written before g_t */
        if (kind != ROW_TARGET) continue;
        /* the target's entry: (e_t sc - off) - scale (1 - eps) w_t, rounded once (C = 1 with
         * smoothing gives exactly 0, as the portable loop) */
        const __m512 gt = _mm512_sub_ps(
            _mm512_fmsub_ps(_mm512_set1_ps(e[t]), _mm512_set1_ps(sc), _mm512_set1_ps(off)),
            _mm512_set1_ps(a->scale * (1.0f - a->smoothing) * wt));
        store16_masked(gi, t, 1, gt, bf16);
    }
}

AVX512 static void rows_float32_avx512(job_t *jb) { rows_avx512(jb, 0); }
AVX512 static void rows_bfloat16_avx512(job_t *jb) { rows_avx512(jb, 1); }
#endif

/* Take blocks of `step` rows from the shared counter until none are left: a thread that the OS
 * schedules late (the cores are shared) simply takes fewer blocks. */
static void *worker(void *arg) {
    job_t *jb = (job_t *)arg;
    const int64_t c = jb->a->c > 0 ? jb->a->c : 1;
    jb->scratch_row = (c + 15) / 16 * 16; /* z starts 64-byte aligned after e */
    const size_t bytes = (size_t)jb->scratch_row * (jb->general ? 2 : 1) * sizeof(float);
    jb->scratch = aligned_alloc(64, bytes);
    if (!jb->scratch) return NULL; /* takes no rows; the caller checks that all were done */
    for (;;) {
        const int64_t r0 = __atomic_fetch_add(jb->next_row, jb->step, __ATOMIC_RELAXED);
        if (r0 >= jb->a->n) break;
        jb->row_begin = r0;
        jb->row_end = r0 + jb->step < jb->a->n ? r0 + jb->step : jb->a->n;
        jb->run(jb);
    }
    free(jb->scratch);
    jb->scratch = NULL;
    return NULL;
}

#define MAX_THREADS 256

static int have_avx512(void) {
#if LOGLOSS_X86_INTRINSICS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* 1 when plain rows take the AVX-512 path on this CPU (for kernel_status), else 0 */
int logloss_ce_avx512(void) { return have_avx512(); }

/* The row loops for this call: AVX-512 for plain rows where the CPU has it (and FLAG_PORTABLE
 * is not set), the portable loops otherwise. */
static void (*pick_rows(const ce_args_t *a, int general))(job_t *) {
    const int bf16 = a->dtype == DTYPE_BFLOAT16;
#if LOGLOSS_X86_INTRINSICS
    if (!general && !(a->flags & FLAG_PORTABLE) && have_avx512())
        return bf16 ? rows_bfloat16_avx512 : rows_float32_avx512;
#endif
    return bf16 ? rows_portable_bfloat16 : rows_portable_float32;
}

/* Run `base` on up to a->nthreads threads (one per ~1M elements) sharing the rows.  Returns the
 * number of threads that could not be started, or -2 when rows were left undone because no
 * thread could allocate its scratch. */
static int run_threads(const job_t *base) {
    const ce_args_t *a = base->a;
    int nthreads = a->nthreads < 1 ? 1 : (a->nthreads > MAX_THREADS ? MAX_THREADS : a->nthreads);
    /* a thread costs ~50 us to start and, on a busy machine, up to a scheduler tick to join:
     * worth it only from ~1M elements (~1 ms of work) per thread */
    const int64_t max_useful = a->n * a->c / (1 << 20) + 1;
    if (nthreads > max_useful) nthreads = (int)max_useful;
    if (nthreads > a->n) nthreads = (int)(a->n > 0 ? a->n : 1);
    int64_t next_row = 0;
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int k = 0; k < nthreads; ++k) {
        jobs[k] = *base;
        jobs[k].next_row = &next_row;
    }
    int failed = 0;
    for (int k = 1; k < nthreads; ++k) {
        started[k] = pthread_create(&tids[k], NULL, worker, &jobs[k]) == 0;
        if (!started[k]) ++failed;
    }
    worker(&jobs[0]);
    for (int k = 1; k < nthreads; ++k)
        if (started[k]) pthread_join(tids[k], NULL);
    /* next_row only passes n once threads that had their scratch took every row */
    if (__atomic_load_n(&next_row, __ATOMIC_RELAXED) < a->n) return -2;
    return failed;
}

/* The loss of each row into loss[0..n), its lse into lse_out, and when g is not NULL the
 * gradient into g (see the formulas at the top and fused/rows.py).
 * flags: FLAG_PORTABLE never takes the AVX-512 path (tests run both); FLAG_STREAM lets the
 * AVX-512 path write the gradient with streaming stores (worth it when the gradient is much
 * larger than the caches and not read again at once); FLAG_SHARD reads a target outside
 * [0, c) as a class of another shard.
 * Returns the number of threads that could not be started (the others did their rows), -1 for
 * an unknown dtype (nothing computed), -2 when out of memory (rows left undone). */
int logloss_ce_rows(const ce_args_t *a) {
    if (a->dtype != DTYPE_FLOAT32 && a->dtype != DTYPE_BFLOAT16) return -1;
    job_t base;
    memset(&base, 0, sizeof base);
    base.a = a;
    base.general = a->probs || a->softcap > 0.0f || (a->weight && a->smoothing > 0.0f);
    base.w = a->weight;
    base.weight_sum = (double)a->c;
    if (a->weight) {
        base.weight_sum = 0.0;
        for (int64_t k = 0; k < a->c; ++k) base.weight_sum += a->weight[k];
    }
    float *ones = NULL;
    if (base.general && !a->weight) { /* general rows read weights: ones stand in for none */
        ones = malloc((size_t)(a->c > 0 ? a->c : 1) * sizeof(float));
        if (!ones) return -2;
        for (int64_t k = 0; k < a->c; ++k) ones[k] = 1.0f;
        base.w = ones;
    }
    base.step = a->c >= (1 << 18) ? 1 : (1 << 18) / (a->c > 0 ? a->c : 1); /* ~256k elements */
    base.run = pick_rows(a, base.general);
    base.stream = (a->flags & FLAG_STREAM) && a->g != a->x;
    const int status = run_threads(&base);
    free(ones);
    return status;
}
