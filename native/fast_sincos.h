// cos and sin in float32 for phases already reduced to [-pi, pi] in float64 (shared by the state kernels).
#pragma once

#include <cmath>

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
