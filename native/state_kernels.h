// Shared by the state kernels (states_openmp.cpp, circuit_openmp.cpp): float32 cos and sin of reduced phases,
// the phases of a quadratic form in the bits, the butterfly levels of a Walsh-Hadamard transform.
#pragma once

#include <cmath>
#include <cstdint>

// cos and sin of x in [-pi, pi] (float32): quadrant j = round(x 2/pi), y = x - j pi/2 in three parts (exact
// products), then the minimax polynomials of sin and cos on [-pi/4, pi/4].
inline void sincos_reduced(float x, float& s_out, float& c_out) {
    const float j = std::nearbyint(x * 0.636619772367581343f);
    float y = x - j * 1.5703125f;
    y -= j * 4.837512969970703125e-4f;
    y -= j * 7.54978995489188216e-8f;
    const float z = y * y;
    const float s = y + y * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
    const float c = 1.0f - 0.5f * z + z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f +
                                                                             z * 2.443315711809948e-5f));
    const int q = static_cast<int>(j) & 3;
    // (sin, cos) of y + q pi/2
    const float ss = (q == 0) ? s : (q == 1) ? c : (q == 2) ? -s : -c;
    const float cs = (q == 0) ? c : (q == 1) ? -s : (q == 2) ? -c : s;
    s_out = ss;
    c_out = cs;
}

// Levels h = first, 2 first, ... < d of an unnormalised Walsh-Hadamard transform of x[0 .. d), in place.
template <class T>
void butterfly_levels(T* __restrict x, int64_t d, int64_t first) {
    for (int64_t h = first; h < d; h *= 2)
        for (int64_t i = 0; i < d; i += 2 * h) {
            T* __restrict lo = x + i;
            T* __restrict hi = x + i + h;
#pragma omp simd
            for (int64_t j = 0; j < h; ++j) {
                const T a = lo[j], b = hi[j];
                lo[j] = a + b;
                hi[j] = a - b;
            }
        }
}

// phase(b) = constant + sum_k w_k b_k + sum_{i<j} Q_ij b_i b_j (wire 0 the most significant bit of b), row by row.
// With b = (h, l) split into the high wires (h) and the low wires (l), phase(h, l) = PH[h] + PL[l] +
// sum_{j low} l_j R_j[h], the last sum built over l by doubling.  row(h, cl, pl, L) receives, for each h, the
// rows cl (PH[h] + cross terms) and pl (PL) of 2**(n - n/2) float64: phase(h, l) = cl[l] + pl[l].
// pl, cl hold 2**(n - n/2) and rj n float64.
template <class Row>
void quadratic_phase_rows(const double* w, const double* Q, double constant, int n, double* pl, double* cl,
                          double* rj, Row row) {
    const int nh = n / 2, nl = n - nh;
    const int64_t H = int64_t(1) << nh, L = int64_t(1) << nl;
    auto bit = [](int64_t v, int width, int m) { return static_cast<int>((v >> (width - 1 - m)) & 1); };
    // PL[l]: the low wires' own terms
    for (int64_t l = 0; l < L; ++l) {
        double p = 0.0;
        for (int a = 0; a < nl; ++a) {
            if (!bit(l, nl, a)) continue;
            p += w[nh + a];
            for (int b = a + 1; b < nl; ++b)
                if (bit(l, nl, b)) p += Q[(nh + a) * n + nh + b];
        }
        pl[l] = p;
    }
    for (int64_t h = 0; h < H; ++h) {
        // PH[h] and R_j[h] = sum_{i high} Q_ij h_i for the low wires j
        double ph = constant;
        for (int a = 0; a < nl; ++a) rj[a] = 0.0;
        for (int i = 0; i < nh; ++i) {
            if (!bit(h, nh, i)) continue;
            ph += w[i];
            for (int k = i + 1; k < nh; ++k)
                if (bit(h, nh, k)) ph += Q[i * n + k];
            for (int a = 0; a < nl; ++a) rj[a] += Q[i * n + nh + a];
        }
        // CL[l] = PH[h] + sum_j l_j R_j[h] by doubling, least significant low wire first
        cl[0] = ph;
        int64_t size = 1;
        for (int a = nl - 1; a >= 0; --a) {
            const double r = rj[a];
#pragma omp simd
            for (int64_t t = 0; t < size; ++t) cl[t + size] = cl[t] + r;
            size *= 2;
        }
        row(h, cl, pl, L);
    }
}
