// C (M x N) = or += A (M x K) @ W, for a W that stays the same for a whole op call.
//
// Why a class: the recurrent products of a layer all multiply by the same
// recurrent kernel (or its transpose), so its preparation is paid once per
// call, not once per time step. fp32 runs Eigen's product. bf16 (CPUs with
// AVX512_BF16) packs W once into bfloat16 pairs and multiplies with
// VDPBF16PS, which does twice the multiply-adds of an fp32 FMA per instruction;
// A is rounded to bfloat16 per call and every sum is accumulated in fp32.
// Rounding is to nearest even, and the order of the sums is fixed: deterministic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "Eigen/Core"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define RNN_HAVE_BF16 1
#else
#define RNN_HAVE_BF16 0
#endif

namespace rnn {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;

class Product {
 public:
  // w: K x N row-major, or N x K when `transposed` (then W = w^T).
  Product(const float* w, int K, int N, bool transposed, bool bf16)
      : w_(w), K_(K), N_(N), transposed_(transposed), bf16_(bf16) {
#if RNN_HAVE_BF16
    if (bf16_) Pack();
#endif
  }

  static bool Bf16Available() { return RNN_HAVE_BF16; }
  // Row stride C must have: bf16 writes whole 16-column blocks.
  int padded_n() const { return bf16_ ? (N_ + 15) / 16 * 16 : N_; }

  void Run(const float* a, int lda, int M, float* c, int ldc, bool accumulate) {
#if RNN_HAVE_BF16
    if (bf16_) return RunBf16(a, lda, M, c, ldc, accumulate);
#endif
    Eigen::Map<const Mat, 0, Strided> A(a, M, K_, Strided(lda));
    Eigen::Map<Mat, 0, Strided> C(c, M, N_, Strided(ldc));
    if (transposed_) {
      Eigen::Map<const Mat> W(w_, N_, K_);
      if (accumulate) C.noalias() += A * W.transpose(); else C.noalias() = A * W.transpose();
    } else {
      Eigen::Map<const Mat> W(w_, K_, N_);
      if (accumulate) C.noalias() += A * W; else C.noalias() = A * W;
    }
  }

 private:
  const float* w_;
  int K_, N_;
  bool transposed_, bf16_;
#if RNN_HAVE_BF16
  int kp_ = 0, nb_ = 0;          // pairs of rows of W, blocks of 16 columns
  std::vector<uint32_t> packed_;  // [block][pair][16 columns]: (W[2p, n], W[2p+1, n])
  std::vector<uint32_t> a_;       // A in bfloat16 pairs, one row per row of A

  static uint16_t Round(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);  // to nearest even, as VCVTNE2PS2BF16
    return static_cast<uint16_t>(u >> 16);
  }
  float W(int k, int n) const {
    return transposed_ ? w_[(size_t)n * K_ + k] : w_[(size_t)k * N_ + n];
  }

  void Pack() {
    kp_ = (K_ + 1) / 2;
    nb_ = (N_ + 15) / 16;
    packed_.assign((size_t)nb_ * kp_ * 16, 0);
    for (int b = 0; b < nb_; ++b)
      for (int p = 0; p < kp_; ++p)
        for (int j = 0; j < 16; ++j) {
          const int n = b * 16 + j;
          if (n >= N_) continue;
          const uint32_t lo = Round(W(2 * p, n));
          const uint32_t hi = 2 * p + 1 < K_ ? Round(W(2 * p + 1, n)) : 0;
          packed_[((size_t)b * kp_ + p) * 16 + j] = lo | (hi << 16);
        }
  }

  void ToPairs(const float* a, int lda, int M) {
    a_.resize((size_t)M * kp_);
    for (int m = 0; m < M; ++m) {
      const float* row = a + (size_t)m * lda;
      uint32_t* out = a_.data() + (size_t)m * kp_;
      for (int k = 0; k < K_; k += 32) {
        const int n = K_ - k;
        const __mmask16 m0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        const __mmask16 m1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
        const __m512 lo = _mm512_maskz_loadu_ps(m0, row + k);
        const __m512 hi = _mm512_maskz_loadu_ps(m1, row + k + 16);
        const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        const int pairs = std::min(16, (n + 1) / 2);
        _mm512_mask_storeu_epi32(out + k / 2, pairs >= 16 ? 0xffff : (__mmask16)((1u << pairs) - 1), v);
      }
    }
  }

  // MR rows of C times NV (<= 5) blocks of 16 columns from block b0; compile-time
  // sizes keep the MR x NV accumulators in registers.
  template <int MR, int NV>
  void Tile(const uint32_t* a, int b0, float* c, int ldc, bool accumulate) const {
    __m512 acc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v)
        acc[r][v] = accumulate ? _mm512_loadu_ps(c + (size_t)r * ldc + (b0 + v) * 16)
                               : _mm512_setzero_ps();
    const uint32_t* w = packed_.data() + (size_t)b0 * kp_ * 16;
    for (int p = 0; p < kp_; ++p) {
      __m512bh wv[NV];
      for (int v = 0; v < NV; ++v)
        wv[v] = (__m512bh)_mm512_loadu_si512(w + ((size_t)v * kp_ + p) * 16);
      for (int r = 0; r < MR; ++r) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(a[(size_t)r * kp_ + p]);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, wv[v]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + (size_t)r * ldc + (b0 + v) * 16, acc[r][v]);
  }

  template <int NV>
  void Columns(int M, int b, float* c, int ldc, bool accumulate) const {
    int m = 0;
    for (; m + 4 <= M; m += 4)
      Tile<4, NV>(a_.data() + (size_t)m * kp_, b, c + (size_t)m * ldc, ldc, accumulate);
    for (; m < M; ++m) Tile<1, NV>(a_.data() + (size_t)m * kp_, b, c + (size_t)m * ldc, ldc, accumulate);
  }

  void RunBf16(const float* a, int lda, int M, float* c, int ldc, bool accumulate) {
    ToPairs(a, lda, M);
    for (int b = 0; b < nb_; b += 5) {
      switch (std::min(5, nb_ - b)) {
        case 5: Columns<5>(M, b, c, ldc, accumulate); break;
        case 4: Columns<4>(M, b, c, ldc, accumulate); break;
        case 3: Columns<3>(M, b, c, ldc, accumulate); break;
        case 2: Columns<2>(M, b, c, ldc, accumulate); break;
        default: Columns<1>(M, b, c, ldc, accumulate);
      }
    }
  }
#endif
};

}  // namespace rnn
