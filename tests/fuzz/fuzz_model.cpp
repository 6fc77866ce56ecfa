// libFuzzer target: arbitrary bytes as a model file through mongoose::load_model.
//
// Each input is written to a per-process temporary file and loaded with a small memory budget.
// Sections carry CRC-32C checksums that random mutations almost never satisfy, so the harness also
// loads a repaired copy: the section framing is walked and every checksum recomputed, which lets
// mutations of the payloads (shapes, settings, weights, codes) reach the code behind the checks.
// In that copy the CONF `threads` field is clamped to 2 so a mutated file cannot make every run
// start up to 1024 worker threads (a legal setting, but it only slows the fuzzer down).
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

// The repaired copy: walks "MONGOOSE" + version + count, then tag, u64 length, payload, CRC as
// far as the framing holds, clamping CONF's threads and recomputing each section's CRC-32C.
std::vector<uint8_t> repaired(const uint8_t* data, size_t size) {
  std::vector<uint8_t> out(data, data + size);
  const size_t kThreadsOffset = 7 * 4;  // CONF: hidden, output, lr, beta1, beta2, eps, batch, threads
  size_t pos = 16;
  while (size >= 16 && pos <= size && size - pos >= 12 + 4) {
    uint64_t len = get_u64(&out[pos + 4]);
    if (len > size - pos - 12 - 4) break;
    uint8_t* payload = &out[pos + 12];
    if (std::memcmp(&out[pos], "CONF", 4) == 0 && len >= kThreadsOffset + 4 &&
        get_u32(payload + kThreadsOffset) > 2)
      put_u32(payload + kThreadsOffset, 2);
    put_u32(payload + len, mongoose::crc32c(&out[pos], size_t(12 + len)));
    pos += size_t(12 + len + 4);
  }
  return out;
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

void try_load(const uint8_t* data, size_t size) {
  const std::string path = scratch_path("input");
  if (!write_file(path, data, size)) violated("cannot write the scratch file", path);
  mongoose::LoadOptions options;
  options.max_bytes = size_t(64) << 20;
  mongoose::Model m;
  mongoose::Status st = mongoose::load_model(path, &m, options);
  std::remove(path.c_str());
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
  const bool clamped = size >= 16 + 12 + 32 && std::memcmp(data + 16, "CONF", 4) == 0 &&
                       get_u32(data + 16 + 12 + 28) > 2;
  // As is (unless that would run with more than 2 threads), then repaired when different.
  if (!clamped) try_load(data, size);
  if (size && std::memcmp(fixed.data(), data, size) != 0) try_load(fixed.data(), fixed.size());
  return 0;
}
