// Writes the seed corpus of fuzz_model: small valid model files of the current format (12
// features, 4 hidden, 7 labels), each trained for a few batches so the weights and optimizer state
// are not just the initial ones, and one output-layer file. (The v3-*.model files beside them were
// written by the format-3 library and are kept, so the old loader is fuzzed too.)
//   c++ -O2 -std=c++17 -pthread -I. tests/fuzz/make_corpus_model.cpp mongoose.cpp -o /tmp/mk
//   /tmp/mk tests/fuzz/corpus_model
#include <cstdio>
#include <string>

#include "mongoose.h"

namespace {

int make(const std::string& path, mongoose::Config c, bool optimizer_state) {
  mongoose::SyntheticConfig sc;
  sc.train_rows = 64;
  sc.test_rows = 8;
  sc.features = 12;
  sc.labels = 7;
  sc.prototype_features = 2;
  sc.noise_features = 1;
  sc.max_labels = 2;
  mongoose::Dataset train, test;
  mongoose::Status st = mongoose::make_synthetic(sc, &train, &test);
  c.hidden = 4;
  c.batch_size = 16;
  c.threads = 1;
  mongoose::Model m;
  if (st.ok()) st = m.init(c, train.features, train.labels);
  if (st.ok()) st = m.train_epoch(train);
  mongoose::SaveOptions so;
  so.optimizer_state = optimizer_state;
  if (st.ok()) st = mongoose::save_model(m, path, so);
  if (!st.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), st.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  int bad = 0;

  mongoose::Config full;
  full.output = mongoose::OutputMode::full;
  bad += make(dir + "/full.model", full, true);

  // SimHash tables with the incremental scheduler and learned hash functions, no Adam state.
  mongoose::Config lsh;
  lsh.output = mongoose::OutputMode::lsh;
  lsh.K = 3;
  lsh.L = 4;
  lsh.min_active = 2;
  lsh.max_active = 4;
  lsh.bucket_capacity = 4;
  lsh.scheduler = mongoose::Scheduler::incremental;
  lsh.check_every = 1;
  lsh.detector_bits = 4;
  lsh.learn_hash = true;
  lsh.learn_every = 2;
  lsh.learn_queries = 2;
  lsh.hash_steps = 2;
  bad += make(dir + "/lsh-simhash.model", lsh, false);

  // DWTA tables (no projection in HASH), detect scheduler, FIFO buckets, with Adam state.
  mongoose::Config dwta;
  dwta.output = mongoose::OutputMode::lsh;
  dwta.hash = mongoose::HashFamily::dwta;
  dwta.K = 3;
  dwta.L = 3;
  dwta.min_active = 2;
  dwta.max_active = 0;
  dwta.bucket_capacity = 3;
  dwta.bucket_policy = mongoose::BucketPolicy::fifo;
  dwta.scheduler = mongoose::Scheduler::detect;
  dwta.check_every = 2;
  dwta.detector_bits = 3;
  bad += make(dir + "/lsh-dwta.model", dwta, true);

  // A dense input layer and a stack of two hidden layers (format 4's NETW, INP*, HID* sections).
  mongoose::Config stack = full;
  stack.input = mongoose::InputKind::dense;
  stack.hidden_layers = {3, 2};
  bad += make(dir + "/stack-dense.model", stack, true);

  // An output layer on its own (save_layer: OUTC first).
  mongoose::OutputLayer layer;
  mongoose::Config lc = lsh;
  lc.threads = 1;
  mongoose::Status st = layer.init(lc, 4, 7);
  if (st.ok()) st = mongoose::save_layer(layer, dir + "/layer-lsh.model");
  if (!st.ok()) {
    std::fprintf(stderr, "layer-lsh.model: %s\n", st.message().c_str());
    ++bad;
  }
  return bad ? 1 : 0;
}
