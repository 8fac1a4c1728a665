// qmlnb._mps_openmp: the fidelity Gram matrix K[i, j] = |<a_i|b_j>|^2 of
// matrix-product states, with OpenMP over tiles of pairs and SIMD over pairs.
//
// Layout of the work
//   * Inputs are site tensors a (N, n, 2, chi, chi) and b (M, n, 2, chi, chi),
//     complex64, C-contiguous (qmlnb.kernels.mps.MPSStates).  A pair's overlap
//     is contracted site by site through the chi x chi environment
//         half_s = E B_s,    E' = sum_s A_s^H half_s.
//   * The output is cut into tiles of pairs (only tiles on or above the
//     diagonal when B is None, each written to its place and its mirror),
//     handed to threads with a dynamic schedule.
//   * Inside a tile, W = 16 columns j form one SIMD group: their site tensors
//     are packed into planar panels of vectors [site][s][y][c] (re, im; one
//     vector holds the W lanes) once per tile, and row i's coefficients
//     conj(A) are scalars broadcast over the lanes, so every complex
//     multiply-add is 4 FMAs on W lanes.  V is a GCC vector of W floats: one
//     AVX-512 register with -march=native on an AVX-512 machine, two AVX2 or
//     four SSE registers elsewhere (the same source compiles everywhere).
//
// The structured path (ZZ sites): zero pattern of the tensors and of E
//   * A site is "structured" when, in every sample of A and B,
//     A_s[x][beta] = 0 unless s equals the last bit of beta (the ZZ map's
//     physical bit is the last layer's bit of the column; with circular
//     entanglement the right index (gamma, beta) keeps beta's last bit last).
//     It is checked once per call, site by site, over both operands.
//   * Then E'[p][c] = sum_s sum_x conj(A_s[x][p]) half_s[x][c] is zero unless
//     last(p) = s = last(c): after a structured site the environment's two
//     indices share their last bit (and E = e0 e0^T does at the start), so
//     half_s[x][c] = sum over the chi/2 y with last(y) = last(x), only for
//     s = last(c), and E' only for last(p) = last(c): chi^3 complex
//     multiply-adds per site and pair (8 chi^3 flops: 512 at chi 4) instead of
//     the general 4 chi^3.  Runs of such sites at chi 2 and 4, and the circular
//     ring's block-diagonal middle sites at chi 16, take the register path
//     (compute_tile_fast, described where it is defined).
//   * Other structured sites with chi > 4 skip zero coefficients of A and
//     (y, c) entries of B that are zero in all lanes.
//   * The other sites (the last one, whose right index 0 folds the last
//     column, and tensors of other circuits) take the general path: every
//     (s, c) column of B that is nonzero in some lane, every nonzero
//     coefficient of A.  `structured=false` forces it everywhere (the kernel
//     as it was before the structured path; the tests compare the two).
//   * Underflow: every RENORM sites (and before a general site) each lane's
//     environment is divided by the power of two 2**e at or below its largest
//     |re| or |im| (exact: only the float exponent changes) and e is summed
//     per lane as an integer, so the scale itself can never underflow.  In
//     RENORM sites the environment's largest entry moves by a bounded factor
//     (at most (2 chi^2 max|A| max|B|)^RENORM up, and a fall of 2**-100 would
//     need cancellation to 1e-30 inside 4 sites, when float32 still has
//     subnormals below), far inside float32's 2**+-126.  K = |E00|^2 4**e_sum
//     is formed in double at the end (kernel_value), so the only loss is the
//     output dtype's own range (float64: values below about 4.9e-324 become 0).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <time.h>
#include <vector>

namespace py = pybind11;

namespace {

constexpr int W = 16;       // pairs per SIMD group (one AVX-512 register of float32, two of AVX2)
constexpr int RENORM = 4;   // sites between two rescalings of the environment
typedef float V __attribute__((vector_size(W * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(W * sizeof(int32_t))));
int g_last_threads = 0;
volatile float g_fma_sink = 0.0f;  // fma_rate's result goes here so that its loop is kept

struct Tile {
    int64_t i0, i1, j0, j1;
};

// Per-thread buffers; CHI > 0 fixes the bond dimension at compile time (unrolled loops), 0 reads `chi`.
struct Workspace {
    std::vector<V> br, bi;            // packed B of one group: [site][s][y][c]
    std::vector<unsigned char> nz;    // [site][s][c]: column (s, c) of B nonzero in some lane
    std::vector<unsigned char> nzb;   // [site][s][y][c]: entry nonzero in some lane
    std::vector<V> er, ei;            // environment [x][y]
    std::vector<V> hr, hi;            // half products [s][x][c]
    std::vector<V> nr, ni;            // next environment [p][c]
    // the register path (compute_tile_fast)
    std::vector<V> fb;                // packed B of the fast sites: [site][g'][c][y] (re, im)
    std::vector<V> env_r, env_i;      // each row's environment between chunks: [row][x][y]
    std::vector<VI> exps;             // each row's exponents: [row][block]
    std::vector<int> since;           // each row's sites since its last rescaling
    std::vector<unsigned char> patterned;  // each row's E has indices sharing their last bit
};

inline V splat(float v) { return V{} + v; }

// One site of the general path: E (er, ei) -> E' (nr, ni), skipping B columns zero in all lanes
// and zero coefficients of A.  last: the chain's last site, of whose E' only E'[0][0] (the overlap) is read:
// only that entry is computed (2 chi^2 instead of 4 chi^3 complex multiply-adds), the others are set to 0.
template <int CHI>
void general_site(int chi_rt, const V* er, const V* ei, V* hr, V* hi, V* nr, V* ni, const V* pr, const V* pi,
                  const unsigned char* nzk, const std::complex<float>* ak, bool last) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int outs = last ? 1 : chi;  // rows p and columns c of E' computed
    if (last)
        for (int e = 1; e < chi * chi; ++e) nr[e] = ni[e] = V{};
    // half_s[x][c] = sum_y E[x][y] B_s[y][c]
    for (int s = 0; s < 2; ++s)
        for (int x = 0; x < chi; ++x)
            for (int c = 0; c < outs; ++c) {
                V accr{}, acci{};
                if (nzk[s * chi + c]) {
                    for (int y = 0; y < chi; ++y) {
                        const V a = er[x * chi + y], b = ei[x * chi + y];
                        const V r = pr[(s * chi + y) * chi + c], i = pi[(s * chi + y) * chi + c];
                        accr += a * r - b * i;
                        acci += a * i + b * r;
                    }
                }
                hr[(s * chi + x) * chi + c] = accr;
                hi[(s * chi + x) * chi + c] = acci;
            }
    // E'[p][c] = sum_s sum_x conj(A_s[x][p]) half_s[x][c]
    for (int p = 0; p < outs; ++p)
        for (int c = 0; c < outs; ++c) {
            V accr{}, acci{};
            for (int s = 0; s < 2; ++s) {
                if (!nzk[s * chi + c]) continue;
                for (int x = 0; x < chi; ++x) {
                    const std::complex<float> coef = ak[(s * chi + x) * chi + p];
                    const float cr = coef.real(), ci = -coef.imag();  // conj(A)
                    if (cr == 0.0f && ci == 0.0f) continue;
                    const V h = hr[(s * chi + x) * chi + c], g = hi[(s * chi + x) * chi + c];
                    accr += cr * h - ci * g;
                    acci += cr * g + ci * h;
                }
            }
            nr[p * chi + c] = accr;
            ni[p * chi + c] = acci;
        }
}

// One structured site: E (whose indices share their last bit when PAT) -> E' (which always does).
// SKIP: test zero entries of B (per group) and of A (per row), worth it when chi > 4.
template <int CHI, bool PAT, bool SKIP>
inline void structured_site(int chi_rt, const V* __restrict er, const V* __restrict ei, V* __restrict nr,
                            V* __restrict ni, const V* __restrict pr, const V* __restrict pi,
                            const unsigned char* __restrict nzbk, const std::complex<float>* __restrict ak) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int cc = chi * chi;
    constexpr int HMAX = CHI > 0 ? CHI : 256;
    // The column loop stays rolled: inside it every index of E is a constant, so E stays in registers for
    // chi <= 4 while only one column's B and accumulators are live (an unrolled loop spills).
#pragma GCC unroll 1
    for (int c = 0; c < chi; ++c) {
        const int s = c & 1;
        const V* brs = pr + s * cc + c;
        const V* bis = pi + s * cc + c;
        const unsigned char* nzs = nzbk + s * cc + c;
        const std::complex<float>* as = ak + s * cc + s;
        // half[x] = sum over y (last(y) = last(x) when PAT) of E[x][y] B_s[y][c], used at once:
        // E'[s + 2q][c] = sum_x conj(A_s[x][s + 2q]) half[x] (zero at the other parity).
        const int nq = (chi - s + 1) / 2;
        V accr[HMAX / 2 + 1], acci[HMAX / 2 + 1];
#pragma GCC unroll 16
        for (int q = 0; q < HMAX / 2 + 1; ++q) accr[q] = acci[q] = V{};
#pragma GCC unroll 16
        for (int x = 0; x < chi; ++x) {
            V hr{}, hi{};
#pragma GCC unroll 16
            for (int y = PAT ? (x & 1) : 0; y < chi; y += PAT ? 2 : 1) {
                if (SKIP && !nzs[y * chi]) continue;
                const V a = er[x * chi + y], b = ei[x * chi + y];
                const V r = brs[y * chi], i = bis[y * chi];
                hr += a * r - b * i;
                hi += a * i + b * r;
            }
#pragma GCC unroll 16
            for (int q = 0; q < (CHI > 0 ? CHI / 2 : nq); ++q) {
                const std::complex<float> coef = as[x * chi + 2 * q];
                const float cr = coef.real(), ci = coef.imag();  // conj(A) = cr - i ci
                if (SKIP && cr == 0.0f && ci == 0.0f) continue;
                accr[q] += cr * hr + ci * hi;
                acci[q] += cr * hi - ci * hr;
            }
        }
#pragma GCC unroll 16
        for (int q = 0; q < (CHI > 0 ? CHI / 2 : nq); ++q) {
            nr[(s + 2 * q) * chi + c] = accr[q];
            ni[(s + 2 * q) * chi + c] = acci[q];
        }
#pragma GCC unroll 16
        for (int p = 1 - s; p < chi; p += 2) {
            nr[p * chi + c] = V{};
            ni[p * chi + c] = V{};
        }
    }
}

template <int CB>
constexpr bool live_entry(int e) {
    return ((e / CB) & 1) == ((e % CB) & 1);
}

// Divide each lane of E by the power of two at or below its largest |re| or |im|; add the exponents.
// CB > 0: only the live entries (indices sharing their last bit) of a CB x CB block; CB = 0: all cc entries.
template <int CB = 0>
inline __attribute__((always_inline)) void rescale(V* er, V* ei, int cc, VI& exponent) {
    const int count = CB > 0 ? CB * CB : cc;
    V largest{};
#pragma GCC unroll 64
    for (int e = 0; e < count; ++e) {
        if constexpr (CB > 0)
            if (!live_entry<CB>(e)) continue;
        const V r = er[e] < 0 ? -er[e] : er[e];
        const V i = ei[e] < 0 ? -ei[e] : ei[e];
        largest = largest > r ? largest : r;
        largest = largest > i ? largest : i;
    }
    VI u;
    std::memcpy(&u, &largest, sizeof u);
    const VI e = ((u >> 23) & 0xff) - 127;
    const VI ez = u == 0 ? VI{} : e;  // all-zero lanes keep their scale
    const VI iu = (127 - ez) << 23;
    V inv;
    std::memcpy(&inv, &iu, sizeof inv);
    exponent += ez;
#pragma GCC unroll 64
    for (int k = 0; k < count; ++k) {
        if constexpr (CB > 0)
            if (!live_entry<CB>(k)) continue;
        er[k] *= inv;
        ei[k] *= inv;
    }
}

// One site outside the register path: the structured code where the site has the pattern, else the
// general one (rescaling E first, and the result right after it); the next environment goes to (nr, ni),
// rescaled there when RENORM sites have passed.  nzbk, nzgk: the packed site's nonzero maps.
template <int CHI>
inline void one_site(int chi, bool is_structured, V* er, V* ei, V* nr, V* ni, V* hr, V* hi, const V* pk,
                     const V* qk, const unsigned char* nzbk, const unsigned char* nzgk,
                     const std::complex<float>* ak, bool last, bool& patterned, int& since, VI& exponent) {
    const int cc = chi * chi;
    if (is_structured) {
        constexpr bool skip = CHI == 0 || CHI > 4;
        if (patterned)
            structured_site<CHI, true, skip>(chi, er, ei, nr, ni, pk, qk, nzbk, ak);
        else
            structured_site<CHI, false, skip>(chi, er, ei, nr, ni, pk, qk, nzbk, ak);
        patterned = true;
    } else {
        if (since) rescale(er, ei, cc, exponent);
        general_site<CHI>(chi, er, ei, hr, hi, nr, ni, pk, qk, nzgk, ak, last);
        patterned = false;
        since = RENORM - 1;  // rescale right after it
    }
    if (++since >= RENORM) {
        rescale(nr, ni, cc, exponent);
        since = 0;
    }
}

// K = (re^2 + im^2) * 4**exponent in double: a multiplication by the power of two while it is a normal
// double (one rounding, as ldexp), ldexp beyond (the float64 output keeps values down to its smallest
// subnormal).
inline double kernel_value(double re, double im, int32_t exponent) {
    const double modulus2 = re * re + im * im;
    const int e2 = 2 * exponent;
    if (e2 < -1022 || e2 > 1023) return std::ldexp(modulus2, e2);
    const uint64_t bits = static_cast<uint64_t>(e2 + 1023) << 52;
    double scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return modulus2 * scale;
}

// Row i's values for the group at jg (and their mirrors in the symmetric case).
template <typename OutT>
inline void write_row(OutT* out, int64_t ldo, int64_t i, int64_t jg, const Tile& t, bool diagonal, bool symmetric,
                      const V& re_v, const V& im_v, const VI& exponent) {
    for (int w = 0; w < W; ++w) {
        const int64_t j = jg + w;
        if (j >= t.j1 || (diagonal && j < i)) continue;
        const OutT value = static_cast<OutT>(kernel_value(re_v[w], im_v[w], exponent[w]));
        out[i * ldo + j] = value;
        if (symmetric) out[j * ldo + i] = value;
    }
}

// Rows [row0, row1) of the group at jg, then the mirrors column by column: each mirror row j receives a
// contiguous run of values (row by row, every mirror value would land on its own cache line).
template <typename OutT>
void write_group(OutT* out, int64_t ldo, int64_t row0, int64_t row1, int64_t jg, const Tile& t, bool diagonal,
                 bool symmetric, const V* env_r, const V* env_i, int64_t env_stride, const VI* exps,
                 int64_t exps_stride) {
    for (int64_t i = row0; i < row1; ++i) {
        const int64_t r = i - t.i0;
        const V& re = env_r[r * env_stride];
        const V& im = env_i[r * env_stride];
        const VI& e = exps[r * exps_stride];
        for (int w = 0; w < W; ++w) {
            const int64_t j = jg + w;
            if (j >= t.j1 || (diagonal && j < i)) continue;
            out[i * ldo + j] = static_cast<OutT>(kernel_value(re[w], im[w], e[w]));
        }
    }
    if (!symmetric) return;
    for (int64_t j = jg; j < std::min(jg + W, t.j1); ++j)
        for (int64_t i = row0; i < (diagonal ? std::min(row1, j + 1) : row1); ++i) out[j * ldo + i] = out[i * ldo + j];
}

template <int CHI, typename OutT>
void compute_tile(const std::complex<float>* a, const std::complex<float>* b, int64_t n_sites, int chi_rt,
                  const Tile& t, bool symmetric, const unsigned char* structured, Workspace& ws, OutT* out,
                  int64_t ldo) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int64_t cc = static_cast<int64_t>(chi) * chi;
    const int64_t site_stride = 2 * cc;            // complex entries per site
    const int64_t sample_stride = n_sites * site_stride;
    const int64_t n_groups = (t.j1 - t.j0 + W - 1) / W;
    ws.br.resize(n_sites * site_stride);
    ws.bi.resize(n_sites * site_stride);
    ws.nz.resize(n_sites * 2 * chi);
    ws.nzb.resize(n_sites * site_stride);
    ws.er.resize(cc);
    ws.ei.resize(cc);
    ws.hr.resize(2 * cc);
    ws.hi.resize(2 * cc);
    ws.nr.resize(cc);
    ws.ni.resize(cc);
    V* er = ws.er.data();
    V* ei = ws.ei.data();
    V* nr = ws.nr.data();
    V* ni = ws.ni.data();
    const bool diagonal = symmetric && t.i0 == t.j0;

    // One group of W columns at a time: its packed tensors are reused by every row of the tile.
    for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t jg = t.j0 + g * W;
        if (diagonal && jg + W <= t.i0) continue;
        V* pr = ws.br.data();
        V* pi = ws.bi.data();
        unsigned char* nzg = ws.nz.data();
        unsigned char* nzb = ws.nzb.data();
        std::fill(nzg, nzg + n_sites * 2 * chi, 0);
        // Pack B: lanes past the tile's edge repeat its last column (computed, never stored).
        for (int w = 0; w < W; ++w) {
            const int64_t j = std::min(jg + w, t.j1 - 1);
            const std::complex<float>* src = b + j * sample_stride;
            for (int64_t e = 0; e < n_sites * site_stride; ++e) {
                pr[e][w] = src[e].real();
                pi[e][w] = src[e].imag();
            }
        }
        for (int64_t k = 0; k < n_sites; ++k)
            for (int s = 0; s < 2; ++s)
                for (int y = 0; y < chi; ++y)
                    for (int c = 0; c < chi; ++c) {
                        const int64_t e = ((k * 2 + s) * chi + y) * chi + c;
                        bool any = false;
                        for (int w = 0; w < W; ++w) any |= (pr[e][w] != 0.0f) | (pi[e][w] != 0.0f);
                        nzb[e] = any;
                        if (any) nzg[(k * 2 + s) * chi + c] = 1;
                    }
        for (int64_t i = t.i0; i < t.i1; ++i) {
            const std::complex<float>* arow = a + i * sample_stride;
            if (diagonal && jg + W <= i) continue;  // whole group below the diagonal: the mirror fills it
            for (int64_t e = 0; e < cc; ++e) er[e] = ei[e] = V{};
            er[0] = splat(1.0f);
            VI exponent{};  // the environment was divided by 2**exponent
            bool patterned = true;  // E's two indices share their last bit
            int since = 0;          // sites since the last rescaling
            for (int64_t k = 0; k < n_sites;) {
                one_site<CHI>(chi, structured[k], er, ei, nr, ni, ws.hr.data(), ws.hi.data(), pr + k * site_stride,
                              pi + k * site_stride, nzb + k * site_stride, nzg + k * 2 * chi,
                              arow + k * site_stride, k == n_sites - 1, patterned, since, exponent);
                std::swap(er, nr);
                std::swap(ei, ni);
                ++k;
            }
            write_row(out, ldo, i, jg, t, diagonal, symmetric, er[0], ei[0], exponent);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The register path: runs of ZZ sites with the environment of W pairs held in registers across sites.
//
//   * A site is "fast" when it is structured and, for CHI = G * CB with G > 1, block diagonal in blocks of
//     CB (every sample of A and B: A_s[x][beta] = 0 unless x / CB = beta / CB; the circular ring's middle
//     sites, CB = 2**reps, G = CB).  E is then G^2 independent CB x CB blocks E[(g, x)][(g', y)]: block
//     (g, g') sees only A's block g and B's block g'.  CHI = CB (linear chains) is the case G = 1.
//   * Each block runs through a chunk of fast sites with its live entries (those whose indices share
//     their last bit: CB^2 / 2 complex, 16 registers at CB = 4) in local arrays with constant indices,
//     which GCC keeps in registers; only the next environment's columns pass through L1 (store, load).
//     Every complex multiply-add is 4 FMAs written as separate accumulations (a += x * y; a -= u * v),
//     which -ffp-contract=fast turns into single FMAs (a += x * y - u * v would cost a mul, an FMA and an
//     add).  B's entries B_{last(c)}[y][c] (the only nonzero ones) are packed per group as [site][g'][c][y]
//     (re, im), read with constant offsets; A's coefficients are scalars broadcast from the row's own
//     tensors (constant offsets from the site's address, streamed in order).
//   * Each block keeps its own power-of-two exponent (rescaled every RENORM sites as before); before a
//     site that is not fast (the first and last ones of the ring and chain, other tensors) the blocks are
//     brought to a common exponent (the largest of the nonzero blocks; blocks more than 2**149 below it
//     are below float32 rounding of the largest and become 0) and that site takes the general code.
//   * Sites are cut into chunks whose packed B stays in L2 (about 256 KiB); the rows of a tile go through
//     one chunk before the next, each row's environment saved between chunks.  So a chain of any length
//     reads B from L2 instead of L3 (n = 784 at bond 4 packs 1.6 MB per group).
// ---------------------------------------------------------------------------------------------------------

// One fast site of one block for R rows at once (the rows share the group's B, loaded once for all): E
// (er[r], ei[r]; live entries only when PAT) -> E' (nr[r], ni[r]; live entries).  bq: packed B block [c][y]
// (re, im interleaved V's); as0[r]: A_0 of row r's block g at this site, with the full tensor's strides
// (A_s[x][p] = as0[s * CHI * CHI + x * CHI + p]).
template <int CB, int CHI, bool PAT, int R>
inline __attribute__((always_inline)) void fast_site(const V (&er)[R][CB * CB], const V (&ei)[R][CB * CB],
                                                     V (&nr)[R][CB * CB], V (&ni)[R][CB * CB],
                                                     const V* __restrict bq,
                                                     const std::complex<float>* const (&as0)[R]) {
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
        const int s = c & 1;
        V accr[R][CB / 2], acci[R][CB / 2];
#pragma GCC unroll 16
        for (int x = 0; x < CB; ++x) {
            V hr[R], hi[R];
#pragma GCC unroll 16
            for (int y = PAT ? (x & 1) : 0; y < CB; y += PAT ? 2 : 1) {
                const V br = bq[(c * CB + y) * 2], bi = bq[(c * CB + y) * 2 + 1];
                const bool first = y == (PAT ? (x & 1) : 0);
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) {
                    const V a = er[r][x * CB + y], b = ei[r][x * CB + y];
                    if (first) {
                        hr[r] = a * br;
                        hi[r] = a * bi;
                    } else {
                        hr[r] += a * br;
                        hi[r] += a * bi;
                    }
                    hr[r] -= b * bi;
                    hi[r] += b * br;
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const float* af = reinterpret_cast<const float*>(as0[r]);
#pragma GCC unroll 16
                for (int q = 0; q < CB / 2; ++q) {
                    const int o = 2 * ((s * CHI + x) * CHI + s + 2 * q);
                    const float cr = af[o], ci = af[o + 1];  // conj(A) = cr - i ci
                    if (x == 0) {
                        accr[r][q] = cr * hr[r];
                        acci[r][q] = cr * hi[r];
                    } else {
                        accr[r][q] += cr * hr[r];
                        acci[r][q] += cr * hi[r];
                    }
                    accr[r][q] += ci * hi[r];
                    acci[r][q] -= ci * hr[r];
                }
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (int q = 0; q < CB / 2; ++q) {
                nr[r][(s + 2 * q) * CB + c] = accr[r][q];
                ni[r][(s + 2 * q) * CB + c] = acci[r][q];
            }
    }
}

// R rows' block through fast sites [0, len): row r's E block at (er[r], ei[r]) with row stride CHI (its
// saved full environment), its exponent, the sites since the last rescaling (shared by all rows and blocks).
template <int CB, int CHI, int R>
__attribute__((noinline)) void fast_block_run(V* const (&er)[R], V* const (&ei)[R], VI* const (&exponent)[R],
                                             int since, bool patterned, int64_t len, const V* bq, int64_t bq_site,
                                             const std::complex<float>* const (&a)[R], int64_t a_site) {
    constexpr int CC = CB * CB;
    V Er[R][CC], Ei[R][CC], Nr[R][CC], Ni[R][CC];
    const std::complex<float>* ak[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
        for (int e = 0; e < CC; ++e) {
            Er[r][e] = er[r][(e / CB) * CHI + e % CB];
            Ei[r][e] = ei[r][(e / CB) * CHI + e % CB];
        }
    int64_t k = 0;
    if (!patterned && len > 0) {
        for (int r = 0; r < R; ++r) ak[r] = a[r];
        fast_site<CB, CHI, false, R>(Er, Ei, Nr, Ni, bq, ak);
        for (int r = 0; r < R; ++r)
            for (int e = 0; e < CC; ++e) {
                Er[r][e] = live_entry<CB>(e) ? Nr[r][e] : V{};
                Ei[r][e] = live_entry<CB>(e) ? Ni[r][e] : V{};
            }
        if (++since >= RENORM) {
            for (int r = 0; r < R; ++r) rescale<CB>(Er[r], Ei[r], CB * CB, *exponent[r]);
            since = 0;
        }
        k = 1;
    }
    for (; k < len; ++k) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) ak[r] = a[r] + k * a_site;
        fast_site<CB, CHI, true, R>(Er, Ei, Nr, Ni, bq + k * bq_site, ak);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
            for (int e = 0; e < CC; ++e) {
                if (!live_entry<CB>(e)) continue;
                Er[r][e] = Nr[r][e];
                Ei[r][e] = Ni[r][e];
            }
        if (++since >= RENORM) {
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) rescale<CB>(Er[r], Ei[r], CB * CB, *exponent[r]);
            since = 0;
        }
    }
    const bool all = !patterned && len == 0;  // E untouched: its entries of both parities are kept
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
        for (int e = 0; e < CC; ++e) {
            er[r][(e / CB) * CHI + e % CB] = live_entry<CB>(e) || all ? Er[r][e] : V{};
            ei[r][(e / CB) * CHI + e % CB] = live_entry<CB>(e) || all ? Ei[r][e] : V{};
        }
}

// A run of sites handled alike: a chunk of fast sites, or one site of the general code.
struct Segment {
    int64_t k0, k1;
    bool fast;
};

// Bring the G^2 blocks of each lane to the largest exponent among its nonzero blocks (see above).
template <int CB, int CHI>
void common_exponent(V* er, V* ei, VI* exps) {
    constexpr int G = CHI / CB;
    VI top = VI{} - (1 << 30);
    for (int blk = 0; blk < G * G; ++blk) {
        const int g = blk / G, h = blk % G;
        V largest{};
        for (int x = 0; x < CB; ++x)
            for (int y = 0; y < CB; ++y) {
                const int e = (g * CB + x) * CHI + h * CB + y;
                const V r = er[e] < 0 ? -er[e] : er[e];
                const V i = ei[e] < 0 ? -ei[e] : ei[e];
                largest = largest > r ? largest : r;
                largest = largest > i ? largest : i;
            }
        const VI nonzero = largest != 0;  // -1 where the block has a nonzero entry
        top = nonzero & (exps[blk] > top) ? exps[blk] : top;
    }
    top = top == -(1 << 30) ? VI{} : top;
    for (int blk = 0; blk < G * G; ++blk) {
        const int g = blk / G, h = blk % G;
        VI d = exps[blk] - top;
        d = d > 0 ? VI{} : d;  // only all-zero blocks can be above: any factor keeps them 0
        const VI normal = (127 + d) << 23;
        const VI sub = d >= -149 ? (VI{} + 1) << (d + 149 < 0 ? VI{} : d + 149) : VI{};
        const VI bits = d >= -126 ? normal : (d >= -149 ? sub : VI{});
        V factor;
        std::memcpy(&factor, &bits, sizeof factor);
        for (int x = 0; x < CB; ++x)
            for (int y = 0; y < CB; ++y) {
                const int e = (g * CB + x) * CHI + h * CB + y;
                er[e] *= factor;
                ei[e] *= factor;
            }
        exps[blk] = top;
    }
}

constexpr int FR = 2;  // rows per register-path call: two rows' environments (32 registers at CB 4) share B

// Rows [i, i + R) of a tile through one chunk of fast sites: each block (g, g') of each row's saved
// environment, with the group's packed B block g' and each row's A block g.
template <int CHI, int CB, int R>
void fast_rows(const std::complex<float>* a, int64_t i, int64_t i0, int64_t sample_stride, const Segment& seg,
               int since, bool patterned, const V* fb, int64_t fast_site_v, Workspace& ws) {
    constexpr int G = CHI / CB;
    constexpr int64_t cc = CHI * CHI;
    constexpr int64_t site_stride = 2 * cc;
    const int64_t len = seg.k1 - seg.k0;
    for (int h = 0; h < G; ++h)
        for (int gg = 0; gg < G; ++gg) {
            V* er[R];
            V* ei[R];
            VI* ex[R];
            const std::complex<float>* ak[R];
            for (int r = 0; r < R; ++r) {
                const int64_t row = i + r - i0;
                er[r] = ws.env_r.data() + row * cc + gg * CB * CHI + h * CB;
                ei[r] = ws.env_i.data() + row * cc + gg * CB * CHI + h * CB;
                ex[r] = ws.exps.data() + row * G * G + gg * G + h;
                ak[r] = a + (i + r) * sample_stride + seg.k0 * site_stride + gg * CB * CHI + gg * CB;
            }
            fast_block_run<CB, CHI, R>(er, ei, ex, since, patterned, len, fb + seg.k0 * fast_site_v + h * CB * CB * 2,
                                       fast_site_v, ak, site_stride);
        }
}

template <int CHI, int CB, typename OutT>
void compute_tile_fast(const std::complex<float>* a, const std::complex<float>* b, int64_t n_sites, const Tile& t,
                       bool symmetric, const unsigned char* structured, const std::vector<Segment>& segments,
                       const std::vector<int64_t>& general_index, int64_t n_general, Workspace& ws, OutT* out,
                       int64_t ldo) {
    constexpr int G = CHI / CB;
    constexpr int64_t cc = CHI * CHI;
    constexpr int64_t site_stride = 2 * cc;
    constexpr int64_t fast_site_v = 2 * G * CB * CB;  // packed V's per fast site: [g'][c][y] (re, im)
    const int64_t sample_stride = n_sites * site_stride;
    const int64_t n_groups = (t.j1 - t.j0 + W - 1) / W;
    const int64_t rows = t.i1 - t.i0;
    ws.br.resize(std::max<int64_t>(n_general, 1) * site_stride);
    ws.bi.resize(std::max<int64_t>(n_general, 1) * site_stride);
    ws.nz.resize(std::max<int64_t>(n_general, 1) * 2 * CHI);
    ws.nzb.resize(std::max<int64_t>(n_general, 1) * site_stride);
    ws.fb.resize(n_sites * fast_site_v);
    ws.env_r.resize(rows * cc);
    ws.env_i.resize(rows * cc);
    ws.exps.resize(rows * G * G);
    ws.since.resize(rows);
    ws.patterned.resize(rows);
    ws.nr.resize(cc);
    ws.ni.resize(cc);
    ws.hr.resize(2 * cc);
    ws.hi.resize(2 * cc);
    const bool diagonal = symmetric && t.i0 == t.j0;

    for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t jg = t.j0 + g * W;
        if (diagonal && jg + W <= t.i0) continue;
        // Pack B: general sites in the full layout [site][s][y][c] with the nonzero maps, fast sites as
        // [site][g'][c][y] (re, im) holding B_{last(c)}; lanes past the tile's edge repeat its last column.
        V* pr = ws.br.data();
        V* pi = ws.bi.data();
        V* fb = ws.fb.data();
        unsigned char* nzg = ws.nz.data();
        unsigned char* nzb = ws.nzb.data();
        // entry by entry with the lanes innermost: each packed vector is written whole (a lane-outer loop
        // wrote one float per cache line and took a tenth of the call)
        const std::complex<float>* src[W];
        for (int w = 0; w < W; ++w) src[w] = b + std::min(jg + w, t.j1 - 1) * sample_stride;
        for (const Segment& seg : segments)
            for (int64_t k = seg.k0; k < seg.k1; ++k) {
                const int64_t site = k * site_stride;
                if (!seg.fast) {
                    const int64_t o = general_index[k] * site_stride;
                    for (int64_t e = 0; e < site_stride; ++e)
                        for (int w = 0; w < W; ++w) {
                            pr[o + e][w] = src[w][site + e].real();
                            pi[o + e][w] = src[w][site + e].imag();
                        }
                    continue;
                }
                V* dst = fb + k * fast_site_v;
                for (int h = 0; h < G; ++h)
                    for (int c = 0; c < CB; ++c)
                        for (int y = 0; y < CB; ++y) {
                            const int64_t e = site + ((c & 1) * CHI + h * CB + y) * CHI + h * CB + c;
                            V& re = dst[((h * CB + c) * CB + y) * 2];
                            V& im = dst[((h * CB + c) * CB + y) * 2 + 1];
                            for (int w = 0; w < W; ++w) {
                                re[w] = src[w][e].real();
                                im[w] = src[w][e].imag();
                            }
                        }
            }
        std::fill(nzg, nzg + std::max<int64_t>(n_general, 1) * 2 * CHI, 0);
        for (int64_t q = 0; q < n_general; ++q)
            for (int64_t e = 0; e < site_stride; ++e) {
                bool any = false;
                for (int w = 0; w < W; ++w) any |= (pr[q * site_stride + e][w] != 0.0f) | (pi[q * site_stride + e][w] != 0.0f);
                nzb[q * site_stride + e] = any;
                if (any) nzg[q * 2 * CHI + (e / (CHI * CHI)) * CHI + e % CHI] = 1;
            }
        // every row of the tile starts at E = e0 e0^T with exponent 0
        for (int64_t r = 0; r < rows; ++r) {
            V* er = ws.env_r.data() + r * cc;
            V* ei = ws.env_i.data() + r * cc;
            for (int64_t e = 0; e < cc; ++e) er[e] = ei[e] = V{};
            er[0] = splat(1.0f);
            for (int blk = 0; blk < G * G; ++blk) ws.exps[r * G * G + blk] = VI{};
            ws.since[r] = 0;
            ws.patterned[r] = 1;
        }
        // the rows of the group (a diagonal tile skips those whose whole group lies below the diagonal)
        const int64_t row0 = t.i0;
        const int64_t row1 = diagonal ? std::min(t.i1, jg + W) : t.i1;
        for (const Segment& seg : segments) {
            if (seg.fast) {
                // FR rows at a time share each B load; a leftover row runs alone
                const int64_t len = seg.k1 - seg.k0;
                const int since = ws.since[row0 - t.i0];
                const bool patterned = ws.patterned[row0 - t.i0];
                int64_t i = row0;
                for (; i + FR <= row1; i += FR)
                    fast_rows<CHI, CB, FR>(a, i, t.i0, sample_stride, seg, since, patterned, fb, fast_site_v, ws);
                for (; i < row1; ++i)
                    fast_rows<CHI, CB, 1>(a, i, t.i0, sample_stride, seg, since, patterned, fb, fast_site_v, ws);
                for (int64_t r = row0 - t.i0; r < row1 - t.i0; ++r) {
                    ws.since[r] = static_cast<int>((since + len) % RENORM);
                    ws.patterned[r] = patterned || len > 0;
                }
                continue;
            }
            for (int64_t i = row0; i < row1; ++i) {
                const int64_t r = i - t.i0;
                const std::complex<float>* arow = a + i * sample_stride;
                V* er = ws.env_r.data() + r * cc;
                V* ei = ws.env_i.data() + r * cc;
                VI* exps = ws.exps.data() + r * G * G;
                int since = ws.since[r];
                bool patterned = ws.patterned[r];
                {
                    const int64_t k = seg.k0;
                    if (G > 1) common_exponent<CB, CHI>(er, ei, exps);
                    const int64_t q = general_index[k];
                    V* nr = ws.nr.data();
                    V* ni = ws.ni.data();
                    one_site<CHI>(CHI, structured[k], er, ei, nr, ni, ws.hr.data(), ws.hi.data(), pr + q * site_stride,
                                  pi + q * site_stride, nzb + q * site_stride, nzg + q * 2 * CHI,
                                  arow + k * site_stride, k == n_sites - 1, patterned, since, exps[0]);
                    std::copy(nr, nr + cc, er);
                    std::copy(ni, ni + cc, ei);
                    for (int blk = 1; blk < G * G; ++blk) exps[blk] = exps[0];
                }
                ws.since[r] = since;
                ws.patterned[r] = patterned;
            }
        }
        write_group(out, ldo, row0, row1, jg, t, diagonal, symmetric, ws.env_r.data(), ws.env_i.data(), cc,
                    ws.exps.data(), G * G);
    }
}

// Site k is structured when no sample of T has a nonzero A_s[x][beta] with s != last bit of beta.
// Sites are independent: OpenMP over them (one pass over all tensors, a few % of a call when single-threaded).
void mark_structured(const std::complex<float>* t, int64_t n_samples, int64_t n_sites, int chi,
                     std::vector<unsigned char>& structured, int n_threads) {
    const int64_t cc = static_cast<int64_t>(chi) * chi;
#pragma omp parallel for schedule(dynamic, 8) num_threads(n_threads)
    for (int64_t k = 0; k < n_sites; ++k) {
        if (!structured[k]) continue;
        bool ok = true;
        for (int64_t i = 0; i < n_samples && ok; ++i) {
            const std::complex<float>* site = t + (i * n_sites + k) * 2 * cc;
            for (int s = 0; s < 2 && ok; ++s)
                for (int x = 0; x < chi && ok; ++x)
                    for (int beta = 1 - s; beta < chi; beta += 2)
                        if (site[(s * chi + x) * chi + beta] != std::complex<float>(0.0f, 0.0f)) {
                            ok = false;
                            break;
                        }
        }
        structured[k] = ok;
    }
}

// The block size of the register path for bond CHI (0: none): linear chains of bond 2 and 4 are one block;
// bond 16 is the circular ring of reps 2, blocks of 4.  Larger blocks would not fit the registers.
constexpr int fast_block(int chi) { return chi == 2 || chi == 4 ? chi : chi == 16 ? 4 : 0; }

// Site k is block diagonal in blocks of cb when no sample of T has A_s[x][beta] != 0 with x / cb != beta / cb.
// Row by row, the entries outside x's block are two contiguous runs (linear in the tensors' size).
void mark_block_diagonal(const std::complex<float>* t, int64_t n_samples, int64_t n_sites, int chi, int cb,
                         std::vector<unsigned char>& fast, int n_threads) {
    const int64_t cc = static_cast<int64_t>(chi) * chi;
    auto nonzero = [](const std::complex<float>* p, int count) {
        const float* f = reinterpret_cast<const float*>(p);
        bool any = false;
        for (int e = 0; e < 2 * count; ++e) any |= f[e] != 0.0f;
        return any;
    };
#pragma omp parallel for schedule(dynamic, 8) num_threads(n_threads)
    for (int64_t k = 0; k < n_sites; ++k) {
        if (!fast[k]) continue;
        bool ok = true;
        for (int64_t i = 0; i < n_samples && ok; ++i) {
            const std::complex<float>* site = t + (i * n_sites + k) * 2 * cc;
            for (int row = 0; row < 2 * chi && ok; ++row) {
                const std::complex<float>* r = site + static_cast<int64_t>(row) * chi;
                const int lo = (row % chi) / cb * cb;  // x's block: columns [lo, lo + cb)
                ok = !nonzero(r, lo) && !nonzero(r + lo + cb, chi - lo - cb);
            }
        }
        fast[k] = ok;
    }
}

template <int CHI, typename OutT>
void gram_impl(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
               int64_t n_sites, int chi, bool symmetric, const unsigned char* structured, const unsigned char* fast,
               OutT* out, int tile, int n_threads) {
    std::vector<Tile> tiles;
    for (int64_t i0 = 0; i0 < n_rows; i0 += tile)
        for (int64_t j0 = symmetric ? i0 : 0; j0 < n_cols; j0 += tile)
            tiles.push_back({i0, std::min(n_rows, i0 + tile), j0, std::min(n_cols, j0 + tile)});
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(n_tiles, 1)));
    // The register path's plan: chunks of fast sites whose packed B (2 G CB^2 vectors per site) stays in
    // L2, and each other site alone; general_index numbers the others (their slots in the full packing).
    constexpr int CB = fast_block(CHI);
    std::vector<Segment> segments;
    std::vector<int64_t> general_index(n_sites, -1);
    int64_t n_general = 0;
    bool any_fast = false;
    if (CB > 0) {
        const int64_t chunk = std::max<int64_t>(8, (256 << 10) / (2 * (CHI / CB) * CB * CB * int64_t(sizeof(V))));
        for (int64_t k = 0; k < n_sites;) {
            if (fast[k]) {
                int64_t k1 = k;
                while (k1 < n_sites && fast[k1] && k1 - k < chunk) ++k1;
                segments.push_back({k, k1, true});
                any_fast = true;
                k = k1;
            } else {
                general_index[k] = n_general++;
                segments.push_back({k, k + 1, false});
                ++k;
            }
        }
    }
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        g_last_threads = omp_get_num_threads();
        Workspace ws;
#pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < n_tiles; ++k) {
            if constexpr (CB > 0) {
                if (any_fast) {
                    compute_tile_fast<CHI, CB, OutT>(a, b, n_sites, tiles[k], symmetric, structured, segments,
                                                     general_index, n_general, ws, out, n_cols);
                    continue;
                }
            }
            compute_tile<CHI, OutT>(a, b, n_sites, chi, tiles[k], symmetric, structured, ws, out, n_cols);
        }
    }
}

template <typename OutT>
void dispatch(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
              int64_t n_sites, int chi, bool symmetric, const unsigned char* st, const unsigned char* fast, OutT* out, int tile,
              int n_threads) {
    switch (chi) {  // the bond dimensions of the ZZ map (2**reps, 4**reps) get unrolled kernels
        case 2: return gram_impl<2>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, fast, out, tile, n_threads);
        case 4: return gram_impl<4>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, fast, out, tile, n_threads);
        case 8: return gram_impl<8>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, fast, out, tile, n_threads);
        case 16: return gram_impl<16>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, fast, out, tile, n_threads);
        default: return gram_impl<0>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, fast, out, tile, n_threads);
    }
}

// Whether the array's dtype is equivalent to T's (NumPy's PyArray_EquivTypes).  Not dtype().is(...):
// that compares the descriptor objects, and an array that was pickled (sent to a Dask worker inside an
// object, e.g. MPSStates) carries its own copy of the complex64 descriptor, equal but not the same object.
template <typename T>
bool has_dtype(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);
}

py::array check_tensors(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a NumPy array");
    auto T = py::reinterpret_borrow<py::array>(obj);
    if (T.ndim() != 5 || T.shape(2) != 2 || T.shape(3) != T.shape(4))
        throw py::value_error(std::string(name) + " must have shape (N, n, 2, chi, chi)");
    if (!has_dtype<std::complex<float>>(T))
        throw py::value_error(std::string(name) + " must have dtype complex64");
    if (!(T.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return T;
}

void gram(py::handle A_obj, py::handle B_obj, py::handle out_obj, int tile, int n_threads, bool use_structure) {
    if (tile <= 0) throw py::value_error("tile must be a positive integer");
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    py::array A = check_tensors(A_obj, "A");
    const bool symmetric = B_obj.is_none();
    py::array B = symmetric ? A : check_tensors(B_obj, "B");
    if (B.shape(1) != A.shape(1) || B.shape(3) != A.shape(3))
        throw py::value_error("A and B must have the same number of sites and bond dimension");
    const int64_t n_rows = A.shape(0), n_cols = B.shape(0), n_sites = A.shape(1);
    const int chi = static_cast<int>(A.shape(3));
    if (!py::isinstance<py::array>(out_obj)) throw py::type_error("out must be a NumPy array");
    auto out = py::reinterpret_borrow<py::array>(out_obj);
    if (out.ndim() != 2 || out.shape(0) != n_rows || out.shape(1) != n_cols)
        throw py::value_error("out must have shape (" + std::to_string(n_rows) + ", " + std::to_string(n_cols) + ")");
    if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const bool single = has_dtype<float>(out);
    if (!single && !has_dtype<double>(out)) throw py::value_error("out must be float32 or float64");
    const auto* a = static_cast<const std::complex<float>*>(A.data());
    const auto* b = static_cast<const std::complex<float>*>(B.data());
    void* o = out.mutable_data();
    py::gil_scoped_release release;  // the arrays stay referenced by the caller
    std::vector<unsigned char> structured(n_sites, use_structure && chi >= 2 ? 1 : 0);
    mark_structured(a, n_rows, n_sites, chi, structured, n_threads);
    if (!symmetric) mark_structured(b, n_cols, n_sites, chi, structured, n_threads);
    // fast: the register path's sites (structured, and block diagonal when the bond holds several blocks)
    std::vector<unsigned char> fast = structured;
    const int cb = fast_block(chi);
    if (cb == 0) std::fill(fast.begin(), fast.end(), 0);
    if (cb > 0 && cb < chi) {
        mark_block_diagonal(a, n_rows, n_sites, chi, cb, fast, n_threads);
        if (!symmetric) mark_block_diagonal(b, n_cols, n_sites, chi, cb, fast, n_threads);
    }
    if (single)
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, structured.data(), fast.data(),
                 static_cast<float*>(o), tile, n_threads);
    else
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, structured.data(), fast.data(),
                 static_cast<double*>(o), tile, n_threads);
}

// ---------------------------------------------------------------------------------------------------------
// log <a_i|a_i> of each sample (the norms' check that gram runs first), OpenMP over samples.
//
//   * One sample at a time in double: E' = sum_s A_s^H E A_s through half_s = E A_s, with A's site converted
//     to planar double once per site (the same pass checks that every entry is finite: a sample with a NaN or
//     infinite entry gets NaN, so the caller needs no pass of its own over the tensors).
//   * Zeros are skipped where the ZZ tensors have them: columns of A_s that are zero (s != last bit of the
//     right index) in the half product and in E', and entries of E that are zero (its indices share their
//     last bit after a structured site).  About 3 chi^3 / 2 complex multiply-adds per site at chi 4 instead
//     of 4 chi^3, over chi-wide rows that the compiler vectorises.
//   * E is divided by the power of two at or below its largest |re| or |im| after every site (exact), and
//     the exponents are summed: log <a|a> = log|E00| + e ln 2, with no underflow at any length.
// Cost: O(N n chi^3) with N the samples, against the kernel's O(N^2 n chi^3): 1-3% of a Gram call.
// ---------------------------------------------------------------------------------------------------------
constexpr int WD = 8;  // samples per SIMD group of the self overlaps (one AVX-512 register of float64)
typedef double VD __attribute__((vector_size(WD * sizeof(double))));
typedef int64_t VL __attribute__((vector_size(WD * sizeof(int64_t))));

// One site of WD samples (one per lane): E (er, ei) -> E' (nr, ni), unscaled.  ar, ai: the site's A_s[y][c] for
// both s; col: its columns (s, c) nonzero in some lane.  Zero columns of A_s are skipped in both products.
template <int CHI>
inline void self_site(int chi_rt, const VD* __restrict er, const VD* __restrict ei, VD* __restrict nr,
                      VD* __restrict ni, const VD* __restrict ar, const VD* __restrict ai,
                      const unsigned char* __restrict col) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int cc = chi * chi;
    for (int e = 0; e < cc; ++e) nr[e] = ni[e] = VD{};
    for (int s = 0; s < 2; ++s) {
        const VD* asr = ar + s * cc;
        const VD* asi = ai + s * cc;
        const unsigned char* cs = col + s * chi;
        for (int c = 0; c < chi; ++c) {
            if (!cs[c]) continue;
            for (int x = 0; x < chi; ++x) {
                // half = sum_y E[x][y] A_s[y][c], used at once: E'[p][c] += conj(A_s[x][p]) half
                VD hr{}, hi{};
#pragma GCC unroll 16
                for (int y = 0; y < chi; ++y) {
                    hr += er[x * chi + y] * asr[y * chi + c] - ei[x * chi + y] * asi[y * chi + c];
                    hi += er[x * chi + y] * asi[y * chi + c] + ei[x * chi + y] * asr[y * chi + c];
                }
#pragma GCC unroll 16
                for (int p = 0; p < chi; ++p) {
                    if (!cs[p]) continue;
                    const VD cr = asr[x * chi + p], ci = asi[x * chi + p];  // conj(A) = cr - i ci
                    nr[p * chi + c] += cr * hr + ci * hi;
                    ni[p * chi + c] += cr * hi - ci * hr;
                }
            }
        }
    }
}

// log <a|a> of the samples [i0, i0 + WD) (lanes past n_samples repeat the last sample; not stored).
template <int CHI>
void self_log_overlap_group(const std::complex<float>* t, int64_t i0, int64_t n_samples, int64_t n_sites, int chi_rt,
                            VD* work, double* out) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int cc = chi * chi;
    const int64_t sample_stride = n_sites * 2 * static_cast<int64_t>(cc);
    VD* er = work;            // E [x][y]
    VD* ei = er + cc;
    VD* nr = ei + cc;         // E' [p][c]
    VD* ni = nr + cc;
    VD* ar = ni + cc;         // A_s [y][c], both s
    VD* ai = ar + 2 * cc;
    unsigned char col[2 * 256];   // column (s, c) of A nonzero in some lane (chi <= MAX_BOND = 256)
    const float* src[WD];
    for (int w = 0; w < WD; ++w)
        src[w] = reinterpret_cast<const float*>(t + std::min<int64_t>(i0 + w, n_samples - 1) * sample_stride);
    for (int e = 0; e < cc; ++e) er[e] = ei[e] = VD{};
    er[0] = VD{} + 1.0;
    VL exponent{};
    VL finite = VL{} - 1;  // all bits set: no NaN or infinite entry seen in the lane
    const VD big = VD{} + std::numeric_limits<double>::max();
    for (int64_t k = 0; k < n_sites; ++k) {
        const int64_t site = k * 4 * cc;  // floats
        for (int e = 0; e < 2 * cc; ++e) {
            VD re, im;
            for (int w = 0; w < WD; ++w) {
                re[w] = src[w][site + 2 * e];
                im[w] = src[w][site + 2 * e + 1];
            }
            const VD are = re < 0 ? -re : re, aim = im < 0 ? -im : im;
            finite &= (are <= big) & (aim <= big);  // false for NaN and inf
            ar[e] = re;
            ai[e] = im;
        }
        for (int sc = 0; sc < 2 * chi; ++sc) {  // (s, c): any lane nonzero in the column
            const int s = sc / chi, c = sc % chi;
            VL nz{};
            for (int y = 0; y < chi; ++y) nz |= (ar[s * cc + y * chi + c] != 0) | (ai[s * cc + y * chi + c] != 0);
            bool any = false;
            for (int w = 0; w < WD; ++w) any |= nz[w] != 0;
            col[sc] = any;
        }
        self_site<CHI>(chi, er, ei, nr, ni, ar, ai, col);
        // each lane divided by the power of two 2**e with its largest |re| or |im| in [0.5, 1)
        VD largest{};
        for (int e = 0; e < cc; ++e) {
            const VD r = nr[e] < 0 ? -nr[e] : nr[e], i = ni[e] < 0 ? -ni[e] : ni[e];
            largest = largest > r ? largest : r;
            largest = largest > i ? largest : i;
        }
        VL u;
        std::memcpy(&u, &largest, sizeof u);
        const VL biased = (u >> 52) & 0x7ff;
        // zero, subnormal (cannot come from normal float32 products at a fresh scale) and non-finite lanes keep theirs
        const VL e2 = (biased == 0) | (biased == 0x7ff) ? VL{} : biased - 1022;
        const VL inv_bits = (1023 - e2) << 52;
        VD inv;
        std::memcpy(&inv, &inv_bits, sizeof inv);
        for (int e = 0; e < cc; ++e) {
            nr[e] *= inv;
            ni[e] *= inv;
        }
        exponent += e2;
        std::swap(er, nr);
        std::swap(ei, ni);
    }
    for (int w = 0; w < WD && i0 + w < n_samples; ++w) {
        // <a|a> is real: E00's imaginary part is rounding only (as in the NumPy contraction, its real part is used)
        out[i0 + w] = finite[w] ? std::log(std::fabs(er[0][w])) + static_cast<double>(exponent[w]) * std::log(2.0)
                                : std::nan("");
    }
}

template <int CHI>
void self_log_overlap_impl(const std::complex<float>* t, int64_t n_samples, int64_t n_sites, int chi, double* out,
                           int n_threads) {
    const int64_t n_groups = (n_samples + WD - 1) / WD;
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(n_groups, 1)));
#pragma omp parallel num_threads(threads)
    {
        std::vector<VD> work(8 * static_cast<size_t>(chi) * chi);
#pragma omp for schedule(static)
        for (int64_t g = 0; g < n_groups; ++g)
            self_log_overlap_group<CHI>(t, g * WD, n_samples, n_sites, chi, work.data(), out);
    }
}

py::array_t<double> self_log_overlap(py::handle T_obj, int n_threads) {
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    py::array T = check_tensors(T_obj, "tensors");
    const int64_t n_samples = T.shape(0), n_sites = T.shape(1);
    const int chi = static_cast<int>(T.shape(3));
    if (chi > 256) throw py::value_error("bond dimension above 256 (MAX_BOND)");
    py::array_t<double> out(n_samples);
    const auto* t = static_cast<const std::complex<float>*>(T.data());
    double* o = out.mutable_data();
    py::gil_scoped_release release;
    switch (chi) {
        case 2: self_log_overlap_impl<2>(t, n_samples, n_sites, chi, o, n_threads); break;
        case 4: self_log_overlap_impl<4>(t, n_samples, n_sites, chi, o, n_threads); break;
        case 16: self_log_overlap_impl<16>(t, n_samples, n_sites, chi, o, n_threads); break;
        default: self_log_overlap_impl<0>(t, n_samples, n_sites, chi, o, n_threads); break;
    }
    return out;
}

// CPU seconds of the calling thread: on a shared machine the wall clock also counts the time other
// processes hold the core, which the kernel's own figures (CPU seconds per site-pair) leave out.
double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// The float32 FMA rate of one thread per CPU second: 12 independent chains of V-wide multiply-adds (enough to cover
// the FMA latency on the pipes), `iterations` rounds; returns the flops counted as 2 per lane and FMA.
double fma_rate(int64_t iterations) {
    if (iterations <= 0) throw py::value_error("iterations must be a positive integer");
    constexpr int CHAINS = 12;
    V acc[CHAINS];
    // factors from the argument: constants would let the compiler fold the loop (a rounding fixed point)
    const float step = 1.0f / static_cast<float>(iterations + 7);
    for (int c = 0; c < CHAINS; ++c) acc[c] = splat(1.0f + step * c);
    const V mul = splat(1.0f - step), add = splat(step);
    double seconds;
    {
        py::gil_scoped_release release;
        const double start = thread_cpu_seconds();
        for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
            for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * mul + add;
        }
        seconds = thread_cpu_seconds() - start;
    }
    float sum = 0.0f;
    for (int c = 0; c < CHAINS; ++c)  // every lane of every chain is stored: no round can be dropped
        for (int w = 0; w < W; ++w) sum += acc[c][w];
    g_fma_sink = sum;
    return 2.0 * W * CHAINS * static_cast<double>(iterations) / seconds;
}

}  // namespace

PYBIND11_MODULE(_mps_openmp, m) {
    m.doc() = "Fidelity Gram matrix of matrix-product states with OpenMP and SIMD over pairs";
    m.def("gram", &gram, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("tile"), py::arg("n_threads"),
          py::arg("structured") = true,
          "Fill out (N, M) float32/float64 with |<a_i|b_j>|^2 of MPS site tensors (N, n, 2, chi, chi) complex64.\n\n"
          "B=None computes the symmetric Gram from the upper tiles only, writing each value and its mirror.\n"
          "structured=True uses the ZZ zero pattern (s = last bit of the right index) at every site where all\n"
          "samples have it; False takes the general path at every site.\n"
          "Runs n_threads OpenMP threads with the GIL released.");
    m.def("self_log_overlap", &self_log_overlap, py::arg("tensors"), py::arg("n_threads"),
          "(N,) float64 log <a_i|a_i> of MPS site tensors (N, n, 2, chi, chi) complex64, in double with per-site\n"
          "power-of-two rescaling; NaN for a sample with a NaN or infinite entry.  n_threads OpenMP threads over\n"
          "the samples, GIL released.");
    m.def("last_num_threads", []() { return g_last_threads; },
          "Threads that ran the parallel region of the last gram call.");
    m.def("fma_rate", &fma_rate, py::arg("iterations"),
          "float32 FLOP per CPU second of one thread running 12 independent chains of W-lane FMAs for `iterations`\n"
          "rounds (the thread's CPU time, so a shared core's other processes do not lower it).");
    m.attr("LANES") = W;
}
