// mongoose-layer: the sampled output layer under an encoder of your own.
//
//   c++ -O2 -std=c++17 -pthread examples/layer.cpp mongoose.cpp -o mongoose-layer
//   ./mongoose-layer [TRAIN TEST] [--epochs 5] [--output lsh|full]
//
// The encoder here is written in this file, not taken from the library: an embedding bag over the
// sparse input, h = ReLU(b + sum_k x_k E[id_k]) with H = 128, trained with lazy Adam (only the rows
// of features present in a batch move). It is the same network Model builds, so the two should
// reach the same P@1; any other encoder (a recurrent or convolutional one, a ranking model's
// tower) plugs in the same way: give the layer a batch of hidden vectors and the rows' labels, get
// back the loss and dL/dh, back-propagate that through your encoder.
//
// Without TRAIN TEST it uses ../shared/data/citeulike-t when that folder exists, else synthetic
// data it makes itself. Prints one line: "layer output=... epochs=... train_seconds=... p@1=...".

#include "../mongoose.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// The encoder: E (D x H) and b (H) with their Adam moments, updated lazily row by row.
class EmbeddingBag {
 public:
  EmbeddingBag(size_t features, size_t hidden, uint64_t seed) : D_(features), H_(hidden) {
    mongoose::Rng rng(seed);
    const float bound = 1.0f / std::sqrt(float(D_));  // as PyTorch's Linear
    E_.resize(D_ * H_);
    for (float& w : E_) w = (2.0f * rng.uniform() - 1.0f) * bound;
    b_.resize(H_);
    for (float& w : b_) w = (2.0f * rng.uniform() - 1.0f) * bound;
    Em_.assign(E_.size(), 0.0f);
    Ev_.assign(E_.size(), 0.0f);
    bm_.assign(H_, 0.0f);
    bv_.assign(H_, 0.0f);
  }
  size_t width() const { return H_; }

  // h (n x H) for n rows.
  void forward(const mongoose::Dataset& data, const uint32_t* rows, size_t n, float* h) const {
    for (size_t i = 0; i < n; ++i) {
      const mongoose::Dataset::Row r = data.row(rows[i]);
      float* out = h + i * H_;
      std::memcpy(out, b_.data(), H_ * sizeof(float));
      k_.sparse_matvec(r.ids, r.values, r.nnz, E_.data(), H_, H_, out);
      k_.relu(out, H_);
    }
  }

  // One Adam step from dL/dh (n x H; h from forward): through the ReLU, then the rows present.
  void backward(const mongoose::Dataset& data, const uint32_t* rows, size_t n, const float* h, float* dh) {
    const mongoose::AdamStep step = mongoose::AdamStep::at(1e-3f, 0.9f, 0.999f, 1e-8f, ++t_);
    std::vector<float> db(H_, 0.0f);
    // Each row's gradient is the sum, over the batch's examples containing the feature, of
    // value * dh; gathered per feature first so every touched row gets one Adam step.
    touched_.clear();
    for (size_t i = 0; i < n; ++i) {
      float* g = dh + i * H_;
      k_.relu_backward(h + i * H_, g, H_);
      k_.add(g, db.data(), H_);
      const mongoose::Dataset::Row r = data.row(rows[i]);
      for (size_t j = 0; j < r.nnz; ++j) {
        std::vector<float>& acc = row_grad(r.ids[j]);
        k_.axpy(r.values[j], g, acc.data(), H_);
      }
    }
    for (size_t t = 0; t < touched_.size(); ++t) {
      const size_t f = touched_[t];
      k_.adam(&E_[f * H_], grads_[t].data(), &Em_[f * H_], &Ev_[f * H_], H_, step);
      slot_[f] = 0;
    }
    k_.adam(b_.data(), db.data(), bm_.data(), bv_.data(), H_, step);
  }

 private:
  // The gradient accumulator of feature f in this batch (zeroed on first use).
  std::vector<float>& row_grad(uint32_t f) {
    if (slot_.size() < D_) slot_.assign(D_, 0);
    if (!slot_[f]) {
      touched_.push_back(f);
      if (grads_.size() < touched_.size()) grads_.emplace_back(H_);
      slot_[f] = uint32_t(touched_.size());
      std::vector<float>& g = grads_[touched_.size() - 1];
      std::fill(g.begin(), g.end(), 0.0f);
    }
    return grads_[slot_[f] - 1];
  }

  size_t D_, H_;
  std::vector<float> E_, b_, Em_, Ev_, bm_, bv_;
  uint64_t t_ = 0;
  const mongoose::Kernels& k_ = mongoose::kernels();
  std::vector<uint32_t> slot_, touched_;
  std::vector<std::vector<float>> grads_;
};

// P@1 and P@5 of the encoder and the layer over every row of `data`.
mongoose::Status evaluate(const EmbeddingBag& enc, const mongoose::OutputLayer& layer, const mongoose::Dataset& data,
                          double* p1, double* p5) {
  const size_t chunk = 256;
  std::vector<uint32_t> rows(chunk);
  std::vector<float> h(chunk * enc.width());
  std::vector<std::vector<mongoose::Scored>> top;
  double hits1 = 0, hits5 = 0;
  for (size_t r0 = 0; r0 < data.rows; r0 += chunk) {
    const size_t n = std::min(chunk, data.rows - r0);
    for (size_t i = 0; i < n; ++i) rows[i] = uint32_t(r0 + i);
    enc.forward(data, rows.data(), n, h.data());
    mongoose::Status st = layer.topk(h.data(), n, enc.width(), 5, mongoose::InferMode::full, &top);
    if (!st.ok()) return st;
    for (size_t i = 0; i < n; ++i) {
      const mongoose::Dataset::Row row = data.row(r0 + i);
      auto is_label = [&](uint32_t l) {
        for (size_t j = 0; j < row.num_labels; ++j)
          if (row.labels[j] == l) return true;
        return false;
      };
      for (size_t j = 0; j < top[i].size(); ++j) {
        if (!is_label(top[i][j].label)) continue;
        hits5 += 1;
        if (j == 0) hits1 += 1;
      }
    }
  }
  *p1 = data.rows ? hits1 / double(data.rows) : 0;
  *p5 = data.rows ? hits5 / (5.0 * double(data.rows)) : 0;
  return mongoose::Status();
}

mongoose::Status load_data(int argc, char** argv, mongoose::Dataset* train, mongoose::Dataset* test, std::string* name) {
  std::string tr, te;
  if (argc >= 3 && argv[1][0] != '-') {
    tr = argv[1];
    te = argv[2];
  } else {
    const std::string dir = "../shared/data/citeulike-t/";
    std::FILE* probe = std::fopen((dir + "citeulike-t_train.txt").c_str(), "rb");
    if (probe) {
      std::fclose(probe);
      tr = dir + "citeulike-t_train.txt";
      te = dir + "citeulike-t_test.txt";
    }
  }
  if (tr.empty()) {
    *name = "synthetic";
    mongoose::SyntheticConfig sc;  // 20,000 train / 5,000 test rows, 5,000 features
    sc.labels = 20000;
    return mongoose::make_synthetic(sc, train, test);
  }
  *name = tr;
  mongoose::Status st = mongoose::read_xc(tr, train);
  if (st.ok()) st = mongoose::read_xc(te, test);
  if (st.ok() && (test->features != train->features || test->labels != train->labels))
    st = mongoose::Status::error(te + ": not the same data set as " + tr);
  return st;
}

}  // namespace

int main(int argc, char** argv) {
  int epochs = 5;
  mongoose::Config cfg;  // the output layer's settings: the library's defaults
  cfg.output = mongoose::OutputMode::lsh;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--epochs" && i + 1 < argc) epochs = std::atoi(argv[++i]);
    else if (a == "--output" && i + 1 < argc) cfg.output = std::string(argv[++i]) == "full" ? mongoose::OutputMode::full : mongoose::OutputMode::lsh;
  }
  mongoose::Dataset train, test;
  std::string name;
  mongoose::Status st = load_data(argc, argv, &train, &test, &name);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-layer: %s\n", st.message().c_str());
    return 1;
  }
  const size_t H = 128;
  EmbeddingBag encoder(train.features, H, 42);
  mongoose::OutputLayer layer;
  st = layer.init(cfg, H, train.labels);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-layer: %s\n", st.message().c_str());
    return 1;
  }

  const size_t B = cfg.batch_size;
  std::vector<uint32_t> order(train.rows), batch_labels;
  std::vector<uint64_t> offsets;
  std::vector<float> h(B * H), dh(B * H);
  mongoose::Rng rng(7);
  double seconds = 0;
  for (int epoch = 0; st.ok() && epoch < epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < order.size(); ++i) order[i] = uint32_t(i);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(uint32_t(i))]);
    for (size_t b0 = 0; st.ok() && b0 < order.size(); b0 += B) {
      const size_t n = std::min(B, order.size() - b0);
      const uint32_t* rows = &order[b0];
      encoder.forward(train, rows, n, h.data());
      // The batch's labels in CSR form, as the layer takes them.
      batch_labels.clear();
      offsets.assign(1, 0);
      for (size_t i = 0; i < n; ++i) {
        const mongoose::Dataset::Row r = train.row(rows[i]);
        batch_labels.insert(batch_labels.end(), r.labels, r.labels + r.num_labels);
        offsets.push_back(batch_labels.size());
      }
      mongoose::LayerBatch batch;
      batch.inputs = h.data();
      batch.rows = n;
      batch.labels = batch_labels.data();
      batch.label_offsets = offsets.data();
      float loss = 0;
      st = layer.train(batch, &loss, dh.data());  // the layer updates itself; dL/dh comes back
      if (st.ok()) encoder.backward(train, rows, n, h.data(), dh.data());
    }
    if (st.ok()) st = layer.refresh();  // the shortlist (and tables) for InferMode::lsh
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  double p1 = 0, p5 = 0;
  if (st.ok()) st = evaluate(encoder, layer, test, &p1, &p5);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-layer: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("layer data=%s output=%s epochs=%d train_seconds=%.2f p@1=%.4f p@5=%.4f\n", name.c_str(),
              cfg.output == mongoose::OutputMode::lsh ? "lsh" : "full", epochs, seconds, p1, p5);
  return 0;
}
