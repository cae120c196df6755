// What every input of the two ops must be, checked before any work.
//
// Why: the kernels index their inputs by sizes they read from other inputs, so
// a wrong shape would read or write past a buffer. Each op's inputs are listed
// once (`Forward`, `Backward`) in named sizes, and that list is checked twice:
// in the shape function (`CheckShapes`: a mismatch known when the graph is
// built fails there) and in Compute (`CheckTensors`: every call). The error
// names the op, the input, the shape it must have (in sizes, then in numbers)
// and the one it has, e.g. "FusedRnnBackward: saved must be (T, B, 6*H) =
// (28, 7, 600) for lstm, got (28, 7, 500)". The kernels index in int: no
// dimension may pass 2^31 - 1 (both checks), nor any buffer (`CheckTensors`).
// Dtypes: the ops declare their inputs float, so TensorFlow refuses any other
// before Compute runs (pipeline/rnn/native.py names the input); CheckTensors
// checks them anyway.
#pragma once

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace rnn {

enum Cell { kRelu, kTanh, kLstm, kGru };

inline Cell ParseCell(const std::string& s) {  // the ops' attribute allows these four
  if (s == "relu") return kRelu;
  if (s == "tanh") return kTanh;
  if (s == "lstm") return kLstm;
  return kGru;
}
inline const char* CellName(Cell c) {
  return c == kRelu ? "relu" : c == kTanh ? "tanh" : c == kLstm ? "lstm" : "gru";
}
inline int Gates(Cell c) { return c == kLstm ? 4 : c == kGru ? 3 : 1; }
inline int Saved(Cell c) { return c == kLstm ? 6 : c == kGru ? 4 : 0; }  // per unit and step

namespace checks {

// Batch, steps, features, units (taken from the inputs `Spec::from` names), then
// what they give: the gates' width G*H, the saved values' S*H, and no width.
enum Size { kB, kT, kF, kH, kGates, kSaved, kNone, kSizes };
constexpr int kTaken = 4;  // kB .. kH come from inputs, the rest from kH

struct Input {
  const char* name;
  std::vector<Size> dims;
};
struct Spec {
  const char* op;
  Cell cell;
  std::vector<Input> inputs;  // in the op's order
  int from[kTaken][2];        // (input, dimension) that B, T, F and H are read from
};

// x (B, T, F), w (F, G*H), b (G*H), u (H, G*H); b_rec (G*H) for the GRU, else
// empty: only the GRU has a recurrent bias, and a bias given to another cell
// would be ignored without a word.
inline Spec Forward(Cell c) {
  return {"FusedRnnForward", c,
          {{"x", {kB, kT, kF}}, {"w", {kF, kGates}}, {"b", {kGates}}, {"u", {kH, kGates}},
           {"b_rec", {c == kGru ? kGates : kNone}}},
          {{0, 0}, {0, 1}, {0, 2}, {3, 0}}};
}
// The forward op's x, w, u and its outputs hs (B, T, H) and saved (T, B, S*H),
// and d_hs, the gradient of hs: sizes from hs, F from x.
inline Spec Backward(Cell c) {
  return {"FusedRnnBackward", c,
          {{"d_hs", {kB, kT, kH}}, {"x", {kB, kT, kF}}, {"w", {kF, kGates}}, {"hs", {kB, kT, kH}},
           {"saved", {kT, kB, kSaved}}, {"u", {kH, kGates}}},
          {{3, 0}, {3, 1}, {1, 2}, {3, 2}}};
}

inline std::string Symbol(const Spec& s, Size k) {
  const int n = k == kGates ? Gates(s.cell) : Saved(s.cell);
  switch (k) {
    case kB: return "B";
    case kT: return "T";
    case kF: return "F";
    case kH: return "H";
    case kNone: return "0";
    default: return n == 0 ? "0" : n == 1 ? "H" : absl::StrCat(n, "*H");
  }
}

// "(28, 7, 600)"; -1 (not known when the graph is built) as "?".
inline std::string Tuple(absl::Span<const int64_t> dims) {
  std::string out = "(";
  for (size_t d = 0; d < dims.size(); ++d)
    absl::StrAppend(&out, d ? ", " : "", dims[d] < 0 ? "?" : absl::StrCat(dims[d]));
  return out + ")";
}

// sizes null: the input's rank is wrong, so no numbers to show yet.
inline absl::Status Mismatch(const Spec& s, int i, const int64_t* sizes,
                             const std::string& got) {
  const Input& in = s.inputs[i];
  std::string want = "(";
  std::vector<int64_t> values;
  for (size_t d = 0; d < in.dims.size(); ++d) {
    absl::StrAppend(&want, d ? ", " : "", Symbol(s, in.dims[d]));
    if (sizes) values.push_back(sizes[in.dims[d]]);
  }
  want += ")";
  if (sizes) absl::StrAppend(&want, " = ", Tuple(values));
  return absl::InvalidArgumentError(absl::StrCat(s.op, ": ", in.name, " must be ", want, " for ",
                                                 CellName(s.cell), ", got ", got));
}

// A dimension the kernels' int sizes cannot hold: refused before any is narrowed
// to int (an empty input, such as x (2^31, 0, 5), passes the buffers' check below).
inline absl::Status TooLarge(const Spec& s, int i, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat(s.op, ": ", s.inputs[i].name,
                                                 " must be at most 2^31 - 1 = ", INT_MAX,
                                                 " in each dimension, got ", got));
}

inline void Derive(const Spec& s, int64_t* sizes) {  // from H, or -1 where H is not known
  const int64_t h = sizes[kH];
  sizes[kGates] = h < 0 ? -1 : Gates(s.cell) * h;
  sizes[kSaved] = h < 0 ? -1 : Saved(s.cell) * h;
  sizes[kNone] = 0;
}

// Shape function: the inputs' ranks, then every dimension merged with its size;
// `sizes` out, for the outputs' shapes.
inline absl::Status CheckShapes(tensorflow::shape_inference::InferenceContext* c, const Spec& s,
                                tensorflow::shape_inference::DimensionHandle* sizes) {
  using tensorflow::shape_inference::DimensionHandle;
  using tensorflow::shape_inference::ShapeHandle;
  auto got = [c](ShapeHandle h) {
    if (!c->RankKnown(h)) return std::string("unknown rank");
    std::vector<int64_t> dims;
    for (int d = 0; d < c->Rank(h); ++d) dims.push_back(c->Value(c->Dim(h, d)));
    return Tuple(dims);
  };
  const int n = s.inputs.size();
  std::vector<ShapeHandle> in(n);
  for (int i = 0; i < n; ++i) {
    if (!c->WithRank(c->input(i), s.inputs[i].dims.size(), &in[i]).ok())
      return Mismatch(s, i, nullptr, got(c->input(i)));
    for (int d = 0; d < c->Rank(in[i]); ++d)
      if (c->Value(c->Dim(in[i], d)) > INT_MAX) return TooLarge(s, i, got(in[i]));
  }
  for (int k = 0; k < kTaken; ++k) sizes[k] = c->Dim(in[s.from[k][0]], s.from[k][1]);
  TF_RETURN_IF_ERROR(c->Multiply(sizes[kH], Gates(s.cell), &sizes[kGates]));
  TF_RETURN_IF_ERROR(c->Multiply(sizes[kH], Saved(s.cell), &sizes[kSaved]));
  sizes[kNone] = c->MakeDim(0);
  for (int i = 0; i < n; ++i)
    for (int d = 0; d < (int)s.inputs[i].dims.size(); ++d) {
      const Size k = s.inputs[i].dims[d];
      DimensionHandle merged;
      const bool ok = k == kNone ? c->WithValue(c->Dim(in[i], d), 0, &merged).ok()
                                 : c->Merge(c->Dim(in[i], d), sizes[k], &merged).ok();
      if (!ok) {
        int64_t known[kSizes];
        for (int j = 0; j < kTaken; ++j) known[j] = c->Value(sizes[j]);
        Derive(s, known);
        return Mismatch(s, i, known, got(in[i]));
      }
      if (k < kTaken) sizes[k] = merged;  // a size not known where it is read, known here
    }
  return absl::OkStatus();
}

// Compute: the same on the tensors, and sizes the kernels' int indices hold.
inline absl::Status CheckTensors(tensorflow::OpKernelContext* ctx, const Spec& s, int64_t* sizes) {
  const int n = s.inputs.size();
  for (int i = 0; i < n; ++i) {
    const tensorflow::Tensor& t = ctx->input(i);
    if (t.dtype() != tensorflow::DT_FLOAT)
      return absl::InvalidArgumentError(absl::StrCat(s.op, ": ", s.inputs[i].name,
                                                     " must be float32, got ",
                                                     tensorflow::DataTypeString(t.dtype())));
    if (t.dims() != (int)s.inputs[i].dims.size())
      return Mismatch(s, i, nullptr, Tuple(t.shape().dim_sizes()));
    for (int d = 0; d < t.dims(); ++d)
      if (t.dim_size(d) > INT_MAX) return TooLarge(s, i, Tuple(t.shape().dim_sizes()));
  }
  for (int k = 0; k < kTaken; ++k) sizes[k] = ctx->input(s.from[k][0]).dim_size(s.from[k][1]);
  Derive(s, sizes);
  for (int i = 0; i < n; ++i) {
    const tensorflow::Tensor& t = ctx->input(i);
    for (int d = 0; d < t.dims(); ++d)
      if (t.dim_size(d) != sizes[s.inputs[i].dims[d]])
        return Mismatch(s, i, sizes, Tuple(t.shape().dim_sizes()));
  }
  // The largest buffers: (B*T, G*H + 16) products, (B*T, S*H) saved, (F + H, G*H + 16) weights.
  const double rows = (double)sizes[kB] * sizes[kT], wide = sizes[kGates] + 16.0;
  const double most = std::max({rows * wide, rows * sizes[kSaved], rows * sizes[kF],
                                (sizes[kF] + sizes[kH]) * wide});
  if (most >= INT_MAX)
    return absl::InvalidArgumentError(absl::StrCat(
        s.op, ": (B, T, F, H) = ", Tuple({sizes[kB], sizes[kT], sizes[kF], sizes[kH]}),
        " for ", CellName(s.cell), " needs a buffer of 2^31 or more elements; at most 2^31 - 1"));
  return absl::OkStatus();
}

}  // namespace checks
}  // namespace rnn
