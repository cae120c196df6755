// fp32 products with a prepacked right operand, in AVX2 registers (x86-64-v3 and up).
//
// Why: a recurrent layer multiplies by the same kernel at every step, a product
// of 50 x 100 by 100 x 400 at most. Eigen's general product packs both operands
// on every call and blocks for large matrices, which at these sizes costs about
// as much as the multiply-adds. Here W is packed once per op call into panels of
// 8 columns ([block][k][8], zero beyond N), and each step's product runs straight
// from the left operand's rows into tiles of MR rows x NV blocks held in
// registers (MR x NV <= 12 of AVX2's 16). Every element of C sums its K products
// in order 0..K-1 with one fused multiply-add each, whatever the tiling, so the
// tiling changes no bit and results are deterministic. AVX-512 CPUs run the same
// code (their fp32 speed per core is the same on AMD's Zen 4, and one fp32
// arithmetic for both kinds of CPU is simpler to test).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNN_HAVE_F32_PACKED 1
#else
#define RNN_HAVE_F32_PACKED 0
#endif

namespace rnn::f32 {

constexpr int kLanes = 8;  // floats per block of packed W (one AVX2 register)

inline int Blocks(int n) { return (n + kLanes - 1) / kLanes; }

#if RNN_HAVE_F32_PACKED

// W (K x N; element (k, n) at w[k * sk + n * sn]) as [block][k][8], zero-padded:
// sk = N, sn = 1 for a row-major W; sk = 1, sn = K for the transpose of an N x K w.
inline void Pack(const float* w, int K, int N, size_t sk, size_t sn, std::vector<float>& out) {
  const int nb = Blocks(N);
  out.assign((size_t)nb * K * kLanes, 0.0f);
  for (int b = 0; b < nb; ++b) {
    const int cols = std::min(kLanes, N - b * kLanes);
    float* panel = out.data() + (size_t)b * K * kLanes;
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < cols; ++j)
        panel[(size_t)k * kLanes + j] = w[(size_t)k * sk + (size_t)(b * kLanes + j) * sn];
  }
}

// C rows [0, MR) x blocks [b0, b0 + NV) (or +=) A @ W; A's row r at a + r * lda.
// `Add` is a template argument: with a run-time choice GCC keeps the accumulators
// on the stack, not in registers (measured: 1.7x the time).
template <int MR, int NV, bool Add>
inline void Tile(const float* a, size_t lda, const float* w, int K, int b0, float* c,
                 size_t ldc) {
  __m256 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Add ? _mm256_loadu_ps(c + r * ldc + (b0 + v) * kLanes) : _mm256_setzero_ps();
  const float* panel = w + (size_t)b0 * K * kLanes;
  const size_t stride = (size_t)K * kLanes;  // from one block's panel to the next
  for (int k = 0; k < K; ++k) {
    __m256 wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_ps(panel + v * stride + (size_t)k * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, wv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + r * ldc + (b0 + v) * kLanes, acc[r][v]);
}

// Every row of C for blocks [b0, b0 + NV): MR rows at a time, then one by one.
template <int MR, int NV, bool Add>
inline void Panel(const float* a, size_t lda, int M, const float* w, int K, int b0, float* c,
                  size_t ldc) {
  int m = 0;
  for (; m + MR <= M; m += MR) Tile<MR, NV, Add>(a + m * lda, lda, w, K, b0, c + m * ldc, ldc);
  for (; m + 2 <= M; m += 2) Tile<2, NV, Add>(a + m * lda, lda, w, K, b0, c + m * ldc, ldc);
  if (m < M) Tile<1, NV, Add>(a + m * lda, lda, w, K, b0, c + m * ldc, ldc);
}

template <bool Add>
inline void Columns(const float* a, size_t lda, int M, const float* w, int K, int nb, float* c,
                   size_t ldc) {
  int b = 0;
  for (; b + 3 <= nb; b += 3) Panel<4, 3, Add>(a, lda, M, w, K, b, c, ldc);
  if (nb - b == 2) Panel<6, 2, Add>(a, lda, M, w, K, b, c, ldc);
  if (nb - b == 1) Panel<12, 1, Add>(a, lda, M, w, K, b, c, ldc);
}

// C (M x 8 * Blocks(N), rows ldc apart) = or += A (M x K, rows lda apart) @ packed W.
// Panels of 3 blocks (4 x 3 tiles: 12 accumulators, 3 W registers, 1 broadcast),
// the last one or two blocks in 6 x 2 or 12 x 1 tiles.
inline void Multiply(const float* a, size_t lda, int M, const float* w, int K, int nb, float* c,
                     size_t ldc, bool accumulate) {
  if (accumulate) return Columns<true>(a, lda, M, w, K, nb, c, ldc);
  Columns<false>(a, lda, M, w, K, nb, c, ldc);
}

// A weights' gradient: C (M x 8 * nb, rows ldc apart) = or += A^T @ B over K rows, for
// A (K x M, rows lda apart) and B's first nb blocks of 8 columns (rows ldb apart),
// both read in place (no packing: B's blocks of one row are 8 floats side by side,
// as a packed W's are). K runs in chunks of 64 rows, C added to after the first, so
// a chunk of B's panel stays in L1 for every tile of rows. Each element of C sums
// its products in order 0..K-1 with one fused multiply-add each, whatever the
// tiling: deterministic. The tiles are those of `Multiply`, with A read down its
// columns (A^T's row r, element k at a[k * lda + r]).
template <int MR, int NV, bool Add>
inline void TileAtB(const float* a, size_t lda, const float* b, size_t ldb, int K, float* c,
                    size_t ldc) {
  __m256 acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Add ? _mm256_loadu_ps(c + r * ldc + v * kLanes) : _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const float* bk = b + (size_t)k * ldb;
    const float* ak = a + (size_t)k * lda;
    __m256 wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = _mm256_loadu_ps(bk + v * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(ak + r);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, wv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + r * ldc + v * kLanes, acc[r][v]);
}

template <int MR, int NV, bool Add>
inline void PanelAtB(const float* a, size_t lda, int M, const float* b, size_t ldb, int K,
                     float* c, size_t ldc) {
  int m = 0;
  for (; m + MR <= M; m += MR) TileAtB<MR, NV, Add>(a + m, lda, b, ldb, K, c + m * ldc, ldc);
  for (; m + 2 <= M; m += 2) TileAtB<2, NV, Add>(a + m, lda, b, ldb, K, c + m * ldc, ldc);
  if (m < M) TileAtB<1, NV, Add>(a + m, lda, b, ldb, K, c + m * ldc, ldc);
}

template <bool Add>
inline void ColumnsAtB(const float* a, size_t lda, int M, const float* b, size_t ldb, int K,
                       int nb, float* c, size_t ldc) {
  int j = 0;
  for (; j + 3 <= nb; j += 3)
    PanelAtB<4, 3, Add>(a, lda, M, b + j * kLanes, ldb, K, c + j * kLanes, ldc);
  if (nb - j == 2) PanelAtB<6, 2, Add>(a, lda, M, b + j * kLanes, ldb, K, c + j * kLanes, ldc);
  if (nb - j == 1) PanelAtB<12, 1, Add>(a, lda, M, b + j * kLanes, ldb, K, c + j * kLanes, ldc);
}

inline void MultiplyAtB(const float* a, size_t lda, int K, int M, const float* b, size_t ldb,
                        int nb, float* c, size_t ldc, bool accumulate) {
  constexpr int kChunk = 64;
  if (K <= 0) {  // a sum of nothing
    if (!accumulate)
      for (int m = 0; m < M; ++m) std::fill_n(c + (size_t)m * ldc, nb * kLanes, 0.0f);
    return;
  }
  for (int k0 = 0; k0 < K; k0 += kChunk) {
    const int kn = std::min(kChunk, K - k0);
    const float* ak = a + (size_t)k0 * lda;
    const float* bk = b + (size_t)k0 * ldb;
    if (k0 || accumulate) ColumnsAtB<true>(ak, lda, M, bk, ldb, kn, nb, c, ldc);
    else ColumnsAtB<false>(ak, lda, M, bk, ldb, kn, nb, c, ldc);
  }
}

#endif  // RNN_HAVE_F32_PACKED

}  // namespace rnn::f32
