// bench/layers.cpp - network shapes through Model: the default (sparse input -> 128 -> output), a
// stack of two hidden layers (sparse input -> 256 -> 128 -> output), and the dense input layer on
// a dense copy of the data (every feature listed in every row, absent ones as 0), trained side by
// side on delicious and bibtex with the full softmax and the LSH layer.
//
// Build:  c++ -O2 -std=c++17 -pthread bench/layers.cpp mongoose.cpp -o bench-layers
// Run:    ./bench-layers [--data ../shared/data] [--epochs 8] [--threads 2]
//
// Prints one line per run: dataset, variant, output mode, best and final P@1 (full inference
// after every epoch, on the whole test file), P@5 at the best epoch, training seconds per epoch
// (Model::stats().seconds, evaluation excluded) and parameter bytes. A missing dataset is reported
// as skipped.

#include "../mongoose.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Variant {
  const char* name;
  mongoose::InputKind input;
  uint32_t hidden;
  std::vector<uint32_t> stack;
};

// Every row with all D features, absent ones as 0: what a dense input looks like.
mongoose::Status densify(const mongoose::Dataset& in, mongoose::Dataset* out) {
  out->features = in.features;
  out->labels = in.labels;
  std::vector<uint32_t> ids(in.features);
  std::vector<float> values(in.features);
  for (size_t f = 0; f < in.features; ++f) ids[f] = uint32_t(f);
  for (size_t r = 0; r < in.rows; ++r) {
    const mongoose::Dataset::Row row = in.row(r);
    std::fill(values.begin(), values.end(), 0.0f);
    for (size_t k = 0; k < row.nnz; ++k) values[row.ids[k]] = row.values[k];
    mongoose::Status st = out->add_row(ids.data(), values.data(), ids.size(), row.labels, row.num_labels);
    if (!st.ok()) return st;
  }
  return mongoose::Status();
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = "../shared/data";
  int epochs = 8;
  uint32_t threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--data") data = argv[i + 1];
    else if (a == "--epochs") epochs = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = uint32_t(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "usage: bench-layers [--data DIR] [--epochs 8] [--threads 2]\n");
      return 2;
    }
  }
  const Variant variants[] = {
      {"sparse-128", mongoose::InputKind::sparse, 128, {}},
      {"sparse-256-128", mongoose::InputKind::sparse, 256, {128}},
      {"dense-128", mongoose::InputKind::dense, 128, {}},
      {"dense-256-128", mongoose::InputKind::dense, 256, {128}},
  };
  std::printf("bench-layers: epochs=%d threads=%u (batch 128, Adam 1e-3; dense variants train on the dense copy)\n",
              epochs, threads);
  for (const char* set : {"delicious", "bibtex"}) {
    mongoose::Dataset train, test, dense_train, dense_test;
    const std::string dir = data + "/" + set + "/" + set;
    mongoose::Status st = mongoose::read_xc(dir + "_train.txt", &train);
    if (st.ok()) st = mongoose::read_xc(dir + "_test.txt", &test);
    if (!st.ok()) {
      std::printf("%s: skipped: %s\n", set, st.message().c_str());
      continue;
    }
    if (st.ok()) st = densify(train, &dense_train);
    if (st.ok()) st = densify(test, &dense_test);
    if (!st.ok()) {
      std::fprintf(stderr, "bench-layers: %s\n", st.message().c_str());
      return 1;
    }
    for (mongoose::OutputMode output : {mongoose::OutputMode::full, mongoose::OutputMode::lsh}) {
      for (const Variant& v : variants) {
        const bool dense = v.input == mongoose::InputKind::dense;
        const mongoose::Dataset& tr = dense ? dense_train : train;
        const mongoose::Dataset& te = dense ? dense_test : test;
        mongoose::Config cfg;
        cfg.input = v.input;
        cfg.hidden = v.hidden;
        cfg.hidden_layers = v.stack;
        cfg.output = output;
        cfg.threads = threads;
        mongoose::Model model;
        st = model.init(cfg, tr.features, tr.labels);
        double best = 0, final_p1 = 0, best_p5 = 0;
        for (int e = 0; st.ok() && e < epochs; ++e) {
          st = model.train_epoch(tr);
          mongoose::Metrics m;
          if (st.ok()) st = model.evaluate(te, mongoose::InferMode::full, &m);
          if (!st.ok()) break;
          final_p1 = m.p_at_1;
          if (m.p_at_1 > best) best = m.p_at_1, best_p5 = m.p_at_5;
        }
        if (!st.ok()) {
          std::fprintf(stderr, "bench-layers: %s %s: %s\n", set, v.name, st.message().c_str());
          return 1;
        }
        std::printf("run %-9s %-15s output=%-4s best_p@1=%.4f final_p@1=%.4f p@5=%.4f s_per_epoch=%.3f params_mb=%.1f\n", set,
                    v.name, output == mongoose::OutputMode::full ? "full" : "lsh", best, final_p1, best_p5,
                    model.stats().seconds / epochs, double(model.parameter_bytes()) / 1e6);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
