// Shared by the symmetric Grams (gram_openmp.cpp, shots_openmp.cpp): the lower triangle written from the upper
// one, block by block while the block is in cache, by 8 x 8 transposes in registers.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 flags the self-initialised _mm512_undefined_pd() inside its own shuffle intrinsics (a false positive)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace qmlnb_mirror {

// A mirror block's rows are written once and not read again: as whole cache lines that bypass the caches
// (streaming stores) where every 8-value run of a row starts a line, that is float64 rows on 64-byte
// boundaries (qmlnb's gram allocates them so) and blocks that start at a multiple of 8, which saves reading
// each line before writing it.  float32 runs are half a line, for which regular stores measured faster.
template <class T> bool streams_rows(const T* K, int64_t N) {
#if defined(__AVX512F__)
    return sizeof(T) == 8 && reinterpret_cast<uintptr_t>(K) % 64 == 0 && N % 8 == 0;
#else
    (void)K, (void)N;
    return false;
#endif
}
inline void store_fence() {
#if defined(__AVX512F__)
    _mm_sfence();
#endif
}

#if defined(__AVX512F__)
// The 8 x 8 values at src (rows ld apart) written transposed at dst (rows ld apart), streamed if `stream`.
inline void transpose8(const double* src, double* dst, int64_t ld, bool stream) {
    __m512d r[8], t[8], u[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm512_loadu_pd(src + k * ld);
    for (int k = 0; k < 8; k += 2) {  // t[k]: rows k and k+1 interleaved, even columns; t[k+1]: odd columns
        t[k] = _mm512_unpacklo_pd(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_pd(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {  // u[k + c]: rows k..k+3 of columns {0, 4}, {2, 6}, {1, 5}, {3, 7}
        u[k] = _mm512_shuffle_f64x2(t[k], t[k + 2], 0x88);
        u[k + 1] = _mm512_shuffle_f64x2(t[k], t[k + 2], 0xDD);
        u[k + 2] = _mm512_shuffle_f64x2(t[k + 1], t[k + 3], 0x88);
        u[k + 3] = _mm512_shuffle_f64x2(t[k + 1], t[k + 3], 0xDD);
    }
    const int column[4] = {0, 2, 1, 3};
    for (int k = 0; k < 4; ++k) {
        const __m512d low = _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88);   // column column[k], rows 0..7
        const __m512d high = _mm512_shuffle_f64x2(u[k], u[k + 4], 0xDD);  // column column[k] + 4
        if (stream) {
            _mm512_stream_pd(dst + column[k] * ld, low);
            _mm512_stream_pd(dst + (column[k] + 4) * ld, high);
        } else {
            _mm512_storeu_pd(dst + column[k] * ld, low);
            _mm512_storeu_pd(dst + (column[k] + 4) * ld, high);
        }
    }
}
inline void transpose8(const float* src, float* dst, int64_t ld, bool) {
    __m256 r[8], t[8], u[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + k * ld);
    for (int k = 0; k < 8; k += 2) {  // within each 128-bit half: rows k and k+1 interleaved
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {  // u[k + c]: rows k..k+3 of column c in the low half, c + 4 in the high
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(dst + k * ld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * ld, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}
#else
template <class T> inline void transpose8(const T* src, T* dst, int64_t ld, bool) {
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 8; ++c) dst[c * ld + r] = src[r * ld + c];
}
#endif

// The strictly lower mirror of the block [i0, i1) x [j0, j1) on or above the diagonal, K[j][i] = K[i][j] for
// i < j: 8 x 8 transposes in registers wherever a whole one lies above the diagonal, one value at a time at
// the diagonal and the edges.
template <class T>
void mirror_block(T* K, int64_t N, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool stream) {
    stream = stream && i0 % 8 == 0;  // every run then starts a line (a tile edge that is no multiple of 8: not)
    for (int64_t j = j0; j < j1; j += 8)
        for (int64_t i = i0; i < i1; i += 8) {
            if (i + 8 <= j && j + 8 <= j1 && i + 8 <= i1) {
                transpose8(K + i * N + j, K + j * N + i, N, stream);
                continue;
            }
            for (int64_t jj = j; jj < std::min(j + 8, j1); ++jj)
                for (int64_t ii = i; ii < std::min({i + 8, i1, jj}); ++ii) K[jj * N + ii] = K[ii * N + jj];
        }
}

}  // namespace qmlnb_mirror
