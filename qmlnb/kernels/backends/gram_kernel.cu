// Fidelity Gram tiles K[i][j] = |<a_i|b_j>|^2 of complex64 state rows, |.|^2 fused.
//
// Compiled at run time by PyCUDA's SourceModule (qmlnb/kernels/backends/pycuda_kernel.py);
// also compiled by tests with `nvcc -ptx` to catch syntax errors on machines without a GPU.
//
// One thread block computes a GRAM_TILE x GRAM_TILE block of K.  The A rows and B rows of
// the block are staged through shared memory GRAM_CHUNK amplitudes at a time (coalesced
// loads: consecutive threads read consecutive amplitudes of one row); each thread keeps a
// GRAM_MICRO x GRAM_MICRO patch of complex accumulators in registers and does the complex
// multiply-adds a * conj(b) as four float FMAs.  Only |.|^2 of the finished sums is written,
// so the complex product matrix never touches global memory (a GEMM followed by an abs2
// pass writes and re-reads 8 bytes per element of K; this kernel writes 4 or 8 once).
//
// Symmetric case (triangular != 0, A == B, n_rows == n_cols): blockIdx.x enumerates only
// the blocks (bi, bj) with bj >= bi, and every value is also stored at its mirror position,
// so the lower triangle costs no arithmetic.  Rectangular case: a 2-D grid over all blocks,
// blockIdx.y over row blocks and blockIdx.x over column blocks; if out_t is not null the
// transposed block is stored there as well (the host uses it for off-diagonal tiles of a
// symmetric matrix split into several launches).

#ifndef GRAM_TILE
#define GRAM_TILE 64  // K rows and columns per thread block
#endif
#ifndef GRAM_CHUNK
#define GRAM_CHUNK 16  // amplitudes staged in shared memory per step
#endif
#define GRAM_THREADS 16  // the block is GRAM_THREADS x GRAM_THREADS threads
#define GRAM_MICRO (GRAM_TILE / GRAM_THREADS)

#if GRAM_TILE % GRAM_THREADS != 0
#error "GRAM_TILE must be a multiple of 16"
#endif

// Linear index t over the upper-triangle blocks -> (bi, bj) with bj >= bi.
// t enumerates (r, c), c <= r, row by row: t = r (r + 1) / 2 + c; then bi = c, bj = r.
__host__ __device__ inline void gram_upper_block(long long t, int *bi, int *bj)
{
    long long r = (long long)((sqrt(8.0 * (double)t + 1.0) - 1.0) * 0.5);
    // the double square root may land one off near perfect squares: correct it exactly
    while (r * (r + 1) / 2 > t) --r;
    while ((r + 1) * (r + 2) / 2 <= t) ++r;
    *bi = (int)(t - r * (r + 1) / 2);
    *bj = (int)r;
}

template <typename T>
__device__ __forceinline__ void gram_abs2_block(const float2 *__restrict__ A, const float2 *__restrict__ B,
                                                T *__restrict__ out, T *__restrict__ out_t, int n_rows,
                                                int n_cols, int d, int triangular)
{
    // +1 column of padding: the transposing stores below hit distinct banks
    __shared__ float2 As[GRAM_CHUNK][GRAM_TILE + 1];
    __shared__ float2 Bs[GRAM_CHUNK][GRAM_TILE + 1];

    int bi, bj;
    if (triangular) {
        gram_upper_block((long long)blockIdx.x, &bi, &bj);
    } else {
        bi = blockIdx.y;
        bj = blockIdx.x;
    }
    const int row0 = bi * GRAM_TILE;
    const int col0 = bj * GRAM_TILE;
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int tid = ty * GRAM_THREADS + tx;
    const float2 zero = make_float2(0.0f, 0.0f);

    float acc_re[GRAM_MICRO][GRAM_MICRO];
    float acc_im[GRAM_MICRO][GRAM_MICRO];
#pragma unroll
    for (int m = 0; m < GRAM_MICRO; ++m) {
#pragma unroll
        for (int q = 0; q < GRAM_MICRO; ++q) {
            acc_re[m][q] = 0.0f;
            acc_im[m][q] = 0.0f;
        }
    }

    for (int k0 = 0; k0 < d; k0 += GRAM_CHUNK) {
        for (int e = tid; e < GRAM_TILE * GRAM_CHUNK; e += GRAM_THREADS * GRAM_THREADS) {
            const int r = e / GRAM_CHUNK;
            const int k = e % GRAM_CHUNK;
            const int gk = k0 + k;
            const int ga = row0 + r;
            const int gb = col0 + r;
            // rows past the end and amplitudes past d contribute zeros
            As[k][r] = (ga < n_rows && gk < d) ? A[(long long)ga * d + gk] : zero;
            Bs[k][r] = (gb < n_cols && gk < d) ? B[(long long)gb * d + gk] : zero;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < GRAM_CHUNK; ++k) {
            float2 a[GRAM_MICRO];
            float2 b[GRAM_MICRO];
#pragma unroll
            for (int m = 0; m < GRAM_MICRO; ++m) {
                // rows ty, ty + 16, ...: a warp reads two addresses (broadcast);
                // columns tx, tx + 16, ...: 16 consecutive float2, no bank conflict
                a[m] = As[k][ty + m * GRAM_THREADS];
                b[m] = Bs[k][tx + m * GRAM_THREADS];
            }
#pragma unroll
            for (int m = 0; m < GRAM_MICRO; ++m) {
#pragma unroll
                for (int q = 0; q < GRAM_MICRO; ++q) {
                    // a * conj(b) = (ar br + ai bi) + i (ai br - ar bi)
                    acc_re[m][q] = fmaf(a[m].x, b[q].x, acc_re[m][q]);
                    acc_re[m][q] = fmaf(a[m].y, b[q].y, acc_re[m][q]);
                    acc_im[m][q] = fmaf(a[m].y, b[q].x, acc_im[m][q]);
                    acc_im[m][q] = fmaf(-a[m].x, b[q].y, acc_im[m][q]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < GRAM_MICRO; ++m) {
#pragma unroll
        for (int q = 0; q < GRAM_MICRO; ++q) {
            const int r = row0 + ty + m * GRAM_THREADS;
            const int c = col0 + tx + q * GRAM_THREADS;
            // below the diagonal of a diagonal block: stored as the mirror of (c, r)
            if (r >= n_rows || c >= n_cols || (triangular && c < r)) continue;
            const T v = (T)fmaf(acc_re[m][q], acc_re[m][q], acc_im[m][q] * acc_im[m][q]);
            out[(long long)r * n_cols + c] = v;
            if (triangular) {
                out[(long long)c * n_cols + r] = v;
            } else if (out_t != 0) {
                out_t[(long long)c * n_rows + r] = v;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(GRAM_THREADS * GRAM_THREADS)
gram_abs2_f32(const float2 *A, const float2 *B, float *out, float *out_t, int n_rows, int n_cols, int d,
              int triangular)
{
    gram_abs2_block<float>(A, B, out, out_t, n_rows, n_cols, d, triangular);
}

extern "C" __global__ void __launch_bounds__(GRAM_THREADS * GRAM_THREADS)
gram_abs2_f64(const float2 *A, const float2 *B, double *out, double *out_t, int n_rows, int n_cols, int d,
              int triangular)
{
    gram_abs2_block<double>(A, B, out, out_t, n_rows, n_cols, d, triangular);
}
