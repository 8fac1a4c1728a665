"""The kernel a device would estimate: finite shots, counter-based random numbers.

A device estimates entry (i, j) of a fidelity Gram from S shots of a circuit
as the frequency of one outcome: m ~ Binomial(S, P) with P = a k + b (k the
exact kernel value; a, b from the estimator and the noise, ``noise.outcome_map``),
reported as g m / S + h (``noise.estimate_map``).

Reproducibility.  The random numbers of entry (i, j) come from a counter-based
generator keyed by (seed, min(i, j), max(i, j)) alone: the entry's key is
mix(mix(seed ^ lo * golden) + hi * M1) (the inner mix computed once per id),
its top 53 bits the first uniform, and mix(key + t * golden) the t-th after
it: one mix per entry for most draws.  So the
estimate of an entry does not depend on the tile it falls in, the backend, the
number of threads, the order tiles are computed in or the Dask layout, and
K[i, j] == K[j, i].  Given the same exact kernel value the estimate is the
same bit for bit; backends agree on exact values to about 1e-6 (float32
states), so on the few entries where that difference straddles a step of
the sampler the counts of two backends can differ.

The indices are global sample ids.  A square Gram uses 0..N-1 unless
``ids`` says otherwise; for a rectangular Gram (test x train) give the ids the
rows and columns have in the whole data set, e.g. ``ids=(N_train + arange(N_test),
arange(N_train))``, so that no test entry shares its random numbers with a
training entry and every block of a larger Gram is the same as computed alone.

The binomial draw is exact: inversion (the CDF searched upward from 0, with
P(X = 0) = (1 - q)^S by binary powering and a first-order correction for the
rounding of 1 - q) when S q < 10, q = min(P, 1 - P), else Hormann's BTRS
transformed rejection with squeeze (W. Hormann, "The generation of binomial
random variates", J. Stat. Comput. Simul. 46, 1993), both with 53-bit uniforms.
The candidates Hormann's squeeze misses meet two more squeezes before his
logs: bounds of the binomial's log ratio to its mode and of exp
(``log_ratio_bounds``, ``pow64``) accept or reject most of them with a few
divisions; they decide only where the exact test decides the same way.

Speed.  The sampler works on chunks of ``CHUNK`` entries of a row, in passes
that LLVM vectorises: keys and probabilities for the chunk; P(X = 0) for the
entries to invert, then one step of the CDF search for all pending ones at a
time; BTRS's candidates for all its entries, the full acceptance test (an
fdlibm log in plain arithmetic: a libm call would not vectorise) for those the
squeeze misses, and the rejected ones in another round.  No fast-math: a vector
lane computes the same bits as scalar code, so an entry's estimate never
depends on what shares its chunk (tested).  A symmetric Gram is estimated in
``BLOCK`` x ``BLOCK`` blocks on and above the diagonal, each written to its
mirror block while in cache (the cpu, numba and openmp backends then skip their
own mirror writes: the "upper" capability).

Two samplers.  This numba one is the reference; ``native/shots_openmp.cpp``
(``qmlnb._shots_openmp``) does the same arithmetic, operation for operation,
in AVX-512 vectors, and is the default where it is built (``apply_``'s
``sampler``).  They agree bit for bit (tested over every path of the draw).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._util import available_cores, check_int, check_option
from .noise import DeviceNoise, check_estimator, estimate_map, outcome_map
from .validation import MAX_THREADS, check_threads

MAX_SHOTS = 2**53  # counts are exact float64 integers below this
CHUNK = 128  # entries of one row worked on together (their work arrays stay in L1)
BLOCK = 128  # edge of the blocks of a symmetric Gram: estimated, then mirrored while in cache
POW_LIMIT = 2**26  # shots up to which P(X = 0) = (1 - q)^n is computed by powering (zero_probability)
SAMPLERS = ("native", "numba")  # DeviceEstimate.apply_'s engines: the same numbers, bit for bit
_kernels = None


def _compile():
    """The numba kernels, compiled on first use (numba is imported lazily, like the backends)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import math

    import llvmlite.ir
    import numba
    import numba.extending

    GOLDEN = np.uint64(0x9E3779B97F4A7C15)
    M1 = np.uint64(0xBF58476D1CE4E5B9)
    M2 = np.uint64(0x94D049BB133111EB)
    S30, S27, S31, S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
    TO_UNIT = 2.0 ** -53
    CH = CHUNK
    EDGE = BLOCK
    MANTISSA, ONE = np.uint64((1 << 52) - 1), np.uint64(1023 << 52)
    SQRT2 = math.sqrt(2.0)
    # fdlibm e_log.c: ln 2 in two parts and the minimax coefficients of log(1 + f) on |s| <= 0.1716
    LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
    LG1, LG2, LG3, LG4 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01, \
        2.222219843214978396e-01
    LG5, LG6, LG7 = 1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def mix(z):  # splitmix64's finaliser: a bijection of uint64 with full avalanche
        z = (z ^ (z >> S30)) * M1
        z = (z ^ (z >> S27)) * M2
        return z ^ (z >> S31)

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def to_unit(z):  # the top 53 bits of z as a uniform in [0, 1)
        # through int64 (exact below 2^53): a uint64 conversion does not vectorise
        return np.float64(np.int64(z >> S11)) * TO_UNIT

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def uniform(key, t):  # the t-th uniform of an entry, t >= 1 (the 0-th is to_unit(key): the key is a mix already)
        return to_unit(mix(key + np.uint64(t) * GOLDEN))

    C12, C360, C1260 = 1.0 / 12, 1.0 / 360, 1.0 / 1260
    SQUEEZE_SAFETY = 1.0 - 1e-9
    # log(k!) - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2], exact for k < 10 (Hormann 1993, Table 1)
    FC = (0.08106146679532726, 0.04134069595540929, 0.02767792568499834, 0.02079067210376509,
                   0.01664469118982119, 0.01387612882307075, 0.01189670994589177, 0.01041126526197209,
                   0.009255462182712733, 0.008330563433362871)

    @numba.extending.intrinsic
    def bits_of(typingctx, x):  # the IEEE bits of a float64 (no conversion)
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvmlite.ir.IntType(64))
        return numba.types.uint64(numba.types.float64), codegen

    @numba.extending.intrinsic
    def float_of(typingctx, x):  # the float64 with these IEEE bits
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvmlite.ir.DoubleType())
        return numba.types.float64(numba.types.uint64), codegen

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def log(x):
        """Natural log of x >= 0 (normal or 0), within 1 ulp: fdlibm's e_log.c in plain arithmetic, so that a
        loop of it vectorises (a libm call would not) and every lane computes the same bits."""
        bits = bits_of(x)
        e = np.float64(np.int64(bits >> np.uint64(52)) - 1023)
        m = float_of((bits & MANTISSA) | ONE)  # [1, 2)
        big = m > SQRT2
        m = 0.5 * m if big else m
        e = e + 1.0 if big else e
        f = m - 1.0
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        R = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))) + w * (LG2 + w * (LG4 + w * LG6))
        hfsq = 0.5 * f * f
        y = e * LN2_HI - ((hfsq - (s * (hfsq + R) + e * LN2_LO)) - f)
        return y if x > 0.0 else -np.inf

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def stirling_series(inv):  # the tail for k >= 10, inv = 1 / (k + 1)
        inv2 = inv * inv
        return (C12 - (C360 - C1260 * inv2) * inv2) * inv

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def stirling_tail(k, inv):
        # inv = 1 / (k + 1); the table as a chain of selects, not a lookup, so that a loop of it vectorises
        value = stirling_series(inv)
        for i in range(9, -1, -1):
            value = FC[i] if k <= i else value
        return value

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def stirling_pair(k, nf):  # stirling_tail(k) + stirling_tail(n - k), with one division
        k1, k2 = k + 1.0, nf - k + 1.0
        d = 1.0 / (k1 * k2)
        return stirling_tail(k, k2 * d) + stirling_tail(nf - k, k1 * d)

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def stirling_pair_mode(m, nf):
        """stirling_pair of BTRS's mode m = floor((n + 1) q), n q >= 10, q <= 1/2: m >= 10 and n - m >= 10, so
        both tails are the series (the same value; 20 selects fewer than stirling_pair)."""
        k1, k2 = m + 1.0, nf - m + 1.0
        d = 1.0 / (k1 * k2)
        return stirling_series(k2 * d) + stirling_series(k1 * d)

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def zero_probability_correction(power, q, nf):
        """(1 - q)^n from ``power`` = (rounded 1 - q)^n: the first-order correction for that rounding (exact
        below n = 2^26, where the second-order term is under 1e-16)."""
        base = 1.0 - q
        low = (1.0 - base) - q  # base + low == 1 - q exactly (Fast2Sum, q <= 1/2)
        return power + power * (nf * low * (1.0 / base))

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def zero_probability(n, q):
        """(1 - q)^n for n q < 10, as the chunked powering in ``estimate_run`` computes it."""
        if n > POW_LIMIT:
            return math.exp(n * math.log1p(-q))
        base = 1.0 - q
        power = 1.0
        m = n
        while m:
            if m & 1:
                power *= base
            m >>= 1
            if m:
                base *= base
        return zero_probability_correction(power, q, float(n))

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def inversion_bound(nf, q):
        """The count past which the CDF search gives up (rounding in its tail) and draws again: 11 n q + 10 is
        above the mean n q by more than 10 standard deviations sqrt(n q + 1) (no square root needed)."""
        return min(nf, nf * q * 11.0 + 10.0)

    @numba.njit(cache=True, error_model="numpy")
    def inversion_from(n, q, key, q0, t):
        """Binomial(n, q), n q < 10, by inversion (the CDF searched from 0) with the t-th and later uniforms:
        the scalar form of the chunked search in ``estimate_run``, with the same arithmetic."""
        nf = float(n)
        r = q * (1.0 / (1.0 - q))
        g = r * (nf + 1.0)
        bound = inversion_bound(nf, q)
        while True:
            u = uniform(key, t)
            t += 1
            cdf = q0
            px = q0
            x = 0
            while u > cdf:
                x += 1
                if x > bound:
                    break
                px *= g * (1.0 / x) - r
                cdf += px
            if x <= bound:
                return x

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def btrs_setup(nf, q):
        spq = math.sqrt(nf * q * (1.0 - q))
        b = 1.15 + 2.53 * spq
        # the squeeze's v <= 0.92 - 4.2 / b as v b <= 0.92 b - 4.2 (b > 0): no division
        return spq, b, -0.0873 + 0.0248 * b + 0.01 * q, nf * q + 0.5, 0.92 * b - 4.2

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def btrs_candidate(key, t, a, b, c):
        # uniforms t and t + 1 (t even); the 0-th is the key itself
        u = (to_unit(key) if t == 0 else uniform(key, t)) - 0.5
        v = uniform(key, t + 1)
        us = 0.5 - abs(u)
        return np.floor((2.0 * a / us + b) * u + c), us, v

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def btrs_round(nf, q, key, t, LK, LUS, LVV, s):
        """Entry s's candidate of round t/2 into LK, LUS, LVV; 0 (the squeeze accepts it), 1 (the full test
        decides) or 2 (outside [0, n]: rejected)."""
        spq, bb, aa, cc, vb = btrs_setup(nf, q)
        k, us, v = btrs_candidate(key, t, aa, bb, cc)
        LK[s], LUS[s], LVV[s] = k, us, v
        inside = k >= 0.0 and k <= nf
        return 0.0 if inside and us >= 0.07 and v * bb <= vb else (1.0 if inside else 2.0)

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def log_ratio_bounds(q, k, m, nm, nk, oq):
        """Bounds (lo, hi) of log f(k) / f(m), f the Binomial(n, q) pmf, m = floor((n + 1) q) its mode, for
        0 <= k <= n, n q >= 10, q <= 1/2 (so 9 <= m <= n - 2); nm = n - m + 1, nk = n - k + 1, oq = 1 - q.

        f(k) / f(m) is a product of j = |k - m| factors (A - i a) / (B + i b), i = 0 .. j - 1: for k > m,
        A = (n - m) q, B = (m + 1) (1 - q), a = q, b = 1 - q; for k < m, A = m (1 - q), B = (n - m + 1) q,
        a = 1 - q, b = q.  With 1 - B / A <= log(A / B) <= A / B - 1, -y / (1 - y) <= log(1 - y) <= -y and
        z / (1 + z) <= log(1 + z) <= z, each step's term bounded by its value at i = j - 1 or i = 0:
        lo = j (A - B) / A - (a / (A - (j - 1) a) + b / B) j (j - 1) / 2,
        hi = j (A - B) / B - (a / A + b / (B + (j - 1) b)) j (j - 1) / 2,
        their gap about j / sqrt(n q (1 - q)) of the binomial's spread (shots.md)."""
        above = k >= m
        num = (m + 1.0) * oq if above else nm * q  # B
        den = (nm - 1.0) * q if above else m * oq  # A
        x1 = nk if above else k + 1.0  # (A - (j - 1) a) / a
        x2 = m + 1.0 if above else nm  # B / b
        y1 = nm - 1.0 if above else m  # A / a
        y2 = k if above else nk - 1.0  # (B + (j - 1) b) / b
        j = abs(k - m)
        jj = j * (j - 1.0) * 0.5
        d = den - num
        return j * (d / den) - (x1 + x2) / (x1 * x2) * jj, j * (d / num) - (y1 + y2) / (y1 * y2) * jj

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def pow64(x):  # x^64 by six squarings: (1 + x / 64)^64 <= exp(x) for x > -64, and 1 / (1 - x / 64)^64 >= exp(x)
        x = x * x
        x = x * x
        x = x * x
        x = x * x
        x = x * x
        return x * x

    @numba.njit(inline="always", cache=True, error_model="numpy")
    def btrs_test(nf, q, k, us, v, a, b, spq):
        """Hormann's acceptance test of a BTRS candidate k in [0, n] that missed the squeeze: the acceptance
        ratio v alpha us^2 / (a + b us^2) against the binomial's ratio to its mode, f(k) / f(m).  First two more
        squeezes from the bounds of ``log_ratio_bounds`` and of exp by ``pow64`` (no log; they decide about
        four in five of these candidates), then the logs, with Stirling's series in place of lgamma
        (r = q / (1 - q) folded into the arguments, to save divisions).  SQUEEZE_SAFETY keeps the rounding of
        the bounds (under 1e-13 relative) on the safe side: the squeezes decide only as the exact test does."""
        alpha = (2.83 + 5.1 / b) * spq
        oq = 1.0 - q
        m = np.floor((nf + 1.0) * q)
        nm = nf - m + 1.0
        nk = nf - k + 1.0
        us2 = us * us
        lhs = v * alpha * us2
        den = a + b * us2
        lo, hi = log_ratio_bounds(q, k, m, nm, nk, oq)
        if lhs <= pow64(max(1.0 + lo * 0.015625, 0.0)) * SQUEEZE_SAFETY * den:
            return True
        if lhs * pow64(max(1.0 - hi * 0.015625, 0.0)) * SQUEEZE_SAFETY > den:
            return False
        h = (m + 0.5) * log((m + 1.0) * oq / (q * nm)) + stirling_pair_mode(m, nf)
        return log(lhs / den) <= h + (nf + 1.0) * log(nm / nk) \
            + (k + 0.5) * log(nk * q / (oq * (k + 1.0))) - stirling_pair(k, nf)

    @numba.njit(cache=True, error_model="numpy")
    def estimate_run(vals, ri, rmix, cols, cmix, n, a, b, g, h, wf, wu, wi):
        """Estimate ``vals`` (exact values of one row segment, ids ``ri`` x ``cols``, at most CHUNK) in place;
        ``rmix``, ``cmix``: ``id_mixes`` of ``ri`` and ``cols``.

        The entries are sorted into two dense lists, inversion (n q < 10) and BTRS, each then worked on a
        pass at a time so that the passes vectorise and no entry's loop exit is a mispredicted branch.  Every
        entry's arithmetic is its own (no fast-math: the same bits in a vector lane and in scalar code), so
        the result depends on (seed, ids, value) only, never on what shares its chunk.
        """
        L = vals.shape[0]
        # separate arrays, not rows of one: LLVM vectorises loops over those, rows it checks for overlap
        Q, M, SQ, SU, SF, SPX, SR, SG, SB, LQ, LS, LK, LUS, LVV, SX = wf
        SK, LKEY = wu
        SI, LI, SLOW = wi
        nf = float(n)
        # pass 1 (vectorises): probability p of the counted outcome, q = min(p, 1 - p), the entry's key
        n_small = 0
        n_large = 0
        for j in range(L):
            p = min(max(a * vals[j] + b, 0.0), 1.0)
            q = min(p, 1.0 - p)
            cj = np.uint64(cols[j])
            # mix(mix(seed_key ^ lo * GOLDEN) + hi * M1), the inner mix looked up: one mix per entry
            le = ri <= cj
            key = mix((rmix if le else cmix[j]) + (cj if le else ri) * M1)
            Q[j], SQ[j], LQ[j], SK[j], LKEY[j], M[j] = p, q, q, key, key, 0.0
            n_small += 1 if q * nf < 10.0 and q > 0.0 else 0
            n_large += 1 if q * nf >= 10.0 else 0  # NaN: neither list (its estimate is NaN)
        if n == 0:  # no shots: the device's expected value
            for j in range(L):
                vals[j] = g * Q[j] + h
            return
        # two dense lists, inversion (n q < 10) and BTRS; q = 0 (p = 0 or 1) is settled (count 0 or n)
        if n_small == L:
            ns, nl = L, 0
            for j in range(L):
                SI[j] = j
        elif n_large == L:
            ns, nl = 0, L
            for j in range(L):
                LI[j] = j
        else:  # packed in place, branch-free appends
            ns = 0
            nl = 0
            for j in range(L):
                q, key = SQ[j], SK[j]
                small = q * nf < 10.0
                SQ[ns], SK[ns], SI[ns] = q, key, j
                ns += 1 if small and q > 0.0 else 0
                LQ[nl], LKEY[nl], LI[nl] = q, key, j
                nl += 1 if q * nf >= 10.0 else 0
        # inversion: P(X = 0) by powering (n's bits shared: each pass vectorises), then the CDF searched from 0
        # for all pending entries together, one x per pass
        for s in range(ns):
            SU[s] = to_unit(SK[s])
        if n > POW_LIMIT:
            for s in range(ns):
                SF[s] = math.exp(nf * math.log1p(-SQ[s]))
        else:
            for s in range(ns):
                SF[s] = 1.0
                SPX[s] = 1.0 - SQ[s]
            m = n
            while m:
                if m & 1:
                    for s in range(ns):
                        SF[s] *= SPX[s]
                m >>= 1
                if m:
                    for s in range(ns):
                        SPX[s] *= SPX[s]
            for s in range(ns):
                SF[s] = zero_probability_correction(SF[s], SQ[s], nf)
        # the pending entries (u > P(X = 0)) packed in place; then steps x = 1, 2, ... over all of them, each
        # step a vectorised pass (an entry no longer pending adds 0), repacked every few steps
        np_ = 0
        for s in range(ns):
            SU[np_], SF[np_], SQ[np_], SK[np_], SI[np_] = SU[s], SF[s], SQ[s], SK[s], SI[s]
            np_ += 1 if SU[s] > SF[s] else 0
        for s in range(np_):
            q = SQ[s]
            SPX[s] = SF[s]
            SR[s] = q * (1.0 / (1.0 - q))
            SG[s] = SR[s] * (nf + 1.0)
            SB[s] = inversion_bound(nf, q)
            SX[s] = 0.0
        x = 0
        while np_ > 0:
            x += 1
            inv = 1.0 / x
            more = 0
            for s in range(np_):
                # past its bound an entry stays put and is redrawn below: when that is noticed (which
                # depends on the other entries) cannot change its result
                pending = SU[s] > SF[s] and x <= SB[s]
                SX[s] += 1.0 if pending else 0.0
                SPX[s] = SPX[s] * (SG[s] * inv - SR[s]) if pending else 0.0
                SF[s] += SPX[s]
                more += 1 if SU[s] > SF[s] and x + 1.0 <= SB[s] else 0
            if more == 0 or x % 4 == 0:
                w = 0
                for s in range(np_):
                    M[SI[s]] = SX[s]
                    if SU[s] > SF[s]:
                        if x + 1.0 <= SB[s]:
                            SU[w], SF[w], SQ[w], SK[w], SI[w] = SU[s], SF[s], SQ[s], SK[s], SI[s]
                            SPX[w], SR[w], SG[w], SB[w], SX[w] = SPX[s], SR[s], SG[s], SB[s], SX[s]
                            w += 1
                        else:  # past the bound (rounding in the CDF's tail): the next uniforms, alone
                            M[SI[s]] = inversion_from(n, SQ[s], SK[s], zero_probability(n, SQ[s]), 1)
                np_ = w
        # BTRS (n q >= 10), in rounds: every pending entry draws its candidate from the round's two uniforms
        # (one pass), the squeeze settles most, those that miss it take the full test (a second pass over
        # them alone), and the rejected ones are pending in the next round
        t = 0
        while nl > 0:
            if t == 0:  # two copies of the pass: with t unknown, a select would compute the unused mix too
                for s in range(nl):
                    LS[s] = btrs_round(nf, LQ[s], LKEY[s], 0, LK, LUS, LVV, s)
            else:
                for s in range(nl):
                    LS[s] = btrs_round(nf, LQ[s], LKEY[s], t, LK, LUS, LVV, s)
            nslow = 0
            for s in range(nl):
                SLOW[nslow] = s
                nslow += 1 if LS[s] == 1.0 else 0
            for r in range(nslow):
                s = SLOW[r]
                SQ[r], SU[r], SF[r], SPX[r] = LQ[s], LK[s], LUS[s], LVV[s]
            for r in range(nslow):
                q = SQ[r]
                spq, bb, aa, cc, vb = btrs_setup(nf, q)
                SR[r] = 0.0 if btrs_test(nf, q, SU[r], SF[r], SPX[r], aa, bb, spq) else 2.0
            for r in range(nslow):
                LS[SLOW[r]] = SR[r]
            w = 0
            for s in range(nl):
                M[LI[s]] = LK[s]
                LQ[w], LKEY[w], LI[w] = LQ[s], LKEY[s], LI[s]
                w += 1 if LS[s] == 2.0 else 0
            nl = w
            t += 2
        # counts back to estimates
        for j in range(L):
            m = nf - M[j] if Q[j] > 0.5 else M[j]
            vals[j] = g * (m / nf) + h if Q[j] == Q[j] else Q[j]

    @numba.njit(cache=True, error_model="numpy")
    def workspace():  # the work arrays of estimate_run: float64, uint64 and int64 ones, CHUNK entries each
        f, u, i = np.float64, np.uint64, np.int64
        return ((np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f),
                 np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f),
                 np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f), np.empty(CH, f)),
                (np.empty(CH, u), np.empty(CH, u)),
                (np.empty(CH, i), np.empty(CH, i), np.empty(CH, i)))

    @numba.njit(cache=True, error_model="numpy")
    def id_mixes(ids, seed_key):  # the first half of every key that has this id as its smaller one
        out = np.empty(ids.shape[0], np.uint64)
        for i in range(ids.shape[0]):
            out[i] = mix(seed_key ^ (np.uint64(ids[i]) * GOLDEN))
        return out

    @numba.njit(parallel=True, cache=True, error_model="numpy")
    def estimate_block(K, rows, cols, n, seed_key, a, b, g, h):
        R, C = K.shape
        n_chunks = (C + CH - 1) // CH
        rmix, cmix = id_mixes(rows, seed_key), id_mixes(cols, seed_key)
        for i in numba.prange(R):
            wf, wu, wi = workspace()
            ri = np.uint64(rows[i])
            for c in range(n_chunks):
                j0, j1 = c * CH, min(C, (c + 1) * CH)
                estimate_run(K[i, j0:j1], ri, rmix[i], cols[j0:j1], cmix[j0:j1], n, a, b, g, h, wf, wu, wi)

    @numba.njit(cache=True, error_model="numpy")
    def upper_block(task, nb):  # the task-th (row, column) block on or above the diagonal, row by row
        bi = 0
        while task >= nb - bi:
            task -= nb - bi
            bi += 1
        return bi, bi + task

    @numba.njit(parallel=True, cache=True, error_model="numpy")
    def estimate_upper(K, ids, n, seed_key, a, b, g, h):
        # blocks of EDGE x EDGE on and above the diagonal, one task each: its rows' upper parts are
        # estimated, then written transposed to the mirror block while they are in cache
        N = K.shape[0]
        nb = (N + EDGE - 1) // EDGE
        n_tasks = nb * (nb + 1) // 2
        imix = id_mixes(ids, seed_key)
        for task in numba.prange(n_tasks):
            bi, bj = upper_block(task, nb)
            i0, i1 = bi * EDGE, min(N, (bi + 1) * EDGE)
            j0, j1 = bj * EDGE, min(N, (bj + 1) * EDGE)
            wf, wu, wi = workspace()
            for i in range(i0, i1):
                start = max(j0, i)
                if start < j1:
                    estimate_run(K[i, start:j1], np.uint64(ids[i]), imix[i], ids[start:j1], imix[start:j1], n,
                                 a, b, g, h, wf, wu, wi)
            for j in range(j0, j1):
                for i in range(i0, min(i1, j)):
                    K[j, i] = K[i, j]

    _kernels = estimate_block, estimate_upper, mix, log_ratio_bounds, pow64
    return _kernels


@dataclass(frozen=True)
class DeviceEstimate:
    """How a device estimates each Gram entry; applied to blocks of the exact Gram by global index.

    Parameters
    ----------
    shots : int >= 1, or None (the noisy expectation, no sampling noise)
    seed : int >= 0
    estimator : "fidelity" (compute-uncompute, frequency of 0^n) or "swap" (swap test, 2 P(0) - 1)
    noise : DeviceNoise or None
    mitigate : invert the noise model on the estimate (``noise.estimate_map``)
    n_qubits : qubits of the states (for the depolarising floor 2^-n and readout)
    """

    shots: int | None
    seed: int
    estimator: str
    noise: DeviceNoise | None
    mitigate: bool
    n_qubits: int

    def __post_init__(self):
        if self.shots is not None:  # plain ints: they go into JSON metadata (out=) and numba kernels
            object.__setattr__(self, "shots", check_int(self.shots, "shots", minimum=1))
            if self.shots >= MAX_SHOTS:
                raise ValueError(f"shots must be below 2**53, got {self.shots}")
        object.__setattr__(self, "seed", check_int(self.seed, "seed", minimum=0))
        check_estimator(self.estimator)
        if self.noise is not None and not isinstance(self.noise, DeviceNoise):
            raise TypeError(f"noise must be a qmlnb.kernels.DeviceNoise or None, got {type(self.noise).__name__}")
        if not isinstance(self.mitigate, bool):
            raise TypeError(f"mitigate must be True or False, got {self.mitigate!r}")
        if self.noise is not None and self.n_qubits < 1:
            raise ValueError("noise= needs states on qubits: a state dimension that is a power of 2, or an MPS")
        estimate_map(self.estimator, self.n_qubits, self.noise, self.mitigate)  # mitigate without noise: error

    @property
    def maps(self) -> tuple[float, float, float, float]:
        a, b = outcome_map(self.estimator, self.n_qubits, self.noise)
        g, h = estimate_map(self.estimator, self.n_qubits, self.noise, self.mitigate)
        return a, b, g, h

    def seed_key(self) -> np.uint64:
        # np.uint64: a Python int below 2**63 would reach the kernels as int64 and mix signed with unsigned
        return np.uint64(splitmix(self.seed ^ 0x6A09E667F3BCC909))

    def describe(self) -> dict:
        """JSON-able: recorded with out-of-core outputs so a resume never mixes two estimates."""
        return {"shots": self.shots, "seed": self.seed, "estimator": self.estimator, "mitigate": self.mitigate,
                "noise": None if self.noise is None else self.noise.describe()}

    def apply_(self, K: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, symmetric: bool = False,
               n_threads: int | None = None, sampler: str | None = None) -> np.ndarray:
        """Replace the exact values of block ``K`` by their estimates, in place.

        K : ndarray, shape (R, C), float32 or float64, C-contiguous: exact kernel values
            (an entry that is NaN stays NaN)
        rows, cols : int64 arrays, shapes (R,) and (C,): the global ids of K's rows and columns
        symmetric : K is a whole symmetric Gram with ``rows`` == ``cols``: only its upper
            triangle is estimated and mirrored (half the work; the same values)
        n_threads : threads (default: all cores, at most ``MAX_THREADS``)
        sampler : "native" (``qmlnb._shots_openmp``, the default where it is built) or "numba"; both
            give the same numbers bit for bit (tested), the native one in a fraction of the time
        """
        n = 0 if self.shots is None else int(self.shots)
        a, b, g, h = self.maps
        key = self.seed_key()
        sampler = pick_sampler(sampler)
        if sampler == "native":
            threads = min(available_cores(), MAX_THREADS) if n_threads is None else check_threads(n_threads)
            _native().estimate(K, rows, cols, n, int(key), a, b, g, h, symmetric, threads)
            return K
        import numba

        estimate_block, estimate_upper = _compile()[:2]
        previous = numba.get_num_threads()
        if n_threads is not None:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            if symmetric:
                estimate_upper(K, rows, n, key, a, b, g, h)  # mirrors each block while it is in cache
            else:
                estimate_block(K, rows, cols, n, key, a, b, g, h)
        finally:
            numba.set_num_threads(previous)
        return K


def splitmix(z: int) -> int:
    """splitmix64's finaliser on a Python int (the kernels' ``mix``, for the seed's key)."""
    mask = (1 << 64) - 1
    z &= mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def _native():
    """``qmlnb._shots_openmp`` (built by ``setup.py`` with the other extensions), or None where it is not built."""
    try:
        from .. import _shots_openmp
    except ImportError:
        return None
    return _shots_openmp


def pick_sampler(sampler: str | None) -> str:
    """"native" where the extension is built, else "numba"; an explicit choice is checked."""
    if sampler is None:
        return "native" if _native() is not None else "numba"
    check_option(sampler, "sampler", SAMPLERS)
    if sampler == "native" and _native() is None:
        raise ImportError("sampler='native' needs qmlnb._shots_openmp: build it with "
                          "`python setup.py build_ext --inplace` (or reinstall qmlnb)")
    return sampler


def check_ids(ids, n_rows: int, n_cols: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Global (row ids, column ids), int64: default 0..N-1 and 0..M-1; validated shapes, >= 0."""
    if ids is None:
        return np.arange(n_rows, dtype=np.int64), np.arange(n_cols, dtype=np.int64)
    if not isinstance(ids, (tuple, list)) or len(ids) != 2:
        raise TypeError("ids must be a pair (row_ids, col_ids) of integer arrays")
    out = []
    for name, x, n in (("row", ids[0], n_rows), ("column", ids[1], n_cols)):
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != n or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} ids must be a 1-D integer array of length {n}, got {x.dtype} {x.shape}")
        if x.size and x.min() < 0:
            raise ValueError(f"{name} ids must be >= 0, got {x.min()}")
        out.append(np.ascontiguousarray(x, dtype=np.int64))
    if symmetric and not np.array_equal(out[0], out[1]):
        raise ValueError("a symmetric Gram (B omitted) needs the same row and column ids")
    return out[0], out[1]


def device_estimate(shots, seed, estimator, noise, mitigate, n_qubits) -> DeviceEstimate | None:
    """The ``DeviceEstimate`` that ``gram``'s arguments ask for, or None for the exact Gram."""
    if shots is None and noise is None:
        if mitigate:
            raise ValueError("mitigate=True needs the noise model it inverts (noise=DeviceNoise(...))")
        if estimator != "fidelity":
            check_estimator(estimator)
            raise ValueError(f"estimator={estimator!r} needs shots= or noise= (the exact Gram has no estimator)")
        return None
    if seed is None:
        if shots is not None:
            raise ValueError("shots= needs seed= (an int >= 0): the estimate is reproducible by design")
        seed = 0
    return DeviceEstimate(shots=shots, seed=seed, estimator=estimator, noise=noise, mitigate=mitigate,
                          n_qubits=n_qubits)
