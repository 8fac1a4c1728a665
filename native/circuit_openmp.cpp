// qmlnb._circuit_openmp: state vectors of any compiled data-encoding circuit (CircuitFeatureMap), one sample
// at a time in cache, samples in parallel.
//
// The Python side compiles the circuit once into a short program of steps (qmlnb.kernels.circuit_program) and
// flattens it into the arrays this kernel reads (qmlnb.kernels.circuit_native):
//   DIAGONAL  a fused run of diagonal gates and basis permutations (X, CX, SWAP).  Its phase is a sum of
//             Walsh characters, phase(b) = sum_m c_m (-1)^{popcount(m & b)}, over a few masks m (a gate's bit
//             seen through the run's permutations is a parity of stored bits).  c_m is a fixed combination
//             of the sample's angles.  When every mask has at most two bits the phase is a quadratic form in
//             the bits, evaluated with a few float64 adds per amplitude (high/low split, as in
//             states_openmp.cpp); otherwise it is one float64 Walsh-Hadamard transform of the coefficients.
//             Each coefficient is reduced mod 2 pi first (a phase is an integer combination of them), each
//             phase is reduced to [-pi, pi] in float64, cos and sin are evaluated in float32.  A run whose
//             coefficients equal the previous run's (repetitions of one block) reuses its cos and sin.  A
//             permutation left at the run's end is one gather of the state.
//   ONE-QUBIT a 2x2 matrix on one wire: constant (shared) or per sample; constant ones are tagged real,
//             diagonal or Hadamard (an unnormalised butterfly whose 1/sqrt(2) is deferred to the next step).
// The state of a sample is two planar float32 rows (re, im) of 2**n in the thread's cache; every sample starts
// from a given state (the circuit's constant prefix, simulated once by the caller).  Each state is normalised
// at the end (float32 passes drift the norm by ~1e-7 per step).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "state_kernels.h"

namespace py = pybind11;

namespace {

constexpr double TWO_PI = 6.283185307179586;
constexpr int64_t OP_DIAGONAL = 0, OP_CONST_1Q = 1, OP_SAMPLE_1Q = 2;
constexpr int64_t M_GENERAL = 0, M_REAL = 1, M_DIAGONAL = 2, M_HADAMARD = 3;
constexpr int OP_WIDTH = 7;  // DIAGONAL: kind, terms [t0, t1), masks [m0, m1), quadratic, gather offset (-1: none)
                              // ONE-QUBIT: kind, wire, matrix index, matrix kind (M_*), unused...

inline double reduce(double t) { return t - TWO_PI * std::floor(t * (1.0 / TWO_PI)); }

struct Program {
    int n = 0;
    int64_t d = 0;
    const int64_t* ops = nullptr;  // (K, OP_WIDTH)
    int64_t n_ops = 0;
    const int64_t* slot = nullptr;  // term -> index into the run's masks
    const int64_t* param = nullptr;  // term -> angle column, -1: constant
    const double* coef = nullptr;
    const int64_t* masks = nullptr;
    const int64_t* gather = nullptr;
    const std::complex<double>* cmats = nullptr;  // (Kc, 2, 2)
    const std::complex<double>* smats = nullptr;  // (B, Ks, 2, 2)
    int64_t n_smats = 0;
    const double* angles = nullptr;  // (B, P)
    int64_t n_params = 0;
    const std::complex<float>* start = nullptr;  // (2**n,)
};

struct Work {
    std::vector<float> re, im, cs, sn, tr, ti;
    std::vector<double> ph, c, last_c, pl, cl, rj, w, q;
    int64_t last_mask_start = -1, last_mask_end = -1;
    explicit Work(int n, int64_t d, int64_t max_masks)
        : re(d), im(d), cs(d), sn(d), tr(d), ti(d), ph(d), c(max_masks), last_c(max_masks),
          pl(int64_t(1) << (n - n / 2)), cl(int64_t(1) << (n - n / 2)), rj(n), w(n), q(int64_t(n) * n) {}
};

// cos and sin of the run's phase into s.cs, s.sn (left as they are when the coefficients equal the previous run's).
void diagonal_factors(const Program& p, const int64_t* op, const double* angles, Work& s) {
    const int64_t t0 = op[1], t1 = op[2], m0 = op[3], m1 = op[4];
    const int64_t k = m1 - m0;
    double* c = s.c.data();
    for (int64_t j = 0; j < k; ++j) c[j] = 0.0;
    for (int64_t t = t0; t < t1; ++t) c[p.slot[t]] += p.coef[t] * (p.param[t] < 0 ? 1.0 : angles[p.param[t]]);
    for (int64_t j = 0; j < k; ++j) c[j] = reduce(c[j]);
    if (s.last_mask_end - s.last_mask_start == k &&
        std::equal(p.masks + m0, p.masks + m1, p.masks + s.last_mask_start) &&
        std::equal(c, c + k, s.last_c.data()))
        return;  // the same phase as the previous run: cos and sin are already there
    const int n = p.n;
    const int64_t d = p.d;
    if (op[5]) {  // every mask has at most two bits
        // (-1)^{b_i} = 1 - 2 b_i, (-1)^{b_i + b_j} = 1 - 2 b_i - 2 b_j + 4 b_i b_j
        double constant = 0.0;
        std::fill(s.w.begin(), s.w.end(), 0.0);
        std::fill(s.q.begin(), s.q.end(), 0.0);
        for (int64_t j = 0; j < k; ++j) {
            const uint64_t m = static_cast<uint64_t>(p.masks[m0 + j]);
            constant += c[j];
            if (m == 0) continue;
            const int lo = 63 - __builtin_clzll(m);  // the larger wire of the pair: bit n-1-wire
            const uint64_t rest = m & ~(uint64_t(1) << lo);
            const int wb = n - 1 - lo;
            s.w[wb] -= 2.0 * c[j];
            if (rest) {
                const int wa = n - 1 - (63 - __builtin_clzll(rest));
                s.w[wa] -= 2.0 * c[j];
                s.q[std::min(wa, wb) * n + std::max(wa, wb)] += 4.0 * c[j];
            }
        }
        // each is an integer combination of reduced c's: reduce again to keep the float64 sums small
        for (int i = 0; i < n; ++i) s.w[i] = reduce(s.w[i]);
        for (int64_t i = 0; i < int64_t(n) * n; ++i) s.q[i] = reduce(s.q[i]);
        double* ph = s.ph.data();
        quadratic_phase_rows(s.w.data(), s.q.data(), reduce(constant), n, s.pl.data(), s.cl.data(), s.rj.data(),
                             [ph](int64_t h, const double* cl, const double* pl, int64_t L) {
#pragma omp simd
            for (int64_t l = 0; l < L; ++l) ph[h * L + l] = cl[l] + pl[l];
        });
    } else {
        std::fill(s.ph.begin(), s.ph.end(), 0.0);
        for (int64_t j = 0; j < k; ++j) s.ph[p.masks[m0 + j]] += c[j];
        butterfly_levels(s.ph.data(), d, 1);
    }
    const double* ph = s.ph.data();
    float* cs = s.cs.data();
    float* sn = s.sn.data();
#pragma omp simd
    for (int64_t b = 0; b < d; ++b) {
        double t = ph[b];
        t -= TWO_PI * std::nearbyint(t * (1.0 / TWO_PI));
        float sv, cv;
        sincos_reduced(static_cast<float>(t), sv, cv);
        cs[b] = cv;
        sn[b] = sv;
    }
    s.last_mask_start = m0;
    s.last_mask_end = m1;
    std::copy(c, c + k, s.last_c.data());
}

// The 2x2 kernels on one pair of amplitudes (ar + i ai, br + i bi), applied by `pairs`.
struct Butterfly {  // sqrt(2) H
    inline void operator()(float& ar, float& ai, float& br, float& bi) const {
        const float xr = ar, xi = ai, yr = br, yi = bi;
        ar = xr + yr;
        ai = xi + yi;
        br = xr - yr;
        bi = xi - yi;
    }
};
struct RealMatrix {
    float r00, r01, r10, r11;
    inline void operator()(float& ar, float& ai, float& br, float& bi) const {
        const float xr = ar, xi = ai, yr = br, yi = bi;
        ar = r00 * xr + r01 * yr;
        ai = r00 * xi + r01 * yi;
        br = r10 * xr + r11 * yr;
        bi = r10 * xi + r11 * yi;
    }
};
struct DiagonalMatrix {
    float r00, i00, r11, i11;
    inline void operator()(float& ar, float& ai, float& br, float& bi) const {
        const float xr = ar, xi = ai, yr = br, yi = bi;
        ar = r00 * xr - i00 * xi;
        ai = r00 * xi + i00 * xr;
        br = r11 * yr - i11 * yi;
        bi = r11 * yi + i11 * yr;
    }
};
struct ComplexMatrix {
    float r00, i00, r01, i01, r10, i10, r11, i11;
    inline void operator()(float& ar, float& ai, float& br, float& bi) const {
        const float xr = ar, xi = ai, yr = br, yi = bi;
        ar = r00 * xr - i00 * xi + r01 * yr - i01 * yi;
        ai = r00 * xi + i00 * xr + r01 * yi + i01 * yr;
        br = r10 * xr - i10 * xi + r11 * yr - i11 * yi;
        bi = r10 * xi + i10 * xr + r11 * yi + i11 * yr;
    }
};

// k on every pair of amplitudes (j, j + S) of each block of 2 S; S a compile-time stride below the SIMD width
template <int S, class K>
void pairs_small(float* __restrict re, float* __restrict im, int64_t d, const K& k) {
    for (int64_t i = 0; i < d; i += 2 * S)
        for (int j = 0; j < S; ++j) k(re[i + j], im[i + j], re[i + j + S], im[i + j + S]);
}

// k on every pair of amplitudes that differ in bit (n-1-wire) only
template <class K>
void pairs(float* __restrict re, float* __restrict im, int64_t d, int n, int64_t wire, const K& k) {
    const int64_t s = int64_t(1) << (n - 1 - wire);
    if (s == 1) return pairs_small<1>(re, im, d, k);
    if (s == 2) return pairs_small<2>(re, im, d, k);
    if (s == 4) return pairs_small<4>(re, im, d, k);
    for (int64_t i = 0; i < d; i += 2 * s) {
        float* __restrict r0 = re + i;
        float* __restrict i0 = im + i;
        float* __restrict r1 = re + i + s;
        float* __restrict i1 = im + i + s;
#pragma omp simd
        for (int64_t j = 0; j < s; ++j) k(r0[j], i0[j], r1[j], i1[j]);
    }
}

void one_qubit(const std::complex<double>* u, int64_t kind, int64_t wire, double& scale, const Program& p,
               Work& s) {
    float* re = s.re.data();
    float* im = s.im.data();
    if (kind == M_HADAMARD) {  // the factor 1/sqrt(2) goes to the next step
        pairs(re, im, p.d, p.n, wire, Butterfly{});
        scale *= 0.7071067811865476;
        return;
    }
    const float g = static_cast<float>(scale);
    scale = 1.0;
    const float r00 = g * u[0].real(), i00 = g * u[0].imag(), r01 = g * u[1].real(), i01 = g * u[1].imag();
    const float r10 = g * u[2].real(), i10 = g * u[2].imag(), r11 = g * u[3].real(), i11 = g * u[3].imag();
    if (kind == M_REAL)
        pairs(re, im, p.d, p.n, wire, RealMatrix{r00, r01, r10, r11});
    else if (kind == M_DIAGONAL)
        pairs(re, im, p.d, p.n, wire, DiagonalMatrix{r00, i00, r11, i11});
    else
        pairs(re, im, p.d, p.n, wire, ComplexMatrix{r00, i00, r01, i01, r10, i10, r11, i11});
}

void simulate_row(const Program& p, int64_t row, std::complex<float>* out, Work& s) {
    const int64_t d = p.d;
    float* __restrict re = s.re.data();
    float* __restrict im = s.im.data();
    for (int64_t b = 0; b < d; ++b) {
        re[b] = p.start[b].real();
        im[b] = p.start[b].imag();
    }
    s.last_mask_start = s.last_mask_end = -1;  // phases are cached within one sample only
    const double* angles = p.angles + row * p.n_params;
    double scale = 1.0;
    for (int64_t k = 0; k < p.n_ops; ++k) {
        const int64_t* op = p.ops + k * OP_WIDTH;
        if (op[0] == OP_DIAGONAL) {
            if (op[2] > op[1]) {
                diagonal_factors(p, op, angles, s);
                const float g = static_cast<float>(scale);
                scale = 1.0;
                const float* cs = s.cs.data();
                const float* sn = s.sn.data();
#pragma omp simd
                for (int64_t b = 0; b < d; ++b) {
                    const float x = re[b], y = im[b], c = g * cs[b], e = g * sn[b];
                    re[b] = x * c - y * e;
                    im[b] = x * e + y * c;
                }
            }
            if (op[6] >= 0) {  // the run's permutation: psi[b] = stored[gather[b]]
                const int64_t* gather = p.gather + op[6];
                float* __restrict tr = s.tr.data();
                float* __restrict ti = s.ti.data();
                for (int64_t b = 0; b < d; ++b) {
                    tr[b] = re[gather[b]];
                    ti[b] = im[gather[b]];
                }
                std::copy(tr, tr + d, re);
                std::copy(ti, ti + d, im);
            }
        } else if (op[0] == OP_CONST_1Q) {
            one_qubit(p.cmats + 4 * op[2], op[3], op[1], scale, p, s);
        } else {
            one_qubit(p.smats + 4 * (row * p.n_smats + op[2]), M_GENERAL, op[1], scale, p, s);
        }
    }
    double norm = 0.0;
    for (int64_t b = 0; b < d; ++b) norm += double(re[b]) * re[b] + double(im[b]) * im[b];
    const float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (int64_t b = 0; b < d; ++b) out[b] = std::complex<float>(re[b] * inv, im[b] * inv);
}

template <class T>
py::array_t<T> checked(const py::handle& obj, const char* name, int ndim) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a NumPy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got " +
                              std::to_string(a.ndim()));
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::value_error(std::string(name) + " must be " + std::string(py::str(py::dtype::of<T>())) + ", got " +
                              std::string(py::str(a.dtype())));
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

[[noreturn]] void bad_op(int64_t k, const std::string& what) {
    throw py::value_error("program step " + std::to_string(k) + ": " + what);
}

void states(py::handle ops_obj, py::handle slot_obj, py::handle param_obj, py::handle coef_obj, py::handle masks_obj,
            py::handle gather_obj, py::handle cmats_obj, py::handle smats_obj, py::handle angles_obj,
            py::handle start_obj, py::handle out_obj, int n_threads) {
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    auto ops = checked<int64_t>(ops_obj, "ops", 2);
    auto slot = checked<int64_t>(slot_obj, "slot", 1);
    auto param = checked<int64_t>(param_obj, "param", 1);
    auto coef = checked<double>(coef_obj, "coef", 1);
    auto masks = checked<int64_t>(masks_obj, "masks", 1);
    auto gather = checked<int64_t>(gather_obj, "gather", 1);
    auto cmats = checked<std::complex<double>>(cmats_obj, "cmats", 3);
    auto smats = checked<std::complex<double>>(smats_obj, "smats", 4);
    auto angles = checked<double>(angles_obj, "angles", 2);
    auto start = checked<std::complex<float>>(start_obj, "start", 1);
    auto out = checked<std::complex<float>>(out_obj, "out", 2);
    if (!out.writeable()) throw py::value_error("out must be writeable");
    const int64_t d = start.shape(0);
    if (d < 2 || d > (int64_t(1) << 30) || (d & (d - 1)))
        throw py::value_error("start must have 2**n entries, 1 <= n <= 30, got " + std::to_string(d));
    const int n = 63 - __builtin_clzll(static_cast<uint64_t>(d));
    const int64_t rows = out.shape(0);
    if (out.shape(1) != d) throw py::value_error("out must have shape (N, 2**n) with 2**n = len(start)");
    if (angles.shape(0) != rows || smats.shape(0) != rows)
        throw py::value_error("angles and smats must have one row per row of out");
    if (ops.shape(1) != OP_WIDTH) throw py::value_error("ops must have shape (K, 7)");
    const int64_t T = slot.shape(0), M = masks.shape(0), G = gather.shape(0);
    if (param.shape(0) != T || coef.shape(0) != T) throw py::value_error("slot, param and coef must have one length");
    if (cmats.shape(1) != 2 || cmats.shape(2) != 2 || smats.shape(2) != 2 || smats.shape(3) != 2)
        throw py::value_error("cmats must have shape (Kc, 2, 2) and smats (N, Ks, 2, 2)");
    const int64_t P = angles.shape(1), Kc = cmats.shape(0), Ks = smats.shape(1);
    const int64_t* op = ops.data();
    const int64_t* sl = slot.data();
    const int64_t* pa = param.data();
    const int64_t* ma = masks.data();
    int64_t max_masks = 1;
    // every index is checked here, before any work: the loops below trust them
    for (int64_t k = 0; k < ops.shape(0); ++k) {
        const int64_t* o = op + k * OP_WIDTH;
        if (o[0] == OP_DIAGONAL) {
            if (!(0 <= o[1] && o[1] <= o[2] && o[2] <= T)) bad_op(k, "term range out of bounds");
            if (!(0 <= o[3] && o[3] <= o[4] && o[4] <= M)) bad_op(k, "mask range out of bounds");
            if (!(o[6] == -1 || (0 <= o[6] && o[6] + d <= G))) bad_op(k, "gather offset out of bounds");
            max_masks = std::max(max_masks, o[4] - o[3]);
            for (int64_t t = o[1]; t < o[2]; ++t) {
                if (sl[t] < 0 || sl[t] >= o[4] - o[3]) bad_op(k, "a term's mask slot is out of range");
                if (pa[t] < -1 || pa[t] >= P) bad_op(k, "a term's angle column is out of range");
            }
            for (int64_t j = o[3]; j < o[4]; ++j) {
                if (ma[j] < 0 || ma[j] >= d) bad_op(k, "a mask is not a basis index");
                if (o[5] && __builtin_popcountll(static_cast<uint64_t>(ma[j])) > 2)
                    bad_op(k, "quadratic run with a mask of more than two bits");
            }
        } else if (o[0] == OP_CONST_1Q || o[0] == OP_SAMPLE_1Q) {
            if (o[1] < 0 || o[1] >= n) bad_op(k, "wire out of range");
            if (o[2] < 0 || o[2] >= (o[0] == OP_CONST_1Q ? Kc : Ks)) bad_op(k, "matrix index out of range");
            if (o[0] == OP_CONST_1Q && (o[3] < M_GENERAL || o[3] > M_HADAMARD)) bad_op(k, "unknown matrix kind");
        } else {
            bad_op(k, "unknown step kind " + std::to_string(o[0]));
        }
    }
    const int64_t* ga = gather.data();
    for (int64_t i = 0; i < G; ++i)
        if (ga[i] < 0 || ga[i] >= d) throw py::value_error("gather holds an index outside 0 .. 2**n - 1");
    Program p;
    p.n = n;
    p.d = d;
    p.ops = op;
    p.n_ops = ops.shape(0);
    p.slot = sl;
    p.param = pa;
    p.coef = coef.data();
    p.masks = ma;
    p.gather = ga;
    p.cmats = cmats.data();
    p.smats = smats.data();
    p.n_smats = Ks;
    p.angles = angles.data();
    p.n_params = P;
    p.start = start.data();
    auto* op_out = out.mutable_data();
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(rows, 1)));
    py::gil_scoped_release release;
#pragma omp parallel num_threads(threads)
    {
        Work work(n, d, max_masks);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < rows; ++i) simulate_row(p, i, op_out + i * d, work);
    }
}

}  // namespace

PYBIND11_MODULE(_circuit_openmp, m) {
    m.doc() = "State vectors of compiled circuits (CircuitFeatureMap): fused phases, 2x2 steps, samples in parallel";
    m.def("states", &states, py::arg("ops"), py::arg("slot"), py::arg("param"), py::arg("coef"), py::arg("masks"),
          py::arg("gather"), py::arg("cmats"), py::arg("smats"), py::arg("angles"), py::arg("start"), py::arg("out"),
          py::arg("n_threads"),
          "Fill out (N, 2**n) complex64 with the program applied to start, one sample per row (see the module\n"
          "comment and qmlnb.kernels.circuit_map.native_program).  Runs n_threads OpenMP threads without the GIL.");
}
