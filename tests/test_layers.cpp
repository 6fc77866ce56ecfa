// Layer tests: each TEST_CASE checks one claim of mongoose.h about the network's components against
// a plain double-precision reference, finite differences or brute force.
//   - OutputLayer on its own: the loss and dL/dh of a training step (full softmax, and lsh with
//     every neuron active, which is then an exact softmax), its weight gradient, exact top-k and
//     lsh top-k, save_layer/load_layer round trips, refusals that leave it unchanged, and
//     determinism for a fixed seed and thread count.
//   - Model with a hidden stack and/or dense input: every layer's weight gradient (the double
//     reference itself checked against finite differences), dense and sparse input agreeing on a
//     first step, save_model/load_model round trips, determinism, and init's validation.
//
// Weight gradients are read through the update. With beta1 = beta2 = 0 one Adam step is
// w -= lr * g / (|g| + eps) exactly (m = g, v = g^2, both bias corrections 1), so the gradient a
// weight received is recovered from its change: r = (w_before - w_after) / lr, then
// g = eps * r / (1 - |r|). A large eps (0.5; adam_eps must be < 1) keeps |r| well below 1, where
// that inversion is well conditioned, and a gradient of exactly 0 leaves its weight bit for bit
// unchanged (0 / (0 + eps) = 0).
//
// Sizes are tiny (a few features, labels and rows) so the file runs in well under a second and
// stays fast under ASan/UBSan and TSan; every seed is fixed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../mongoose.h"
#include "common.h"

using namespace mongoose;

namespace {

// ---- Adam settings under which one step reveals the gradient (see the header comment). ----

constexpr double kLr = 0.5, kEps = 0.5;

Config gradient_adam(Config c) {
  c.learning_rate = float(kLr);
  c.beta1 = 0.0f;
  c.beta2 = 0.0f;
  c.adam_eps = float(kEps);
  return c;
}

// Checks one beta1 = beta2 = 0 Adam step of a block of weights (before -> after) against the
// reference gradient g: a weight whose reference gradient is exactly 0 must keep its exact value;
// any other must have moved by lr * g / (|g| + eps), i.e. the gradient implied by its change must
// equal g within float tolerance. One CHECK per block, naming the worst weight. Returns the
// largest |g| of the block, so callers can make sure the block was really exercised.
double check_step(const std::string& what, const float* before, const float* after, const std::vector<double>& g) {
  size_t bad = 0, worst = 0;
  double worst_excess = -std::numeric_limits<double>::infinity(), gmax = 0;
  std::vector<double> implied(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    const double r = (double(before[i]) - double(after[i])) / kLr;
    implied[i] = std::fabs(r) < 1 ? kEps * r / (1 - std::fabs(r)) : std::numeric_limits<double>::infinity();
    gmax = std::max(gmax, std::fabs(g[i]));
    double excess;
    if (g[i] == 0) {
      excess = std::memcmp(&before[i], &after[i], sizeof(float)) == 0 ? -1.0 : std::fabs(implied[i]) + 1.0;
    } else {
      // Rounding of w (float) and of the float gradient: measured below 6e-8 here, i.e. under
      // 1/20 of this tolerance; a gradient off by 1e-4 relative fails it.
      excess = std::fabs(implied[i] - g[i]) - (3e-7 + 2e-5 * std::fabs(g[i]));
    }
    if (!(excess <= 0)) ++bad;
    if (!(excess <= worst_excess)) {
      worst_excess = excess;
      worst = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << g.size() << " weights disagree; worst at [" << worst
                               << "]: before " << before[worst] << ", after " << after[worst]
                               << ", gradient implied by the step " << implied[worst] << ", reference gradient "
                               << g[worst]);
  return gmax;
}

bool same_bits(const float* a, const float* b, size_t n) { return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0; }
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), a.size());
}
bool same_scored(const std::vector<Scored>& a, const std::vector<Scored>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].label != b[i].label || !same_bits(&a[i].score, &b[i].score, 1)) return false;
  return true;
}
double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}
bool contains(const std::string& s, const std::string& phrase) { return s.find(phrase) != std::string::npos; }

// ---- Output-layer batches. ----

using Labels = std::vector<std::vector<uint32_t>>;

// A batch for OutputLayer::train owning its arrays. Input rows are `stride` floats apart and the
// floats between input_dim and the stride are NaN: a layer reading past input_dim would turn its
// results into NaN, so every test using a wider stride also checks that the stride is honoured.
struct Batch {
  size_t rows = 0, d = 0, stride = 0;
  std::vector<float> inputs;
  std::vector<uint32_t> labels;
  std::vector<uint64_t> offsets{0};

  LayerBatch view() const {
    LayerBatch b;
    b.inputs = inputs.data();
    b.rows = rows;
    b.stride = stride;
    b.labels = labels.data();
    b.label_offsets = offsets.data();
    return b;
  }
  // The inputs in double, rows packed (rows x d).
  std::vector<double> packed() const {
    std::vector<double> h(rows * d);
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < d; ++i) h[r * d + i] = inputs[r * stride + i];
    return h;
  }
};

// Inputs uniform in [-1, 1), the given labels.
Batch make_batch(const Labels& y, size_t d, size_t stride, Rng& rng) {
  Batch b;
  b.rows = y.size();
  b.d = d;
  b.stride = stride;
  b.inputs.assign(b.rows * stride, std::nanf(""));
  for (size_t r = 0; r < b.rows; ++r)
    for (size_t i = 0; i < d; ++i) b.inputs[r * stride + i] = 2.0f * rng.uniform() - 1.0f;
  for (const auto& row : y) {
    b.labels.insert(b.labels.end(), row.begin(), row.end());
    b.offsets.push_back(b.labels.size());
  }
  return b;
}

// 0 to max_per_row distinct labels per row (the first row always has one).
Labels random_labels(size_t rows, size_t N, uint32_t max_per_row, Rng& rng) {
  Labels y(rows);
  for (size_t r = 0; r < rows; ++r) {
    size_t n = r == 0 ? 1 : rng.below(max_per_row + 1);
    while (y[r].size() < n) {
      uint32_t l = rng.below(uint32_t(N));
      if (std::find(y[r].begin(), y[r].end(), l) == y[r].end()) y[r].push_back(l);
    }
  }
  return y;
}

// A small output layer's Config; min_active >= labels makes every neuron active in lsh mode.
Config layer_config(OutputMode mode, uint32_t threads, uint32_t min_active = 1000) {
  Config c;
  c.output = mode;
  c.threads = threads;
  c.seed = 17;
  c.K = 3;
  c.L = 4;
  c.min_active = min_active;
  c.learning_rate = 0.01f;
  return c;
}

// ---- The double-precision references. ----

struct SoftmaxRef {
  double loss = 0;
  std::vector<double> dh;  // dL/dh, B x d
  std::vector<double> gW;  // dL/dW, the rows' layout (N x ld), zero on the padding
};

// The output layer's loss in double: rows W (N x ld, each [w_j (d), b_j, zeros]) on inputs h
// (B x d); each labelled row's softmax cross-entropy with target 1/|y| on each of its labels, mean
// over the rows that have labels; rows without labels contribute nothing.
SoftmaxRef softmax_reference(const std::vector<double>& W, size_t ld, size_t d, const std::vector<double>& h,
                             const Labels& y) {
  const size_t N = W.size() / ld, B = y.size();
  SoftmaxRef r;
  r.dh.assign(B * d, 0.0);
  r.gW.assign(W.size(), 0.0);
  size_t labelled = 0;
  for (const auto& row : y) labelled += !row.empty();
  if (labelled == 0) return r;
  std::vector<double> z(N), dz(N);
  for (size_t e = 0; e < B; ++e) {
    if (y[e].empty()) continue;
    double mx = -std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < N; ++j) {
      double s = W[j * ld + d];
      for (size_t i = 0; i < d; ++i) s += W[j * ld + i] * h[e * d + i];
      z[j] = s;
      mx = std::max(mx, s);
    }
    double sum = 0;
    for (size_t j = 0; j < N; ++j) sum += std::exp(z[j] - mx);
    const double lse = mx + std::log(sum), t = 1.0 / double(y[e].size());
    for (size_t j = 0; j < N; ++j) dz[j] = std::exp(z[j] - lse);
    for (uint32_t l : y[e]) {
      r.loss += t * (lse - z[l]);
      dz[l] -= t;
    }
    for (size_t j = 0; j < N; ++j) {
      const double g = dz[j] / double(labelled);
      for (size_t i = 0; i < d; ++i) {
        r.gW[j * ld + i] += g * h[e * d + i];
        r.dh[e * d + i] += g * W[j * ld + i];
      }
      r.gW[j * ld + d] += g;
    }
  }
  r.loss /= double(labelled);
  return r;
}

// Every label's exact score [w_j, b_j] . [x, 1] in double, best first (ties: smaller label).
std::vector<std::pair<double, uint32_t>> ranked_scores(const OutputLayer& layer, const float* x) {
  const size_t d = layer.input_dim(), ld = layer.row_stride();
  std::vector<std::pair<double, uint32_t>> all;
  for (uint32_t j = 0; j < layer.labels(); ++j) {
    const float* row = layer.weights() + j * ld;
    double s = row[d];
    for (size_t i = 0; i < d; ++i) s += double(row[i]) * double(x[i]);
    all.push_back({s, j});
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  return all;
}

// A Model's weights as named blocks, in the order RefNet::p holds them: W1, b1, each hidden
// layer's W and b, W2.
struct Block {
  std::string name;
  const float* p;
  size_t n;
};
std::vector<Block> blocks(const Model& m) {
  Model::Weights w = m.weights();
  std::vector<Block> out{{"W1", w.W1, w.features * w.hidden}, {"b1", w.b1, w.hidden}};
  for (size_t l = 0; l < w.hidden_layers.size(); ++l) {
    const Model::Weights::Dense& h = w.hidden_layers[l];
    out.push_back({"hidden[" + std::to_string(l) + "].W", h.W, h.inputs * h.outputs});
    out.push_back({"hidden[" + std::to_string(l) + "].b", h.b, h.outputs});
  }
  out.push_back({"W2", w.W2, w.labels * w.output_stride});
  return out;
}
std::vector<std::vector<float>> snapshot(const Model& m) {
  std::vector<std::vector<float>> out;
  for (const Block& b : blocks(m)) out.emplace_back(b.p, b.p + b.n);
  return out;
}
bool same_weights(const Model& a, const Model& b) {
  std::vector<Block> x = blocks(a), y = blocks(b);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].n != y[i].n || !same_bits(x[i].p, y[i].p, x[i].n)) return false;
  return true;
}

// A Model's network in double precision, read from Model::weights(): the input layer
// act = ReLU(W1^T x + b1) (x the sparse row; for dense input the same sum, absent features being
// 0), the hidden stack y = ReLU(x W + b), then the output layer's softmax (softmax_reference).
struct RefNet {
  size_t D = 0, N = 0, ld = 0;
  std::vector<size_t> widths;          // the input layer's width H, then each hidden layer's
  std::vector<std::vector<double>> p;  // W1 (D x H), b1, then W (in x out) and b per hidden layer, W2

  explicit RefNet(const Model& m) {
    Model::Weights w = m.weights();
    D = w.features;
    N = w.labels;
    ld = w.output_stride;
    widths.push_back(w.hidden);
    for (const auto& h : w.hidden_layers) widths.push_back(h.outputs);
    for (const Block& b : blocks(m)) p.emplace_back(b.p, b.p + b.n);
  }

  // The batch's mean loss over its rows with labels; with grad, dL/dp for every block of p.
  double loss(const Dataset& data, const std::vector<uint32_t>& rows, std::vector<std::vector<double>>* grad) const {
    const size_t B = rows.size(), H = widths[0], L = widths.size() - 1;
    std::vector<std::vector<double>> act(L + 1);  // act[l]: layer l's outputs, B x widths[l]
    act[0].assign(B * H, 0.0);
    Labels y(B);
    for (size_t e = 0; e < B; ++e) {
      Dataset::Row r = data.row(rows[e]);
      y[e].assign(r.labels, r.labels + r.num_labels);
      for (size_t i = 0; i < H; ++i) {
        double s = p[1][i];
        for (size_t k = 0; k < r.nnz; ++k) s += double(r.values[k]) * p[0][r.ids[k] * H + i];
        act[0][e * H + i] = std::max(s, 0.0);
      }
    }
    for (size_t l = 1; l <= L; ++l) {
      const size_t in = widths[l - 1], out = widths[l];
      const std::vector<double>&W = p[2 * l], &b = p[2 * l + 1];
      act[l].assign(B * out, 0.0);
      for (size_t e = 0; e < B; ++e)
        for (size_t o = 0; o < out; ++o) {
          double s = b[o];
          for (size_t i = 0; i < in; ++i) s += act[l - 1][e * in + i] * W[i * out + o];
          act[l][e * out + o] = std::max(s, 0.0);
        }
    }
    SoftmaxRef s = softmax_reference(p.back(), ld, widths.back(), act[L], y);
    if (!grad) return s.loss;
    grad->assign(p.size(), {});
    for (size_t k = 0; k < p.size(); ++k) (*grad)[k].assign(p[k].size(), 0.0);
    grad->back() = s.gW;
    std::vector<double> delta = s.dh;  // dL/d(act[l]), from the top down
    for (size_t l = L; l >= 1; --l) {
      const size_t in = widths[l - 1], out = widths[l];
      const std::vector<double>& W = p[2 * l];
      std::vector<double>&gW = (*grad)[2 * l], &gb = (*grad)[2 * l + 1];
      std::vector<double> below(B * in, 0.0);
      for (size_t e = 0; e < B; ++e)
        for (size_t o = 0; o < out; ++o) {
          const double dpre = act[l][e * out + o] > 0 ? delta[e * out + o] : 0.0;  // through the ReLU
          gb[o] += dpre;
          for (size_t i = 0; i < in; ++i) {
            gW[i * out + o] += act[l - 1][e * in + i] * dpre;
            below[e * in + i] += W[i * out + o] * dpre;
          }
        }
      delta = below;
    }
    for (size_t e = 0; e < B; ++e) {
      Dataset::Row r = data.row(rows[e]);
      for (size_t i = 0; i < H; ++i) {
        const double dpre = act[0][e * H + i] > 0 ? delta[e * H + i] : 0.0;
        (*grad)[1][i] += dpre;
        for (size_t k = 0; k < r.nnz; ++k) (*grad)[0][r.ids[k] * H + i] += double(r.values[k]) * dpre;
      }
    }
    return s.loss;
  }
};

// ---- Model datasets and configurations. ----

Dataset empty_dataset(size_t features, size_t labels) {
  Dataset d;
  d.features = features;
  d.labels = labels;
  return d;
}

// Appends `rows` rows to d: each feature of [f_lo, f_hi) present with probability 1/2, with a
// value in [-0.5, 1.5); 1 to 3 distinct labels, except row `unlabelled` (index among the new rows).
void add_rows(Dataset* d, size_t rows, uint32_t f_lo, uint32_t f_hi, Rng& rng, size_t unlabelled = SIZE_MAX) {
  for (size_t r = 0; r < rows; ++r) {
    std::vector<uint32_t> ids, labels;
    std::vector<float> values;
    for (uint32_t f = f_lo; f < f_hi; ++f)
      if (rng.uniform() < 0.5f) {
        ids.push_back(f);
        values.push_back(2.0f * rng.uniform() - 0.5f);
      }
    if (ids.empty()) {  // every row has a feature
      ids.push_back(f_lo);
      values.push_back(1.0f);
    }
    const size_t n = r == unlabelled ? 0 : 1 + rng.below(3);
    while (labels.size() < n) {
      uint32_t l = rng.below(uint32_t(d->labels));
      if (std::find(labels.begin(), labels.end(), l) == labels.end()) labels.push_back(l);
    }
    REQUIRE(d->add_row(ids.data(), values.data(), ids.size(), labels.data(), labels.size()).ok());
  }
}

std::vector<uint32_t> row_range(size_t from, size_t to) {
  std::vector<uint32_t> r(to - from);
  std::iota(r.begin(), r.end(), uint32_t(from));
  return r;
}

// A small network: input layer of 5 units (not a multiple of 8: the kernels' tails run), the
// given hidden stack, full softmax.
Config network_config(InputKind input, std::vector<uint32_t> hidden_layers, uint32_t threads) {
  Config c;
  c.input = input;
  c.hidden = 5;
  c.hidden_layers = std::move(hidden_layers);
  c.output = OutputMode::full;
  c.threads = threads;
  c.seed = 23;
  c.learning_rate = 0.01f;
  return c;
}

// The batch the gradient tests train on: 6 rows over features [0, 10) of 14 (features 10..13 are
// absent, so their input rows have no gradient), 7 labels, row 2 without labels.
constexpr size_t kNetFeatures = 14, kNetLabels = 7, kNetRows = 6;
constexpr uint32_t kNetUsedFeatures = 10;
Dataset network_batch() {
  Dataset d = empty_dataset(kNetFeatures, kNetLabels);
  Rng rng(31);
  add_rows(&d, kNetRows, 0, kNetUsedFeatures, rng, 2);
  return d;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// OutputLayer
// ---------------------------------------------------------------------------------------------

TEST_CASE("layers: OutputLayer::train returns the exact loss and dL/dh (full, and lsh with every neuron active)") {
  const size_t d = 5, N = 7, stride = 7, grad_stride = 6;
  const Labels y = {{2}, {0, 5, 6}, {}, {1, 4}};  // 0 to 3 labels per row, one row without
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    for (uint32_t threads : {1u, 2u}) {
      CAPTURE(int(mode));
      CAPTURE(threads);
      OutputLayer layer;
      REQUIRE(layer.init(layer_config(mode, threads), d, N).ok());
      REQUIRE(layer.input_dim() == d);
      REQUIRE(layer.labels() == N);
      const size_t ld = layer.row_stride();
      CHECK(ld == 8);  // round_up(d + 2, 8)
      // The initial rows: [w_j, b_j] uniform in [-1/sqrt(d), 1/sqrt(d)), zero padding.
      const double bound = 1.0 / std::sqrt(double(d));
      for (size_t j = 0; j < N; ++j)
        for (size_t i = 0; i < ld; ++i) {
          const float w = layer.weights()[j * ld + i];
          if (i <= d)
            CHECK(std::fabs(w) <= bound);
          else
            CHECK(w == 0.0f);
        }
      Rng rng(3);
      const Batch b = make_batch(y, d, stride, rng);
      const SoftmaxRef ref =
          softmax_reference(std::vector<double>(layer.weights(), layer.weights() + N * ld), ld, d, b.packed(), y);
      std::vector<float> grad(b.rows * grad_stride, 12345.0f);  // the gaps between rows must stay
      float loss = -1;
      REQUIRE(layer.train(b.view(), &loss, grad.data(), grad_stride).ok());
      CHECK(loss == doctest::Approx(ref.loss).epsilon(1e-6));
      for (size_t e = 0; e < b.rows; ++e) {
        for (size_t i = 0; i < d; ++i) {
          CAPTURE(e);
          CAPTURE(i);
          CHECK(grad[e * grad_stride + i] == doctest::Approx(ref.dh[e * d + i]).epsilon(1e-6));
          if (y[e].empty()) CHECK(grad[e * grad_stride + i] == 0.0f);  // a row without labels has no gradient
        }
        for (size_t i = d; i < grad_stride; ++i) CHECK(grad[e * grad_stride + i] == 12345.0f);
      }
      CHECK(layer.stats().batches == 1);
      CHECK(layer.stats().examples == 3);  // the rows with labels
      if (mode == OutputMode::lsh) CHECK(layer.stats().active_mean() == doctest::Approx(double(N)));
      // Without a gradient buffer the step is the same (the loss at least; grad is optional).
      OutputLayer again;
      REQUIRE(again.init(layer_config(mode, threads), d, N).ok());
      float loss2 = -1;
      REQUIRE(again.train(b.view(), &loss2).ok());
      CHECK(same_bits(&loss, &loss2, 1));
      CHECK(same_bits(layer.weights(), again.weights(), N * ld));
    }
  }
}

TEST_CASE("layers: OutputLayer's weight gradient is exact (one beta = 0 Adam step reveals it)") {
  const size_t d = 5, N = 7;
  const Labels y = {{2}, {0, 5, 6}, {}, {1, 4}};
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {  // lsh: every neuron active
    CAPTURE(int(mode));
    OutputLayer layer;
    REQUIRE(layer.init(gradient_adam(layer_config(mode, 1)), d, N).ok());
    const size_t ld = layer.row_stride();
    const std::vector<float> before(layer.weights(), layer.weights() + N * ld);
    Rng rng(4);
    const Batch b = make_batch(y, d, d, rng);
    const SoftmaxRef ref = softmax_reference(std::vector<double>(before.begin(), before.end()), ld, d, b.packed(), y);
    REQUIRE(layer.train(b.view()).ok());
    // Every row moves (full softmax: every row has a gradient); the padding has none and stays 0.
    CHECK(check_step("output rows", before.data(), layer.weights(), ref.gW) > 1e-2);
  }
}

TEST_CASE("layers: OutputLayer save_layer/load_layer round trip is exact") {
  TempDir dir;
  const size_t d = 6, N = 40;
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(mode));
    // lsh: a real sampled layer (tables in use), no table maintenance due in the steps below.
    Config c = layer_config(mode, 1, 8);
    c.K = 3;
    c.L = 6;
    c.max_active = 16;
    c.rehash_every = 1000;
    c.infer_shortlist = 4;
    OutputLayer layer;
    REQUIRE(layer.init(c, d, N).ok());
    Rng rng(8);
    for (int s = 0; s < 3; ++s) REQUIRE(layer.train(make_batch(random_labels(10, N, 3, rng), d, d, rng).view()).ok());
    REQUIRE(layer.refresh().ok());
    const std::string a = dir.file("layer_a.bin"), b = dir.file("layer_b.bin");
    REQUIRE(save_layer(layer, a).ok());
    // Without the optimizer state the file still holds the rows: top-k identical after load.
    const std::string slim = dir.file("layer_slim.bin");
    SaveOptions no_moments;
    no_moments.optimizer_state = false;
    REQUIRE(save_layer(layer, slim, no_moments).ok());
    const Batch q = make_batch(Labels(12), d, d + 3, rng);
    {
      OutputLayer rows_only;
      Status st = load_layer(slim, &rows_only);
      CHECK_MESSAGE(st.ok(), "load_layer without optimizer state: " << st.message());
      if (st.ok()) {
        std::vector<std::vector<Scored>> x, z;
        REQUIRE(layer.topk(q.inputs.data(), q.rows, q.stride, 5, InferMode::full, &x).ok());
        REQUIRE(rows_only.topk(q.inputs.data(), q.rows, q.stride, 5, InferMode::full, &z).ok());
        for (size_t i = 0; i < q.rows; ++i) CHECK(same_scored(x[i], z[i]));
      }
    }
    OutputLayer loaded;
    Status st = load_layer(a, &loaded);
    // Not REQUIRE: a failure for one mode must not hide the other mode's results.
    CHECK_MESSAGE(st.ok(), "load_layer: " << st.message());
    if (!st.ok()) continue;  // everything below compares with the loaded layer
    CHECK(loaded.input_dim() == d);
    CHECK(loaded.labels() == N);
    CHECK(loaded.row_stride() == layer.row_stride());
    CHECK(loaded.config().output == mode);
    CHECK(same_bits(layer.weights(), loaded.weights(), N * layer.row_stride()));
    // Top-k bit-identical: full, and for the lsh layer the tables (rebuilt from the saved codes)
    // and the shortlist give the same candidates and scores.
    std::vector<InferMode> modes{InferMode::full};
    if (mode == OutputMode::lsh) modes.push_back(InferMode::lsh);
    for (InferMode im : modes) {
      CAPTURE(int(im));
      std::vector<std::vector<Scored>> x, z;
      double cx = -1, cz = -2;
      REQUIRE(layer.topk(q.inputs.data(), q.rows, q.stride, 5, im, &x, &cx).ok());
      REQUIRE(loaded.topk(q.inputs.data(), q.rows, q.stride, 5, im, &z, &cz).ok());
      REQUIRE(x.size() == q.rows);
      REQUIRE(z.size() == q.rows);
      for (size_t i = 0; i < q.rows; ++i) CHECK(same_scored(x[i], z[i]));
      CHECK(cx == cz);
    }
    // Saving the loaded layer gives the same bytes.
    REQUIRE(save_layer(loaded, b).ok());
    CHECK(read_bytes(a) == read_bytes(b));
    // Training continues identically: same loss, dL/dh and rows after one more step.
    const Batch next = make_batch(random_labels(10, N, 3, rng), d, d, rng);
    std::vector<float> g1(next.rows * d), g2(next.rows * d);
    float l1 = 0, l2 = 1;
    REQUIRE(layer.train(next.view(), &l1, g1.data()).ok());
    REQUIRE(loaded.train(next.view(), &l2, g2.data()).ok());
    CHECK(same_bits(&l1, &l2, 1));
    CHECK(same_bits(g1, g2));
    CHECK(same_bits(layer.weights(), loaded.weights(), N * layer.row_stride()));

    // LoadOptions::expect_features / expect_labels are input_dim / labels for a layer file.
    LoadOptions o;
    o.expect_features = d;
    o.expect_labels = N;
    OutputLayer checked;
    CHECK(load_layer(a, &checked, o).ok());
    REQUIRE(save_layer(loaded, b).ok());
    const std::string loaded_bytes = read_bytes(b);
    o.expect_features = d + 1;
    st = load_layer(a, &loaded, o);
    CHECK(contains(st.message(), "the layer takes 6 inputs, the caller expects 7"));
    o.expect_features = N;  // the label count in the wrong field is refused too
    CHECK(!load_layer(a, &loaded, o).ok());
    o.expect_features = d;
    o.expect_labels = N + 1;
    st = load_layer(a, &loaded, o);
    CHECK(contains(st.message(), "the layer has 40 labels, the caller expects 41"));
    // A refused load leaves the target as it was.
    REQUIRE(save_layer(loaded, b).ok());
    CHECK(read_bytes(b) == loaded_bytes);
  }

  // A model file is not a layer file, and the other way round; the messages say which is which.
  Dataset data = empty_dataset(10, 5);
  Rng rng(9);
  add_rows(&data, 4, 0, 10, rng);
  Model model;
  REQUIRE(model.init(network_config(InputKind::sparse, {3}, 1), 10, 5).ok());
  REQUIRE(model.train_epoch(data).ok());
  const std::string model_file = dir.file("model.bin");
  REQUIRE(save_model(model, model_file).ok());
  const std::string model_bytes = read_bytes(model_file);
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(mode));
    const std::string layer_file = dir.file("layer.bin");
    OutputLayer layer;
    REQUIRE(layer.init(layer_config(mode, 1, 3), 4, 5).ok());
    REQUIRE(save_layer(layer, layer_file).ok());
    const std::string layer_bytes = read_bytes(layer_file);
    Status st = load_layer(model_file, &layer);
    CHECK(!st.ok());
    CHECK_MESSAGE(contains(st.message(), "a model file"), st.message());
    REQUIRE(save_layer(layer, layer_file).ok());
    CHECK(read_bytes(layer_file) == layer_bytes);  // the refused load changed nothing
    Model into;
    st = load_model(layer_file, &into);
    CHECK(!st.ok());
    CHECK_MESSAGE(contains(st.message(), "a layer file"), st.message());
    CHECK(!into.initialized());
    // ... nor a model that was loaded before.
    REQUIRE(load_model(model_file, &into).ok());
    CHECK(!load_model(layer_file, &into).ok());
    REQUIRE(save_model(into, dir.file("model_again.bin")).ok());
    CHECK(read_bytes(dir.file("model_again.bin")) == model_bytes);
  }
}

TEST_CASE("layers: refused OutputLayer calls return errors and change nothing") {
  TempDir dir;
  const size_t d = 5, N = 7;
  const Labels y = {{2}, {0, 5, 6}, {}, {1, 4}};
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(mode));
    OutputLayer layer;
    REQUIRE(layer.init(layer_config(mode, 1, 3), d, N).ok());  // lsh: a sampled layer with tables
    Rng rng(12);
    const Batch good = make_batch(y, d, d, rng);
    REQUIRE(layer.train(good.view()).ok());  // a trained state, with Adam moments and label counts
    REQUIRE(save_layer(layer, dir.file("before.bin")).ok());
    const std::string before = read_bytes(dir.file("before.bin"));
    std::vector<float> grad(good.rows * d, 0.0f);
    float loss = 0;

    struct Refusal {
      const char* what;
      std::function<Status()> call;
      std::vector<std::string> phrases;
    };
    auto train = [&](Batch b, size_t grad_stride = 0) { return layer.train(b.view(), &loss, grad.data(), grad_stride); };
    const std::vector<Refusal> refusals = {
        {"NaN input",
         [&] {
           Batch b = good;
           b.inputs[1 * d + 3] = std::nanf("");
           return train(b);
         },
         {"input 1, unit 3 is", "inputs must be finite with magnitude <= 1e18"}},
        {"input of 1e19",
         [&] {
           Batch b = good;
           b.inputs[3 * d + 2] = 1e19f;
           return train(b);
         },
         {"input 3, unit 2 is 1e+19", "magnitude <= 1e18"}},
        {"label id >= labels",
         [&] {
           Batch b = good;
           b.labels[2] = uint32_t(N);
           return train(b);
         },
         {"row 1", "label id 7 out of range [0, 7)"}},
        {"duplicate label",
         [&] {
           Batch b = good;
           b.labels[3] = b.labels[2];  // row 1 becomes {0, 5, 5}
           return train(b);
         },
         {"row 1", "label id 5 appears twice"}},
        {"decreasing label_offsets",
         [&] {
           Batch b = good;
           b.offsets[2] = 0;  // row 1 would end before it starts
           return train(b);
         },
         {"label_offsets decrease at row 1"}},
        {"label_offsets not starting at 0",
         [&] {
           Batch b = good;
           b.offsets[0] = 1;
           return train(b);
         },
         {"label_offsets[0] must be 0"}},
        {"rows == 0",
         [&] {
           Batch b = good;
           b.rows = 0;
           return train(b);
         },
         {"the batch has no rows"}},
        {"stride below input_dim",
         [&] {
           Batch b = good;
           b.stride = 3;
           return train(b);
         },
         {"stride 3 is below input_dim 5"}},
        {"grad_stride below input_dim", [&] { return train(good, 2); }, {"grad_stride 2 is below input_dim 5"}},
        {"null inputs",
         [&] {
           LayerBatch b = good.view();
           b.inputs = nullptr;
           return layer.train(b);
         },
         {"inputs is null"}},
        {"null label_offsets",
         [&] {
           LayerBatch b = good.view();
           b.label_offsets = nullptr;
           return layer.train(b);
         },
         {"label_offsets is null"}},
    };
    int file = 0;
    for (const Refusal& r : refusals) {
      CAPTURE(r.what);
      const Status st = r.call();
      CHECK(!st.ok());
      CHECK_MESSAGE(contains(st.message(), "OutputLayer::train"), st.message());
      for (const std::string& phrase : r.phrases) CHECK_MESSAGE(contains(st.message(), phrase), st.message());
      const std::string path = dir.file("after" + std::to_string(file++) + ".bin");
      REQUIRE(save_layer(layer, path).ok());
      CHECK(read_bytes(path) == before);
      CHECK(layer.stats().batches == 1);
    }

    // topk's refusals.
    std::vector<std::vector<Scored>> out;
    Status st = layer.topk(good.inputs.data(), good.rows, 0, 0, InferMode::full, &out);
    CHECK(contains(st.message(), "k must be >= 1"));
    st = layer.topk(good.inputs.data(), good.rows, 0, 3, InferMode::full, nullptr);
    CHECK(contains(st.message(), "out is null"));
    if (mode == OutputMode::full) {
      st = layer.topk(good.inputs.data(), good.rows, 0, 3, InferMode::lsh, &out);
      CHECK(contains(st.message(), "InferMode::lsh needs an lsh layer"));
    }
    Batch nan = good;
    nan.inputs[2] = std::nanf("");
    st = layer.topk(nan.inputs.data(), nan.rows, 0, 3, InferMode::full, &out);
    CHECK(contains(st.message(), "inputs must be finite"));
    st = layer.topk(good.inputs.data(), good.rows, 4, 3, InferMode::full, &out);
    CHECK(contains(st.message(), "stride 4 is below input_dim 5"));
    // The layer still trains normally afterwards.
    CHECK(layer.train(good.view()).ok());
  }
}

TEST_CASE("layers: topk is exact in full mode; lsh mode returns exact scores of the labels it scored") {
  const size_t d = 6, N = 64, stride = 9;
  Rng rng(21);
  // A full layer, trained a little so the rows are not just their initial draw.
  OutputLayer full;
  REQUIRE(full.init(layer_config(OutputMode::full, 2), d, N).ok());
  for (int s = 0; s < 2; ++s) REQUIRE(full.train(make_batch(random_labels(16, N, 3, rng), d, d, rng).view()).ok());
  const Batch q = make_batch(Labels(9), d, stride, rng);
  for (size_t k : {size_t(1), size_t(5), N}) {
    CAPTURE(k);
    std::vector<std::vector<Scored>> out;
    double candidates = 0;
    REQUIRE(full.topk(q.inputs.data(), q.rows, stride, k, InferMode::full, &out, &candidates).ok());
    REQUIRE(out.size() == q.rows);
    CHECK(candidates == double(N));  // every label scored
    for (size_t i = 0; i < q.rows; ++i) {
      CAPTURE(i);
      const auto truth = ranked_scores(full, &q.inputs[i * stride]);
      REQUIRE(out[i].size() == k);
      for (size_t r = 0; r < k; ++r) {
        CAPTURE(r);
        CHECK(out[i][r].label == truth[r].second);
        CHECK(out[i][r].score == doctest::Approx(truth[r].first).epsilon(1e-5));
      }
    }
  }

  // An lsh layer with small tables and a short frequent-label shortlist.
  Config c = layer_config(OutputMode::lsh, 2, 8);
  c.K = 4;
  c.L = 3;
  c.max_active = 16;
  c.infer_shortlist = 4;
  OutputLayer lsh;
  REQUIRE(lsh.init(c, d, N).ok());
  for (int s = 0; s < 3; ++s) REQUIRE(lsh.train(make_batch(random_labels(16, N, 3, rng), d, d, rng).view()).ok());
  REQUIRE(lsh.refresh().ok());
  const size_t k = 10;
  double total = 0;
  for (size_t i = 0; i < q.rows; ++i) {
    CAPTURE(i);
    std::vector<std::vector<Scored>> out;
    double scored = -1;
    REQUIRE(lsh.topk(&q.inputs[i * stride], 1, stride, k, InferMode::lsh, &out, &scored).ok());
    REQUIRE(out.size() == 1);
    total += scored;
    CHECK(scored >= 1);  // the shortlist at least
    CHECK(scored <= double(N));
    // The k best of the scored labels: min(k, scored) of them, best first, distinct, exact.
    CHECK(double(out[0].size()) == std::min(double(k), scored));
    const auto truth = ranked_scores(lsh, &q.inputs[i * stride]);
    std::vector<double> exact(N);
    for (const auto& t : truth) exact[t.second] = t.first;
    for (size_t r = 0; r < out[0].size(); ++r) {
      CAPTURE(r);
      const Scored& s = out[0][r];
      REQUIRE(s.label < N);
      CHECK(s.score == doctest::Approx(exact[s.label]).epsilon(1e-5));
      if (r > 0) CHECK(out[0][r - 1].score >= s.score);
      for (size_t p = 0; p < r; ++p) CHECK(out[0][p].label != s.label);
    }
    CHECK(out[0][0].score <= truth[0].first + 1e-5);  // nothing beats the exact best
  }
  // All inputs at once: the same results, and mean_candidates is the mean of the counts.
  std::vector<std::vector<Scored>> all;
  double mean = -1;
  REQUIRE(lsh.topk(q.inputs.data(), q.rows, stride, k, InferMode::lsh, &all, &mean).ok());
  CHECK(mean == doctest::Approx(total / double(q.rows)));
  MESSAGE("lsh topk: " << mean << " of " << N << " labels scored per input");
}

TEST_CASE("layers: OutputLayers with the same Config, seed and threads train bit-identically") {
  const size_t d = 8, N = 300;
  Rng rng(33);
  std::vector<Batch> batches;
  for (int s = 0; s < 4; ++s) batches.push_back(make_batch(random_labels(40, N, 3, rng), d, d, rng));
  const Batch q = make_batch(Labels(10), d, d, rng);
  struct Run {
    std::vector<float> losses, grads, weights;
    std::vector<std::vector<Scored>> top;
  };
  auto run = [&](const Config& c) {
    OutputLayer layer;
    REQUIRE(layer.init(c, d, N).ok());
    Run r;
    for (const Batch& b : batches) {
      float loss = 0;
      std::vector<float> g(b.rows * d);
      REQUIRE(layer.train(b.view(), &loss, g.data()).ok());
      r.losses.push_back(loss);
      r.grads.insert(r.grads.end(), g.begin(), g.end());
    }
    REQUIRE(layer.refresh().ok());
    r.weights.assign(layer.weights(), layer.weights() + N * layer.row_stride());
    REQUIRE(layer.topk(q.inputs.data(), q.rows, 0, 5, c.output == OutputMode::lsh ? InferMode::lsh : InferMode::full,
                       &r.top)
                .ok());
    return r;
  };
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    for (uint32_t threads : {1u, 2u}) {
      CAPTURE(int(mode));
      CAPTURE(threads);
      // lsh: a sampled layer with everything that draws or merges in play: random shared
      // neurons, retrieved rows merged across workers, the correction, tail drift, rebuilds.
      Config c = layer_config(mode, threads, 16);
      c.K = 4;
      c.L = 5;
      c.max_active = 32;
      c.rehash_every = 2;
      const Run a = run(c), b = run(c);
      CHECK(same_bits(a.losses, b.losses));
      CHECK(same_bits(a.grads, b.grads));
      CHECK(same_bits(a.weights, b.weights));
      REQUIRE(a.top.size() == b.top.size());
      for (size_t i = 0; i < a.top.size(); ++i) CHECK(same_scored(a.top[i], b.top[i]));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Model: input layers and the hidden stack
// ---------------------------------------------------------------------------------------------

TEST_CASE("layers: every Model layer's weight gradient equals the double reference (sparse, dense, hidden stack)") {
  const Dataset data = network_batch();
  const std::vector<uint32_t> rows = row_range(0, kNetRows);
  struct Net {
    InputKind input;
    std::vector<uint32_t> hidden_layers;
  };
  const Net nets[] = {{InputKind::sparse, {}}, {InputKind::sparse, {6, 4}}, {InputKind::dense, {}}, {InputKind::dense, {6, 4}}};
  for (const Net& net : nets) {
    for (uint32_t threads : {1u, 2u}) {
      CAPTURE(int(net.input));
      CAPTURE(net.hidden_layers.size());
      CAPTURE(threads);
      Model m;
      REQUIRE(m.init(gradient_adam(network_config(net.input, net.hidden_layers, threads)), kNetFeatures, kNetLabels).ok());
      const RefNet ref(m);
      std::vector<std::vector<double>> g;
      const double ref_loss = ref.loss(data, rows, &g);
      const std::vector<std::vector<float>> before = snapshot(m);
      float loss = -1;
      REQUIRE(m.train_batch(data, rows.data(), rows.size(), &loss).ok());
      CHECK(loss == doctest::Approx(ref_loss).epsilon(1e-6));
      const std::vector<Block> after = blocks(m);
      REQUIRE(after.size() == g.size());
      for (size_t b = 0; b < after.size(); ++b) {
        CAPTURE(after[b].name);
        REQUIRE(after[b].n == g[b].size());
        CHECK(check_step(after[b].name, before[b].data(), after[b].p, g[b]) > 1e-3);
      }
      // The rows of features absent from the batch (10..13) have no gradient and do not move:
      // sparse input because lazy Adam skips them, dense input because a zero gradient on a
      // first step moves nothing (m = v = 0).
      const size_t H = m.weights().hidden;
      CHECK(same_bits(before[0].data() + kNetUsedFeatures * H, after[0].p + kNetUsedFeatures * H,
                      (kNetFeatures - kNetUsedFeatures) * H));
    }
  }
}

TEST_CASE("layers: the reference's analytic gradients of a {6, 4} hidden stack match finite differences") {
  // Closes the chain: library == reference (previous test) and reference == finite differences
  // of the reference's own loss (this one), so the library's gradients are the true ones.
  const Dataset data = network_batch();
  const std::vector<uint32_t> rows = row_range(0, kNetRows);
  Model m;
  REQUIRE(m.init(gradient_adam(network_config(InputKind::sparse, {6, 4}, 1)), kNetFeatures, kNetLabels).ok());
  RefNet ref(m);
  std::vector<std::vector<double>> g;
  ref.loss(data, rows, &g);
  const std::vector<Block> names = blocks(m);
  const double h = 1e-6;  // central differences: truncation ~h^2, rounding ~1e-16 / h
  for (size_t b = 0; b < ref.p.size(); ++b) {
    size_t bad = 0, worst = 0, nonzero = 0;
    double worst_err = -1, worst_fd = 0;
    for (size_t i = 0; i < ref.p[b].size(); ++i) {
      const double keep = ref.p[b][i];
      ref.p[b][i] = keep + h;
      const double up = ref.loss(data, rows, nullptr);
      ref.p[b][i] = keep - h;
      const double down = ref.loss(data, rows, nullptr);
      ref.p[b][i] = keep;
      const double fd = (up - down) / (2 * h);
      const double err = std::fabs(fd - g[b][i]);
      if (err > 1e-7 + 1e-6 * std::fabs(g[b][i])) ++bad;
      if (err > worst_err) {
        worst_err = err;
        worst = i;
        worst_fd = fd;
      }
      nonzero += g[b][i] != 0;
    }
    CAPTURE(names[b].name);
    CHECK_MESSAGE(bad == 0, names[b].name << ": " << bad << " of " << ref.p[b].size() << " gradients off; worst ["
                                          << worst << "]: analytic " << g[b][worst] << ", finite difference "
                                          << worst_fd);
    CHECK(nonzero > 0);
  }
}

TEST_CASE("layers: dense and sparse input agree on a first step, then differ only where lazy Adam skips rows") {
  // Batch 1 uses features [0, 8), batch 2 features [4, 12), of 12.
  const size_t D = 12, N = 9;
  Dataset data = empty_dataset(D, N);
  Rng rng(41);
  add_rows(&data, 6, 0, 8, rng);
  add_rows(&data, 6, 4, 12, rng);
  const std::vector<uint32_t> batch1 = row_range(0, 6), batch2 = row_range(6, 12);
  std::vector<bool> in1(D, false), in2(D, false);
  for (uint32_t r : batch1)
    for (size_t k = 0; k < data.row(r).nnz; ++k) in1[data.row(r).ids[k]] = true;
  for (uint32_t r : batch2)
    for (size_t k = 0; k < data.row(r).nnz; ++k) in2[data.row(r).ids[k]] = true;
  size_t only_first = 0;
  for (size_t f = 0; f < D; ++f) only_first += in1[f] && !in2[f];
  REQUIRE(only_first > 0);

  for (uint32_t threads : {1u, 2u}) {
    CAPTURE(threads);
    // Adam defaults (beta1 0.9, beta2 0.999, eps 1e-8): the semantics in which the kinds differ.
    Model sparse, dense;
    REQUIRE(sparse.init(network_config(InputKind::sparse, {4}, threads), D, N).ok());
    REQUIRE(dense.init(network_config(InputKind::dense, {4}, threads), D, N).ok());
    // The same seed draws the same initial weights whatever the input kind.
    REQUIRE(same_weights(sparse, dense));

    float ls = 0, ldn = 1;
    REQUIRE(sparse.train_batch(data, batch1.data(), batch1.size(), &ls).ok());
    REQUIRE(dense.train_batch(data, batch1.data(), batch1.size(), &ldn).ok());
    CHECK(ls == doctest::Approx(ldn).epsilon(1e-6));
    // One step: the same to float tolerance (the dense GEMM sums in another order than the bag).
    // Dense Adam's rows without gradient stay: m = v = 0 on a first step.
    const std::vector<std::vector<float>> s1 = snapshot(sparse), d1 = snapshot(dense);
    for (size_t b = 0; b < s1.size(); ++b) {
      CAPTURE(b);
      CHECK(max_abs_diff(s1[b].data(), d1[b].data(), s1[b].size()) < 1e-6);
    }
    const std::vector<std::vector<float>> init_s = [&] {
      Model fresh;
      REQUIRE(fresh.init(network_config(InputKind::sparse, {4}, threads), D, N).ok());
      return snapshot(fresh);
    }();

    // A second batch over other features. They now differ, and only in the input rows of the
    // features seen in batch 1 but not in batch 2: sparse (lazy) Adam skips rows without a
    // gradient, while dense Adam moves them by their decayed momentum (m = 0.9 m_1, v = 0.999
    // v_1: a step of about 0.67 lr). Every other weight had the same gradient in both (the
    // forward pass reads only batch 2's rows, equal after step 1), so it agrees.
    REQUIRE(sparse.train_batch(data, batch2.data(), batch2.size()).ok());
    REQUIRE(dense.train_batch(data, batch2.data(), batch2.size()).ok());
    const std::vector<std::vector<float>> s2 = snapshot(sparse), d2 = snapshot(dense);
    for (size_t b = 1; b < s2.size(); ++b) {
      CAPTURE(b);
      CHECK(max_abs_diff(s2[b].data(), d2[b].data(), s2[b].size()) < 1e-6);
    }
    const size_t H = 5;
    const double lr = 0.01;
    size_t moved = 0;
    for (size_t f = 0; f < D; ++f) {
      CAPTURE(f);
      const size_t o = f * H;
      if (in1[f] && !in2[f]) {
        CHECK(same_bits(&s2[0][o], &s1[0][o], H));  // lazy: untouched by batch 2
        for (size_t i = 0; i < H; ++i) {
          if (s1[0][o + i] == init_s[0][o + i]) {  // no gradient in step 1 (a dead unit): m = 0
            CHECK(d2[0][o + i] == d1[0][o + i]);
            continue;
          }
          ++moved;
          CHECK(std::fabs(double(d2[0][o + i]) - double(d1[0][o + i])) > 0.3 * lr);  // dense: momentum
        }
      } else {
        CHECK(max_abs_diff(&s2[0][o], &d2[0][o], H) < 1e-6);
      }
    }
    CHECK(moved > 0);
    CHECK(!same_weights(sparse, dense));
  }
}

TEST_CASE("layers: a Model with a hidden stack and dense input survives save_model/load_model bit for bit") {
  TempDir dir;
  const size_t D = 20, N = 30;
  Dataset data = empty_dataset(D, N);
  Rng rng(51);
  add_rows(&data, 24, 0, D, rng, 5);
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Config c = network_config(InputKind::dense, {6, 4}, 1);
    c.output = output;
    c.batch_size = 8;
    c.K = 3;
    c.L = 4;
    c.min_active = 8;
    c.max_active = 8;
    c.rehash_every = 2;
    c.infer_shortlist = 5;
    Model m;
    REQUIRE(m.init(c, D, N).ok());
    REQUIRE(m.train_epoch(data).ok());
    const std::string a = dir.file("model_a.bin"), b = dir.file("model_b.bin");
    REQUIRE(save_model(m, a).ok());
    Model loaded;
    Status st = load_model(a, &loaded);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(loaded.config().input == InputKind::dense);
    CHECK(loaded.config().hidden_layers == std::vector<uint32_t>{6, 4});
    CHECK(loaded.features() == D);
    CHECK(loaded.labels() == N);
    CHECK(same_weights(m, loaded));
    // Predictions bit-identical, every label ranked, for every row and an empty input.
    std::vector<InferMode> modes{InferMode::full};
    if (output == OutputMode::lsh) modes.push_back(InferMode::lsh);
    for (InferMode im : modes)
      for (size_t r = 0; r <= data.rows; ++r) {
        CAPTURE(int(im));
        CAPTURE(r);
        Dataset::Row row = r < data.rows ? data.row(r) : Dataset::Row{nullptr, nullptr, 0, nullptr, 0};
        std::vector<Scored> x, z;
        REQUIRE(m.predict(row.ids, row.values, row.nnz, N, im, &x).ok());
        REQUIRE(loaded.predict(row.ids, row.values, row.nnz, N, im, &z).ok());
        CHECK(!x.empty());
        CHECK(same_scored(x, z));
      }
    // Saving the loaded model gives the same bytes.
    REQUIRE(save_model(loaded, b).ok());
    CHECK(read_bytes(a) == read_bytes(b));
    // Training continues exactly (promised for the full softmax).
    if (output == OutputMode::full) {
      const std::vector<uint32_t> rows = row_range(3, 11);
      float l1 = 0, l2 = 1;
      REQUIRE(m.train_batch(data, rows.data(), rows.size(), &l1).ok());
      REQUIRE(loaded.train_batch(data, rows.data(), rows.size(), &l2).ok());
      CHECK(same_bits(&l1, &l2, 1));
      CHECK(same_weights(m, loaded));
    }
  }
}

TEST_CASE("layers: Models with hidden layers and the same Config, seed and threads train bit-identically") {
  const size_t D = 30, N = 150;
  Dataset data = empty_dataset(D, N);
  Rng rng(61);
  add_rows(&data, 120, 0, D, rng, 7);
  for (InputKind input : {InputKind::sparse, InputKind::dense}) {
    for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
      for (uint32_t threads : {1u, 2u}) {
        CAPTURE(int(input));
        CAPTURE(int(output));
        CAPTURE(threads);
        Config c = network_config(input, {6, 4}, threads);
        c.output = output;
        c.batch_size = 40;
        c.K = 4;
        c.L = 5;
        c.min_active = 16;
        c.max_active = 16;
        c.rehash_every = 2;
        Model a, b;
        REQUIRE(a.init(c, D, N).ok());
        REQUIRE(b.init(c, D, N).ok());
        REQUIRE(a.train_epoch(data).ok());
        REQUIRE(b.train_epoch(data).ok());
        CHECK(a.stats().batches == 3);
        CHECK(same_weights(a, b));
        CHECK(a.stats().mean_loss_last_epoch == b.stats().mean_loss_last_epoch);
      }
    }
  }
}

TEST_CASE("layers: Model::init refuses bad hidden_layers and input kinds, naming the field") {
  struct Bad {
    std::vector<uint32_t> hidden_layers;
    InputKind input;
    std::string phrase;
  };
  const Bad bad[] = {
      {{6, 0}, InputKind::sparse, "Config.hidden_layers[1] = 0 out of range [1, 65536]"},
      {{65537}, InputKind::dense, "Config.hidden_layers[0] = 65537 out of range [1, 65536]"},
      {std::vector<uint32_t>(17, 2), InputKind::sparse, "Config.hidden_layers has 17 layers, at most 16"},
      {{4}, InputKind(7), "Config.input"},
  };
  // A model initialised before: a refused init must leave it as it was.
  Model kept;
  REQUIRE(kept.init(network_config(InputKind::sparse, {3}, 1), 10, 5).ok());
  const std::vector<std::vector<float>> kept_weights = snapshot(kept);
  for (const Bad& b : bad) {
    CAPTURE(b.phrase);
    Config c = network_config(b.input, b.hidden_layers, 1);
    CHECK_MESSAGE(contains(validate(c).message(), b.phrase), validate(c).message());
    Model m;
    Status st = m.init(c, 10, 5);
    CHECK(!st.ok());
    CHECK_MESSAGE(contains(st.message(), b.phrase), st.message());
    CHECK(!m.initialized());
    CHECK(!kept.init(c, 10, 5).ok());
    CHECK(kept.initialized());
    CHECK(kept.config().hidden_layers == std::vector<uint32_t>{3});
    CHECK(snapshot(kept) == kept_weights);
  }
  // The limits themselves are accepted: 16 layers, widths 1.
  Model deep;
  Status st = deep.init(network_config(InputKind::dense, std::vector<uint32_t>(16, 1), 1), 10, 5);
  CHECK_MESSAGE(st.ok(), st.message());
  CHECK(deep.weights().hidden_layers.size() == 16);
}

// ---------------------------------------------------------------------------------------------
// bfloat16 storage of the output layer
// ---------------------------------------------------------------------------------------------

TEST_CASE("layers: bf16 output rows train close to fp32, halve the layer, and round trip through files") {
  SyntheticConfig sc;
  sc.features = 300;
  sc.labels = 400;
  sc.train_rows = 1500;
  sc.test_rows = 300;
  sc.seed = 17;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Config c;
    c.hidden = 32;
    c.output = output;
    c.threads = 2;
    c.K = 6;
    c.L = 8;
    c.min_active = 32;
    Model f32, b16;
    REQUIRE(f32.init(c, train.features, train.labels).ok());
    c.bf16 = true;
    REQUIRE(b16.init(c, train.features, train.labels).ok());
    CHECK(b16.weights().W2 == nullptr);  // no fp32 rows to show
    for (int e = 0; e < 4; ++e) {
      REQUIRE(f32.train_epoch(train).ok());
      REQUIRE(b16.train_epoch(train).ok());
    }
    Metrics mf, mb;
    REQUIRE(f32.evaluate(test, InferMode::full, &mf).ok());
    REQUIRE(b16.evaluate(test, InferMode::full, &mb).ok());
    MESSAGE("bf16 P@1 ", mb.p_at_1, " against fp32 ", mf.p_at_1);
    CHECK(mf.p_at_1 > 0.3);
    CHECK(std::fabs(mb.p_at_1 - mf.p_at_1) < 0.05);
    // The output layer's rows and moments take half the bytes.
    const size_t stride = f32.weights().output_stride;
    const double output_f32 = 3.0 * double(train.labels) * double(stride) * 4;
    CHECK(double(f32.parameter_bytes() - b16.parameter_bytes()) == doctest::Approx(output_f32 / 2).epsilon(0.01));
    // Files: smaller by the same amount, and a loaded model predicts bit for bit the same.
    REQUIRE(save_model(f32, dir.file("f32.bin")).ok());
    REQUIRE(save_model(b16, dir.file("b16.bin")).ok());
    CHECK(read_bytes(dir.file("b16.bin")).size() < read_bytes(dir.file("f32.bin")).size() * 3 / 4 + 1);
    Model back;
    Status st = load_model(dir.file("b16.bin"), &back);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(back.config().bf16);
    std::vector<Scored> a, b;
    for (size_t r = 0; r < 40; ++r) {
      const Dataset::Row row = test.row(r);
      REQUIRE(b16.predict(row.ids, row.values, row.nnz, 5, InferMode::full, &a).ok());
      REQUIRE(back.predict(row.ids, row.values, row.nnz, 5, InferMode::full, &b).ok());
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].label == b[i].label);
        CHECK(std::memcmp(&a[i].score, &b[i].score, 4) == 0);
      }
    }
    // Training on is identical too (same bytes saved after one more epoch each).
    REQUIRE(b16.train_epoch(train).ok());
    REQUIRE(back.train_epoch(train).ok());
    if (output == OutputMode::full) {
      REQUIRE(save_model(b16, dir.file("x.bin")).ok());
      REQUIRE(save_model(back, dir.file("y.bin")).ok());
      CHECK(read_bytes(dir.file("x.bin")) == read_bytes(dir.file("y.bin")));
    }
  }
}

TEST_CASE("layers: a bf16 OutputLayer is deterministic and its rows round trip through a layer file") {
  Config c;
  c.output = OutputMode::full;
  c.threads = 2;
  c.bf16 = true;
  OutputLayer a, b;
  REQUIRE(a.init(c, 6, 9).ok());
  REQUIRE(b.init(c, 6, 9).ok());
  CHECK(a.weights() == nullptr);
  std::vector<float> h(4 * 6);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float((i * 7) % 11) / 11.0f;
  const uint32_t labels[] = {1, 4, 2, 8};
  const uint64_t offsets[] = {0, 1, 2, 3, 4};
  LayerBatch batch;
  batch.inputs = h.data();
  batch.rows = 4;
  batch.labels = labels;
  batch.label_offsets = offsets;
  std::vector<float> ga(h.size()), gb(h.size());
  float la = 0, lb = 0;
  for (int step = 0; step < 3; ++step) {
    REQUIRE(a.train(batch, &la, ga.data()).ok());
    REQUIRE(b.train(batch, &lb, gb.data()).ok());
    CHECK(std::memcmp(&la, &lb, 4) == 0);
    CHECK(std::memcmp(ga.data(), gb.data(), ga.size() * 4) == 0);
  }
  std::vector<std::vector<Scored>> top;
  REQUIRE(a.topk(h.data(), 4, 6, 9, InferMode::full, &top).ok());
  CHECK(top[0].size() == 9);
  TempDir dir;
  REQUIRE(save_layer(a, dir.file("a.bin")).ok());
  OutputLayer back;
  REQUIRE(load_layer(dir.file("a.bin"), &back).ok());
  std::vector<std::vector<Scored>> again;
  REQUIRE(back.topk(h.data(), 4, 6, 9, InferMode::full, &again).ok());
  for (size_t i = 0; i < 4; ++i)
    for (size_t j = 0; j < 9; ++j) CHECK(std::memcmp(&top[i][j].score, &again[i][j].score, 4) == 0);
}
