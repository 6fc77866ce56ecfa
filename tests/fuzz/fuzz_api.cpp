// libFuzzer target: the public API driven by a byte string read as a program of calls.
//
// The bytes choose, one call at a time: datasets built with add_row or filled in by hand (with
// broken invariants: ids beyond the counts, offsets past the end, NaN and huge values,
// duplicates), Configs with any mix of settings (small shapes, both output modes, every scheduler,
// learned hashing, exact retrieval, tiny memory budgets), and calls in any order: init, train_batch
// (rows out of range too), train_epoch, evaluate, predict, retrieval_recall, save and load,
// normalize_rows, validate, write_xc and read_xc. Nothing may crash or trip a sanitizer, and the
// promises hold: a dataset validate() refuses is refused by every call that takes it and leaves
// the model's saved bytes unchanged; a model that saves loads back; read_xc gives back what
// write_xc wrote.
//
// Built by `meson setup build-fuzz -Dfuzz=true` with clang (see meson.build); run as
//   build-fuzz/fuzz-api -max_total_time=60 CORPUS_DIR tests/fuzz/corpus_api
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "mongoose.h"

namespace {

[[noreturn]] void violated(const char* what, const std::string& detail = std::string()) {
  std::fprintf(stderr, "fuzz_api: invariant violated: %s%s%s\n", what, detail.empty() ? "" : ": ", detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond, detail) \
  do {                           \
    if (!(cond)) violated(#cond, detail); \
  } while (0)

// Reads the program: small integers and choices from the bytes, zeros once they run out.
class Bytes {
 public:
  Bytes(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool done() const { return pos_ >= n_; }
  uint8_t byte() { return pos_ < n_ ? p_[pos_++] : 0; }
  uint32_t below(uint32_t n) { return n ? (uint32_t(byte()) | uint32_t(byte()) << 8) % n : 0; }
  bool flag() { return byte() & 1; }
  float value() {
    switch (byte() % 16) {
      case 0: return std::nanf("");
      case 1: return INFINITY;
      case 2: return 3e38f;
      case 3: return -1e18f;
      case 4: return 0.0f;
      case 5: return 1e-40f;
      default: return float(int(byte()) - 128) / 16.0f;
    }
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
};

std::string scratch_path(const char* what) {
  static const std::string base = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/mongoose-fuzz-api-" + std::to_string(getpid());
  }();
  return base + "-" + what;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A dataset from the bytes: rows through add_row (which may refuse some), then perhaps one
// invariant broken by hand.
mongoose::Dataset make_dataset(Bytes& in) {
  mongoose::Dataset d;
  d.features = 1 + in.below(48);
  d.labels = 1 + in.below(24);
  const uint32_t rows = in.below(40);
  std::vector<uint32_t> ids, labels;
  std::vector<float> values;
  for (uint32_t r = 0; r < rows; ++r) {
    ids.clear();
    labels.clear();
    values.clear();
    const uint32_t nnz = in.below(6), nl = in.below(4);
    const bool wild = in.below(8) == 0;  // out-of-range ids and odd values now and then
    for (uint32_t k = 0; k < nnz; ++k) {
      ids.push_back(wild ? in.below(64) : uint32_t(in.below(uint32_t(d.features))));
      values.push_back(wild ? in.value() : 1.0f + float(in.below(8)) / 4.0f);
    }
    for (uint32_t k = 0; k < nl; ++k) labels.push_back(in.below(uint32_t(d.labels)));
    (void)d.add_row(ids.data(), values.data(), ids.size(), labels.data(), labels.size());
  }
  switch (in.below(12)) {
    case 0: if (!d.feature_ids.empty()) d.feature_ids[in.below(uint32_t(d.feature_ids.size()))] = uint32_t(d.features); break;
    case 1: if (!d.label_ids.empty()) d.label_ids[in.below(uint32_t(d.label_ids.size()))] = uint32_t(d.labels + in.below(5)); break;
    case 2: if (d.rows) d.row_offsets[1 + in.below(uint32_t(d.rows))] += 1 + in.below(1000); break;
    case 3: if (!d.feature_values.empty()) d.feature_values[in.below(uint32_t(d.feature_values.size()))] = in.value(); break;
    case 4: if (d.rows) d.label_offsets.pop_back(); break;
    case 5: if (!d.feature_ids.empty()) d.feature_values.pop_back(); break;
    case 6: d.features = in.flag() ? 0 : size_t(1) << 32; break;
    case 7: if (d.feature_ids.size() >= 2) d.feature_ids[1] = d.feature_ids[0]; break;
    default: break;  // most datasets stay valid
  }
  return d;
}

mongoose::Config make_config(Bytes& in) {
  mongoose::Config c;
  c.hidden = 1 + in.below(12);
  c.output = in.flag() ? mongoose::OutputMode::lsh : mongoose::OutputMode::full;
  c.batch_size = 1 + in.below(12);
  c.threads = 1 + in.below(2);
  c.seed = in.byte();
  c.learning_rate = in.flag() ? 0.01f : 0.5f;
  c.K = 1 + in.below(6);
  c.L = 1 + in.below(6);
  c.bucket_capacity = 1 + in.below(6);
  c.bucket_policy = in.flag() ? mongoose::BucketPolicy::fifo : mongoose::BucketPolicy::reservoir;
  c.hash = in.below(4) == 0 ? mongoose::HashFamily::dwta : mongoose::HashFamily::simhash;
  c.min_active = in.below(40);
  c.max_active = in.below(8) == 0 ? 0xFFFFFFFFu : in.below(20);
  c.exact_retrieval = in.below(6) == 0;
  c.sampling_correction = in.flag();
  c.tail_drift = float(in.below(4)) * 0.5f;
  c.infer_shortlist = in.below(10);
  c.rehash_every = in.below(5);
  c.scheduler = mongoose::Scheduler(in.below(3));
  c.check_every = 1 + in.below(4);
  c.detector_bits = 1 + in.below(16);
  c.detector_sample = in.below(20);
  c.learn_hash = c.hash == mongoose::HashFamily::simhash && in.flag();
  c.learn_every = in.below(4);
  c.learn_queries = 1 + in.below(4);
  c.hash_steps = 1 + in.below(4);
  c.hash_loss = in.flag() ? mongoose::HashLoss::triplet : mongoose::HashLoss::bce;
  if (in.below(10) == 0) c.max_bytes = in.below(100000);  // a budget too small for most shapes
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  mongoose::Dataset ds = make_dataset(in);
  mongoose::Model model;
  const std::string model_path = scratch_path("model.bin"), state_path = scratch_path("state.bin");
  const std::string xc_path = scratch_path("data.txt");
  for (int call = 0; call < 24 && !in.done(); ++call) {
    const bool valid = mongoose::validate(ds).ok();
    // The model's saved bytes before a call that must refuse an invalid dataset.
    std::string before;
    if (model.initialized() && !valid && mongoose::save_model(model, state_path).ok()) before = file_bytes(state_path);
    auto unchanged = [&](const char* what) {
      if (before.empty()) return;
      FUZZ_CHECK(mongoose::save_model(model, state_path).ok(), what);
      FUZZ_CHECK(file_bytes(state_path) == before, what);
    };
    switch (in.below(12)) {
      case 0: ds = make_dataset(in); break;
      case 1: {
        mongoose::Config c = make_config(in);
        (void)model.init(c, ds.features ? ds.features : 1, ds.labels ? ds.labels : 1);
        break;
      }
      case 2: {
        std::vector<uint32_t> rows(1 + in.below(8));
        for (uint32_t& r : rows) r = in.below(uint32_t(ds.rows) + 2);
        (void)model.train_batch(ds, rows.data(), rows.size());  // checks only the rows it uses
        break;
      }
      case 3: {
        mongoose::Status st = model.train_epoch(ds);
        if (!valid) {
          FUZZ_CHECK(!st.ok(), "train_epoch accepted an invalid dataset");
          unchanged("train_epoch changed the model on an invalid dataset");
        }
        break;
      }
      case 4: {
        mongoose::Metrics m;
        mongoose::Status st = model.evaluate(ds, in.flag() ? mongoose::InferMode::lsh : mongoose::InferMode::full, &m);
        if (!valid) FUZZ_CHECK(!st.ok(), "evaluate accepted an invalid dataset");
        if (st.ok()) FUZZ_CHECK(m.p_at_1 >= 0 && m.p_at_1 <= 1, "P@1 out of [0, 1]");
        break;
      }
      case 5: {
        uint32_t ids[6];
        float values[6];
        const uint32_t nnz = in.below(6);
        for (uint32_t k = 0; k < nnz; ++k) {
          ids[k] = in.below(64);
          values[k] = in.value();
        }
        std::vector<mongoose::Scored> top;
        mongoose::Status st = model.predict(ids, values, nnz, 1 + in.below(8), in.flag() ? mongoose::InferMode::lsh : mongoose::InferMode::full, &top);
        if (st.ok())
          for (const mongoose::Scored& s : top) FUZZ_CHECK(s.label < model.labels(), "predicted label out of range");
        break;
      }
      case 6: {
        double recall = 0, kept = 0;
        mongoose::Status st = model.retrieval_recall(ds, 1 + in.below(20), 1 + in.below(4), &recall, &kept);
        if (st.ok()) FUZZ_CHECK(recall >= 0 && recall <= 1, "recall out of [0, 1]");
        break;
      }
      case 7: {
        if (!model.initialized()) break;
        if (mongoose::save_model(model, model_path).ok()) {
          mongoose::Model back;
          mongoose::Status st = mongoose::load_model(model_path, &back);
          FUZZ_CHECK(st.ok(), "a saved model does not load: " + st.message());
          FUZZ_CHECK(back.labels() == model.labels() && back.features() == model.features(), "shapes changed");
        }
        break;
      }
      case 8: (void)mongoose::normalize_rows(&ds); break;
      case 9: {
        mongoose::Status st = mongoose::write_xc(xc_path, ds);
        FUZZ_CHECK(st.ok() == valid, "write_xc and validate disagree: " + st.message());
        if (st.ok()) {
          mongoose::Dataset back;
          st = mongoose::read_xc(xc_path, &back);
          FUZZ_CHECK(st.ok(), "read_xc refuses what write_xc wrote: " + st.message());
          FUZZ_CHECK(back.rows == ds.rows && back.feature_ids == ds.feature_ids && back.label_ids == ds.label_ids,
                     "write_xc then read_xc changed the rows");
        }
        break;
      }
      case 10: {
        mongoose::Model other;
        (void)mongoose::load_model(model_path, &other);
        if (other.initialized()) model = std::move(other);
        break;
      }
      default: {
        if (!model.initialized()) break;
        mongoose::Dataset copy = ds;
        (void)model.train_epoch(copy);
        break;
      }
    }
  }
  std::remove(model_path.c_str());
  std::remove(state_path.c_str());
  std::remove(xc_path.c_str());
  return 0;
}
