// libFuzzer target: arbitrary bytes as a model file through mongoose::load_model.
//
// Each input is written to a per-process temporary file and loaded with a small memory budget.
// Sections carry CRC-32C checksums that random mutations almost never satisfy, so the harness also
// loads a repaired copy: the section framing is walked and every checksum recomputed, which lets
// mutations of the payloads (shapes, settings, weights, codes) reach the code behind the checks.
// In that copy the `threads` field (of CONF in format versions 1-3, of NETW and OUTC in version 4)
// is clamped to 2 so a mutated file cannot make every run start up to 1024 worker threads (a
// legal setting, but it only slows the fuzzer down). Every input is also given to load_layer.
//
// When a file loads, the model must: predict (full, and lsh for lsh models), save, load back
// exactly (weights and full-mode scores bit for bit), and survive one training step. Any
// violation aborts so libFuzzer keeps the input.
//
// Built by `meson setup build-fuzz -Dfuzz=true` with clang (see meson.build); run as
//   build-fuzz/fuzz-model -max_total_time=60 CORPUS_DIR tests/fuzz/corpus_model
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <unistd.h>

#include "mongoose.h"

namespace {

[[noreturn]] void violated(const char* what, const std::string& detail = std::string()) {
  std::fprintf(stderr, "fuzz_model: invariant violated: %s%s%s\n", what, detail.empty() ? "" : ": ",
               detail.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) violated(#cond); \
  } while (0)

#define FUZZ_CHECK_OK(status_expr)                    \
  do {                                                \
    mongoose::Status fuzz_st_ = (status_expr);        \
    if (!fuzz_st_.ok()) violated(#status_expr, fuzz_st_.message()); \
  } while (0)

// Per-process scratch files (parallel fuzzing jobs must not share them).
std::string scratch_path(const char* what) {
  static const std::string base = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/mongoose-fuzz-model-" + std::to_string(getpid());
  }();
  return base + "-" + what + ".bin";
}

bool write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = std::fwrite(data, 1, size, f) == size;
  ok = (std::fclose(f) == 0) && ok;
  return ok;
}

uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t((v >> (8 * i)) & 0xFF);
}

// Where a section's thread count is, or SIZE_MAX: CONF (versions 1-3) after hidden, output, lr,
// beta1, beta2, eps and batch; NETW after input kind, features (u64), hidden, the layer count and
// widths, lr, beta1, beta2, eps and batch; OUTC after its 32 output-layer fields and the same five.
size_t threads_offset(const uint8_t* tag, const uint8_t* payload, uint64_t len) {
  size_t at = SIZE_MAX;
  if (std::memcmp(tag, "CONF", 4) == 0) at = 7 * 4;
  if (std::memcmp(tag, "NETW", 4) == 0 && len >= 20) at = 20 + 4 * size_t(std::min<uint32_t>(get_u32(payload + 16), 64)) + 20;
  if (std::memcmp(tag, "OUTC", 4) == 0) at = 32 * 4 + 20;
  return at != SIZE_MAX && len >= at + 4 ? at : SIZE_MAX;
}

// Calls fn(tag, payload, length) for each section as far as the framing holds.
template <class F>
void for_each_section(uint8_t* data, size_t size, F&& fn) {
  size_t pos = 16;
  while (size >= 16 && pos <= size && size - pos >= 12 + 4) {
    uint64_t len = get_u64(&data[pos + 4]);
    if (len > size - pos - 12 - 4) break;
    fn(&data[pos], &data[pos + 12], len);
    pos += size_t(12 + len + 4);
  }
}

// The repaired copy: thread counts clamped to 2 and each section's CRC-32C recomputed.
std::vector<uint8_t> repaired(const uint8_t* data, size_t size) {
  std::vector<uint8_t> out(data, data + size);
  for_each_section(out.data(), size, [](uint8_t* tag, uint8_t* payload, uint64_t len) {
    const size_t at = threads_offset(tag, payload, len);
    if (at != SIZE_MAX && get_u32(payload + at) > 2) put_u32(payload + at, 2);
    put_u32(payload + len, mongoose::crc32c(tag, size_t(12 + len)));
  });
  return out;
}

// True when some section (checksum or not) asks for more than 2 threads.
bool asks_for_threads(const uint8_t* data, size_t size) {
  std::vector<uint8_t> copy(data, data + size);
  bool many = false;
  for_each_section(copy.data(), size, [&](uint8_t* tag, uint8_t* payload, uint64_t len) {
    const size_t at = threads_offset(tag, payload, len);
    many = many || (at != SIZE_MAX && get_u32(payload + at) > 2);
  });
  return many;
}

std::vector<mongoose::Scored> predict(const mongoose::Model& m, mongoose::InferMode mode) {
  const uint32_t last = uint32_t(m.features() - 1);
  const uint32_t ids[2] = {0, last};
  const float values[2] = {1.0f, -0.5f};
  std::vector<mongoose::Scored> out;
  FUZZ_CHECK_OK(m.predict(ids, values, last == 0 ? 1 : 2, 3, mode, &out));
  FUZZ_CHECK(out.size() <= 3);
  if (mode == mongoose::InferMode::full) FUZZ_CHECK(out.size() == std::min<size_t>(3, m.labels()));
  for (size_t i = 0; i < out.size(); ++i) {
    FUZZ_CHECK(out[i].label < m.labels());
    for (size_t j = 0; j < i; ++j) FUZZ_CHECK(out[i].label != out[j].label);
  }
  return out;
}

bool same_scores(const std::vector<mongoose::Scored>& a, const std::vector<mongoose::Scored>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].label != b[i].label || std::memcmp(&a[i].score, &b[i].score, sizeof(float)) != 0) return false;
  return true;
}

bool same_floats(const float* a, const float* b, size_t n) { return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0; }

// A model that loaded: predict, save, load back, compare, then train one batch.
void exercise(mongoose::Model& m) {
  FUZZ_CHECK(m.initialized() && m.features() >= 1 && m.labels() >= 1);
  const bool lsh = m.config().output == mongoose::OutputMode::lsh;
  std::vector<mongoose::Scored> full = predict(m, mongoose::InferMode::full);
  std::vector<mongoose::Scored> sampled;
  if (lsh) sampled = predict(m, mongoose::InferMode::lsh);

  const std::string saved = scratch_path("saved");
  FUZZ_CHECK_OK(mongoose::save_model(m, saved));
  mongoose::Model back;
  FUZZ_CHECK_OK(mongoose::load_model(saved, &back));
  std::remove(saved.c_str());
  FUZZ_CHECK(back.features() == m.features() && back.labels() == m.labels());
  mongoose::Model::Weights a = m.weights(), b = back.weights();
  FUZZ_CHECK(a.hidden == b.hidden && a.output_stride == b.output_stride);
  FUZZ_CHECK(same_floats(a.W1, b.W1, a.features * a.hidden));
  FUZZ_CHECK(same_floats(a.b1, b.b1, a.hidden));
  FUZZ_CHECK(same_floats(a.W2, b.W2, a.labels * a.output_stride));
  FUZZ_CHECK(a.hidden_layers.size() == b.hidden_layers.size());
  for (size_t l = 0; l < a.hidden_layers.size(); ++l)
    FUZZ_CHECK(same_floats(a.hidden_layers[l].W, b.hidden_layers[l].W, a.hidden_layers[l].inputs * a.hidden_layers[l].outputs));
  FUZZ_CHECK(same_scores(full, predict(back, mongoose::InferMode::full)));
  if (lsh) FUZZ_CHECK(same_scores(sampled, predict(back, mongoose::InferMode::lsh)));

  // One training step on two tiny rows (may diverge on extreme weights: then a clean error).
  mongoose::Dataset d;
  d.features = m.features();
  d.labels = m.labels();
  const uint32_t f[2] = {0, uint32_t(m.features() - 1)};
  const float v[2] = {1.0f, 0.25f};
  const uint32_t l[2] = {0, uint32_t(m.labels() - 1)};
  FUZZ_CHECK_OK(d.add_row(f, v, 1, l, 1));
  FUZZ_CHECK_OK(d.add_row(f, v, m.features() > 1 ? 2 : 1, l, m.labels() > 1 ? 2 : 1));
  const uint32_t rows[2] = {0, 1};
  float loss = 0;
  mongoose::Status st = m.train_batch(d, rows, 2, &loss);
  FUZZ_CHECK(st.ok() || !st.message().empty());
  predict(m, mongoose::InferMode::full);
  if (lsh) predict(m, mongoose::InferMode::lsh);
}

// A layer that loaded: topk, save, load back to the same scores, one training step.
void exercise_layer(mongoose::OutputLayer& layer) {
  const size_t d = layer.input_dim();
  std::vector<float> h(d, 0.5f);
  std::vector<std::vector<mongoose::Scored>> a, b;
  FUZZ_CHECK_OK(layer.topk(h.data(), 1, d, 3, mongoose::InferMode::full, &a));
  const std::string saved = scratch_path("layer");
  FUZZ_CHECK_OK(mongoose::save_layer(layer, saved));
  mongoose::OutputLayer back;
  FUZZ_CHECK_OK(mongoose::load_layer(saved, &back));
  std::remove(saved.c_str());
  FUZZ_CHECK_OK(back.topk(h.data(), 1, d, 3, mongoose::InferMode::full, &b));
  FUZZ_CHECK(same_scores(a[0], b[0]));
  const uint32_t labels[1] = {0};
  const uint64_t offsets[2] = {0, 1};
  mongoose::LayerBatch batch;
  batch.inputs = h.data();
  batch.rows = 1;
  batch.labels = labels;
  batch.label_offsets = offsets;
  mongoose::Status st = layer.train(batch);
  FUZZ_CHECK(st.ok() || !st.message().empty());
}

void try_load(const uint8_t* data, size_t size) {
  const std::string path = scratch_path("input");
  if (!write_file(path, data, size)) violated("cannot write the scratch file", path);
  mongoose::LoadOptions options;
  options.max_bytes = size_t(64) << 20;
  mongoose::Model m;
  mongoose::Status st = mongoose::load_model(path, &m, options);
  mongoose::OutputLayer layer;
  mongoose::Status layer_st = mongoose::load_layer(path, &layer, options);
  std::remove(path.c_str());
  FUZZ_CHECK(!(st.ok() && layer_st.ok()));  // a file is a model or a layer, never both
  if (layer_st.ok()) exercise_layer(layer);
  FUZZ_CHECK(layer_st.ok() || !layer.initialized());
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    FUZZ_CHECK(!m.initialized());  // *out is left as it was
    return;
  }
  exercise(m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> fixed = repaired(data, size);
  const bool clamped = asks_for_threads(data, size);
  // As is (unless that would run with more than 2 threads), then repaired when different.
  if (!clamped) try_load(data, size);
  if (size && std::memcmp(fixed.data(), data, size) != 0) try_load(fixed.data(), fixed.size());
  return 0;
}
