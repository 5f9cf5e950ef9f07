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
 * bfloat16 rows are read and written as bfloat16 and computed in float32 (e goes to a float32
 * scratch row, so the gradient is rounded once).
 *
 * g may alias x (the gradient is then written over the logits).  Rows are split over POSIX
 * threads.  Two implementations of the float32 rows:
 * - rows_float32_avx512 (x86-64 CPUs with AVX-512F, chosen at run time): intrinsics, an exp of
 *   14 vector instructions, e kept in a per-thread scratch row, the next row prefetched into L2
 *   while this one is computed, and the gradient written with streaming stores when it is large
 *   (it is then never read from memory before being overwritten).  Memory-bound: ~1.1x a copy.
 * - rows_float32 (everything else): plain C loops with an inline Cephes-style polynomial exp
 *   that the compiler vectorises for the running CPU (target_clones: AVX-512, AVX2+FMA and
 *   baseline x86-64 versions, picked by the loader).
 * No -ffast-math: -inf and NaN logits keep their IEEE meaning, and the reductions are
 * reassociated only where `omp simd` (or the intrinsics) say so.
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

/* x86-64 with GCC or clang: an AVX-512 float32 path in intrinsics, picked at run time */
#if defined(__x86_64__) && defined(__GNUC__)
#define LOGLOSS_X86_INTRINSICS 1
#include <immintrin.h>
#else
#define LOGLOSS_X86_INTRINSICS 0
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
    void (*run)(struct job *);  /* rows_float32, rows_bfloat16 or their _avx512 versions */
    float *scratch;             /* one float32 row per thread (not rows_float32), 64-aligned */
    int stream;                 /* rows_float32_avx512: streaming stores for the gradient */
} job_t;

/* A target outside [0, c) that is not ignore_index (Python rejects these before calling, so this
 * is defence in depth): NaN loss and gradient row instead of a read outside the row. */
static void bad_row_float32(const job_t *jb, float *gi, int64_t i) {
    jb->loss[i] = NAN;
    if (gi)
        for (int64_t k = 0; k < jb->c; ++k) gi[k] = NAN;
}

/* float32 rows, portable.  Sweep 2 stores e = exp(x - max) in g, sweep 3 rescales it: one exp
 * per element.  Compute-bound (~1.3x a copy of the matrix on AVX-512 hardware, where
 * rows_float32_avx512 below is used instead). */
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
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) gi[k] = float_to_bf16(e[k] * sc - off);
        /* the target's entry rounded once, from float32 (C = 1 with smoothing gives 0) */
        gi[t] = float_to_bf16((e[t] * sc - off) - jb->scale * (1.0f - eps));
    }
}

static void rows_bfloat16(job_t *jb) { rows_bfloat16_scratch(jb, jb->scratch); }

#if LOGLOSS_X86_INTRINSICS
/* float32 and bfloat16 rows with AVX-512 intrinsics (chosen at run time on CPUs with AVX-512
 * F, BW and VL: every AVX-512 server CPU since 2017).
 *
 * The portable rows leave the vector code to the compiler, which spends ~2 cycles per element
 * on its exp (clamps, an int conversion and a shift, no FMA under -std=c11): the float32 kernel
 * was compute-bound at ~1.3x a plain copy.  Here exp is 13 vector instructions per 16 floats
 * (vscalefps builds p 2^k without integer tricks, a compare mask zeroes exp below ln FLT_MIN),
 * so the row sweeps run at about memory speed:
 *   1. max (and, with smoothing, sum) of x: the one read of the row from memory
 *   2. e = exp(x - max) into a per-thread float32 scratch row (in cache) and their sum
 *   3. g = e * scale / sum - scale eps / C, written with streaming stores when `stream` is set:
 *      the gradient's cache lines are then never read from memory before being overwritten
 *      (a normal store first fetches each line: one extra read of the matrix); then the
 *      target's entry.
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
    const int64_t c = jb->c;
    const float eps = jb->smoothing;
    const size_t size = bf16 ? 2 : 4;
    float *e = jb->scratch;
    for (int64_t i = jb->row_begin; i < jb->row_end; ++i) {
        const char *xi = (const char *)jb->x + (size_t)(i * jb->ldx) * size;
        char *gi = jb->g ? (char *)jb->g + (size_t)(i * jb->ldg) * size : NULL;
        const int64_t t = jb->target[i];
        if (t == jb->ignore_index) {
            jb->loss[i] = 0.0f;
            if (gi) memset(gi, 0, (size_t)c * size);
            continue;
        }
        if (t < 0 || t >= c) { /* validated in Python; never read outside the row */
            jb->loss[i] = NAN;
            if (gi) /* bfloat16 quiet NaN, or float32 NaN */
                for (int64_t k = 0; k < c; k += 16)
                    store16_masked(gi, k, tail_mask(c - k), _mm512_set1_ps(NAN), bf16);
            continue;
        }
        float mx;
        double sumx;
        row_max_sum_avx512(xi, c, eps > 0.0f, bf16, &mx, &sumx);
        const float xt = _mm512_cvtss_f32(load16_masked(xi, t, 1, _mm512_setzero_ps(), bf16));
        double sum = row_exp_avx512(xi, c, mx, e, bf16); /* before g (maybe x) is written */
        /* +inf max: x - max is NaN for the inf itself (-inf - inf = -inf elsewhere), so the sum
         * is NaN already; said explicitly, as the portable loop does */
        if (mx == INFINITY) sum = NAN;
        const double lse = mx + log(sum);
        jb->loss[i] = (float)(lse - (1.0 - eps) * xt - (eps > 0.0f ? (double)eps / c * sumx : 0.0));
        if (!gi) continue;
        const float sc = (float)(jb->scale / sum), off = jb->scale * eps / (float)c;
        store_gradient_avx512(gi, e, c, sc, off, bf16, jb->stream);
        if (jb->stream) _mm_sfence(); /* the streamed line holding g_t is written before g_t */
        /* the target's entry: (e_t sc - off) - scale (1 - eps), rounded once (C = 1 with
         * smoothing gives exactly 0, as the portable loop) */
        const __m512 gt = _mm512_sub_ps(
            _mm512_fmsub_ps(_mm512_set1_ps(e[t]), _mm512_set1_ps(sc), _mm512_set1_ps(off)),
            _mm512_set1_ps(jb->scale * (1.0f - eps)));
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
    if (jb->run != rows_float32) {
        const size_t bytes = ((size_t)(jb->c > 0 ? jb->c : 1) * sizeof(float) + 63) / 64 * 64;
        jb->scratch = aligned_alloc(64, bytes);
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

enum { FLAG_PORTABLE = 1, FLAG_STREAM = 2 };

static int have_avx512(void) {
#if LOGLOSS_X86_INTRINSICS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* 1 when rows take the AVX-512 path on this CPU (for kernel_status), else 0 */
int logloss_ce_avx512(void) { return have_avx512(); }

/* The loss of each row into loss[0..n) and, when g is not NULL, the gradient into g.
 * dtype: 0 float32, 1 bfloat16 (x and g alike).  Up to nthreads threads share the rows.
 * flags: FLAG_PORTABLE never takes the AVX-512 path (tests run both); FLAG_STREAM lets the
 * AVX-512 path write the gradient with streaming stores (worth it when the gradient is much
 * larger than the caches and not read again at once).
 * Returns the number of threads that could not be started (the others did their rows), -1 for
 * an unknown dtype (nothing computed), -2 when rows were left undone because no thread could
 * allocate its scratch row.  A thread without scratch takes no rows, so when another thread
 * got one and did all the rows, that is not an error. */
int logloss_ce_forward(const void *x, int64_t ldx, void *g, int64_t ldg, const int64_t *target,
                       int64_t n, int64_t c, int64_t ignore_index, float smoothing, float scale,
                       float *loss, int dtype, int nthreads, int flags) {
    void (*run)(job_t *);
    if (dtype == DTYPE_FLOAT32)
        run = rows_float32;
    else if (dtype == DTYPE_BFLOAT16)
        run = rows_bfloat16;
    else
        return -1;
#if LOGLOSS_X86_INTRINSICS
    if (!(flags & FLAG_PORTABLE) && have_avx512())
        run = dtype == DTYPE_FLOAT32 ? rows_float32_avx512 : rows_bfloat16_avx512;
#endif
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    /* a thread costs ~50 us to start and, on a busy machine, up to a scheduler tick to join:
     * worth it only from ~1M elements (~1 ms of work) per thread */
    const int64_t max_useful = n * c / (1 << 20) + 1;
    if (nthreads > max_useful) nthreads = (int)max_useful;
    if (nthreads > n) nthreads = (int)(n > 0 ? n : 1);
    int64_t next_row = 0;
    const int64_t step = c >= (1 << 18) ? 1 : (1 << 18) / (c > 0 ? c : 1); /* ~256k elements */
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int k = 0; k < nthreads; ++k) {
        job_t jb = {x, ldx, g, ldg, target, n, c, ignore_index, smoothing, scale, loss, 0, 0,
                    &next_row, step, run, NULL, (flags & FLAG_STREAM) && g != x};
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
