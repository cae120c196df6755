// One recurrent layer over a whole sequence in one op, forward and backward.
//
// Why: TensorFlow runs a recurrent step as a dozen small ops, and at 100 units
// the cost of dispatching an op, not its arithmetic, sets the training speed.
// Here a whole layer is one op each way: the input product of all steps at
// once, then per step one recurrent product and one pass of element-wise maths
// (always fp32); backward also the weights' gradients. Products: product.h,
// fp32 register tiles (f32.h) or bfloat16 pairs with `bf16`, on the calling thread;
// the weights' gradients over all steps are one long product each.
// Single-threaded and in a fixed order, so results are deterministic; the
// parts of a batch (pipeline/side_by_side.py) run these ops side by side.
//
// Empty sizes (B, T or H zero; stock Keras gives an empty batch empty outputs):
// empty outputs forward, zero gradients backward, before any pointer is formed
// into the (empty) buffers.
//
// Layout: batch-major as Keras' (B, T, features), row-major, so no transposes.
// x (B, T, F); w (F, G*H), b (G*H) the input kernel and bias; u (H, G*H) the
// recurrent kernel, all in Keras' gate order (LSTM i, f, c, o; GRU z, r, h with
// the reset after the product and its recurrent bias b_rec (G*H)).
#include <cmath>
#include <string>

#include "Eigen/Core"
#include "cells.h"
#include "checks.h"
#include "product.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

using namespace tensorflow;
using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapM = Eigen::Map<Mat>;
using Arr = Eigen::Array<float, Eigen::Dynamic, 1>;
using MapA = Eigen::Map<Arr>;
using CMapA = Eigen::Map<const Arr>;
using rnn::Cell, rnn::kRelu, rnn::kTanh, rnn::kLstm, rnn::kGru;
namespace checks = rnn::checks;
using Sizes = shape_inference::DimensionHandle[checks::kSizes];

REGISTER_OP("FusedRnnForward")
    .Input("x: float")
    .Input("w: float")
    .Input("b: float")
    .Input("u: float")
    .Input("b_rec: float")
    .Attr("cell: {'relu', 'tanh', 'lstm', 'gru'}")
    .Attr("bf16: bool = false")
    .Output("hs: float")
    .Output("saved: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      std::string cell;
      TF_RETURN_IF_ERROR(c->GetAttr("cell", &cell));
      Sizes n;
      TF_RETURN_IF_ERROR(checks::CheckShapes(c, checks::Forward(rnn::ParseCell(cell)), n));
      c->set_output(0, c->MakeShape({n[checks::kB], n[checks::kT], n[checks::kH]}));
      c->set_output(1, c->MakeShape({n[checks::kT], n[checks::kB], n[checks::kSaved]}));
      return absl::OkStatus();
    });

REGISTER_OP("FusedRnnBackward")
    .Input("d_hs: float")
    .Input("x: float")
    .Input("w: float")
    .Input("hs: float")
    .Input("saved: float")
    .Input("u: float")
    .Attr("cell: {'relu', 'tanh', 'lstm', 'gru'}")
    .Attr("bf16: bool = false")
    .Attr("input_grad: bool = true")
    .Output("d_x: float")
    .Output("d_w: float")
    .Output("d_b: float")
    .Output("d_u: float")
    .Output("d_b_rec: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      std::string cell;
      TF_RETURN_IF_ERROR(c->GetAttr("cell", &cell));
      const Cell kind = rnn::ParseCell(cell);
      Sizes n;
      TF_RETURN_IF_ERROR(checks::CheckShapes(c, checks::Backward(kind), n));
      c->set_output(0, c->MakeShape({n[checks::kB], n[checks::kT], n[checks::kF]}));
      c->set_output(1, c->MakeShape({n[checks::kF], n[checks::kGates]}));
      c->set_output(2, c->MakeShape({n[checks::kGates]}));
      c->set_output(3, c->MakeShape({n[checks::kH], n[checks::kGates]}));
      c->set_output(4, c->MakeShape({kind == kGru ? n[checks::kGates] : n[checks::kNone]}));
      return absl::OkStatus();
    });

// What both ops share: the cell and the products' precision, from their attributes.
class CellOp : public OpKernel {
 public:
  explicit CellOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string cell;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cell", &cell));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("bf16", &bf16_));
    OP_REQUIRES(ctx, !bf16_ || rnn::Product::Bf16Available(),
                absl::InvalidArgumentError("fused_rnn: bf16 needs a build with AVX512_BF16"));
    cell_ = rnn::ParseCell(cell);
  }

 protected:
  Cell cell_;
  bool bf16_;
};

class FusedRnnForwardOp : public CellOp {
 public:
  using CellOp::CellOp;

  void Compute(OpKernelContext* ctx) override {
    int64_t n[checks::kSizes];
    OP_REQUIRES_OK(ctx, checks::CheckTensors(ctx, checks::Forward(cell_), n));
    const Tensor& x_t = ctx->input(0);
    const Tensor& w_t = ctx->input(1);
    const Tensor& bias_t = ctx->input(2);
    const Tensor& u_t = ctx->input(3);
    const Tensor& b_t = ctx->input(4);
    const int B = n[checks::kB], T = n[checks::kT], F = n[checks::kF], H = n[checks::kH];
    const int GH = n[checks::kGates], S = n[checks::kSaved];
    Tensor* hs_t = nullptr;
    Tensor* saved_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, H}), &hs_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({T, B, S}), &saved_t));
    if (B == 0 || T == 0 || H == 0) return;  // both outputs empty (S is a multiple of H)
    // Input products of every step at once: row b * T + t of xp is x[b, t] @ w + b.
    rnn::Product input(w_t.flat<float>().data(), F, GH, /*transposed=*/false, bf16_);
    const int ldx = input.padded_n();
    Mat xp_buf(B * T, ldx);
    input.Run(x_t.flat<float>().data(), F, B * T, xp_buf.data(), ldx, false);
    xp_buf.leftCols(GH).rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bias_t.flat<float>().data(), GH);
    float* xp = xp_buf.data();
    const float* brec = b_t.flat<float>().data();
    float* hs = hs_t->flat<float>().data();
    float* saved = saved_t->flat<float>().data();  // time-major: read back step by step
    rnn::Product rec(u_t.flat<float>().data(), H, GH, /*transposed=*/false, bf16_);
    const int ldz = rec.padded_n();  // == ldx: both products are N = GH wide
    Mat zbuf(cell_ == kGru ? B : 0, ldz);
    for (int t = 0; t < T; ++t) {
      // row b of step t: xp + (b * T + t) * ldx, hs + (b * T + t) * H
      // z (rows ldzs apart): what the gates read. The GRU's holds the recurrent part
      // alone (r multiplies it); the others add it to the input's part in place in xp.
      float* z = cell_ == kGru ? zbuf.data() : xp + (size_t)t * ldx;
      const size_t ldzs = cell_ == kGru ? ldz : (size_t)T * ldx;
      if (t) {  // h of the step before: row b at hs + (b * T + t - 1) * H
        rec.Run(hs + (size_t)(t - 1) * H, T * H, B, z, ldzs, /*accumulate=*/cell_ != kGru);
      } else if (cell_ == kGru) {
        zbuf.setZero();
      }
      if (cell_ == kGru)
        for (int b = 0; b < B; ++b) MapA(z + (size_t)b * ldz, GH) += CMapA(brec, GH);
      for (int b = 0; b < B; ++b) {
        float* zr = z + (size_t)b * ldzs;
        float* hr = hs + ((size_t)b * T + t) * H;
        const float* xr = xp + ((size_t)b * T + t) * ldx;
        const float* hpr = t ? hr - H : nullptr;
        float* s = saved + ((size_t)t * B + b) * S;
        if (cell_ == kRelu || cell_ == kTanh) {
          rnn::cells::SimpleForward(cell_ == kRelu, zr, hr, H);
        } else if (cell_ == kLstm) {
          rnn::cells::LstmForward(zr, s, t ? s - (size_t)B * S + 4 * H : nullptr, hr, H);
        } else {
          rnn::cells::GruForward(xr, zr, s, hpr, hr, H);
        }
      }
    }
  }
};

class FusedRnnBackwardOp : public CellOp {
 public:
  // input_grad false: d_x is not wanted (a first layer, whose input is the data),
  // and comes out zero without its product, a sixth of the layer's backward work
  // at as many features as units.
  explicit FusedRnnBackwardOp(OpKernelConstruction* ctx) : CellOp(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_grad", &input_grad_));
  }

  void Compute(OpKernelContext* ctx) override {
    int64_t n[checks::kSizes];
    OP_REQUIRES_OK(ctx, checks::CheckTensors(ctx, checks::Backward(cell_), n));
    const Tensor& dhs_t = ctx->input(0);
    const Tensor& x_t = ctx->input(1);
    const Tensor& w_t = ctx->input(2);
    const Tensor& hs_t = ctx->input(3);
    const Tensor& saved_t = ctx->input(4);
    const Tensor& u_t = ctx->input(5);
    const int B = n[checks::kB], T = n[checks::kT], F = n[checks::kF], H = n[checks::kH];
    const int GH = n[checks::kGates], S = n[checks::kSaved];
    Tensor *dxin_t = nullptr, *dw_t = nullptr, *dbias_t = nullptr, *du_t = nullptr, *db_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x_t.shape(), &dxin_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, w_t.shape(), &dw_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({GH}), &dbias_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, u_t.shape(), &du_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({cell_ == kGru ? GH : 0}), &db_t));
    if (B == 0 || T == 0 || H == 0) {  // no step, or no unit: every gradient is a sum of none
      for (Tensor* t : {dxin_t, dw_t, dbias_t, du_t, db_t}) t->flat<float>().setZero();
      return;
    }
    const float* dhs = dhs_t.flat<float>().data();
    const float* hs = hs_t.flat<float>().data();
    const float* saved = saved_t.flat<float>().data();
    Mat dxp(B * T, GH);  // d of the input products, row b * T + t
    float* dx = dxp.data();
    rnn::Product back(u_t.flat<float>().data(), GH, H, /*transposed=*/true, bf16_);  // U^T
    const int ldh = back.padded_n();
    const int ldu = bf16_ ? (GH + 15) / 16 * 16 : GH;
    Mat dU = Mat::Zero(H, ldu);       // sum over steps of h_{t-1}^T dz_t: T - 1 of them
    // bf16 packs each step's pair and multiplies once (SumAtB); fp32 multiplies once
    // over all steps at the end (below), from hs and every step's dz in place
    rnn::SumAtB grad_u(bf16_, bf16_ ? std::max(T - 1, 0) : 0, B, H, GH, dU.data(), ldu);
    // d of what multiplies U, rows ldd apart at a step: the GRU's own (its last gate
    // differs from d xp), the others' is d xp itself, in dxp (row b * T + t). fp32 keeps
    // every step's GRU dz (row b * T + t) for its one product at the end; bf16 needs only
    // the step's for its pairs, so it keeps B rows that stay in cache (every step's took
    // its GRU op 6% longer, reports/bench-op.md) and sums the bias gradient step by step.
    const bool gru_step = cell_ == kGru && bf16_;
    Mat dz_gru(cell_ == kGru ? (gru_step ? B : B * T) : 0, GH);
    Eigen::RowVectorXf db = Eigen::RowVectorXf::Zero(gru_step ? GH : 0);
    float* dz_all = cell_ == kGru ? dz_gru.data() : dx;
    const int ldd = gru_step ? GH : T * GH;
    Mat dh_next = Mat::Zero(B, ldh);  // from the step after: dz @ U^T (+ dh * z, GRU)
    Mat dc_next = Mat::Zero(B, H);    // LSTM: dc * f from the step after
    for (int t = T - 1; t >= 0; --t) {
      float* dz = gru_step ? dz_all : dz_all + (size_t)t * GH;
      for (int b = 0; b < B; ++b) {
        const size_t row = (size_t)b * T + t;
        const float* dho = dhs + row * H;
        float* dhn = dh_next.data() + (size_t)b * ldh;
        const float* h = hs + row * H;
        const float* s = saved + ((size_t)t * B + b) * S;
        float* dzr = dz + (size_t)b * ldd;
        if (cell_ == kRelu || cell_ == kTanh) {
          rnn::cells::SimpleBackward(cell_ == kRelu, dho, dhn, h, dzr, H);
        } else if (cell_ == kLstm) {
          rnn::cells::LstmBackward(dho, dhn, s, t ? s - (size_t)B * S + 4 * H : nullptr,
                                   dc_next.data() + (size_t)b * H, dzr, H);
        } else {  // d xp differs from dz in its last gate (r multiplies U's part)
          rnn::cells::GruBackward(dho, dhn, s, t ? h - H : nullptr, dx + row * GH, dzr, H);
        }
      }
      if (gru_step) db += dz_gru.colwise().sum();
      if (t) {
        if (bf16_) grad_u.Add(hs + (size_t)(t - 1) * H, T * H, dz, ldd);
        back.Run(dz, ldd, B, dh_next.data(), ldh, /*accumulate=*/cell_ == kGru);
      }
    }
    grad_u.Finish();
    const bool one_product = !bf16_ && B > 0 && T > 1;  // fp32's dU: RecurrentGradient
    if (!one_product) MapM(du_t->flat<float>().data(), H, GH) = dU.leftCols(GH);
    if (gru_step)  // the recurrent bias's gradient: every step's dz
      std::copy(db.data(), db.data() + GH, db_t->flat<float>().data());
    else if (cell_ == kGru)
      Eigen::Map<Eigen::RowVectorXf>(db_t->flat<float>().data(), GH) = dz_gru.colwise().sum();
    // The input products' gradients over all steps at once.
    Eigen::Map<Eigen::RowVectorXf>(dbias_t->flat<float>().data(), GH) = dxp.colwise().sum();
    if (input_grad_) {
      rnn::Product back_in(w_t.flat<float>().data(), GH, F, /*transposed=*/true, bf16_);  // w^T
      const int ldf = back_in.padded_n();
      Mat dx_in(B * T, ldf);
      back_in.Run(dx, GH, B * T, dx_in.data(), ldf, false);
      MapM(dxin_t->flat<float>().data(), B * T, F) = dx_in.leftCols(F);
    } else {
      dxin_t->flat<float>().setZero();
    }
    const int ldw = bf16_ ? ldu : GH;
    Mat dW = Mat::Zero(F, ldw);
    rnn::SumAtB grad_w(bf16_, 1, B * T, F, GH, dW.data(), ldw);
    grad_w.Add(x_t.flat<float>().data(), F, dx, GH);
    grad_w.Finish();
    MapM(dw_t->flat<float>().data(), F, GH) = dW.leftCols(GH);
    if (one_product) RecurrentGradient(hs, dz_all, B, T, H, GH, du_t->flat<float>().data());
  }

 private:
  bool input_grad_;

  // fp32 dU = sum over b and t >= 1 of h[b, t-1]^T dz[b, t] as one product over all
  // rows: row r of hs pairs with row r + 1 of dz, and the rows that start a sequence
  // (t = 0, which would pair with the sequence before) are zeroed first (their
  // d xp has been used by then). One long product instead of T - 1 short ones.
  static void RecurrentGradient(const float* hs, float* dz, int B, int T, int H, int GH,
                                float* du) {
    for (int b = 0; b < B; ++b) std::fill_n(dz + (size_t)b * T * GH, GH, 0.0f);
    rnn::AtB(hs, H, B * T - 1, H, dz + GH, GH, GH, du, GH, /*accumulate=*/false);
  }
};

// Whether this build multiplies in bfloat16 (pipeline/native.py asks through ctypes).
extern "C" int fused_rnn_has_bf16() { return RNN_HAVE_BF16; }

REGISTER_KERNEL_BUILDER(Name("FusedRnnForward").Device(DEVICE_CPU), FusedRnnForwardOp);
REGISTER_KERNEL_BUILDER(Name("FusedRnnBackward").Device(DEVICE_CPU), FusedRnnBackwardOp);
