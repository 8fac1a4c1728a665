// qmlnb._openmp: the fidelity Gram matrix K[i, j] = |<a_i|b_j>|^2 of complex64
// state rows, with OpenMP over output tiles and a register-blocked SIMD
// micro-kernel.
//
// Layout of the work
//   * The output is cut into tiles of `tile` x `tile`.  Symmetric case (B is
//     None): only tiles on or above the diagonal are computed; each tile is
//     written to its place and, transposed in registers while in cache, to
//     the mirror place (mirror.h), so the lower triangle needs no second
//     pass.  Tiles are handed out with a dynamic schedule, which balances the
//     triangle (diagonal tiles are half work).
//   * Inside a tile the state dimension d is cut into blocks of KC (cache
//     blocking): the block's rows of A and B are packed into planar float32
//     panels (real parts, then imaginary parts, k-major) that fit in L1/L2,
//     and partial sums are kept in a per-thread float32 accumulator tile.
//   * The micro-kernel computes an MR x NR block of complex dot products
//     a_i . conj(b_j) held in registers: per k and per (row, column vector)
//     four FMAs, Re += ar*br + ai*bi and Im += ai*br - ar*bi.  It is written
//     with GCC/Clang vector extensions, so it compiles to AVX-512, AVX2 or
//     SSE2 depending on -march, with MR chosen to fit the register file.
//
// No N x N temporary is allocated: results go straight into `out`, which may
// be any writeable C-contiguous float32/float64 array (a memmap included).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "mirror.h"

namespace py = pybind11;

namespace {

#if defined(__AVX512F__)
#define QMLNB_VW 16  // float lanes per vector register
constexpr int MR = 6;  // rows per micro-tile: 6 x 2 vectors x (re, im) = 24 accumulators of 32 zmm
constexpr const char* SIMD_NAME = "AVX-512";
#elif defined(__AVX__)
#define QMLNB_VW 8
constexpr int MR = 3;  // 3 x 2 x 2 = 12 accumulators of 16 ymm
constexpr const char* SIMD_NAME = "AVX";
#else
#define QMLNB_VW 4
constexpr int MR = 3;  // 12 accumulators of 16 xmm
constexpr const char* SIMD_NAME = "SSE2";
#endif

typedef float vecf __attribute__((vector_size(QMLNB_VW * sizeof(float))));
constexpr int VW = QMLNB_VW;
constexpr int NV = 2;         // vectors per micro-tile row
constexpr int NR = VW * NV;   // columns per micro-tile
constexpr int KC = 256;       // state-dimension block: an A panel (MR x KC, 12 KiB) stays in L1
constexpr size_t ALIGN = 64;

int g_last_threads = 0;  // threads of the last call's parallel region (for tests)

struct AlignedFree {
    void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], AlignedFree>;

Buffer aligned_floats(size_t n) {
    size_t bytes = (n * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
    void* p = std::aligned_alloc(ALIGN, std::max<size_t>(bytes, ALIGN));
    if (!p) throw std::bad_alloc();
    return Buffer(static_cast<float*>(p));
}

inline vecf load(const float* p) {
    vecf v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store(float* p, vecf v) { std::memcpy(p, &v, sizeof v); }

// C[MR x NR] (+)= A_panel . conj(B_panel) over kc entries of the state
// (first: C is overwritten).
// Ap: for each k, MR real parts then MR imaginary parts.
// Bp: for each k, NR real parts then NR imaginary parts.
// Cre/Cim: accumulator rows with leading dimension ldc.
inline void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp,
                         float* __restrict Cre, float* __restrict Cim, int ldc, bool first) {
    // Each d-block sums from zero and is then added to C: float32 rounding
    // grows with KC and d / KC terms, not with d.
    vecf re[MR][NV] = {}, im[MR][NV] = {};
    for (int k = 0; k < kc; ++k) {
        const float* a = Ap + k * 2 * MR;
        const float* b = Bp + k * 2 * NR;
        vecf br[NV], bi[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
            br[v] = load(b + v * VW);
            bi[v] = load(b + NR + v * VW);
        }
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const float ar = a[r], ai = a[MR + r];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                re[r][v] += ar * br[v];
                re[r][v] += ai * bi[v];
                im[r][v] += ai * br[v];
                im[r][v] -= ar * bi[v];
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
            if (!first) {
                re[r][v] += load(Cre + r * ldc + v * VW);
                im[r][v] += load(Cim + r * ldc + v * VW);
            }
            store(Cre + r * ldc + v * VW, re[r][v]);
            store(Cim + r * ldc + v * VW, im[r][v]);
        }
}

// Pack rows [0, n) x columns [k0, k0 + kc) of the interleaved complex matrix S
// (row stride d complex numbers) into planar panels of `width` rows:
// panel p holds, for each k, the `width` real parts then the `width`
// imaginary parts of rows p*width .. p*width+width-1 (zero past row n).
void pack(const float* S, int64_t d, int n, int64_t k0, int kc, int width, float* dst) {
    const int panels = (n + width - 1) / width;
    for (int p = 0; p < panels; ++p) {
        float* panel = dst + static_cast<size_t>(p) * kc * 2 * width;
        for (int w = 0; w < width; ++w) {
            const int row = p * width + w;
            if (row < n) {
                const float* src = S + 2 * (row * d + k0);
                for (int k = 0; k < kc; ++k) {
                    panel[k * 2 * width + w] = src[2 * k];
                    panel[k * 2 * width + width + w] = src[2 * k + 1];
                }
            } else {
                for (int k = 0; k < kc; ++k) {
                    panel[k * 2 * width + w] = 0.0f;
                    panel[k * 2 * width + width + w] = 0.0f;
                }
            }
        }
    }
}

// Per-thread scratch: packed panels and the accumulator tile.
struct Workspace {
    Buffer a, b, re, im;
    int ldc;
    explicit Workspace(int tile) {
        const int rows = (tile + MR - 1) / MR * MR;
        const int cols = (tile + NR - 1) / NR * NR;
        ldc = cols;
        a = aligned_floats(static_cast<size_t>(rows) * KC * 2);
        b = aligned_floats(static_cast<size_t>(cols) * KC * 2);
        re = aligned_floats(static_cast<size_t>(rows) * cols);
        im = aligned_floats(static_cast<size_t>(rows) * cols);
    }
};

struct Tile {
    int64_t i0, i1, j0, j1;
};

// Compute one output tile and write |.|^2 into out (and its mirror when the
// Gram matrix is symmetric and `mirror`).
template <typename OutT>
void compute_tile(const float* A, const float* B, int64_t d, const Tile& t, bool symmetric, bool mirror,
                  bool stream, Workspace& ws, OutT* out, int64_t ldo) {
    const int m = static_cast<int>(t.i1 - t.i0), n = static_cast<int>(t.j1 - t.j0);
    const int mp = (m + MR - 1) / MR, np = (n + NR - 1) / NR;
    const bool diagonal = symmetric && t.i0 == t.j0;
    for (int64_t k0 = 0; k0 < d; k0 += KC) {
        const int kc = static_cast<int>(std::min<int64_t>(KC, d - k0));
        pack(A + 2 * t.i0 * d, d, m, k0, kc, MR, ws.a.get());
        pack(B + 2 * t.j0 * d, d, n, k0, kc, NR, ws.b.get());
        for (int ip = 0; ip < mp; ++ip) {
            const float* ap = ws.a.get() + static_cast<size_t>(ip) * kc * 2 * MR;
            for (int jp = 0; jp < np; ++jp) {
                // On a diagonal tile, skip micro-tiles that lie wholly below the diagonal.
                if (diagonal && ip * MR > jp * NR + NR - 1) continue;
                const size_t c = static_cast<size_t>(ip) * MR * ws.ldc + static_cast<size_t>(jp) * NR;
                micro_kernel(kc, ap, ws.b.get() + static_cast<size_t>(jp) * kc * 2 * NR, ws.re.get() + c,
                             ws.im.get() + c, ws.ldc, k0 == 0);
            }
        }
    }
    const float* re = ws.re.get();
    const float* im = ws.im.get();
    const size_t ldc = ws.ldc;
    for (int r = 0; r < m; ++r) {
        OutT* row = out + (t.i0 + r) * ldo + t.j0;
        for (int c = diagonal ? r : 0; c < n; ++c) {
            const float x = re[r * ldc + c], y = im[r * ldc + c];
            row[c] = static_cast<OutT>(x * x + y * y);
        }
    }
    // the tile's values just written, transposed into the mirror tile while they are in cache
    if (symmetric && mirror) qmlnb_mirror::mirror_block(out, ldo, t.i0, t.i1, t.j0, t.j1, stream);
}

template <typename OutT>
void gram_impl(const float* A, const float* B, int64_t n_rows, int64_t n_cols, int64_t d, bool symmetric,
               bool mirror, OutT* out, int tile, int n_threads) {
    // A tile larger than the matrix would only inflate the per-thread scratch.
    tile = static_cast<int>(std::min<int64_t>(tile, std::max(n_rows, n_cols)));
    std::vector<Tile> tiles;
    for (int64_t i0 = 0; i0 < n_rows; i0 += tile)
        for (int64_t j0 = symmetric ? i0 : 0; j0 < n_cols; j0 += tile)
            tiles.push_back({i0, std::min(n_rows, i0 + tile), j0, std::min(n_cols, j0 + tile)});
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(n_tiles, 1)));
    const bool stream = symmetric && mirror && qmlnb_mirror::streams_rows(out, n_cols);
    bool failed = false;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
        g_last_threads = omp_get_num_threads();
        std::unique_ptr<Workspace> ws;
        try {
            ws.reset(new Workspace(tile));
        } catch (const std::bad_alloc&) {
#pragma omp atomic write
            failed = true;
        }
        // Tiles differ in cost (diagonal ones are half work, edge ones smaller):
        // hand them out one by one.
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t i = 0; i < n_tiles; ++i)
            if (ws) compute_tile(A, B, d, tiles[i], symmetric, mirror, stream, *ws, out, n_cols);
        if (stream) qmlnb_mirror::store_fence();  // the streamed values reach memory before the region ends
    }
    if (failed) throw std::bad_alloc();
}

// Whether the array's dtype is equivalent to T's (NumPy's PyArray_EquivTypes).  Not dtype().is(...):
// that compares the descriptor objects, and an array that was pickled (sent to a Dask worker inside an
// object, e.g. MPSStates) carries its own copy of the complex64 descriptor, equal but not the same object.
template <typename T>
bool has_dtype(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);
}

py::array check_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a NumPy array");
    return py::reinterpret_borrow<py::array>(obj);
}

const float* states_pointer(const py::array& S, const char* name) {
    if (S.ndim() != 2) throw py::value_error(std::string(name) + " must be 2-D (n_samples, d)");
    if (!has_dtype<std::complex<float>>(S))
        throw py::value_error(std::string(name) + " must have dtype complex64");
    if (!(S.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return static_cast<const float*>(S.data());
}

void gram(py::handle A_obj, py::handle B_obj, py::handle out_obj, int tile, int n_threads, bool mirror) {
    if (tile <= 0) throw py::value_error("tile must be a positive integer");
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    py::array A = check_array(A_obj, "A");
    const float* a = states_pointer(A, "A");
    const bool symmetric = B_obj.is_none();
    py::array B = symmetric ? A : check_array(B_obj, "B");
    const float* b = symmetric ? a : states_pointer(B, "B");
    const int64_t n_rows = A.shape(0), n_cols = B.shape(0), d = A.shape(1);
    if (B.shape(1) != d) throw py::value_error("A and B have different state dimensions");
    py::array out = check_array(out_obj, "out");
    if (out.ndim() != 2 || out.shape(0) != n_rows || out.shape(1) != n_cols)
        throw py::value_error("out must have shape (" + std::to_string(n_rows) + ", " + std::to_string(n_cols) + ")");
    if (!(out.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const bool single = has_dtype<float>(out);
    if (!single && !has_dtype<double>(out)) throw py::value_error("out must be float32 or float64");
    void* o = out.mutable_data();
    py::gil_scoped_release release;  // the arrays stay referenced by the caller
    if (single)
        gram_impl(a, b, n_rows, n_cols, d, symmetric, mirror, static_cast<float*>(o), tile, n_threads);
    else
        gram_impl(a, b, n_rows, n_cols, d, symmetric, mirror, static_cast<double*>(o), tile, n_threads);
}

}  // namespace

PYBIND11_MODULE(_openmp, m) {
    m.doc() = "Fidelity Gram matrix |A B^H|^2 of complex64 states with OpenMP and a SIMD micro-kernel";
    m.def("gram", &gram, py::arg("A"), py::arg("B"), py::arg("out"), py::arg("tile"), py::arg("n_threads"),
          py::arg("mirror") = true,
          "Fill out (N, M) float32/float64 with |<a_i|b_j>|^2 of C-contiguous complex64 rows.\n\n"
          "B=None computes the symmetric A A^H from the upper tiles only and mirrors them (mirror=False: the\n"
          "lower triangle is left to the caller, as the shot-sampled estimate writes it).\n"
          "Runs n_threads OpenMP threads with the GIL released.");
    m.def("last_num_threads", []() { return g_last_threads; },
          "Threads that ran the parallel region of the last gram call.");
    m.def("max_threads", []() { return omp_get_max_threads(); }, "omp_get_max_threads() of this runtime.");
    m.attr("SIMD") = SIMD_NAME;
    m.attr("MICRO_TILE") = py::make_tuple(MR, NR);
    m.attr("KC") = KC;
}
