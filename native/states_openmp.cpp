// qmlnb._states_openmp: state vectors of the diagonal-phase feature maps (ZZ, IQP), one fused pass per sample.
//
// Every repetition of these maps is psi <- D H^{(x)n} psi with D = diag(exp(i phase)), and the phase of
// basis state b is a quadratic form in its bits (P(2x) and RZ add w_k b_k, a pair's XOR adds
// c (b_i + b_j - 2 b_i b_j)):
//     phase(b) = const + sum_k w_k b_k + sum_{i<j} Q_ij b_i b_j.
// The caller reduces w, Q and const mod 2 pi once (a phase is an integer combination of them, so this changes
// it by multiples of 2 pi only).  Per sample, with b = (h, l) split into the high wires (h) and the low wires
// (l), phase(h, l) = PH[h] + PL[l] + sum_{j in low} l_j R_j[h]: the last sum is built over l by doubling, so a
// phase costs a few float64 adds instead of a (n_gates)-long dot product or a (N, n_gates) x (n_gates, 2**n)
// matrix product.  Each phase is reduced to [-pi, pi] in float64 and its cos and sin are evaluated in
// float32 (Cephes' minimax polynomials on [-pi/4, pi/4], about 1e-7).  The Hadamard layers are an
// unnormalised in-cache fast Walsh-Hadamard butterfly on planar float32 re/im rows; the 2**(-n/2) of each
// H^{(x)n} is folded into the stored cos and sin.  OpenMP runs samples in parallel, each thread with its own
// four float32 rows of 2**n.
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

// Unnormalised Walsh-Hadamard transform of x[0 .. 2**n) in place (float32 butterflies, in cache).
void walsh_hadamard(float* __restrict x, int64_t d) {
    // strides 1 and 2 together: a 4-point transform per aligned quad
    if (d >= 4) {
        for (int64_t i = 0; i < d; i += 4) {
            const float a = x[i], b = x[i + 1], c = x[i + 2], e = x[i + 3];
            const float s0 = a + b, d0 = a - b, s1 = c + e, d1 = c - e;
            x[i] = s0 + s1;
            x[i + 1] = d0 + d1;
            x[i + 2] = s0 - s1;
            x[i + 3] = d0 - d1;
        }
    } else if (d == 2) {
        const float a = x[0], b = x[1];
        x[0] = a + b;
        x[1] = a - b;
    }
    butterfly_levels(x, d, 4);
}

void simulate_row(const double* w, const double* Q, double constant, int n, int reps, std::complex<float>* out,
                  std::vector<float>& cs, std::vector<float>& sn, std::vector<float>& re, std::vector<float>& im,
                  std::vector<double>& pl, std::vector<double>& cl, std::vector<double>& rj) {
    const int64_t d = int64_t(1) << n;
    const float norm = static_cast<float>(std::pow(2.0, -0.5 * n));
    quadratic_phase_rows(w, Q, constant, n, pl.data(), cl.data(), rj.data(),
                         [&](int64_t h, const double* cl_row, const double* pl_row, int64_t L) {
        float* c_row = cs.data() + h * L;
        float* s_row = sn.data() + h * L;
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) {
            double t = cl_row[l] + pl_row[l];
            t -= TWO_PI * std::nearbyint(t * (1.0 / TWO_PI));
            float s, c;
            sincos_reduced(static_cast<float>(t), s, c);
            c_row[l] = c * norm;
            s_row[l] = s * norm;
        }
    });
    float* r = re.data();
    float* m = im.data();
    const float* c = cs.data();
    const float* s = sn.data();
    // first repetition acts on |0..0>: H^{(x)n}|0> is uniform, so psi = 2^(-n/2) exp(i phase)
    for (int k = 1; k < reps; ++k) {
        if (k == 1) {
            for (int64_t b = 0; b < d; ++b) {
                r[b] = c[b];
                m[b] = s[b];
            }
        }
        walsh_hadamard(r, d);
        walsh_hadamard(m, d);
#pragma omp simd
        for (int64_t b = 0; b < d; ++b) {
            const float x = r[b], y = m[b];
            r[b] = x * c[b] - y * s[b];
            m[b] = x * s[b] + y * c[b];
        }
    }
    const float* fr = reps > 1 ? r : c;
    const float* fi = reps > 1 ? m : s;
    for (int64_t b = 0; b < d; ++b) out[b] = std::complex<float>(fr[b], fi[b]);
}

py::array_t<double> check_f64(const py::handle& obj, const char* name, int ndim) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a NumPy array");
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (a.ndim() != ndim) throw py::value_error(std::string(name) + " has the wrong number of dimensions");
    if (!a.dtype().is(py::dtype::of<double>())) throw py::value_error(std::string(name) + " must be float64");
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<double>>(a);
}

void states(py::handle w_obj, py::handle q_obj, py::handle c_obj, int reps, py::handle out_obj, int n_threads) {
    if (reps <= 0) throw py::value_error("reps must be a positive integer");
    if (n_threads <= 0) throw py::value_error("n_threads must be a positive integer");
    auto w = check_f64(w_obj, "w", 2);
    auto q = check_f64(q_obj, "Q", 3);
    auto constant = check_f64(c_obj, "const", 1);
    const int64_t rows = w.shape(0);
    const int n = static_cast<int>(w.shape(1));
    if (n < 1 || n > 30) throw py::value_error("w must have between 1 and 30 columns (qubits)");
    if (q.shape(0) != rows || q.shape(1) != n || q.shape(2) != n || constant.shape(0) != rows)
        throw py::value_error("Q must have shape (N, n, n) and const (N,) for w of shape (N, n)");
    if (!py::isinstance<py::array>(out_obj)) throw py::type_error("out must be a NumPy array");
    auto out = py::reinterpret_borrow<py::array>(out_obj);
    const int64_t d = int64_t(1) << n;
    if (out.ndim() != 2 || out.shape(0) != rows || out.shape(1) != d)
        throw py::value_error("out must have shape (N, 2**n)");
    if (!out.dtype().is(py::dtype::of<std::complex<float>>())) throw py::value_error("out must be complex64");
    if (!(out.flags() & py::array::c_style) || !out.writeable())
        throw py::value_error("out must be C-contiguous and writeable");
    const double* wp = w.data();
    const double* qp = q.data();
    const double* cp = constant.data();
    auto* op = static_cast<std::complex<float>*>(out.mutable_data());
    const int threads = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(rows, 1)));
    py::gil_scoped_release release;
#pragma omp parallel num_threads(threads)
    {
        const int64_t L = int64_t(1) << (n - n / 2);
        std::vector<float> cs(d), sn(d), re(reps > 1 ? d : 0), im(reps > 1 ? d : 0);
        std::vector<double> pl(L), cl(L), rj(n);
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < rows; ++i)
            simulate_row(wp + i * n, qp + i * n * n, cp[i], n, reps, op + i * d, cs, sn, re, im, pl, cl, rj);
    }
}

}  // namespace

PYBIND11_MODULE(_states_openmp, m) {
    m.doc() = "State vectors of diagonal-phase feature maps: fused phases, float32 sincos and Walsh-Hadamard";
    m.def("states", &states, py::arg("w"), py::arg("Q"), py::arg("const"), py::arg("reps"), py::arg("out"),
          py::arg("n_threads"),
          "Fill out (N, 2**n) complex64 with (D H^{(x)n})^reps |0> where D = exp(i (const + w.b + b^T Q b)),\n"
          "Q strictly upper triangular (N, n, n) float64, w (N, n), const (N,), all reduced mod 2 pi.\n"
          "Wire 0 is the most significant bit of b.  Runs n_threads OpenMP threads with the GIL released.");
}
