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
//     the general 4 chi^3.  For chi <= 4 the inner loops unroll completely and
//     the environment of the W pairs is read from registers.
//   * For chi > 4 the path also skips zero coefficients of A and (y, c)
//     entries of B that are zero in all lanes: the circular map's tensors are
//     block diagonal in gamma, which leaves 1/16 of the chi^3 work at chi 16.
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
//     subnormals below), far inside float32's 2**+-126.  K = exp(2 (log|E00|
//     + e_sum ln 2)) is formed in double at the end, so the only loss is the
//     output dtype's own range (float64: values below about 4.9e-324 become 0).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
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
};

inline V splat(float v) { return V{} + v; }

// One site of the general path: E (er, ei) -> E' (nr, ni), skipping B columns zero in all lanes
// and zero coefficients of A.
template <int CHI>
void general_site(int chi_rt, const V* er, const V* ei, V* hr, V* hi, V* nr, V* ni, const V* pr, const V* pi,
                  const unsigned char* nzk, const std::complex<float>* ak) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    // half_s[x][c] = sum_y E[x][y] B_s[y][c]
    for (int s = 0; s < 2; ++s)
        for (int x = 0; x < chi; ++x)
            for (int c = 0; c < chi; ++c) {
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
    for (int p = 0; p < chi; ++p)
        for (int c = 0; c < chi; ++c) {
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

// Divide each lane of E by the power of two at or below its largest |re| or |im|; add the exponents.
inline void rescale(V* er, V* ei, int cc, VI& exponent) {
    V largest{};
#pragma GCC unroll 16
    for (int e = 0; e < cc; ++e) {
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
#pragma GCC unroll 16
    for (int k = 0; k < cc; ++k) {
        er[k] *= inv;
        ei[k] *= inv;
    }
}

// A run of structured sites [k0, k1) for chi <= 4: the environment of the W pairs is read from local arrays
// with constant indices (registers); each next environment is stored to the caller's buffer column by
// column and loaded back once per site, which keeps the live registers within the 32 of AVX-512.
template <int CHI>
void structured_run(V* er, V* ei, int64_t k0, int64_t k1, bool patterned, int& since, VI& exponent, const V* pr,
                    const V* pi, const unsigned char* nzb, const std::complex<float>* arow, int64_t site_stride) {
    constexpr int CC = CHI * CHI;
    V Er[CC], Ei[CC];
    V* __restrict Nr = er;  // the caller's buffer holds each next environment (stores, then loads back)
    V* __restrict Ni = ei;
#pragma GCC unroll 16
    for (int e = 0; e < CC; ++e) {
        Er[e] = er[e];
        Ei[e] = ei[e];
    }
    for (int64_t k = k0; k < k1; ++k) {
        const int64_t o = k * site_stride;
        if (patterned)
            structured_site<CHI, true, false>(CHI, Er, Ei, Nr, Ni, pr + o, pi + o, nzb + o, arow + o);
        else
            structured_site<CHI, false, false>(CHI, Er, Ei, Nr, Ni, pr + o, pi + o, nzb + o, arow + o);
        patterned = true;
        // entries whose indices differ in their last bit are zero now: constants, not registers
#pragma GCC unroll 16
        for (int e = 0; e < CC; ++e) {
            const bool live = ((e / CHI) & 1) == ((e % CHI) & 1);
            Er[e] = live ? Nr[e] : V{};
            Ei[e] = live ? Ni[e] : V{};
        }
        if (++since >= RENORM) {
            rescale(Er, Ei, CC, exponent);
            since = 0;
        }
    }
#pragma GCC unroll 16
    for (int e = 0; e < CC; ++e) {
        er[e] = Er[e];
        ei[e] = Ei[e];
    }
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
                if (CHI > 0 && CHI <= 4 && structured[k]) {
                    int64_t k1 = k;
                    while (k1 < n_sites && structured[k1]) ++k1;
                    constexpr int small = CHI > 0 && CHI <= 4 ? CHI : 2;
                    structured_run<small>(er, ei, k, k1, patterned, since, exponent, pr, pi, nzb, arow, site_stride);
                    patterned = true;
                    k = k1;
                    continue;
                }
                const std::complex<float>* ak = arow + k * site_stride;
                const V* pk = pr + k * site_stride;
                const V* qk = pi + k * site_stride;
                if (structured[k]) {
                    constexpr bool skip = CHI == 0 || CHI > 4;
                    if (patterned)
                        structured_site<CHI, true, skip>(chi, er, ei, nr, ni, pk, qk, nzb + k * site_stride, ak);
                    else
                        structured_site<CHI, false, skip>(chi, er, ei, nr, ni, pk, qk, nzb + k * site_stride, ak);
                    patterned = true;
                } else {
                    if (since) rescale(er, ei, static_cast<int>(cc), exponent);
                    general_site<CHI>(chi, er, ei, ws.hr.data(), ws.hi.data(), nr, ni, pk, qk, nzg + k * 2 * chi, ak);
                    patterned = false;
                    since = RENORM - 1;  // rescale right after it
                }
                std::swap(er, nr);
                std::swap(ei, ni);
                if (++since >= RENORM) {
                    rescale(er, ei, static_cast<int>(cc), exponent);
                    since = 0;
                }
                ++k;
            }
            for (int w = 0; w < W; ++w) {
                const int64_t j = jg + w;
                if (j >= t.j1 || (diagonal && j < i)) continue;
                const double re = er[0][w], im = ei[0][w];
                const double modulus = std::sqrt(re * re + im * im);
                const double value =
                    modulus == 0.0 ? 0.0 : std::exp(2.0 * (std::log(modulus) + exponent[w] * 0.6931471805599453));
                out[i * ldo + j] = static_cast<OutT>(value);
                if (symmetric) out[j * ldo + i] = static_cast<OutT>(value);
            }
        }
    }
}

// Site k is structured when no sample of T has a nonzero A_s[x][beta] with s != last bit of beta.
void mark_structured(const std::complex<float>* t, int64_t n_samples, int64_t n_sites, int chi,
                     std::vector<unsigned char>& structured) {
    const int64_t cc = static_cast<int64_t>(chi) * chi;
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

template <int CHI, typename OutT>
void gram_impl(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
               int64_t n_sites, int chi, bool symmetric, const unsigned char* structured, OutT* out, int tile,
               int n_threads) {
    std::vector<Tile> tiles;
    for (int64_t i0 = 0; i0 < n_rows; i0 += tile)
        for (int64_t j0 = symmetric ? i0 : 0; j0 < n_cols; j0 += tile)
            tiles.push_back({i0, std::min(n_rows, i0 + tile), j0, std::min(n_cols, j0 + tile)});
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(n_tiles, 1)));
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        g_last_threads = omp_get_num_threads();
        Workspace ws;
#pragma omp for schedule(dynamic, 1)
        for (int64_t k = 0; k < n_tiles; ++k)
            compute_tile<CHI, OutT>(a, b, n_sites, chi, tiles[k], symmetric, structured, ws, out, n_cols);
    }
}

template <typename OutT>
void dispatch(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
              int64_t n_sites, int chi, bool symmetric, const unsigned char* st, OutT* out, int tile,
              int n_threads) {
    switch (chi) {  // the bond dimensions of the ZZ map (2**reps, 4**reps) get unrolled kernels
        case 2: return gram_impl<2>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, out, tile, n_threads);
        case 4: return gram_impl<4>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, out, tile, n_threads);
        case 8: return gram_impl<8>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, out, tile, n_threads);
        case 16: return gram_impl<16>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, out, tile, n_threads);
        default: return gram_impl<0>(a, b, n_rows, n_cols, n_sites, chi, symmetric, st, out, tile, n_threads);
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
    mark_structured(a, n_rows, n_sites, chi, structured);
    if (!symmetric) mark_structured(b, n_cols, n_sites, chi, structured);
    if (single)
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, structured.data(), static_cast<float*>(o), tile,
                 n_threads);
    else
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, structured.data(), static_cast<double*>(o), tile,
                 n_threads);
}

// The float32 FMA rate of one thread: 12 independent chains of V-wide multiply-adds (enough to cover
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
        const double start = omp_get_wtime();
        for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
            for (int c = 0; c < CHAINS; ++c) acc[c] = acc[c] * mul + add;
        }
        seconds = omp_get_wtime() - start;
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
    m.def("last_num_threads", []() { return g_last_threads; },
          "Threads that ran the parallel region of the last gram call.");
    m.def("fma_rate", &fma_rate, py::arg("iterations"),
          "float32 FLOP/s of one thread running 12 independent chains of W-lane FMAs for `iterations` rounds.");
    m.attr("LANES") = W;
}
