// Model tests: training steps against a double-precision reference of the whole network,
// lsh == full when every neuron is active, determinism, learning on synthetic data, and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../mongoose.h"
#include "common.h"

using namespace mongoose;

namespace {

// A tiny dataset with a few labels per row.
Dataset tiny_dataset(size_t rows, size_t features, size_t labels, uint64_t seed) {
  Dataset d;
  d.features = features;
  d.labels = labels;
  Rng rng(seed);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<uint32_t> ids, lab;
    std::vector<float> vals;
    for (uint32_t f = 0; f < features; ++f)
      if (rng.uniform() < 0.4f) {
        ids.push_back(f);
        vals.push_back(0.5f + 2.0f * rng.uniform());
      }
    size_t nl = 1 + rng.below(3);
    while (lab.size() < nl) {
      uint32_t l = rng.below(uint32_t(labels));
      if (std::find(lab.begin(), lab.end(), l) == lab.end()) lab.push_back(l);
    }
    REQUIRE(d.add_row(ids.data(), vals.data(), ids.size(), lab.data(), lab.size()).ok());
  }
  return d;
}

// The network in double precision, trained the way the header documents it.
struct Reference {
  size_t D, H, N, ld;
  std::vector<double> W1, b1, W2;  // W2 rows of ld: [w, b, 0...]
  std::vector<double> mW1, vW1, mb1, vb1, mW2, vW2;
  double lr, beta1, beta2, eps;
  uint64_t t = 0;

  explicit Reference(const Model& m) {
    Model::Weights w = m.weights();
    D = w.features;
    H = w.hidden;
    N = w.labels;
    ld = w.output_stride;
    W1.assign(w.W1, w.W1 + D * H);
    b1.assign(w.b1, w.b1 + H);
    W2.assign(w.W2, w.W2 + N * ld);
    mW1.assign(W1.size(), 0);
    vW1.assign(W1.size(), 0);
    mb1.assign(H, 0);
    vb1.assign(H, 0);
    mW2.assign(W2.size(), 0);
    vW2.assign(W2.size(), 0);
    const Config& c = m.config();
    lr = c.learning_rate;
    beta1 = c.beta1;
    beta2 = c.beta2;
    eps = c.adam_eps;
  }

  void adam(double* w, const double* g, double* m, double* v, size_t n) const {
    double c1 = 1.0 / (1.0 - std::pow(beta1, double(t))), c2 = 1.0 / (1.0 - std::pow(beta2, double(t)));
    for (size_t i = 0; i < n; ++i) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      w[i] -= lr * (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    }
  }

  // The sampled softmax of OutputMode::lsh with min_active = 0 and exact_retrieval, as the header
  // documents it: S = the batch's labels; example e's softmax runs over S plus the `retrieve`
  // best-scoring neurons outside S; S's logits other than e's own labels are lowered by
  // log(1 - (1 - f_j)^B), f_j the fraction of the examples so far (this batch included) labelled
  // j; only active rows are updated (lazy Adam).
  // With tail_drift, every row of S then moves up by tail_drift * lr on each hidden unit active
  // in the batch and on the bias.
  struct Sampling {
    size_t retrieve = 0;
    bool correction = true;
    double tail_drift = 0;
    std::vector<double> label_count;
    double examples = 0;
  };

  // One batch: mean softmax cross-entropy with target 1/|y| on each label.
  double step(const Dataset& d, const std::vector<uint32_t>& rows, Sampling* sampling = nullptr) {
    ++t;
    size_t B = rows.size();
    std::vector<double> h(B * H), dh(B * H, 0), gW2(N * ld, 0);
    std::vector<bool> in_batch(N, !sampling), updated(N, !sampling);
    if (sampling) {
      sampling->label_count.resize(N, 0);
      for (uint32_t row : rows) {
        Dataset::Row r = d.row(row);
        for (size_t k = 0; k < r.num_labels; ++k) {
          in_batch[r.labels[k]] = updated[r.labels[k]] = true;
          sampling->label_count[r.labels[k]] += 1;
        }
      }
      sampling->examples += double(B);
    }
    double loss = 0;
    for (size_t e = 0; e < B; ++e) {
      Dataset::Row r = d.row(rows[e]);
      for (size_t i = 0; i < H; ++i) {
        double s = b1[i];
        for (size_t k = 0; k < r.nnz; ++k) s += double(r.values[k]) * W1[r.ids[k] * H + i];
        h[e * H + i] = s > 0 ? s : 0;
      }
      std::vector<double> z(N);
      double mx = -1e300;
      for (size_t j = 0; j < N; ++j) {
        double s = W2[j * ld + H];
        for (size_t i = 0; i < H; ++i) s += W2[j * ld + i] * h[e * H + i];
        z[j] = s;
        mx = std::max(mx, s);
      }
      std::vector<bool> active = in_batch;
      if (sampling) {
        std::vector<uint32_t> outside;
        for (uint32_t j = 0; j < N; ++j)
          if (!in_batch[j]) outside.push_back(j);
        size_t take = std::min(sampling->retrieve, outside.size());
        std::partial_sort(outside.begin(), outside.begin() + ptrdiff_t(take), outside.end(),
                          [&](uint32_t a, uint32_t b) { return z[a] > z[b]; });
        for (size_t i = 0; i < take; ++i) active[outside[i]] = updated[outside[i]] = true;
        for (uint32_t j = 0; j < N; ++j) {
          bool own = std::find(r.labels, r.labels + r.num_labels, j) != r.labels + r.num_labels;
          if (!in_batch[j] || own || !sampling->correction) continue;
          double f = sampling->label_count[j] / sampling->examples;
          z[j] -= std::log(1.0 - std::pow(1.0 - f, double(B)));
        }
        mx = -1e300;
        for (size_t j = 0; j < N; ++j)
          if (active[j]) mx = std::max(mx, z[j]);
      }
      double sum = 0;
      for (size_t j = 0; j < N; ++j)
        if (active[j]) sum += std::exp(z[j] - mx);
      double lse = mx + std::log(sum);
      double tl = 1.0 / double(r.num_labels);
      std::vector<double> dz(N, 0.0);
      for (size_t j = 0; j < N; ++j)
        if (active[j]) dz[j] = std::exp(z[j] - lse);
      for (size_t k = 0; k < r.num_labels; ++k) {
        dz[r.labels[k]] -= tl;
        loss += tl * (lse - z[r.labels[k]]);
      }
      for (size_t j = 0; j < N; ++j) {
        double g = dz[j] / double(B);
        for (size_t i = 0; i < H; ++i) {
          gW2[j * ld + i] += g * h[e * H + i];
          dh[e * H + i] += g * W2[j * ld + i];
        }
        gW2[j * ld + H] += g;
      }
    }
    for (size_t j = 0; j < N; ++j)
      if (updated[j]) adam(&W2[j * ld], &gW2[j * ld], &mW2[j * ld], &vW2[j * ld], ld);
    if (sampling && sampling->tail_drift > 0) {
      std::vector<double> drift(H + 1, 0.0);
      for (size_t i = 0; i < H; ++i)
        for (size_t e = 0; e < B; ++e)
          if (h[e * H + i] > 0) drift[i] = sampling->tail_drift * lr;
      drift[H] = sampling->tail_drift * lr;
      for (size_t j = 0; j < N; ++j)
        if (in_batch[j])
          for (size_t i = 0; i <= H; ++i) W2[j * ld + i] += drift[i];
    }
    // Input layer: only rows of features present in the batch.
    std::vector<double> gW1(D * H, 0), gb1(H, 0);
    std::vector<bool> touched(D, false);
    for (size_t e = 0; e < B; ++e) {
      Dataset::Row r = d.row(rows[e]);
      for (size_t i = 0; i < H; ++i) {
        double g = h[e * H + i] > 0 ? dh[e * H + i] : 0;
        gb1[i] += g;
        for (size_t k = 0; k < r.nnz; ++k) gW1[r.ids[k] * H + i] += double(r.values[k]) * g;
      }
      for (size_t k = 0; k < r.nnz; ++k) touched[r.ids[k]] = true;
    }
    for (size_t f = 0; f < D; ++f)
      if (touched[f]) adam(&W1[f * H], &gW1[f * H], &mW1[f * H], &vW1[f * H], H);
    adam(b1.data(), gb1.data(), mb1.data(), vb1.data(), H);
    return loss / double(B);
  }
};

double max_abs_diff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

Config small_config(OutputMode mode, Simd simd) {
  Config c;
  c.hidden = 9;  // not a multiple of 8: exercises the tails
  c.output = mode;
  c.learning_rate = 0.01f;
  c.adam_eps = 1e-3f;  // keeps Adam away from the 0/0 regime where float and double disagree
  c.threads = 1;
  c.seed = 5;
  c.simd = simd;
  c.K = 3;
  c.L = 4;
  c.min_active = 1000;  // >= labels: every neuron is active in lsh mode
  return c;
}

bool same_weights(const Model& a, const Model& b) {
  Model::Weights x = a.weights(), y = b.weights();
  return std::memcmp(x.W1, y.W1, x.features * x.hidden * 4) == 0 && std::memcmp(x.b1, y.b1, x.hidden * 4) == 0 &&
         std::memcmp(x.W2, y.W2, x.labels * x.output_stride * 4) == 0;
}

// Trains m and ref on the same `batches` batches of 8 consecutive rows and checks that the losses
// and then all weights agree (float against double).
void train_alongside(Model& m, Reference& ref, const Dataset& d, int batches,
                     Reference::Sampling* sampling = nullptr) {
  for (int s = 0; s < batches; ++s) {
    std::vector<uint32_t> rows;
    for (uint32_t r = 0; r < 8; ++r) rows.push_back(uint32_t(s * 8) + r);
    float loss = 0;
    REQUIRE(m.train_batch(d, rows.data(), rows.size(), &loss).ok());
    double ref_loss = ref.step(d, rows, sampling);
    CHECK(loss == doctest::Approx(ref_loss).epsilon(1e-5));
  }
  Model::Weights w = m.weights();
  CHECK(max_abs_diff(w.W1, ref.W1) < 2e-5);
  CHECK(max_abs_diff(w.b1, ref.b1) < 2e-5);
  CHECK(max_abs_diff(w.W2, ref.W2) < 2e-5);
}

}  // namespace

TEST_CASE("model: three full-softmax steps equal a double-precision reference") {
  Dataset d = tiny_dataset(24, 13, 11, 3);
  std::vector<Simd> levels = vector_levels();
  levels.insert(levels.begin(), Simd::scalar);
  for (Simd simd : levels) {
    for (uint32_t threads : {1u, 2u}) {
      CAPTURE(int(simd));
      CAPTURE(threads);
      Config c = small_config(OutputMode::full, simd);
      c.threads = threads;
      Model m;
      REQUIRE(m.init(c, d.features, d.labels).ok());
      Reference ref(m);
      train_alongside(m, ref, d, 3);
      Model::Weights w = m.weights();
      // The padding after each output row's bias stays zero.
      for (size_t j = 0; j < w.labels; ++j)
        for (size_t i = w.hidden + 1; i < w.output_stride; ++i) CHECK(w.W2[j * w.output_stride + i] == 0.0f);
    }
  }
}

TEST_CASE("model: lsh with every neuron active trains like the full softmax") {
  Dataset d = tiny_dataset(24, 13, 11, 4);
  // exact_retrieval: with every neuron already in the shared set there is nothing to score or
  // retrieve (the fuzzer found a null-pointer offset on this path).
  for (bool exact : {false, true}) {
    CAPTURE(exact);
    Config c = small_config(OutputMode::lsh, Simd::automatic);
    c.rehash_every = 1;  // would re-hash every batch, but with every neuron active no table is kept
    c.exact_retrieval = exact;
    Model m;
    REQUIRE(m.init(c, d.features, d.labels).ok());
    Reference ref(m);
    train_alongside(m, ref, d, 3);
    CHECK(m.stats().rehashes == 0);
    CHECK(m.stats().active_mean() == doctest::Approx(double(d.labels)));
  }
}

TEST_CASE("model: the sampled softmax (shared batch labels, retrieved neurons, correction, tail drift) equals a reference") {
  Dataset d = tiny_dataset(32, 13, 40, 8);
  for (uint32_t threads : {1u, 2u}) {
    for (bool correction : {true, false}) {
      for (float drift : {0.0f, 0.3f, 2.0f}) {
        CAPTURE(threads);
        CAPTURE(correction);
        CAPTURE(drift);
        Config c = small_config(OutputMode::lsh, Simd::automatic);
        c.threads = threads;
        c.min_active = 0;  // S = the batch's labels only
        c.max_active = 3;
        c.exact_retrieval = true;
        c.sampling_correction = correction;
        c.tail_drift = drift;
        Model m;
        REQUIRE(m.init(c, d.features, d.labels).ok());
        Reference ref(m);
        Reference::Sampling sampling;
        sampling.retrieve = 3;
        sampling.correction = correction;
        sampling.tail_drift = drift;
        train_alongside(m, ref, d, 4, &sampling);
        // Rows never active keep their initial weights: the update is lazy.
        CHECK(m.stats().active_mean() < double(d.labels));
      }
    }
  }
}

TEST_CASE("model: exact_retrieval with max_active above the label count retrieves every other neuron") {
  // A cap larger than N is legal (it never binds); it must not be allocated up front (the fuzzer
  // loaded a model with max_active ~ 1.2e9 and training asked for 9 GB).
  Dataset d = tiny_dataset(32, 13, 40, 8);
  Config c = small_config(OutputMode::lsh, Simd::automatic);
  c.min_active = 0;
  c.max_active = 0xFFFFFFFFu;
  c.exact_retrieval = true;
  Model m;
  REQUIRE(m.init(c, d.features, d.labels).ok());
  Reference ref(m);
  Reference::Sampling sampling;
  sampling.retrieve = d.labels;
  sampling.tail_drift = c.tail_drift;
  train_alongside(m, ref, d, 2, &sampling);
  CHECK(m.stats().active_mean() == doctest::Approx(double(d.labels)));
}

TEST_CASE("model: training is deterministic for a fixed seed and thread count") {
  SyntheticConfig sc;
  sc.train_rows = 600;
  sc.test_rows = 10;
  sc.features = 300;
  sc.labels = 200;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    for (uint32_t threads : {1u, 2u}) {
      CAPTURE(int(mode));
      CAPTURE(threads);
      Config c;
      c.hidden = 16;
      c.output = mode;
      c.threads = threads;
      c.batch_size = 64;
      c.min_active = 20;
      c.K = 4;
      c.L = 8;
      c.rehash_every = 3;
      Model a, b;
      REQUIRE(a.init(c, train.features, train.labels).ok());
      REQUIRE(b.init(c, train.features, train.labels).ok());
      REQUIRE(a.train_epoch(train).ok());
      REQUIRE(b.train_epoch(train).ok());
      CHECK(same_weights(a, b));
    }
  }
}

// Without threads (MONGOOSE_NO_THREADS, or a standard library without them) any thread count runs
// as one thread: the same weights as threads = 1, for the default (0 = all cores) and for 4.
TEST_CASE("model: a build without threads trains every thread count as threads = 1") {
#if !defined(MONGOOSE_NO_THREADS)
  MESSAGE("skipped: this build has threads (build with -DMONGOOSE_NO_THREADS to run it)");
#else
  SyntheticConfig sc;
  sc.train_rows = 300;
  sc.test_rows = 10;
  sc.features = 200;
  sc.labels = 100;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    Config c;
    c.hidden = 16;
    c.output = mode;
    c.batch_size = 32;
    c.min_active = 20;
    c.K = 4;
    c.L = 8;
    c.threads = 1;
    Model one;
    REQUIRE(one.init(c, train.features, train.labels).ok());
    REQUIRE(one.train_epoch(train).ok());
    for (uint32_t threads : {0u, 4u}) {
      CAPTURE(int(mode));
      CAPTURE(threads);
      c.threads = threads;
      Model m;
      REQUIRE(m.init(c, train.features, train.labels).ok());
      REQUIRE(m.train_epoch(train).ok());
      CHECK(same_weights(m, one));
    }
  }
#endif
}

TEST_CASE("model: full and lsh learn synthetic data") {
  SyntheticConfig sc;
  sc.train_rows = 6000;
  sc.test_rows = 1000;
  sc.features = 2000;
  sc.labels = 1000;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  double p1[2] = {0, 0};
  for (OutputMode mode : {OutputMode::full, OutputMode::lsh}) {
    Config c;
    c.output = mode;
    c.hidden = 64;
    c.threads = 2;
    c.K = 5;
    c.L = 16;
    c.min_active = 100;
    Model m;
    REQUIRE(m.init(c, train.features, train.labels).ok());
    for (int e = 0; e < 3; ++e) REQUIRE(m.train_epoch(train).ok());
    Metrics full;
    REQUIRE(m.evaluate(test, InferMode::full, &full).ok());
    CHECK(full.rows == test.rows);
    CHECK(full.p_at_1 >= full.p_at_3 - 0.2);
    p1[mode == OutputMode::lsh] = full.p_at_1;
    if (mode == OutputMode::lsh) {
      Metrics fast;
      REQUIRE(m.evaluate(test, InferMode::lsh, &fast).ok());
      CHECK(fast.mean_candidates < double(train.labels));
      CHECK(fast.p_at_1 > 0.8 * full.p_at_1);
      CHECK(m.stats().rehashes > 0);
    }
  }
  MESSAGE("synthetic P@1: full " << p1[0] << ", lsh " << p1[1]);
  CHECK(p1[0] > 0.6);
  CHECK(p1[1] > 0.9 * p1[0]);
}

TEST_CASE("model: predict returns the exact top-k scores") {
  Dataset d = tiny_dataset(16, 13, 11, 6);
  Config c = small_config(OutputMode::full, Simd::automatic);
  Model m;
  REQUIRE(m.init(c, d.features, d.labels).ok());
  std::vector<uint32_t> rows(16);
  for (uint32_t i = 0; i < 16; ++i) rows[i] = i;
  REQUIRE(m.train_batch(d, rows.data(), rows.size()).ok());
  Dataset::Row r = d.row(3);
  std::vector<Scored> top;
  REQUIRE(m.predict(r.ids, r.values, r.nnz, 4, InferMode::full, &top).ok());
  REQUIRE(top.size() == 4);
  // Brute force from the weights.
  Model::Weights w = m.weights();
  std::vector<double> h(w.hidden);
  for (size_t i = 0; i < w.hidden; ++i) {
    double s = w.b1[i];
    for (size_t k = 0; k < r.nnz; ++k) s += double(r.values[k]) * w.W1[r.ids[k] * w.hidden + i];
    h[i] = s > 0 ? s : 0;
  }
  std::vector<std::pair<double, uint32_t>> all;
  for (uint32_t j = 0; j < w.labels; ++j) {
    const float* row = w.W2 + j * w.output_stride;
    double s = row[w.hidden];
    for (size_t i = 0; i < w.hidden; ++i) s += double(row[i]) * h[i];
    all.push_back({s, j});
  }
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < 4; ++i) {
    CHECK(top[i].label == all[i].second);
    CHECK(top[i].score == doctest::Approx(all[i].first).epsilon(1e-5));
  }
}

TEST_CASE("model: bad configurations and calls give clear errors") {
  Config c;
  c.hidden = 0;
  CHECK(validate(c).message() == "Config.hidden = 0 out of range [1, 65536]");
  c = Config();
  c.learning_rate = 0;
  CHECK(validate(c).message() == "Config.learning_rate = 0 out of range (0, 1]");
  c = Config();
  c.learning_rate = std::nanf("");
  CHECK(validate(c).message().find("Config.learning_rate") == 0);
  c = Config();
  c.output = OutputMode::lsh;
  c.K = 25;
  CHECK(validate(c).message() == "Config: hash K = 25 out of range [1, 24]");
  c.K = 6;
  c.rehash_decay = 2;
  CHECK(validate(c).message() == "Config.rehash_decay = 2 out of range [0, 1]");
  c = Config();
  c.output = OutputMode::lsh;
  c.bucket_capacity = 0;
  CHECK(validate(c).message() == "Config.bucket_capacity = 0 out of range [1, 65535]");

  Model m;
  Dataset d = tiny_dataset(8, 13, 11, 7);
  CHECK(m.train_epoch(d).message() == "Model::train_epoch: the model is not initialized (call init)");
  CHECK(m.init(Config(), 0, 5).message() == "Model::init: features = 0 out of range [1, 2^32)");
  REQUIRE(m.init(small_config(OutputMode::full, Simd::automatic), 13, 11).ok());
  Metrics out;
  CHECK(m.evaluate(d, InferMode::lsh, &out).message() ==
        "Model::evaluate: InferMode::lsh needs a model trained with OutputMode::lsh");
  Dataset wider = tiny_dataset(4, 20, 11, 8);
  CHECK(m.train_epoch(wider).message() == "Model::train_epoch: the dataset has 20 features but the model takes 13");
  uint32_t bad_row = 99;
  CHECK(m.train_batch(d, &bad_row, 1).message() == "Model::train_batch: row 99 out of range [0, 8)");
  uint32_t id = 13;
  float v = 1;
  std::vector<Scored> top;
  CHECK(m.predict(&id, &v, 1, 3, InferMode::full, &top).message() ==
        "Model::predict: feature id 13 out of range [0, 13)");
  id = 2;
  v = std::nanf("");
  CHECK(m.predict(&id, &v, 1, 3, InferMode::full, &top).message() == "Model::predict: feature 2 has value nan; values must be finite with magnitude <= 1e18 (scale the inputs)");
}

TEST_CASE("model: training on real data (bibtex) if present") {
  std::string dir = shared_data_dir();
  if (dir.empty()) {
    MESSAGE("skipped: ../shared/data not found");
    return;
  }
  Dataset train, test;
  REQUIRE(read_xc(dir + "/bibtex/bibtex_train.txt", &train).ok());
  REQUIRE(read_xc(dir + "/bibtex/bibtex_test.txt", &test).ok());
  Config c;
  c.threads = 2;
  Model m;
  REQUIRE(m.init(c, train.features, train.labels).ok());
  for (int e = 0; e < 5; ++e) REQUIRE(m.train_epoch(train).ok());
  Metrics r;
  REQUIRE(m.evaluate(test, InferMode::full, &r).ok());
  MESSAGE("bibtex full softmax, 5 epochs: P@1 " << r.p_at_1 << " P@5 " << r.p_at_5);
  CHECK(r.p_at_1 > 0.5);  // published one-hidden-layer results on bibtex are around 0.6
}

namespace {
struct SchedulerRun {
  TrainStats stats;
  double p1 = 0, recall = 0, retrieved = 0;
};

SchedulerRun run_scheduler(Scheduler scheduler, float tau, bool learn, uint32_t epochs = 2, uint32_t sample = 0,
                           HashLoss loss = HashLoss::bce) {
  SyntheticConfig sc;
  sc.train_rows = 4000;
  sc.test_rows = 500;
  sc.features = 1000;
  sc.labels = 3000;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  Config c;
  c.output = OutputMode::lsh;
  c.hidden = 32;
  c.threads = 2;
  c.K = 7;
  c.L = 16;
  c.min_active = 64;
  c.max_active = 64;
  c.rehash_every = 10;
  c.scheduler = scheduler;
  c.check_every = 5;
  c.tau = tau;
  c.learn_hash = learn;
  c.hash_loss = loss;
  c.detector_sample = sample;
  Model m;
  REQUIRE(m.init(c, train.features, train.labels).ok());
  for (uint32_t e = 0; e < epochs; ++e) REQUIRE(m.train_epoch(train).ok());
  SchedulerRun r;
  r.stats = m.stats();
  Metrics mt;
  REQUIRE(m.evaluate(test, InferMode::full, &mt).ok());
  r.p1 = mt.p_at_1;
  REQUIRE(m.retrieval_recall(test, 200, 5, &r.recall, &r.retrieved).ok());
  return r;
}
}  // namespace

TEST_CASE("scheduler: detect rebuilds only when enough detector bits flipped") {
  SchedulerRun never = run_scheduler(Scheduler::detect, 1.0f, false);
  CHECK(never.stats.checks == never.stats.batches / 5);
  CHECK(never.stats.rehashes == 0);  // no flip fraction exceeds 1
  CHECK(never.stats.last_flip_fraction > 0.0);
  CHECK(never.stats.last_flip_fraction < 1.0);
  SchedulerRun always = run_scheduler(Scheduler::detect, 1e-6f, false);
  CHECK(always.stats.rehashes == always.stats.checks);  // any flipped bit triggers a rebuild
  SchedulerRun fixed = run_scheduler(Scheduler::fixed, 0.3f, false);
  CHECK(fixed.stats.rehashes == fixed.stats.batches / 10);
  CHECK(fixed.stats.checks == 0);
  MESSAGE("synthetic P@1: fixed " << fixed.p1 << ", detect(never) " << never.p1 << ", detect(always) " << always.p1);
}

TEST_CASE("scheduler: detect on a sample of neurons estimates the same flips") {
  SchedulerRun all = run_scheduler(Scheduler::detect, 1.0f, false, 2, 0);
  SchedulerRun sampled = run_scheduler(Scheduler::detect, 1.0f, false, 2, 500);
  CHECK(sampled.stats.checks == all.stats.checks);
  // Same weights (no rebuild happened in either), so the estimate is close to the exact fraction.
  CHECK(sampled.stats.last_flip_fraction == doctest::Approx(all.stats.last_flip_fraction).epsilon(0.25));
  SchedulerRun eager = run_scheduler(Scheduler::detect, 1e-6f, false, 2, 500);
  CHECK(eager.stats.rehashes == eager.stats.checks);
}

TEST_CASE("scheduler: incremental re-inserts moved neurons and keeps retrieval working") {
  SchedulerRun inc = run_scheduler(Scheduler::incremental, 0.3f, false);
  SchedulerRun fixed = run_scheduler(Scheduler::fixed, 0.3f, false);
  CHECK(inc.stats.checks > 0);
  CHECK(inc.stats.reinserted + inc.stats.rehashes > 0);
  CHECK(inc.retrieved > 0);
  MESSAGE("incremental: reinserted " << inc.stats.reinserted << ", rebuilds " << inc.stats.rehashes << ", recall@5 "
                                     << inc.recall << " (fixed " << fixed.recall << "), P@1 " << inc.p1 << " (fixed "
                                     << fixed.p1 << ")");
  CHECK(inc.recall > 0.5 * fixed.recall);
  CHECK(inc.p1 > fixed.p1 - 0.05);
}

TEST_CASE("hash learning: rounds mine pairs, lower their loss and raise their recall") {
  SchedulerRun learned = run_scheduler(Scheduler::fixed, 0.3f, true);
  const TrainStats& s = learned.stats;
  REQUIRE(s.learn_rounds == s.rehashes);  // learn_every = 0: a round at every rebuild
  CHECK(s.pairs_mined > 0);
  CHECK(s.learn_loss_after < s.learn_loss_before);
  double before = s.recall_before_sum / double(s.learn_rounds), after = s.recall_after_sum / double(s.learn_rounds);
  MESSAGE("learned hashing: recall@5 on mined queries " << before << " -> " << after << ", loss "
                                                          << s.learn_loss_before << " -> " << s.learn_loss_after);
  CHECK(after >= before);
}

TEST_CASE("hash learning: the triplet loss lowers its hinge and raises recall, deterministically") {
  SchedulerRun random = run_scheduler(Scheduler::fixed, 0.3f, false);
  SchedulerRun triplet = run_scheduler(Scheduler::fixed, 0.3f, true, 2, 0, HashLoss::triplet);
  const TrainStats& s = triplet.stats;
  REQUIRE(s.learn_rounds == s.rehashes);
  CHECK(s.pairs_mined > 0);
  CHECK(s.pairs_mined % 2 == 0);  // a triplet counts as its two pairs
  CHECK(s.learn_loss_after < s.learn_loss_before);
  double before = s.recall_before_sum / double(s.learn_rounds), after = s.recall_after_sum / double(s.learn_rounds);
  MESSAGE("triplet hashing: recall@5 on mined queries " << before << " -> " << after << ", loss "
          << s.learn_loss_before << " -> " << s.learn_loss_after << "; test recall@5 " << triplet.recall
          << " (random projections " << random.recall << ")");
  CHECK(after > before);
  CHECK(triplet.recall > random.recall);
  SchedulerRun again = run_scheduler(Scheduler::fixed, 0.3f, true, 2, 0, HashLoss::triplet);
  CHECK(again.stats.learn_loss_after == s.learn_loss_after);
  CHECK(again.stats.pairs_mined == s.pairs_mined);
  CHECK(again.p1 == triplet.p1);
}

// Double-precision reference of the triplet hinge: cosines of the tanh'ed codes.
double triplet_reference(const std::vector<double>& a, const std::vector<double>& p, const std::vector<double>& n,
                         double margin) {
  auto cosine = [](const std::vector<double>& x, const std::vector<double>& y) {
    double xy = 0, xx = 0, yy = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      double tx = std::tanh(x[i]), ty = std::tanh(y[i]);
      xy += tx * ty; xx += tx * tx; yy += ty * ty;
    }
    return xy / std::sqrt(std::max(xx, 1e-12) * std::max(yy, 1e-12));
  };
  return std::max(0.0, margin - cosine(a, p) + cosine(a, n));
}

TEST_CASE("hash learning: the triplet hinge and its gradient match a finite-difference reference") {
  const size_t K = 8;
  Rng rng(2024);
  for (int trial = 0; trial < 40; ++trial) {
    CAPTURE(trial);
    std::vector<float> a(K), p(K), n(K), da(K), dp(K), dn(K);
    for (size_t i = 0; i < K; ++i) {
      a[i] = rng.gaussian();
      p[i] = rng.gaussian();
      n[i] = rng.gaussian();
    }
    const float margin = 0.1f + 0.05f * float(trial % 20);
    float loss = triplet_hinge_loss(a.data(), p.data(), n.data(), K, margin, da.data(), dp.data(), dn.data());
    std::vector<double> A(a.begin(), a.end()), P(p.begin(), p.end()), N(n.begin(), n.end());
    const double ref = triplet_reference(A, P, N, margin);
    CHECK(loss == doctest::Approx(ref).epsilon(1e-4));
    CHECK(triplet_hinge_loss(a.data(), p.data(), n.data(), K, margin) == loss);  // no gradient asked
    if (ref < 1e-3) {  // inactive hinge: no gradient
      for (size_t i = 0; i < K; ++i) CHECK((da[i] == 0.0f && dp[i] == 0.0f && dn[i] == 0.0f));
      continue;
    }
    const double h = 1e-5;
    std::vector<double>* vecs[3] = {&A, &P, &N};
    const std::vector<float>* grads[3] = {&da, &dp, &dn};
    for (int which = 0; which < 3; ++which)
      for (size_t i = 0; i < K; ++i) {
        std::vector<double>& v = *vecs[which];
        const double keep = v[i];
        v[i] = keep + h;
        double up = triplet_reference(A, P, N, margin);
        v[i] = keep - h;
        double down = triplet_reference(A, P, N, margin);
        v[i] = keep;
        CHECK((*grads[which])[i] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-3).scale(1.0));
      }
  }
  // A zero query code has no direction: loss = margin, finite gradients.
  std::vector<float> zero(K, 0.0f), p(K, 0.5f), n(K, -0.5f), da(K), dp(K), dn(K);
  CHECK(triplet_hinge_loss(zero.data(), p.data(), n.data(), K, 0.5f, da.data(), dp.data(), dn.data()) == doctest::Approx(0.5f));
  for (size_t i = 0; i < K; ++i) CHECK((std::isfinite(da[i]) && std::isfinite(dp[i]) && std::isfinite(dn[i])));
}

TEST_CASE("scheduler and hash learning: bad settings give clear errors") {
  {
    Config c;
    c.output = OutputMode::lsh;
    // Each float setting: below, NaN and above its range name the field, value and range.
    struct FloatRange {
      float Config::*field;
      float below, above;
      const char* messages[3];  // for below, NaN, above
    };
    const FloatRange ranges[] = {
        {&Config::triplet_margin, 0.0f, 2.5f,
         {"Config.triplet_margin = 0 out of range (0, 2]", "Config.triplet_margin = nan out of range (0, 2]",
          "Config.triplet_margin = 2.5 out of range (0, 2]"}},
        {&Config::tail_drift, -0.1f, 11.0f,
         {"Config.tail_drift = -0.1 out of range [0, 10]", "Config.tail_drift = nan out of range [0, 10]",
          "Config.tail_drift = 11 out of range [0, 10]"}},
    };
    for (const FloatRange& r : ranges) {
      const float valid = c.*r.field;
      const float bad[3] = {r.below, std::nanf(""), r.above};
      for (int i = 0; i < 3; ++i) {
        c.*r.field = bad[i];
        CHECK(validate(c).message() == r.messages[i]);
      }
      c.*r.field = valid;
    }
    c.hash_loss = HashLoss(7);
    CHECK(validate(c).message() == "Config.hash_loss = 7 is not a HashLoss");
  }
  Config c;
  c.output = OutputMode::lsh;
  c.tau = 0;
  CHECK(validate(c).message() == "Config.tau = 0 out of range (0, 1]");
  c = Config();
  c.output = OutputMode::lsh;
  c.detector_bits = 25;
  CHECK(validate(c).message() == "Config.detector_bits = 25 out of range [1, 24]");
  c = Config();
  c.output = OutputMode::lsh;
  c.hash = HashFamily::dwta;
  c.learn_hash = true;
  CHECK(validate(c).message() == "Config.learn_hash needs hash = simhash (DWTA has no projection to learn)");
  c = Config();
  c.output = OutputMode::lsh;
  c.check_every = 0;
  CHECK(validate(c).message() == "Config.check_every = 0 out of range [1, 2^32)");
}
