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
//     are packed into planar float32 panels [site][s][y][c][lane] once per
//     tile, and row i's coefficients conj(A) are scalars broadcast over the
//     lanes, so every complex multiply-add is 4 FMAs on W lanes.  The
//     environments of the W pairs (2 chi^2 W floats) stay in L1.
//   * Structural zeros are skipped: a (s, c) column of B that is zero for all
//     lanes of a group (the ZZ map's tensors vanish unless s equals the last
//     layer's bit of c) and zero coefficients of A.  For the ZZ map with
//     linear entanglement this leaves 1.5 chi^3 of the 4 chi^3 products.
//   * Underflow: after every site each lane's environment is divided by the
//     power of two 2**e at or below its largest |re| or |im| (exact: only the
//     float exponent changes) and e is summed per lane as an integer, so the
//     scale itself can never underflow.  K = exp(2 (log|E00| + e_sum ln 2)) is
//     formed in double at the end, so the only loss is the output dtype's own
//     range (float64: values below about 4.9e-324 become 0).
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

constexpr int W = 16;  // pairs per SIMD group (one AVX-512 register of float32, two of AVX2)
int g_last_threads = 0;

struct Tile {
    int64_t i0, i1, j0, j1;
};

// Per-thread buffers; CHI > 0 fixes the bond dimension at compile time (unrolled loops), 0 reads `chi`.
struct Workspace {
    std::vector<float> bre, bim;      // packed B of one group: [site][s][y][c][lane]
    std::vector<unsigned char> nz;    // [group][site][s][c]: column (s, c) nonzero in some lane
    std::vector<float> ere, eim;      // environment [x][y][lane]
    std::vector<float> hre, him;      // half products [s][x][c][lane]
    std::vector<float> nre, nim;      // next environment [p][c][lane]
};

template <int CHI, typename OutT>
void compute_tile(const std::complex<float>* a, const std::complex<float>* b, int64_t n_sites, int chi_rt,
                  const Tile& t, bool symmetric, Workspace& ws, OutT* out, int64_t ldo) {
    const int chi = CHI > 0 ? CHI : chi_rt;
    const int64_t cc = static_cast<int64_t>(chi) * chi;
    const int64_t site_stride = 2 * cc;            // complex entries per site
    const int64_t sample_stride = n_sites * site_stride;
    const int64_t n_groups = (t.j1 - t.j0 + W - 1) / W;
    const int64_t group_floats = n_sites * site_stride * W;
    ws.bre.resize(group_floats);
    ws.bim.resize(group_floats);
    ws.nz.resize(n_sites * 2 * chi);
    ws.ere.resize(cc * W);
    ws.eim.resize(cc * W);
    ws.hre.resize(2 * cc * W);
    ws.him.resize(2 * cc * W);
    ws.nre.resize(cc * W);
    ws.nim.resize(cc * W);
    float* ere = ws.ere.data();
    float* eim = ws.eim.data();
    float* hre = ws.hre.data();
    float* him = ws.him.data();
    float* nre = ws.nre.data();
    float* nim = ws.nim.data();
    const bool diagonal = symmetric && t.i0 == t.j0;

    // One group of W columns at a time: its packed tensors are reused by every row of the tile.
    for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t jg = t.j0 + g * W;
        if (diagonal && jg + W <= t.i0) continue;
        float* pr = ws.bre.data();
        float* pi = ws.bim.data();
        unsigned char* nzg = ws.nz.data();
        std::fill(nzg, nzg + n_sites * 2 * chi, 0);
        // Pack B: lanes past the tile's edge repeat its last column (computed, never stored).
        for (int w = 0; w < W; ++w) {
            const int64_t j = std::min(jg + w, t.j1 - 1);
            const std::complex<float>* src = b + j * sample_stride;
            for (int64_t e = 0; e < n_sites * site_stride; ++e) {
                pr[e * W + w] = src[e].real();
                pi[e * W + w] = src[e].imag();
            }
        }
        for (int64_t k = 0; k < n_sites; ++k)
            for (int s = 0; s < 2; ++s)
                for (int y = 0; y < chi; ++y)
                    for (int c = 0; c < chi; ++c) {
                        const int64_t e = ((k * 2 + s) * chi + y) * chi + c;
                        bool any = false;
                        for (int w = 0; w < W; ++w) any |= (pr[e * W + w] != 0.0f) | (pi[e * W + w] != 0.0f);
                        if (any) nzg[(k * 2 + s) * chi + c] = 1;
                    }
        for (int64_t i = t.i0; i < t.i1; ++i) {
            const std::complex<float>* arow = a + i * sample_stride;
            if (diagonal && jg + W <= i) continue;  // whole group below the diagonal: the mirror fills it
            std::fill(ere, ere + cc * W, 0.0f);
            std::fill(eim, eim + cc * W, 0.0f);
            for (int w = 0; w < W; ++w) ere[w] = 1.0f;
            int64_t exponent[W];  // the environment was divided by 2**exponent
            for (int w = 0; w < W; ++w) exponent[w] = 0;
            for (int64_t k = 0; k < n_sites; ++k) {
                const unsigned char* nzk = nzg + k * 2 * chi;
                // half_s[x][c] = sum_y E[x][y] B_s[y][c]
                for (int s = 0; s < 2; ++s)
                    for (int x = 0; x < chi; ++x)
                        for (int c = 0; c < chi; ++c) {
                            float* hr = hre + ((s * chi + x) * chi + c) * W;
                            float* hi = him + ((s * chi + x) * chi + c) * W;
                            float accr[W], acci[W];
#pragma omp simd
                            for (int w = 0; w < W; ++w) accr[w] = acci[w] = 0.0f;
                            if (nzk[s * chi + c]) {
                                for (int y = 0; y < chi; ++y) {
                                    const float* er = ere + (x * chi + y) * W;
                                    const float* ei = eim + (x * chi + y) * W;
                                    const int64_t e = (((k * 2 + s) * chi + y) * chi + c) * W;
                                    const float* br = pr + e;
                                    const float* bi = pi + e;
#pragma omp simd
                                    for (int w = 0; w < W; ++w) {
                                        accr[w] += er[w] * br[w] - ei[w] * bi[w];
                                        acci[w] += er[w] * bi[w] + ei[w] * br[w];
                                    }
                                }
                            }
#pragma omp simd
                            for (int w = 0; w < W; ++w) {
                                hr[w] = accr[w];
                                hi[w] = acci[w];
                            }
                        }
                // E'[p][c] = sum_s sum_x conj(A_s[x][p]) half_s[x][c]
                const std::complex<float>* ak = arow + k * site_stride;
                for (int p = 0; p < chi; ++p)
                    for (int c = 0; c < chi; ++c) {
                        float accr[W], acci[W];
#pragma omp simd
                        for (int w = 0; w < W; ++w) accr[w] = acci[w] = 0.0f;
                        for (int s = 0; s < 2; ++s) {
                            if (!nzk[s * chi + c]) continue;
                            for (int x = 0; x < chi; ++x) {
                                const std::complex<float> coef = ak[(s * chi + x) * chi + p];
                                const float cr = coef.real(), ci = -coef.imag();  // conj(A)
                                if (cr == 0.0f && ci == 0.0f) continue;
                                const float* hr = hre + ((s * chi + x) * chi + c) * W;
                                const float* hi = him + ((s * chi + x) * chi + c) * W;
#pragma omp simd
                                for (int w = 0; w < W; ++w) {
                                    accr[w] += cr * hr[w] - ci * hi[w];
                                    acci[w] += cr * hi[w] + ci * hr[w];
                                }
                            }
                        }
                        float* outr = nre + (p * chi + c) * W;
                        float* outi = nim + (p * chi + c) * W;
#pragma omp simd
                        for (int w = 0; w < W; ++w) {
                            outr[w] = accr[w];
                            outi[w] = acci[w];
                        }
                    }
                // rescale each lane by its largest |re| or |im|
                float largest[W];
#pragma omp simd
                for (int w = 0; w < W; ++w) largest[w] = 0.0f;
                for (int64_t e = 0; e < cc; ++e)
#pragma omp simd
                    for (int w = 0; w < W; ++w)
                        largest[w] = std::max(largest[w], std::max(std::fabs(nre[e * W + w]), std::fabs(nim[e * W + w])));
                // divide by the power of two at or below it: exact, and its exponent is summed as an integer
                float inv[W];
#pragma omp simd
                for (int w = 0; w < W; ++w) {
                    uint32_t u;
                    std::memcpy(&u, &largest[w], sizeof u);
                    const int e = u == 0 ? 0 : static_cast<int>((u >> 23) & 0xffu) - 127;
                    const uint32_t iu = static_cast<uint32_t>(127 - e) << 23;
                    std::memcpy(&inv[w], &iu, sizeof iu);
                    exponent[w] += e;
                }
                for (int64_t e = 0; e < cc; ++e)
#pragma omp simd
                    for (int w = 0; w < W; ++w) {
                        ere[e * W + w] = nre[e * W + w] * inv[w];
                        eim[e * W + w] = nim[e * W + w] * inv[w];
                    }
            }
            for (int w = 0; w < W; ++w) {
                const int64_t j = jg + w;
                if (j >= t.j1 || (diagonal && j < i)) continue;
                const double re = ere[w], im = eim[w];
                const double modulus = std::sqrt(re * re + im * im);
                const double value =
                    modulus == 0.0 ? 0.0 : std::exp(2.0 * (std::log(modulus) + exponent[w] * 0.6931471805599453));
                out[i * ldo + j] = static_cast<OutT>(value);
                if (symmetric) out[j * ldo + i] = static_cast<OutT>(value);
            }
        }
    }
}

template <int CHI, typename OutT>
void gram_impl(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
               int64_t n_sites, int chi, bool symmetric, OutT* out, int tile, int n_threads) {
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
            compute_tile<CHI, OutT>(a, b, n_sites, chi, tiles[k], symmetric, ws, out, n_cols);
    }
}

template <typename OutT>
void dispatch(const std::complex<float>* a, const std::complex<float>* b, int64_t n_rows, int64_t n_cols,
              int64_t n_sites, int chi, bool symmetric, OutT* out, int tile, int n_threads) {
    switch (chi) {  // the bond dimensions of the ZZ map (2**reps, 4**reps) get unrolled kernels
        case 2: return gram_impl<2>(a, b, n_rows, n_cols, n_sites, chi, symmetric, out, tile, n_threads);
        case 4: return gram_impl<4>(a, b, n_rows, n_cols, n_sites, chi, symmetric, out, tile, n_threads);
        case 8: return gram_impl<8>(a, b, n_rows, n_cols, n_sites, chi, symmetric, out, tile, n_threads);
        case 16: return gram_impl<16>(a, b, n_rows, n_cols, n_sites, chi, symmetric, out, tile, n_threads);
        default: return gram_impl<0>(a, b, n_rows, n_cols, n_sites, chi, symmetric, out, tile, n_threads);
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

void gram(py::handle A_obj, py::handle B_obj, py::handle out_obj, int tile, int n_threads) {
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
    if (single)
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, static_cast<float*>(o), tile, n_threads);
    else
        dispatch(a, b, n_rows, n_cols, n_sites, chi, symmetric, static_cast<double*>(o), tile, n_threads);
}

}  // namespace

PYBIND11_MODULE(_mps_openmp, m) {
    m.doc() = "Fidelity Gram matrix of matrix-product states with OpenMP and SIMD over pairs";
    m.def("gram", &gram, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("tile"), py::arg("n_threads"),
          "Fill out (N, M) float32/float64 with |<a_i|b_j>|^2 of MPS site tensors (N, n, 2, chi, chi) complex64.\n\n"
          "B=None computes the symmetric Gram from the upper tiles only, writing each value and its mirror.\n"
          "Runs n_threads OpenMP threads with the GIL released.");
    m.def("last_num_threads", []() { return g_last_threads; },
          "Threads that ran the parallel region of the last gram call.");
    m.attr("LANES") = W;
}
