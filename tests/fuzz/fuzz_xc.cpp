// libFuzzer target: arbitrary bytes through mongoose::parse_xc (the XC text parser behind read_xc).
// A successful parse must give a well-formed Dataset; any violation aborts so libFuzzer keeps the
// input. Built by `meson setup build-fuzz -Dfuzz=true` with clang (see meson.build); run as
//   build-fuzz/fuzz-xc -max_total_time=60 CORPUS_DIR tests/fuzz/corpus_xc
#include <cmath>
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

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_xc: invariant violated: %s\n", what);
  std::abort();
}

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) violated(#cond); \
  } while (0)

void check_dataset(const mongoose::Dataset& d, size_t input_size) {
  FUZZ_CHECK(d.features >= 1 && d.features <= 0xFFFFFFFFull);
  FUZZ_CHECK(d.labels >= 1 && d.labels <= 0xFFFFFFFFull);
  FUZZ_CHECK(d.rows <= input_size / 2 + 1);
  FUZZ_CHECK(d.row_offsets.size() == d.rows + 1);
  FUZZ_CHECK(d.label_offsets.size() == d.rows + 1);
  FUZZ_CHECK(d.row_offsets.front() == 0 && d.label_offsets.front() == 0);
  FUZZ_CHECK(d.row_offsets.back() == d.feature_ids.size());
  FUZZ_CHECK(d.label_offsets.back() == d.label_ids.size());
  FUZZ_CHECK(d.feature_ids.size() == d.feature_values.size());
  // Each feature "i:v" takes at least 3 bytes and each label at least 1.
  FUZZ_CHECK(d.feature_ids.size() <= input_size / 3 + 1);
  FUZZ_CHECK(d.label_ids.size() <= input_size);
  for (size_t r = 0; r < d.rows; ++r) {
    FUZZ_CHECK(d.row_offsets[r] <= d.row_offsets[r + 1]);
    FUZZ_CHECK(d.label_offsets[r] <= d.label_offsets[r + 1]);
    mongoose::Dataset::Row row = d.row(r);
    FUZZ_CHECK(row.nnz == d.row_offsets[r + 1] - d.row_offsets[r]);
    FUZZ_CHECK(row.num_labels == d.label_offsets[r + 1] - d.label_offsets[r]);
  }
  for (uint32_t id : d.feature_ids) FUZZ_CHECK(id < d.features);
  for (uint32_t id : d.label_ids) FUZZ_CHECK(id < d.labels);
  for (float v : d.feature_values) FUZZ_CHECK(std::isfinite(v));
}

// Per-process scratch file (parallel fuzzing jobs must not share it).
const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/mongoose-fuzz-xc-" + std::to_string(getpid()) + ".txt";
  }();
  return path;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mongoose::ReadOptions options;
  options.max_bytes = size_t(64) << 20;
  mongoose::Dataset d;
  d.rows = 12345;  // sentinel: *out must be left untouched on error
  mongoose::Status st = mongoose::parse_xc(reinterpret_cast<const char*>(data), size, "fuzz.txt", &d, options);
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    FUZZ_CHECK(st.message().compare(0, 9, "fuzz.txt:") == 0);
    FUZZ_CHECK(d.rows == 12345 && d.feature_ids.empty() && d.row_offsets.size() == 1);
    return 0;
  }
  check_dataset(d, size);
  // A parsed dataset is valid input for add_row: re-adding its rows to a copy of the header
  // must succeed and reproduce it.
  mongoose::Dataset copy;
  copy.features = d.features;
  copy.labels = d.labels;
  for (size_t r = 0; r < d.rows; ++r) {
    mongoose::Dataset::Row row = d.row(r);
    FUZZ_CHECK(copy.add_row(row.ids, row.values, row.nnz, row.labels, row.num_labels).ok());
  }
  FUZZ_CHECK(copy.row_offsets == d.row_offsets && copy.label_offsets == d.label_offsets);
  FUZZ_CHECK(copy.feature_ids == d.feature_ids && copy.label_ids == d.label_ids);
  // write_xc then read_xc gives the same dataset, values bit for bit.
  const std::string& path = scratch_path();
  FUZZ_CHECK(mongoose::write_xc(path, d).ok());
  mongoose::Dataset back;
  st = mongoose::read_xc(path, &back, options);
  if (!st.ok()) {
    std::fprintf(stderr, "fuzz_xc: read_xc of write_xc's output failed: %s\n", st.message().c_str());
    violated("write_xc/read_xc round trip");
  }
  std::remove(path.c_str());
  FUZZ_CHECK(back.rows == d.rows && back.features == d.features && back.labels == d.labels);
  FUZZ_CHECK(back.row_offsets == d.row_offsets && back.label_offsets == d.label_offsets);
  FUZZ_CHECK(back.feature_ids == d.feature_ids && back.label_ids == d.label_ids);
  FUZZ_CHECK(same_bits(back.feature_values, d.feature_values));
  return 0;
}
