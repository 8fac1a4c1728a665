// qmlnb._shots_openmp: the shot-sampled estimate of a Gram matrix, the same numbers as the numba sampler
// of qmlnb/kernels/shots.py, bit for bit, at a few nanoseconds per entry.
//
// Entry (i, j) with exact value k becomes g * m / n + h, m ~ Binomial(n, P), P = a k + b clamped to [0, 1]
// (shots.py's docstring has the model, the counter-based keys and the two exact algorithms: inversion when
// n q < 10, q = min(P, 1 - P), else Hormann's BTRS).
//
// Bit for bit.  Every entry's arithmetic is a fixed sequence of IEEE operations (+ - * / sqrt floor and
// int64 -> double conversions, all exactly rounded) on `v8d`, eight doubles (GCC's vector extension:
// AVX-512 where the build has it, narrower vectors elsewhere), and, for the rare redraw past the CDF search's
// bound, on one double (the shared steps are templates over both).  It is the numba code's sequence,
// operation for operation, compiled without FMA contraction or fast-math (setup.py: -ffp-contract=off), so
// an entry gets the same bits in any lane, here or in numba.  The only library calls are exp and log1p for
// P(X = 0) above 2^26 shots, one entry at a time, the C library's as in numba.
//
// Speed.  A chunk of a row (at most CHUNK entries) is worked on eight entries at a time.  A group whose
// entries all take inversion (or need no draw) is settled as it is read: P(X = 0) and the first HEAD steps of
// the CDF search in registers, and only entries still searching go to a list.  The other groups' entries are
// split into two packed lists (inversion, BTRS) and their groups written again at the end.  The inversion
// list takes the same first steps in registers; the few entries still searching then go on one step per pass
// over them all.  BTRS draws each round's candidates in registers and Hormann's squeeze settles most; those it
// misses are packed for two cheap squeezes from bounds of the binomial's ratio to its mode (no log), and only
// the few they leave take the full test with its logs.  A symmetric Gram is estimated in EDGE x EDGE blocks
// on and above the diagonal, each copied to its mirror block while in cache by 8 x 8 transposes in registers
// (its rows fetched ahead; the mirror's too, or streamed past the caches); blocks go to OpenMP threads one by
// one.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>
#include <algorithm>

#include "mirror.h"  // immintrin.h too, where the build has AVX-512

namespace py = pybind11;

namespace {

constexpr uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t M1 = 0xBF58476D1CE4E5B9ULL;
constexpr uint64_t M2 = 0x94D049BB133111EBULL;
constexpr double TO_UNIT = 0x1p-53;
constexpr uint64_t MANTISSA = (1ULL << 52) - 1, ONE = 1023ULL << 52;
constexpr int64_t POW_LIMIT = int64_t(1) << 26;  // shots.POW_LIMIT
constexpr int CHUNK = 128;                       // shots.CHUNK
constexpr int EDGE = 128;                        // shots.BLOCK
constexpr int W = 8;                             // lanes of a vector
constexpr int HEAD = 10;                         // steps of the CDF search done in registers
const double SQRT2 = std::sqrt(2.0);
// fdlibm e_log.c: ln 2 in two parts and the minimax coefficients of log(1 + f) on |s| <= 0.1716
constexpr double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
constexpr double LG1 = 6.666666666666735130e-01, LG2 = 3.999999999940941908e-01, LG3 = 2.857142874366239149e-01,
                 LG4 = 2.222219843214978396e-01, LG5 = 1.818357216161805012e-01, LG6 = 1.531383769920937332e-01,
                 LG7 = 1.479819860511658591e-01;
constexpr double C12 = 1.0 / 12, C360 = 1.0 / 360, C1260 = 1.0 / 1260;
constexpr double SQUEEZE_SAFETY = 1.0 - 1e-9;  // shots.SQUEEZE_SAFETY
// log(k!) - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2], exact for k < 10 (Hormann 1993, Table 1)
constexpr double FC[10] = {0.08106146679532726, 0.04134069595540929, 0.02767792568499834, 0.02079067210376509,
                           0.01664469118982119, 0.01387612882307075, 0.01189670994589177, 0.01041126526197209,
                           0.009255462182712733, 0.008330563433362871};

typedef double v8d __attribute__((vector_size(8 * sizeof(double))));
typedef uint64_t v8u __attribute__((vector_size(8 * sizeof(uint64_t))));
typedef int64_t v8l __attribute__((vector_size(8 * sizeof(int64_t))));

// ---- eight lanes: what GCC's vector operators do not give (one lane takes the C library's or a cast) --------
inline v8d floor_(v8d x) {
#if defined(__AVX512F__)
    return (v8d)_mm512_mask_roundscale_pd((__m512d)x, 0xFF, (__m512d)x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
#else
    for (int l = 0; l < W; ++l) x[l] = std::floor(x[l]);
    return x;
#endif
}
inline v8d sqrt_(v8d x) {
#if defined(__AVX512F__)
    return (v8d)_mm512_mask_sqrt_pd((__m512d)x, 0xFF, (__m512d)x);
#else
    for (int l = 0; l < W; ++l) x[l] = std::sqrt(x[l]);
    return x;
#endif
}
inline v8d abs_(v8d x) { return (v8d)((v8u)x & ~(1ULL << 63)); }
inline double to_double(int64_t x) { return double(x); }
inline v8d to_double(v8l x) { return __builtin_convertvector(x, v8d); }
inline int64_t as_signed(uint64_t x) { return int64_t(x); }
inline v8l as_signed(v8u x) { return (v8l)x; }
// a double or eight of them from one value (GCC's vector ?: then takes a mask of all-ones / zero lanes)
template <class V> inline V splat(double x) { return V{} + x; }

// ---- the arithmetic of one entry, shots.py's numba functions operation for operation ----------------------
template <class U> inline U mix(U z) {  // splitmix64's finaliser
    z = (z ^ (z >> 30)) * M1;
    z = (z ^ (z >> 27)) * M2;
    return z ^ (z >> 31);
}
template <class U> inline auto to_unit(U z) { return to_double(as_signed(z >> 11)) * TO_UNIT; }
template <class U> inline auto uniform(U key, uint64_t t) { return to_unit(mix(key + t * GOLDEN)); }
template <class V> inline V pmax(V a, V b) { return b > a ? b : a; }  // Python's max(a, b)
template <class V> inline V pmin(V a, V b) { return b < a ? b : a; }  // Python's min(a, b)

v8d log_(v8d x) {  // fdlibm's e_log.c for x >= 0 normal or 0, in plain arithmetic
    typedef v8d V;
    v8u bits = (v8u)x;
    V e = to_double(as_signed(bits >> 52) - 1023);
    V m = (v8d)((bits & MANTISSA) | ONE);  // [1, 2)
    auto big = m > SQRT2;
    m = big ? 0.5 * m : m;
    e = big ? e + 1.0 : e;
    V f = m - 1.0;
    V s = f / (2.0 + f);
    V z = s * s;
    V w = z * z;
    V R = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6));
    V hfsq = 0.5 * f * f;
    V y = e * LN2_HI - ((hfsq - (s * (hfsq + R) + e * LN2_LO)) - f);
    return x > 0.0 ? y : splat<V>(-std::numeric_limits<double>::infinity());
}

template <class V> inline V stirling_series(V inv) {
    V inv2 = inv * inv;
    return (C12 - (C360 - C1260 * inv2) * inv2) * inv;
}
template <class V> inline V stirling_tail(V k, V inv) {
    V value = stirling_series(inv);
    for (int i = 9; i >= 0; --i) value = k <= double(i) ? splat<V>(FC[i]) : value;
    return value;
}
template <class V> inline V stirling_pair(V k, double nf) {
    V k1 = k + 1.0, k2 = nf - k + 1.0;
    V d = 1.0 / (k1 * k2);
    return stirling_tail(k, k2 * d) + stirling_tail(nf - k, k1 * d);
}
template <class V> inline V stirling_pair_mode(V m, double nf) {
    V k1 = m + 1.0, k2 = nf - m + 1.0;
    V d = 1.0 / (k1 * k2);
    return stirling_series(k2 * d) + stirling_series(k1 * d);
}

// bounds (lo, hi) of log f(k) / f(m) (shots.log_ratio_bounds), and x^64 (shots.pow64)
inline void log_ratio_bounds(v8d q, v8d k, v8d m, v8d nm, v8d nk, v8d oq, v8d& lo, v8d& hi) {
    v8l above = k >= m;
    v8d num = above ? (m + 1.0) * oq : nm * q;
    v8d den = above ? (nm - 1.0) * q : m * oq;
    v8d x1 = above ? nk : k + 1.0;
    v8d x2 = above ? m + 1.0 : nm;
    v8d y1 = above ? nm - 1.0 : m;
    v8d y2 = above ? k : nk - 1.0;
    v8d j = abs_(k - m);
    v8d jj = j * (j - 1.0) * 0.5;
    v8d d = den - num;
    lo = j * (d / den) - (x1 + x2) / (x1 * x2) * jj;
    hi = j * (d / num) - (y1 + y2) / (y1 * y2) * jj;
}
inline v8d pow64(v8d x) {
    for (int i = 0; i < 6; ++i) x = x * x;
    return x;
}

// (1 - q)^n from power = (rounded 1 - q)^n: the first-order correction for that rounding (exact below n = 2^26,
// where the second-order term is under 1e-16); inv1q = 1 / (1 - q) (shots.zero_probability_correction)
template <class V> inline V zero_probability_correction(V power, V q, double nf, V inv1q) {
    V base = 1.0 - q;
    V low = (1.0 - base) - q;  // base + low == 1 - q exactly (Fast2Sum, q <= 1/2)
    return power + power * (nf * low * inv1q);
}
// the count past which the CDF search gives up (rounding in its tail) and draws again: above the mean by far
// more than 10 standard deviations (shots.inversion_bound)
template <class V> inline V inversion_bound(V q, double nf) { return pmin(splat<V>(nf), nf * q * 11.0 + 10.0); }

template <class V> V zero_probability(int64_t n, V q) {  // (1 - q)^n, shots.zero_probability
    const double nf = double(n);
    if (n > POW_LIMIT) {  // exp and log1p of the C library, one lane at a time, as numba calls them
        V out = q;
        double* o = reinterpret_cast<double*>(&out);
        for (size_t l = 0; l < sizeof(V) / sizeof(double); ++l) o[l] = std::exp(nf * std::log1p(-o[l]));
        return out;
    }
    V base = 1.0 - q;
    V power = splat<V>(1.0);
    for (int64_t m = n; m;) {
        if (m & 1) power = power * base;
        m >>= 1;
        if (m) base = base * base;
    }
    return zero_probability_correction(power, q, nf, 1.0 / (1.0 - q));
}

inline v8d load8(const double* p) {
    v8d v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline v8u load8(const uint64_t* p) {
    v8u v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
inline void store8(double* p, v8d v) { std::memcpy(p, &v, sizeof v); }
inline void store8(uint64_t* p, v8u v) { std::memcpy(p, &v, sizeof v); }

double inversion_from(int64_t n, double q, uint64_t key, double q0, uint64_t t) {
    // Binomial(n, q), n q < 10, by inversion with the t-th and later uniforms (shots.inversion_from)
    const double nf = double(n);
    const double r = q * (1.0 / (1.0 - q));
    const double g = r * (nf + 1.0);
    const double bound = inversion_bound(q, nf);
    while (true) {
        const double u = uniform(key, t);
        t += 1;
        double cdf = q0, px = q0;
        int64_t x = 0;
        while (u > cdf) {
            x += 1;
            if (double(x) > bound) break;
            px *= g * (1.0 / double(x)) - r;
            cdf += px;
        }
        if (double(x) <= bound) return double(x);
    }
}

// ---- lane masks, compress and scatter: AVX-512 where the build has it, else lane loops to the same effect ----
typedef unsigned Mask;  // one bit per lane
typedef float v8f __attribute__((vector_size(8 * sizeof(float))));

inline Mask bits(v8l m) {
#if defined(__AVX512DQ__)
    return _mm512_movepi64_mask((__m512i)m);
#else
    Mask out = 0;
    for (int l = 0; l < W; ++l) out |= Mask(m[l] != 0) << l;
    return out;
#endif
}
inline Mask lanes_below(int count) { return count >= W ? 0xFFu : (1u << count) - 1; }
inline int popcount(Mask m) { return __builtin_popcount(m); }
// the lanes of v that m selects, in order, at dst[0..popcount(m)) (dst has room for W values); bits moved as
// they are (a double through its uint64 bits)
inline void compress(uint64_t* dst, Mask m, v8u v) {
#if defined(__AVX512F__)
    _mm512_storeu_si512(dst, _mm512_maskz_compress_epi64(__mmask8(m), (__m512i)v));
#else
    for (int l = 0, k = 0; l < W; ++l)
        if (m >> l & 1) dst[k++] = v[l];
#endif
}
inline void compress(double* dst, Mask m, v8d v) { compress(reinterpret_cast<uint64_t*>(dst), m, (v8u)v); }
// count[index[l]] = x[l] for the lanes m selects
inline void scatter(double* count, Mask m, v8u index, v8d x) {
#if defined(__AVX512F__)
    _mm512_mask_i64scatter_pd(count, __mmask8(m), (__m512i)index, (__m512d)x, 8);
#else
    for (int l = 0; l < W; ++l)
        if (m >> l & 1) count[index[l]] = x[l];
#endif
}
inline v8u iota(uint64_t start) { return v8u{0, 1, 2, 3, 4, 5, 6, 7} + start; }
inline v8l lanes_of(Mask m) { return (v8l)((v8u{1, 2, 4, 8, 16, 32, 64, 128} & m) != 0); }  // all-ones lanes

// ---- a chunk of a row ---------------------------------------------------------------------------------------
struct Params {
    int64_t n;
    double a, b, g, h;
};

constexpr int ROOM = CHUNK + W;  // a list's length: a chunk's entries, plus a vector of room for compressed stores

// A packed list of entries to draw: q, key, index in the chunk.
struct Entries {
    double q[ROOM];
    uint64_t key[ROOM], idx[ROOM];
};
// The lanes m of a group onto list e at position at; returns its new length.
inline int push(Entries& e, int at, Mask m, v8d q, v8u key, v8u idx) {
    compress(e.q + at, m, q);
    compress(e.key + at, m, key);
    compress(e.idx + at, m, idx);
    return at + popcount(m);
}

// One thread's work arrays: CHUNK entries each, plus a vector of room for the compressed stores.
struct Work {
    static constexpr int S = ROOM;
    double P[S], count[S], q[S];  // per entry of the chunk (q and key for the rare redraw of lost_ones)
    uint64_t key[S];
    // entries to invert (n q < 10, q > 0) from groups that also hold BTRS entries
    Entries inv;
    // entries still searching their CDF after its first HEAD steps: its state, index in the chunk
    double su[S], sF[S], spx[S], sG[S], sr[S], sbound[S], sX[S];
    uint64_t sidx[S];
    // entries for BTRS (n q >= 10), pending in a round
    Entries btrs;
    // the candidates of a round that missed the squeeze, for the full test, with their entries' constants
    double tk[S], tus[S], tv[S], tq[S], tspq[S], tb[S], ta[S];
    uint64_t tkey[S], tidx[S];
};

// The entries of the lanes `lost` (chunk positions idx) that passed their search's bound (rounding in the CDF's
// tail): drawn again, alone, from their next uniforms (shots.inversion_from).
inline void lost_ones(Mask lost, v8u idx, int64_t n, Work& w) {
    for (; lost; lost &= lost - 1) {
        const uint64_t j = idx[__builtin_ctz(lost)];
        w.count[j] = inversion_from(n, w.q[j], w.key[j], zero_probability(n, w.q[j]), 1);
    }
}

// Packs the lanes `keep` of a group of entries of the CDF search into the search's list at position np; returns
// the list's new length.
inline int pack_searching(int np, Mask keep, v8d u, v8d F, v8d px, v8d G, v8d r, v8d bound, v8d X, v8u idx,
                          Work& w) {
    compress(w.su + np, keep, u);
    compress(w.sF + np, keep, F);
    compress(w.spx + np, keep, px);
    compress(w.sG + np, keep, G);
    compress(w.sr + np, keep, r);
    compress(w.sbound + np, keep, bound);
    compress(w.sX + np, keep, X);
    compress(w.sidx + np, keep, idx);
    return np + popcount(keep);
}

// A group of entries of the CDF search before step `next`: the counts of those done written, those past their
// bound drawn again, those going on packed into the search's list at position np; returns the list's new length.
inline int settle(int np, Mask valid, double next, v8d u, v8d F, v8d px, v8d G, v8d r, v8d bound, v8d X, v8u idx,
                  int64_t n, Work& w) {
    const Mask searching = bits(u > F) & valid;
    const Mask keep = searching & bits(next <= bound);
    scatter(w.count, valid & ~searching, idx, X);
    lost_ones(searching & ~keep, idx, n, w);
    return pack_searching(np, keep, u, F, px, G, r, bound, X, idx, w);
}

// Inversion for the lanes `small` of a group (chunk positions idx): P(X = 0) by powering and the first HEAD steps
// of the CDF search in registers (most entries of small means end there; the loop ends early once every lane
// has); returns the counts, which are final for the lanes not in `keep`; the lanes `keep` are still searching
// and packed into the search's list (np).
//
// With n >= HEAD every step x <= HEAD is within every entry's bound (bound >= min(n, 10)), and each step's
// probability is >= 0 (px is multiplied by r ((n + 1) / x - 1) > 0), so the CDF never decreases: an entry is
// active at step x exactly when u > F before it, and updating F and px in every lane, active or not, leaves the
// counts and the searching lanes' state as they are in shots.inversion_from, while F's chain no longer waits on
// the comparison (one multiply and one add a step).
inline v8d inversion_head(Mask small, v8d q, v8u key, v8u idx, int64_t n, int& np, Mask& keep, Work& w) {
    const double nf = double(n);
    const v8d u = to_unit(key);
    v8d F = zero_probability(n, q), px = F, X = splat<v8d>(0.0);
    const v8d r = q * (1.0 / (1.0 - q)), G = r * (nf + 1.0), bound = inversion_bound(q, nf);
    const v8l lanes = lanes_of(small);
    if (n >= HEAD) {
        for (int x = 1; x <= HEAD; ++x) {
            const v8l active = (u > F) & lanes;
            if (!bits(active)) break;  // no lane active now: none is later
            X = active ? splat<v8d>(double(x)) : X;
            px = px * (G * (1.0 / double(x)) - r);
            F = F + px;
        }
    } else {
        for (int x = 1; x <= HEAD; ++x) {  // a step changes nothing once no lane is active: stopping early is exact
            const double xd = double(x);
            const v8l active = (u > F) & (xd <= bound) & lanes;
            if (!bits(active)) break;
            px = active ? px * (G * (1.0 / xd) - r) : px;
            F = active ? F + px : F;
            X = active ? splat<v8d>(xd) : X;
        }
    }
    const Mask searching = bits(u > F) & small;
    keep = searching & bits(HEAD + 1.0 <= bound);
    if (!searching) return X;
    for (Mask lost = searching & ~keep; lost; lost &= lost - 1) {  // past the bound: drawn again, alone
        const int l = __builtin_ctz(lost);
        X[l] = inversion_from(n, q[l], key[l], zero_probability(n, q[l]), 1);
    }
    np = pack_searching(np, keep, u, F, px, G, r, bound, X, idx, w);
    return X;
}

// The inversion entries still searching after inversion_head (np of them, listed in w.s*): one step per pass over
// them all (entries side by side: no latency chain from one step of an entry to the next, no lane waiting for
// another), the list repacked when fewer than half of it go on; their counts into w.count.
void inversion_rest(int np, int64_t n, Work& w) {
    for (int64_t x = HEAD + 1; np > 0; ++x) {
        const double xd = double(x), inv = 1.0 / xd;
        int going_on = 0;
        for (int s = 0; s < np; s += W) {
            const Mask valid = lanes_below(np - s);
            v8d u = load8(w.su + s), F = load8(w.sF + s), px = load8(w.spx + s), bound = load8(w.sbound + s);
            v8l active = (u > F) & (xd <= bound);
            px = active ? px * (load8(w.sG + s) * inv - load8(w.sr + s)) : px;
            F = active ? F + px : F;
            store8(w.spx + s, px);
            store8(w.sF + s, F);
            store8(w.sX + s, active ? splat<v8d>(xd) : load8(w.sX + s));
            going_on += popcount(bits((u > F) & (xd + 1.0 <= bound)) & valid);
        }
        if (going_on > 0 && 2 * going_on >= np) continue;
        int kept = 0;  // repack; the entries past their bound (rounding in the CDF's tail) drawn again alone
        for (int s = 0; s < np; s += W) {
            kept = settle(kept, lanes_below(np - s), xd + 1.0, load8(w.su + s), load8(w.sF + s), load8(w.spx + s),
                          load8(w.sG + s), load8(w.sr + s), load8(w.sbound + s), load8(w.sX + s), load8(w.sidx + s),
                          n, w);
        }
        np = kept;
    }
}

// The lanes m of a group of candidates onto the acceptance test's list at nt (w.t*); returns its new length.
inline int list_for_test(int nt, Mask m, v8d k, v8d us, v8d v, v8d q, v8d spq, v8d b, v8d a, v8u key, v8u idx,
                         Work& w) {
    compress(w.tk + nt, m, k);
    compress(w.tus + nt, m, us);
    compress(w.tv + nt, m, v);
    compress(w.tq + nt, m, q);
    compress(w.tspq + nt, m, spq);
    compress(w.tb + nt, m, b);
    compress(w.ta + nt, m, a);
    compress(w.tkey + nt, m, key);
    compress(w.tidx + nt, m, idx);
    return nt + popcount(m);
}

// Eight candidates of the test's list from position r, with their entries' constants (shots.btrs_test).
struct TestGroup {
    v8d k, us, v, q, spq, b, a, alpha, oq, m, nm, nk, us2;
    v8u key, idx;
    TestGroup(const Work& w, int r, double nf)
        : k(load8(w.tk + r)), us(load8(w.tus + r)), v(load8(w.tv + r)), q(load8(w.tq + r)), spq(load8(w.tspq + r)),
          b(load8(w.tb + r)), a(load8(w.ta + r)), key(load8(w.tkey + r)), idx(load8(w.tidx + r)) {
        alpha = (2.83 + 5.1 / b) * spq;
        oq = 1.0 - q;
        m = floor_((nf + 1.0) * q);
        nm = nf - m + 1.0;
        nk = nf - k + 1.0;
        us2 = us * us;
    }
};

// One BTRS round for the lanes `valid` of a group (chunk positions idx) from uniforms t and t + 1: the candidate
// k, and the lanes the squeeze accepts (returned); those it misses go to the full test's list (nt), those outside
// [0, n] to the pending list (w.btrs, packed in place: pending never passes the group being read).
inline Mask btrs_candidates(Mask valid, v8d q, v8u key, v8u idx, uint64_t t, double nf, v8d& k, int& nt,
                            int& pending, Work& w) {
    v8d spq = sqrt_(nf * q * (1.0 - q));
    v8d b = 1.15 + 2.53 * spq;
    v8d a = -0.0873 + 0.0248 * b + 0.01 * q;
    v8d u = (t == 0 ? to_unit(key) : uniform(key, t)) - 0.5;
    v8d v = uniform(key, t + 1);
    v8d us = 0.5 - abs_(u);
    k = floor_((2.0 * a / us + b) * u + (nf * q + 0.5));
    v8l inside = (k >= 0.0) & (k <= nf);
    const Mask accept = bits(inside & (us >= 0.07) & (v * b <= 0.92 * b - 4.2)) & valid;  // v <= 0.92 - 4.2 / b
    const Mask test = bits(inside) & valid & ~accept;
    const Mask again = valid & ~bits(inside);
    if (test) nt = list_for_test(nt, test, k, us, v, q, spq, b, a, key, idx, w);
    if (again) pending = push(w.btrs, pending, again, q, key, idx);
    return accept;
}

// The counts of the nl BTRS entries listed in w.btrs into w.count, in rounds: every pending entry's candidate from
// uniforms t and t + 1, the squeeze settling most; the full test (Hormann's acceptance test, shots.btrs_test) of
// those it misses, packed together; the rejected ones (outside [0, n], or by the test) pending in the next round.
void draw_btrs(int nl, int64_t n, Work& w) {
    const double nf = double(n);
    for (uint64_t t = 0; nl > 0; t += 2) {
        int nt = 0, pending = 0;
        for (int s = 0; s < nl; s += W) {
            v8d k;
            const v8u idx = load8(w.btrs.idx + s);  // before the pending list is packed over it
            const Mask accept = btrs_candidates(lanes_below(nl - s), load8(w.btrs.q + s), load8(w.btrs.key + s), idx,
                                                t, nf, k, nt, pending, w);
            scatter(w.count, accept, idx, k);
        }
        int nfull = 0;  // the candidates the squeezes leave, packed in place over the test's list
        for (int r = 0; r < nt; r += W) {  // the acceptance test (shots.btrs_test): its squeezes
            const Mask valid = lanes_below(nt - r);
            const TestGroup c(w, r, nf);
            const v8d lhs = c.v * c.alpha * c.us2, den = c.a + c.b * c.us2;
            v8d lo, hi;
            log_ratio_bounds(c.q, c.k, c.m, c.nm, c.nk, c.oq, lo, hi);
            const Mask accept =
                bits(lhs <= pow64(pmax(1.0 + lo * 0.015625, splat<v8d>(0.0))) * SQUEEZE_SAFETY * den) & valid;
            const Mask reject =
                bits(lhs * pow64(pmax(1.0 - hi * 0.015625, splat<v8d>(0.0))) * SQUEEZE_SAFETY > den) & valid & ~accept;
            const Mask left = valid & ~accept & ~reject;
            scatter(w.count, accept, c.idx, c.k);
            pending = push(w.btrs, pending, reject, c.q, c.key, c.idx);
            if (left) nfull = list_for_test(nfull, left, c.k, c.us, c.v, c.q, c.spq, c.b, c.a, c.key, c.idx, w);
        }
        for (int r = 0; r < nfull; r += W) {  // ... and the logs for the rest
            const Mask valid = lanes_below(nfull - r);
            const TestGroup c(w, r, nf);
            v8d h = (c.m + 0.5) * log_((c.m + 1.0) * c.oq / (c.q * c.nm)) + stirling_pair_mode(c.m, nf);
            const Mask accept = bits(log_(c.v * c.alpha * c.us2 / (c.a + c.b * c.us2)) <=
                                     h + (nf + 1.0) * log_(c.nm / c.nk) +
                                         (c.k + 0.5) * log_(c.nk * c.q / (c.oq * (c.k + 1.0))) -
                                         stirling_pair(c.k, nf)) & valid;
            scatter(w.count, accept, c.idx, c.k);
            pending = push(w.btrs, pending, valid & ~accept, c.q, c.key, c.idx);
        }
        nl = pending;
    }
}

// Eight values of a row segment (fewer at its end: the last one repeated), as they are stored.
template <class V, class T> inline V load_padded(const T* p, int count) {
    V v;
    if (count >= W) {
        std::memcpy(&v, p, sizeof v);
    } else {
        for (int l = 0; l < W; ++l) v[l] = p[l < count ? l : count - 1];
    }
    return v;
}
// ... and exact values as doubles
inline v8d load_values(const float* p, int count) { return __builtin_convertvector(load_padded<v8f>(p, count), v8d); }
inline v8d load_values(const double* p, int count) { return load_padded<v8d>(p, count); }
inline void store_values(float* p, v8d v, int count) {
    v8f f = __builtin_convertvector(v, v8f);
    std::memcpy(p, &f, sizeof(float) * (count >= W ? W : count));
}
inline void store_values(double* p, v8d v, int count) { std::memcpy(p, &v, sizeof(double) * (count >= W ? W : count)); }

// The estimates g m / n + h of eight entries from P and their counts (n = 0: the device's expected value
// g P + h); NaN where P is NaN
inline v8d estimates(v8d p, v8d c, const Params& pr) {
    const double nf = double(pr.n);
    v8d m = p > 0.5 ? nf - c : c;
    v8d e = pr.n == 0 ? pr.g * p + pr.h : pr.g * (m / nf) + pr.h;
    return p == p ? e : p;
}

// Estimates vals[0..L) in place (row id ri, its id mix rmix; column ids cols, their id mixes cmix); an exact
// value that is NaN gives NaN.  A group of eight entries that all take inversion (or need no draw) is settled in
// registers as it is read, but for those still searching after HEAD steps; the other groups' entries go to two
// packed lists, one per algorithm.  The groups with entries left to the lists are written again at the end.
template <class T>
void estimate_run(T* vals, int L, uint64_t ri, uint64_t rmix, const int64_t* cols, const uint64_t* cmix,
                  const Params& pr, Work& w) {
    const double nf = double(pr.n);
    const v8u ri8 = v8u{} + ri, rmix8 = v8u{} + rmix;
    int np = 0, ns = 0, nl = 0;  // the lengths of the CDF search's list, the inversion list and the BTRS list
    uint32_t redo = 0;           // bit j / W: the group at j has entries left to the lists
    static_assert(CHUNK / W <= 32, "redo holds one bit per group of a chunk");
    for (int j = 0; j < L; j += W) {
        const int count = L - j;
        v8d p = pmin(pmax(pr.a * load_values(vals + j, count) + pr.b, splat<v8d>(0.0)), splat<v8d>(1.0));
        if (pr.n == 0) {
            store_values(vals + j, estimates(p, p, pr), count);
            continue;
        }
        v8u cj = load_padded<v8u>(reinterpret_cast<const uint64_t*>(cols) + j, count);
        v8l le = ri8 <= cj;  // mix(mix(seed ^ lo * golden) + hi * M1), the inner mix looked up
        v8u key = mix((le ? rmix8 : load_padded<v8u>(cmix + j, count)) + (le ? cj : ri8) * M1);
        v8d q = pmin(p, 1.0 - p);
        const Mask valid = lanes_below(count);
        // q = 0 (P = 0 or 1) is settled (count 0 or n); NaN goes to neither algorithm
        const Mask small = bits((q * nf < 10.0) & (q > 0.0)) & valid, large = bits(q * nf >= 10.0) & valid;
        const v8u idx = iota(j);
        v8d X = splat<v8d>(0.0);
        bool left = false;
        if (!large) {
            Mask keep = 0;
            if (small) X = inversion_head(small, q, key, idx, pr.n, np, keep, w);
            left = keep != 0;
        } else {
            ns = push(w.inv, ns, small, q, key, idx);
            nl = push(w.btrs, nl, large, q, key, idx);
            left = true;
        }
        if (!left) {
            store_values(vals + j, estimates(p, X, pr), count);
            continue;
        }
        store8(w.P + j, p);
        store8(w.q + j, q);
        store8(w.key + j, key);
        store8(w.count + j, X);
        redo |= 1u << (j / W);
    }
    if (!redo) return;
    for (int s = 0; s < ns; s += W) {  // the inversion list: its first HEAD steps, eight entries at a time
        const Mask valid = lanes_below(ns - s);
        const v8u idx = load8(w.inv.idx + s);
        Mask keep = 0;
        const v8d X = inversion_head(valid, load8(w.inv.q + s), load8(w.inv.key + s), idx, pr.n, np, keep, w);
        scatter(w.count, valid & ~keep, idx, X);
    }
    inversion_rest(np, pr.n, w);
    draw_btrs(nl, pr.n, w);
    for (; redo; redo &= redo - 1) {
        const int j = __builtin_ctz(redo) * W;
        store_values(vals + j, estimates(load8(w.P + j), load8(w.count + j), pr), L - j);
    }
}

void id_mixes(const int64_t* ids, int64_t N, uint64_t seed_key, uint64_t* out) {
    for (int64_t i = 0; i < N; ++i) out[i] = mix(seed_key ^ (uint64_t(ids[i]) * GOLDEN));
}

template <class T>
void estimate_block(T* K, int64_t R, int64_t C, const int64_t* rows, const int64_t* cols, uint64_t seed_key,
                    const Params& pr, int n_threads) {
    std::vector<uint64_t> rmix(R), cmix(C);
    id_mixes(rows, R, seed_key, rmix.data());
    id_mixes(cols, C, seed_key, cmix.data());
#pragma omp parallel num_threads(n_threads)
    {
        Work w;
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < R; ++i)
            for (int64_t j0 = 0; j0 < C; j0 += CHUNK)
                estimate_run(K + i * C + j0, int(std::min<int64_t>(CHUNK, C - j0)), uint64_t(rows[i]), rmix[i],
                             cols + j0, cmix.data() + j0, pr, w);
    }
}

// Asks for the cache lines of p[0..count) (count values from p; count <= 0: none), to write or to read.
template <class T> inline void prefetch_lines(const T* p, int64_t count, bool write) {
    const char* c = reinterpret_cast<const char*>(p);
    for (int64_t b = 0; b < count * int64_t(sizeof(T)); b += 64) {
        if (write)
            __builtin_prefetch(c + b, 1, 3);
        else
            __builtin_prefetch(c + b, 0, 3);
    }
}
using qmlnb_mirror::mirror_block;
using qmlnb_mirror::store_fence;
using qmlnb_mirror::streams_rows;

constexpr int AHEAD = 2;  // rows of a block fetched ahead of the one estimated

template <class T>
void estimate_upper(T* K, int64_t N, const int64_t* ids, uint64_t seed_key, const Params& pr, int n_threads) {
    std::vector<uint64_t> imix(N);
    id_mixes(ids, N, seed_key, imix.data());
    const int64_t nb = (N + EDGE - 1) / EDGE;
    const int64_t n_tasks = nb * (nb + 1) / 2;
    const bool stream = streams_rows(K, N);
#pragma omp parallel num_threads(n_threads)
    {
        Work w;
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t task = 0; task < n_tasks; ++task) {
            int64_t bi = 0, rest = task;  // the task-th block on or above the diagonal, row by row
            while (rest >= nb - bi) rest -= nb - bi++;
            const int64_t bj = bi + rest;
            const int64_t i0 = bi * EDGE, i1 = std::min(N, i0 + EDGE), j0 = bj * EDGE, j1 = std::min(N, j0 + EDGE);
            for (int64_t i = i0; i < i1; ++i) {
                // the block's rows and its mirror's are far apart in memory (no hardware prefetch across them):
                // fetch a later row and a mirror row while this one is estimated, which takes far longer
                if (i + AHEAD < i1) {
                    const int64_t from = std::max(j0, i + AHEAD);
                    prefetch_lines(K + (i + AHEAD) * N + from, j1 - from, false);
                }
                if (!stream && j0 + (i - i0) < j1)  // streamed lines are never read
                    prefetch_lines(K + (j0 + (i - i0)) * N + i0, i1 - i0, true);
                const int64_t start = std::max(j0, i);
                if (start < j1)
                    estimate_run(K + i * N + start, int(j1 - start), uint64_t(ids[i]), imix[i], ids + start,
                                 imix.data() + start, pr, w);
            }
            mirror_block(K, N, i0, i1, j0, j1, stream);  // while this block is in cache
        }
        if (stream) store_fence();  // this thread's streamed values reach memory before the region ends
    }
}

const int64_t* ids_pointer(const py::array& a, int64_t n, const char* name) {
    if (a.ndim() != 1 || a.shape(0) != n || !py::isinstance<py::array_t<int64_t>>(a) ||
        !(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be a C-contiguous int64 array of length " +
                              std::to_string(n));
    return static_cast<const int64_t*>(a.data());
}

void estimate(py::array K, py::array rows, py::array cols, int64_t n, uint64_t seed_key, double a, double b,
              double g, double h, bool symmetric, int n_threads) {
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    if (n < 0) throw py::value_error("shots must be >= 0 (0: the noisy expectation)");
    if (K.ndim() != 2 || !(K.flags() & py::array::c_style) || !K.writeable())
        throw py::value_error("K must be a writeable C-contiguous 2-D array");
    const bool single = py::isinstance<py::array_t<float>>(K);
    if (!single && !py::isinstance<py::array_t<double>>(K)) throw py::value_error("K must be float32 or float64");
    const int64_t R = K.shape(0), C = K.shape(1);
    if (symmetric && R != C) throw py::value_error("a symmetric estimate needs a square K");
    const int64_t* r = ids_pointer(rows, R, "rows");
    const int64_t* c = ids_pointer(cols, C, "cols");
    const Params pr{n, a, b, g, h};
    void* k = K.mutable_data();
    {
        py::gil_scoped_release release;
        if (single && symmetric)
            estimate_upper(static_cast<float*>(k), R, r, seed_key, pr, n_threads);
        else if (single)
            estimate_block(static_cast<float*>(k), R, C, r, c, seed_key, pr, n_threads);
        else if (symmetric)
            estimate_upper(static_cast<double*>(k), R, r, seed_key, pr, n_threads);
        else
            estimate_block(static_cast<double*>(k), R, C, r, c, seed_key, pr, n_threads);
    }
}

}  // namespace

PYBIND11_MODULE(_shots_openmp, m) {
    m.doc() = "The shot-sampled Gram estimate of qmlnb.kernels.shots, bit for bit, vectorised, with OpenMP";
    m.def("estimate", &estimate, py::arg("K"), py::arg("rows"), py::arg("cols"), py::arg("n"), py::arg("seed_key"),
          py::arg("a"), py::arg("b"), py::arg("g"), py::arg("h"), py::arg("symmetric"), py::arg("n_threads"),
          "Replace the exact values of K (R, C) float32/float64 by g m / n + h, m ~ Binomial(n, clip(a K + b)),\n"
          "keyed by (seed_key, row id, column id); n = 0: g clip(a K + b) + h.  symmetric: K square with\n"
          "rows == cols, the upper triangle estimated and mirrored.  The GIL is released.");
#if defined(__AVX512F__)
    m.attr("SIMD") = "AVX-512";
#else
    m.attr("SIMD") = "generic";
#endif
}
