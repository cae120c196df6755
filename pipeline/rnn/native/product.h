// The recurrent layers' matrix products, in fp32 or bfloat16 pairs.
//
// Why: the products of one layer all multiply by the same recurrent kernel (or
// its transpose), so `Product` prepares it once per op call, not once per time
// step. fp32 packs W into panels for f32.h's register tiles (AVX2 and up; Eigen's
// product elsewhere). bf16 (CPUs with AVX512_BF16) packs W into
// bfloat16 pairs and multiplies with VDPBF16PS, which does twice the
// multiply-adds of an fp32 FMA per instruction; the other operand is rounded to
// bfloat16 per call and every sum is accumulated in fp32. Rounding is to nearest
// even and the order of the sums is fixed, so results are deterministic.
// `SumAtB` is the weights' gradients: C += a sum of A^T @ B, both operands new per part
// (fp32's recurrent gradient is one product in fused_rnn.cc instead).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "Eigen/Core"
#include "f32.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define RNN_HAVE_BF16 1
#else
#define RNN_HAVE_BF16 0
#endif

namespace rnn {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::OuterStride<>;

#if RNN_HAVE_BF16
namespace bf16 {

inline __mmask16 Mask(int n) { return n >= 16 ? 0xffff : (__mmask16)((1u << std::max(n, 0)) - 1); }

// 16 pairs (r0[j], r1[j]) of bfloat16 from two rows of n <= 16 floats (r1 may be null).
inline __m512i Interleave(const float* r0, const float* r1, int n) {
  const __m512 lo = _mm512_maskz_loadu_ps(Mask(n), r0);
  const __m512 hi = r1 ? _mm512_maskz_loadu_ps(Mask(n), r1) : _mm512_setzero_ps();
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // lo in 0-15, hi in 16-31
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
  return _mm512_permutexvar_epi16(order, both);
}

// W (K x N, rows ldw apart) as [16-column block][row pair][16]: what Tile reads.
// Block b's pair p goes to out[(b * kp_stride + p) * 16], so several W stack in one buffer.
inline void PackPairsInto(const float* w, int ldw, int K, int N, uint32_t* out, size_t kp_stride) {
  const int kp = (K + 1) / 2, nb = (N + 15) / 16;
  for (int b = 0; b < nb; ++b)
    for (int p = 0; p < kp; ++p) {
      const float* r0 = w + (size_t)(2 * p) * ldw + b * 16;
      _mm512_storeu_si512(out + ((size_t)b * kp_stride + p) * 16,
                          Interleave(r0, 2 * p + 1 < K ? r0 + ldw : nullptr, N - b * 16));
    }
}

inline void PackPairs(const float* w, int ldw, int K, int N, std::vector<uint32_t>& out) {
  const int kp = (K + 1) / 2;
  out.resize((size_t)(N + 15) / 16 * kp * 16);
  PackPairsInto(w, ldw, K, N, out.data(), kp);
}

// A (M x K, rows lda apart) as pairs, row-major: a[m * kp + p] = (A[m, 2p], A[m, 2p+1]).
inline void RowPairs(const float* a, int lda, int M, int K, std::vector<uint32_t>& out) {
  const int kp = (K + 1) / 2;
  out.resize((size_t)M * kp + 16);
  for (int m = 0; m < M; ++m) {
    const float* row = a + (size_t)m * lda;
    for (int k = 0; k < K; k += 32) {
      const int n = K - k;
      const __m512 lo = _mm512_maskz_loadu_ps(Mask(n), row + k);
      // n <= 16: row + k + 16 would point past the row (and past a's end on its last row)
      const __m512 hi = n > 16 ? _mm512_maskz_loadu_ps(Mask(n - 16), row + k + 16)
                               : _mm512_setzero_ps();
      _mm512_mask_storeu_epi32(out.data() + (size_t)m * kp + k / 2, Mask((n + 1) / 2),
                               (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
}

// A^T's pairs for A (K x M, rows lda apart), pair-major: out[p * mp + m] = (A[2p, m], A[2p+1, m]).
inline void ColumnPairs(const float* a, int lda, int K, int M, int mp, uint32_t* out) {
  const int kp = (K + 1) / 2;
  for (int p = 0; p < kp; ++p)
    for (int m = 0; m < M; m += 16) {
      const float* r0 = a + (size_t)(2 * p) * lda + m;
      _mm512_storeu_si512(out + (size_t)p * mp + m,
                          Interleave(r0, 2 * p + 1 < K ? r0 + lda : nullptr, M - m));
    }
}

// MR rows of C times NV blocks of 16 columns from block b0; pair p of row r of A
// at a[r * rs + p * ps]. Compile-time sizes keep the accumulators in registers.
template <int MR, int NV>
void Tile(const uint32_t* a, size_t rs, size_t ps, const uint32_t* w, int kp, int b0, float* c,
          int ldc, bool accumulate) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm512_loadu_ps(c + (size_t)r * ldc + (b0 + v) * 16)
                             : _mm512_setzero_ps();
  w += (size_t)b0 * kp * 16;
  for (int p = 0; p < kp; ++p) {
    __m512bh wv[NV];
    for (int v = 0; v < NV; ++v)
      wv[v] = (__m512bh)_mm512_loadu_si512(w + ((size_t)v * kp + p) * 16);
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(a[r * rs + p * ps]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, wv[v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + (size_t)r * ldc + (b0 + v) * 16, acc[r][v]);
}

template <int MR, int NV>
void Columns(const uint32_t* a, size_t rs, size_t ps, int M, const uint32_t* w, int kp, int b,
             float* c, int ldc, bool accumulate) {
  int m = 0;
  for (; m + MR <= M; m += MR)
    Tile<MR, NV>(a + m * rs, rs, ps, w, kp, b, c + (size_t)m * ldc, ldc, accumulate);
  for (; m < M; ++m) Tile<1, NV>(a + m * rs, rs, ps, w, kp, b, c + (size_t)m * ldc, ldc, accumulate);
}

// C (M x 16*nb, ldc) = or += A @ W from pairs (see Tile for rs, ps) and packed W.
// Every element of C sums its pairs in order whatever the tiling: tiles change no bit.
inline void Multiply(const uint32_t* a, size_t rs, size_t ps, int M, const uint32_t* w, int kp,
                     int nb, float* c, int ldc, bool accumulate) {
  if (nb == 7)  // 100 columns (a layer's units): one pass of 3 x 7 tiles, 29 of 32 registers
    return Columns<3, 7>(a, rs, ps, M, w, kp, 0, c, ldc, accumulate);
  for (int b = 0; b < nb; b += 5) {
    switch (std::min(5, nb - b)) {
      case 5: Columns<4, 5>(a, rs, ps, M, w, kp, b, c, ldc, accumulate); break;
      case 4: Columns<4, 4>(a, rs, ps, M, w, kp, b, c, ldc, accumulate); break;
      case 3: Columns<4, 3>(a, rs, ps, M, w, kp, b, c, ldc, accumulate); break;
      case 2: Columns<4, 2>(a, rs, ps, M, w, kp, b, c, ldc, accumulate); break;
      default: Columns<4, 1>(a, rs, ps, M, w, kp, b, c, ldc, accumulate);
    }
  }
}

}  // namespace bf16
#endif

// C (M x N) = or += A (M x K) @ W for one W per op call.
class Product {
 public:
  // w: K x N row-major, or N x K when `transposed` (then W = w^T).
  Product(const float* w, int K, int N, bool transposed, bool bf16)
      : w_(w), K_(K), N_(N), transposed_(transposed), bf16_(bf16) {
#if RNN_HAVE_BF16
    if (bf16_) {
      if (transposed_) {  // pack rows of W = columns of w: transpose once first
        Mat t = Eigen::Map<const Mat>(w_, N_, K_).transpose();
        bf16::PackPairs(t.data(), N_, K_, N_, packed_);
      } else {
        bf16::PackPairs(w_, N_, K_, N_, packed_);
      }
      return;
    }
#endif
#if RNN_HAVE_F32_PACKED  // W (k, n) is w[k * N + n], or w[n * K + k] when transposed
    f32::Pack(w_, K_, N_, transposed_ ? 1 : N_, transposed_ ? K_ : 1, packed_f32_);
#endif
  }

  static bool Bf16Available() { return RNN_HAVE_BF16; }
  // Row stride C must have: the packed products write whole blocks of columns
  // (16 for bf16, 8 for fp32).
  int padded_n() const {
    if (bf16_) return (N_ + 15) / 16 * 16;
    return RNN_HAVE_F32_PACKED ? f32::Blocks(N_) * f32::kLanes : N_;
  }

  void Run(const float* a, int lda, int M, float* c, int ldc, bool accumulate) {
#if RNN_HAVE_BF16
    if (bf16_) {
      bf16::RowPairs(a, lda, M, K_, a_);
      const int kp = (K_ + 1) / 2;
      return bf16::Multiply(a_.data(), kp, 1, M, packed_.data(), kp, (N_ + 15) / 16, c, ldc,
                            accumulate);
    }
#endif
#if RNN_HAVE_F32_PACKED
    return f32::Multiply(a, lda, M, packed_f32_.data(), K_, f32::Blocks(N_), c, ldc, accumulate);
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
  std::vector<uint32_t> packed_, a_;
  std::vector<float> packed_f32_;
};

// fp32 C (M x N, rows ldc apart) = or += A^T @ B, A (K x M, rows lda apart) and B
// (K x N, rows ldb apart): a weights' gradient over K = batch x steps rows. The
// whole blocks of 8 columns in f32.h's tiles (at these sizes faster than Eigen's
// product, which packs both operands first), the last N % 8 columns and CPUs
// without AVX2 by Eigen.
inline void AtB(const float* a, int lda, int K, int M, const float* b, int ldb, int N, float* c,
                int ldc, bool accumulate) {
  int done = 0;
#if RNN_HAVE_F32_PACKED
  done = N / f32::kLanes * f32::kLanes;
  f32::MultiplyAtB(a, lda, K, M, b, ldb, N / f32::kLanes, c, ldc, accumulate);
#endif
  if (done == N) return;
  Eigen::Map<const Mat, 0, Strided> A(a, K, M, Strided(lda));
  Eigen::Map<const Mat, 0, Strided> B(b + done, K, N - done, Strided(ldb));
  Eigen::Map<Mat, 0, Strided> C(c + done, M, N - done, Strided(ldc));
  if (accumulate) C.noalias() += A.transpose() * B; else C.noalias() = A.transpose() * B;
}

// C (M x N, ldc) += the sum over parts of A^T @ B, each part's A (K x M, rows lda
// apart) and B (K x N, rows ldb apart) given by `Add` in turn (the recurrent
// kernel's gradient: one part per step; the input kernel's: one part). fp32 adds
// each part when it comes (AtB). bf16 packs each part when it comes and
// multiplies all at `Finish`: every element of C goes through the same pairs in
// the same order as with one product per part (so the same sums), but C is read
// and written once, not once per part. With bf16, ldc must be at least N rounded
// up to 16.
class SumAtB {
 public:
  SumAtB(bool bf16, [[maybe_unused]] int parts, int K, int M, int N, float* c, int ldc)
      : bf16_(bf16), K_(K), M_(M), N_(N), ldc_(ldc), c_(c) {
#if RNN_HAVE_BF16
    if (bf16_) {
      kpb_ = (K + 1) / 2;
      mp_ = (M + 15) / 16 * 16;
      kp_ = (size_t)parts * kpb_;  // not zeroed here: Add writes each part, Finish the rest
      a_.reset(new uint32_t[kp_ * mp_]);
      b_.reset(new uint32_t[(size_t)(N + 15) / 16 * kp_ * 16]);
    }
#endif
  }

  void Add(const float* a, int lda, const float* b, int ldb) {
#if RNN_HAVE_BF16
    if (bf16_) {
      bf16::ColumnPairs(a, lda, K_, M_, mp_, a_.get() + (size_t)added_ * kpb_ * mp_);
      bf16::PackPairsInto(b, ldb, K_, N_, b_.get() + (size_t)added_ * kpb_ * 16, kp_);
      ++added_;
      return;
    }
#endif
    AtB(a, lda, K_, M_, b, ldb, N_, c_, ldc_, /*accumulate=*/true);
  }

  void Finish() {
#if RNN_HAVE_BF16
    if (!bf16_ || !kp_) return;
    // parts never added become zero pairs on both sides: they add nothing
    const size_t done = (size_t)added_ * kpb_, nb = (N_ + 15) / 16;
    std::fill(a_.get() + done * mp_, a_.get() + kp_ * mp_, 0u);
    for (size_t b = 0; b < nb; ++b)
      std::fill(b_.get() + (b * kp_ + done) * 16, b_.get() + (b + 1) * kp_ * 16, 0u);
    bf16::Multiply(a_.get(), 1, mp_, M_, b_.get(), (int)kp_, (int)nb, c_, ldc_, true);
#endif
  }

 private:
  bool bf16_;
  int K_, M_, N_, ldc_;
  float* c_;
  int kpb_ = 0, mp_ = 0, added_ = 0;
  size_t kp_ = 0;
  std::unique_ptr<uint32_t[]> a_, b_;
};

}  // namespace rnn
