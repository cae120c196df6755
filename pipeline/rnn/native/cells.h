// The cells' element-wise maths for one row of a batch at one step, in SIMD packets.
//
// Why: written as Eigen array expressions, a row took one pass per expression,
// and Eigen did the elements before a row's first aligned address and after its
// last whole packet one at a time, through the scalar exp and tanh: at 100 units
// a third of a row or more. Here one pass per row does every gate: all elements
// in packets (the last, partial one with masked loads and stores),
// so every element goes through the same instructions and the gates stay in
// registers. Packets are Eigen's (16 floats with AVX-512, 8 with AVX2), and so
// are the sigmoid and tanh. Same order of operations everywhere: deterministic.
//
// Layouts as in fused_rnn.cc: z the row's pre-activations in Keras' gate order;
// s the row's saved values (LSTM i, f, g, o, c, tanh c; GRU z, r, hh, rh).
#pragma once

#include "Eigen/Core"

// The masked loads and stores below are AVX-512's or AVX2's on x86 (AVX alone
// has no 8-lane integer compare); elsewhere Eigen's partial loads and stores.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX2__)
#error "fused_rnn needs AVX2 on x86, and this -march has none"
#endif

namespace rnn::cells {

using P = Eigen::internal::packet_traits<float>::type;
constexpr int kWidth = Eigen::internal::packet_traits<float>::size;

#if defined(EIGEN_VECTORIZE_AVX) && !defined(EIGEN_VECTORIZE_AVX512)
inline __m256i Tail(int n) {  // AVX2's masked loads and stores: the first n lanes
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

// n elements from p (n >= kWidth: a whole packet); the rest of the packet zero.
inline P Load(const float* p, int n) {
  if (n >= kWidth) return Eigen::internal::ploadu<P>(p);
#if defined(EIGEN_VECTORIZE_AVX512)
  return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#elif defined(EIGEN_VECTORIZE_AVX)
  return _mm256_maskload_ps(p, Tail(n));
#else
  return Eigen::internal::ploadu_partial<P>(p, n);
#endif
}
inline void Store(float* p, const P& v, int n) {
  if (n >= kWidth) return Eigen::internal::pstoreu(p, v);
#if defined(EIGEN_VECTORIZE_AVX512)
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
#elif defined(EIGEN_VECTORIZE_AVX)
  _mm256_maskstore_ps(p, Tail(n), v);
#else
  Eigen::internal::pstoreu_partial(p, v, n);
#endif
}
inline P Sigmoid(const P& x) { return Eigen::internal::scalar_logistic_op<float>().packetOp(x); }
inline P Tanh(const P& x) { return Eigen::internal::ptanh(x); }
inline P Set(float v) { return Eigen::internal::pset1<P>(v); }

// Forward, one row: h from z (ReLU or tanh).
inline void SimpleForward(bool relu, const float* z, float* h, int H) {
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P x = Load(z + j, n);
    Store(h + j, relu ? Eigen::internal::pmax(x, Set(0.f)) : Tanh(x), n);
  }
}

// Backward, one row: dz from dh (d h from above plus the step after's) and h.
inline void SimpleBackward(bool relu, const float* dh_out, const float* dh_next, const float* h,
                           float* dz, int H) {
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P dh = Load(dh_out + j, n) + Load(dh_next + j, n), hh = Load(h + j, n);
    const P zero = Set(0.f);
    const P d = relu ? Eigen::internal::pselect(Eigen::internal::pcmp_lt(zero, hh), dh, zero)
                     : dh * (Set(1.f) - hh * hh);
    Store(dz + j, d, n);
  }
}

// LSTM forward, one row: the saved values and h; c_prev is the step before's c
// (null at the first step).
inline void LstmForward(const float* z, float* s, const float* c_prev, float* h, int H) {
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P i = Sigmoid(Load(z + j, n)), f = Sigmoid(Load(z + H + j, n));
    const P g = Tanh(Load(z + 2 * H + j, n)), o = Sigmoid(Load(z + 3 * H + j, n));
    const P c = c_prev ? f * Load(c_prev + j, n) + i * g : i * g;
    const P tc = Tanh(c);
    Store(s + j, i, n);
    Store(s + H + j, f, n);
    Store(s + 2 * H + j, g, n);
    Store(s + 3 * H + j, o, n);
    Store(s + 4 * H + j, c, n);
    Store(s + 5 * H + j, tc, n);
    Store(h + j, o * tc, n);
  }
}

// LSTM backward, one row: dz (4 gates) and dc_next (in: from the step after; out:
// for the step before); c_prev as in LstmForward.
inline void LstmBackward(const float* dh_out, const float* dh_next, const float* s,
                         const float* c_prev, float* dc_next, float* dz, int H) {
  const P one = Set(1.f);
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P dh = Load(dh_out + j, n) + Load(dh_next + j, n);
    const P i = Load(s + j, n), f = Load(s + H + j, n), g = Load(s + 2 * H + j, n);
    const P o = Load(s + 3 * H + j, n), tc = Load(s + 5 * H + j, n);
    const P dc = dh * o * (one - tc * tc) + Load(dc_next + j, n);
    Store(dz + j, dc * g * i * (one - i), n);
    Store(dz + H + j, c_prev ? dc * Load(c_prev + j, n) * f * (one - f) : Set(0.f), n);
    Store(dz + 2 * H + j, dc * i * (one - g * g), n);
    Store(dz + 3 * H + j, dh * tc * o * (one - o), n);
    Store(dc_next + j, dc * f, n);
  }
}

// GRU forward, one row: x the input's part (with its bias), z the recurrent part
// (with its bias); h_prev null at the first step.
inline void GruForward(const float* x, const float* z, float* s, const float* h_prev, float* h,
                       int H) {
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P zz = Sigmoid(Load(x + j, n) + Load(z + j, n));
    const P r = Sigmoid(Load(x + H + j, n) + Load(z + H + j, n));
    const P rh = Load(z + 2 * H + j, n);
    const P hh = Tanh(Load(x + 2 * H + j, n) + r * rh);
    Store(s + j, zz, n);
    Store(s + H + j, r, n);
    Store(s + 2 * H + j, hh, n);
    Store(s + 3 * H + j, rh, n);
    Store(h + j, h_prev ? hh + zz * (Load(h_prev + j, n) - hh) : hh - zz * hh, n);
  }
}

// GRU backward, one row: dx (d of the input's part), dz (d of the recurrent part:
// its last gate is dx's times r) and dh_next (in: from the step after; out: the
// direct path to the step before, dh * z, to which the product adds).
inline void GruBackward(const float* dh_out, float* dh_next, const float* s, const float* h_prev,
                        float* dx, float* dz, int H) {
  const P one = Set(1.f);
  for (int j = 0; j < H; j += kWidth) {
    const int n = H - j;
    const P dh = Load(dh_out + j, n) + Load(dh_next + j, n);
    const P zz = Load(s + j, n), r = Load(s + H + j, n), hh = Load(s + 2 * H + j, n);
    const P rh = Load(s + 3 * H + j, n), hp = h_prev ? Load(h_prev + j, n) : Set(0.f);
    const P dzz = dh * (hp - hh) * zz * (one - zz);
    const P dah = dh * (one - zz) * (one - hh * hh);
    const P dr = dah * rh * r * (one - r);
    Store(dx + j, dzz, n);
    Store(dx + H + j, dr, n);
    Store(dx + 2 * H + j, dah, n);
    Store(dz + j, dzz, n);
    Store(dz + H + j, dr, n);
    Store(dz + 2 * H + j, dah * r, n);
    Store(dh_next + j, dh * zz, n);
  }
}

}  // namespace rnn::cells
