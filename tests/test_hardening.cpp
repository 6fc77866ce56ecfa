// Hardening: what a hostile or careless caller can do to the library, and what it must get back.
// Memory budgets (Config, ReadOptions, LoadOptions), exceptions caught at the API boundary
// (std::bad_alloc, a throwing callback), the parser's line and NUL limits and streams, validate()
// of a Dataset filled by hand (every entry point that takes one), null pointers, and saves that
// never follow a planted symlink, never leave half a file and tell the truth when two processes
// save to one path. Every refusal must leave the model as it was (same bytes when saved again).

#include <doctest/doctest.h>

#include "../mongoose.h"
#include "common.h"

#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <stdexcept>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace mongoose;

namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

void make_data(size_t rows, uint64_t seed, Dataset* train, Dataset* test) {
  SyntheticConfig sc;
  sc.features = 30;
  sc.labels = 12;
  sc.train_rows = rows;
  sc.test_rows = 20;
  sc.prototype_features = 4;
  sc.noise_features = 2;
  sc.seed = seed;
  Status st = make_synthetic(sc, train, test);
  REQUIRE_MESSAGE(st.ok(), st.message());
}

Config small_config(OutputMode output) {
  Config c;
  c.hidden = 8;
  c.output = output;
  c.batch_size = 8;
  c.threads = 2;
  c.seed = 5;
  c.K = 4;
  c.L = 4;
  c.min_active = 4;
  c.max_active = 4;
  return c;
}

// A model's whole state as save_model writes it (weights, optimizer, index, counts, steps).
std::string state_bytes(const Model& m, const TempDir& dir) {
  const std::string path = dir.file("state.bin");
  Status st = save_model(m, path);
  REQUIRE_MESSAGE(st.ok(), st.message());
  return read_bytes(path);
}

// Runs f in a child process (so it may set resource limits); true when the child exits 0.
template <class F>
bool in_child(F&& f) {
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(f() ? 0 : 1);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Whether a 3 GB address-space limit really holds in a child. qemu-user accepts RLIMIT_AS but does
// not apply it (it would limit the emulator's own memory): there the test below would really
// allocate and touch 10 GB.
bool address_space_limit_holds() {
  return in_child([] {
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = rlim_t(3) << 30;
    if (setrlimit(RLIMIT_AS, &lim) != 0) return false;
    struct rlimit got;
    if (getrlimit(RLIMIT_AS, &got) != 0 || got.rlim_cur != lim.rlim_cur) return false;
    if (sizeof(size_t) < 8) return true;  // the limit is above what a 32-bit process can reach
    void* beyond = std::malloc(size_t(uint64_t(7) << 29));  // 3.5 GB of address space, never touched
    std::free(beyond);
    return beyond == nullptr;
  });
}

// A Dataset with one broken invariant, and what the error must say about it.
struct BrokenDataset {
  const char* what;
  Dataset data;
  const char* message;
};

std::vector<BrokenDataset> broken_datasets(const Dataset& good) {
  std::vector<BrokenDataset> out;
  auto add = [&](const char* what, const char* message, auto&& edit) {
    BrokenDataset b{what, good, message};
    edit(b.data);
    out.push_back(std::move(b));
  };
  add("feature id beyond features", "feature id 30 out of range [0, 30)", [](Dataset& d) { d.feature_ids[3] = 30; });
  add("label id beyond labels", "label id 99 out of range [0, 12)", [](Dataset& d) { d.label_ids[2] = 99; });
  add("row offset past the end", "pass the end of the arrays",
      [](Dataset& d) { d.row_offsets[5] = d.feature_ids.size() + 1000; });
  add("decreasing offsets", "decrease", [](Dataset& d) { d.label_offsets[4] = d.label_offsets[5] + 1; });
  add("offsets of the wrong length", "need rows + 1", [](Dataset& d) { d.row_offsets.pop_back(); });
  add("more ids than values", "feature values", [](Dataset& d) { d.feature_values.pop_back(); });
  add("last offset short of the arrays", "the offsets end at", [](Dataset& d) { d.feature_ids.push_back(0); d.feature_values.push_back(1); });
  add("NaN value", "must be finite", [](Dataset& d) { d.feature_values[7] = std::nanf(""); });
  add("infinite value", "must be finite", [](Dataset& d) { d.feature_values[0] = -INFINITY; });
  add("value above 1e18", "magnitude <= 1e18", [](Dataset& d) { d.feature_values[1] = 3e38f; });
  add("duplicate feature id", "appears twice", [](Dataset& d) {
    size_t r = 0;
    while (d.row_offsets[r + 1] - d.row_offsets[r] < 2) ++r;
    d.feature_ids[d.row_offsets[r] + 1] = d.feature_ids[d.row_offsets[r]];
  });
  add("duplicate label", "label id", [](Dataset& d) {
    size_t r = 0;
    while (d.label_offsets[r + 1] - d.label_offsets[r] < 2) ++r;
    d.label_ids[d.label_offsets[r] + 1] = d.label_ids[d.label_offsets[r]];
  });
  add("zero features", "features = 0", [](Dataset& d) { d.features = 0; });
  // 2^32 labels only exist where size_t has more than 32 bits.
  if (sizeof(size_t) > 4)
    add("2^32 labels", "labels = 4294967296", [](Dataset& d) { d.labels = size_t(uint64_t(1) << 32); });
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Memory budgets and the exception guard
// ---------------------------------------------------------------------------------------------

TEST_CASE("hardening: Model::init refuses shapes over Config::max_bytes, naming both figures") {
  Config c;
  c.max_bytes = size_t(1) << 30;
  Model m;
  Status st = m.init(c, 2000000, 2000000);
  REQUIRE_FALSE(st.ok());
  CHECK_MESSAGE(contains(st.message(), "over the memory limit of 1073741824"), st.message());
  CHECK_MESSAGE(contains(st.message(), "Config::max_bytes"), st.message());
  CHECK_FALSE(m.initialized());
  // The default budget fits the address space (1 GiB on 32-bit targets, 8 GiB on 64-bit).
  CHECK(default_max_bytes == (sizeof(size_t) >= 8 ? size_t(8) << 30 : size_t(1) << 30));
  // A header's absurd sizes: 10^8 features and labels read in microseconds, and then refused.
  Dataset d;
  const std::string text = "1 100000000 100000000\n0 7:1\n";
  REQUIRE(parse_xc(text.data(), text.size(), "huge.txt", &d).ok());
  Config lsh;
  lsh.output = OutputMode::lsh;
  for (const Config& cfg : {Config(), lsh}) {
    st = m.init(cfg, d.features, d.labels);
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(contains(st.message(), "over the memory limit of"), st.message());
  }
  // A model that fits is not refused by the check.
  Config small = small_config(OutputMode::lsh);
  st = m.init(small, 100, 100);
  CHECK_MESSAGE(st.ok(), st.message());
}

TEST_CASE("hardening: std::bad_alloc comes back as a Status and the model stays as it was") {
  if (kSanitized) {
    MESSAGE("skipped under a sanitizer: it reserves more address space than the limit this test sets");
    return;
  }
  if (!address_space_limit_holds()) {
    MESSAGE("skipped: a 3 GB address-space limit does not hold here (qemu-user ignores RLIMIT_AS)");
    return;
  }
  // In a child with a 3 GB address-space limit and no budget: init's allocations fail for real.
  const bool ok = in_child([] {
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = rlim_t(3) << 30;
    if (setrlimit(RLIMIT_AS, &lim) != 0) return false;
    Dataset train, test;
    make_data(64, 3, &train, &test);
    Model m;
    if (!m.init(small_config(OutputMode::full), train.features, train.labels).ok()) return false;
    if (!m.train_epoch(train).ok()) return false;
    Metrics before;
    if (!m.evaluate(test, InferMode::full, &before).ok()) return false;
    Config huge;
    huge.max_bytes = ~size_t(0);
    for (OutputMode out : {OutputMode::full, OutputMode::lsh}) {
      huge.output = out;
      // A 10 GB input layer, more than the limit; 1.2 GB where size_t has 32 bits (its weights and
      // Adam moments together fit a 32-bit budget, not the limit).
      Status st = m.init(huge, sizeof(size_t) >= 8 ? 20000000 : 2400000, 1000);
      if (st.ok() || !contains(st.message(), "out of memory")) return false;
    }
    // The earlier model was not touched by the failed re-initialisations.
    Metrics after;
    if (!m.evaluate(test, InferMode::full, &after).ok()) return false;
    if (after.p_at_1 != before.p_at_1 || m.features() != train.features) return false;
    // The parser's own growth under the same limit, with the budget lifted.
    ReadOptions unlimited;
    unlimited.max_bytes = ~size_t(0);
    std::string big = "400000000 5 3\n";
    Dataset d;
    Status st = parse_xc(big.data(), big.size(), "big.txt", &d, unlimited);
    return !st.ok();
  });
  CHECK(ok);
}

TEST_CASE("hardening: a progress callback that throws ends the epoch with its message") {
  Dataset train, test;
  make_data(80, 4, &train, &test);
  Config c = small_config(OutputMode::lsh);
  int calls = 0;
  c.on_progress = [&](const Progress&) -> bool {
    if (++calls == 3) throw std::runtime_error("callback exploded");
    return true;
  };
  Model m;
  REQUIRE(m.init(c, train.features, train.labels).ok());
  Status st = m.train_epoch(train);
  REQUIRE_FALSE(st.ok());
  CHECK_MESSAGE(contains(st.message(), "callback exploded"), st.message());
  CHECK_MESSAGE(contains(st.message(), "after batch 3"), st.message());
  CHECK(m.stats().batches == 3);  // the batch it reported on is trained, nothing after it
  // The model is usable afterwards.
  c.on_progress = nullptr;
  Metrics met;
  CHECK(m.evaluate(test, InferMode::full, &met).ok());
  int other = 0;
  Config c2 = small_config(OutputMode::full);
  c2.on_progress = [&](const Progress&) -> bool { throw ++other; };  // not a std::exception
  Model m2;
  REQUIRE(m2.init(c2, train.features, train.labels).ok());
  st = m2.train_epoch(train);
  CHECK_FALSE(st.ok());
  CHECK_MESSAGE(contains(st.message(), "unknown exception"), st.message());
}

// ---------------------------------------------------------------------------------------------
// The parser: line limits, NUL bytes, streams, directories, duplicates, full paths
// ---------------------------------------------------------------------------------------------

TEST_CASE("hardening: /dev/zero and endless lines are refused at once, with their line") {
  Dataset out;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = read_xc("/dev/zero", &out);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE_FALSE(st.ok());
  CHECK(st.message() == "/dev/zero:1:1: NUL byte (\\x00): binary data, not XC text");
  CHECK(s < 2.0);
  // A valid row, then NUL bytes: refused at the first of them.
  TempDir dir;
  std::string text = "2 5 3\n0 1:1\n";
  text += std::string(1 << 20, '\0');
  write_bytes(dir.file("nul.txt"), text);
  st = read_xc(dir.file("nul.txt"), &out);
  CHECK(st.message() == dir.file("nul.txt") + ":3:1: NUL byte (\\x00): binary data, not XC text");
  // A line with no end: refused once it passes max_line_bytes (here 4 KiB).
  ReadOptions o;
  o.max_line_bytes = 4096;
  std::string endless = "1 5 3\n0";
  for (int i = 0; i < 3000; ++i) endless += " 1:1";
  write_bytes(dir.file("long.txt"), endless);
  st = read_xc(dir.file("long.txt"), &out, o);
  CHECK(st.message() == dir.file("long.txt") + ":2:1: line longer than 4096 bytes (ReadOptions::max_line_bytes)");
  st = parse_xc(endless.data(), endless.size(), "mem.txt", &out, o);
  CHECK(st.message() == "mem.txt:2:1: line longer than 4096 bytes (ReadOptions::max_line_bytes)");
  // The limit's own range.
  o.max_line_bytes = 10;
  st = read_xc(dir.file("long.txt"), &out, o);
  CHECK_MESSAGE(contains(st.message(), "max_line_bytes = 10 out of range"), st.message());
}

TEST_CASE("hardening: a pipe reads like the file; a directory is named as one") {
  TempDir dir;
  const std::string text = "3 6 4\n0,2 1:0.5 4:2\n 3:1\n3 0:-1.25 5:1e-3\n";
  Dataset from_text;
  REQUIRE(parse_xc(text.data(), text.size(), "t", &from_text).ok());
  const std::string fifo = dir.file("pipe");
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] {
    std::FILE* f = std::fopen(fifo.c_str(), "wb");
    if (!f) return;
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  });
  Dataset from_pipe;
  Status st = read_xc(fifo, &from_pipe);
  writer.join();
  REQUIRE_MESSAGE(st.ok(), st.message());
  CHECK(from_pipe.source == fifo);
  CHECK(from_pipe.rows == 3);
  CHECK(from_pipe.feature_ids == from_text.feature_ids);
  CHECK(from_pipe.feature_values == from_text.feature_values);
  CHECK(from_pipe.label_ids == from_text.label_ids);
  // A stream's header is not checked against a size it does not have, only against the budget.
  st = read_xc(dir.path, &from_pipe);
  CHECK(st.message() == dir.path + ": is a directory, not an XC file");
}

TEST_CASE("hardening: duplicate ids in a row are refused at their second occurrence") {
  Dataset out;
  const std::string dup_feature = "1 5 3\n0 1:1 3:2 1:0.5\n";
  Status st = parse_xc(dup_feature.data(), dup_feature.size(), "t.txt", &out);
  CHECK(st.message() == "t.txt:2:11: feature id 1 appears twice in this row (duplicates are refused, not summed)");
  const std::string dup_label = "1 5 3\n2,0,2 1:1\n";
  st = parse_xc(dup_label.data(), dup_label.size(), "t.txt", &out);
  CHECK(st.message() == "t.txt:2:5: label id 2 appears twice in this row (duplicates are refused, not summed)");
  // Unsorted but distinct ids are fine.
  const std::string unsorted = "1 5 3\n2,0 4:1 1:2 3:1\n";
  CHECK(parse_xc(unsorted.data(), unsorted.size(), "t.txt", &out).ok());
  // The same rule in add_row and predict.
  Dataset d;
  d.features = 5;
  d.labels = 3;
  const uint32_t ids[] = {2, 2};
  const float vals[] = {1, 1};
  st = d.add_row(ids, vals, 2, nullptr, 0);
  CHECK(st.message() == "Dataset::add_row: row 0: feature id 2 appears twice (duplicates are refused, not summed)");
  CHECK(d.rows == 0);
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 5, 3).ok());
  std::vector<Scored> top;
  st = m.predict(ids, vals, 2, 2, InferMode::full, &top);
  CHECK(st.message() == "Model::predict: feature id 2 appears twice (duplicates are refused, not summed)");
}

TEST_CASE("hardening: values above 1e18 are refused alike when reading, training and predicting") {
  Dataset out;
  const std::string text = "1 5 3\n0 1:2e18\n";
  Status st = parse_xc(text.data(), text.size(), "t.txt", &out);
  CHECK(st.message() == "t.txt:2:5: value '2e18' of feature 1 is above the largest magnitude accepted, 1e18 (scale the inputs)");
  const std::string edge = "1 5 3\n0 1:1e18 2:-1e18\n";
  CHECK(parse_xc(edge.data(), edge.size(), "t.txt", &out).ok());
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 5, 3).ok());
  const uint32_t ids[] = {1};
  const float big[] = {3e38f};
  std::vector<Scored> top;
  st = m.predict(ids, big, 1, 1, InferMode::full, &top);
  CHECK_MESSAGE(contains(st.message(), "magnitude <= 1e18"), st.message());
  const float nan[] = {std::nanf("")};
  st = m.predict(ids, nan, 1, 1, InferMode::full, &top);
  CHECK_MESSAGE(contains(st.message(), "must be finite"), st.message());
}

TEST_CASE("hardening: parse errors name the whole path, so two train.txt are told apart") {
  TempDir dir;
  REQUIRE(mkdir(dir.file("a").c_str(), 0700) == 0);
  REQUIRE(mkdir(dir.file("b").c_str(), 0700) == 0);
  write_bytes(dir.file("a/train.txt"), "1 5 3\n0 9:1\n");
  write_bytes(dir.file("b/train.txt"), "1 5 3\n0 8:1\n");
  Dataset out;
  CHECK(read_xc(dir.file("a/train.txt"), &out).message() == dir.file("a/train.txt") + ":2:3: feature id 9 out of range [0, 5)");
  CHECK(read_xc(dir.file("b/train.txt"), &out).message() == dir.file("b/train.txt") + ":2:3: feature id 8 out of range [0, 5)");
}

// ---------------------------------------------------------------------------------------------
// Datasets filled by hand
// ---------------------------------------------------------------------------------------------

TEST_CASE("hardening: validate(Dataset) names each broken invariant, and every entry point refuses it") {
  Dataset good, test;
  make_data(60, 6, &good, &test);
  REQUIRE(validate(good).ok());
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    Model m;
    REQUIRE(m.init(small_config(output), good.features, good.labels).ok());
    REQUIRE(m.train_epoch(good).ok());
    const std::string before = state_bytes(m, dir);
    for (const BrokenDataset& b : broken_datasets(good)) {
      CAPTURE(b.what);
      Status st = validate(b.data);
      REQUIRE_FALSE(st.ok());
      CHECK_MESSAGE(contains(st.message(), b.message), st.message());
      CHECK_MESSAGE(contains(m.train_epoch(b.data).message(), "Model::train_epoch"), b.what);
      Metrics met;
      CHECK_FALSE(m.evaluate(b.data, InferMode::full, &met).ok());
      double recall = 0, kept = 0;
      if (output == OutputMode::lsh) CHECK_FALSE(m.retrieval_recall(b.data, 100, 1, &recall, &kept).ok());
      std::vector<uint32_t> all(std::min<size_t>(b.data.rows, 60));
      for (size_t i = 0; i < all.size(); ++i) all[i] = uint32_t(i);
      CHECK_FALSE(m.train_batch(b.data, all.data(), all.size()).ok());
      CHECK_FALSE(write_xc(dir.file("broken.txt"), b.data).ok());
      CHECK_FALSE(exists(dir.file("broken.txt")));
      CHECK(state_bytes(m, dir) == before);
    }
  }
}

TEST_CASE("hardening: errors about rows read from a file give path:line") {
  TempDir dir;
  write_bytes(dir.file("d.txt"), "3 5 2\n0 1:1\n1 2:1\n0 3:1\n");
  Dataset d;
  REQUIRE(read_xc(dir.file("d.txt"), &d).ok());
  d.feature_values[2] = std::nanf("");  // row 2, the file's line 4
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 5, 2).ok());
  Status st = m.train_epoch(d);
  CHECK_MESSAGE(contains(st.message(), dir.file("d.txt") + ":4 (row 2): feature 3 has value nan"), st.message());
  const uint32_t rows[] = {0, 1};
  CHECK(m.train_batch(d, rows, 2).ok());  // only the rows it uses are checked
}

TEST_CASE("hardening: null pointers are errors, not crashes") {
  Dataset d;
  d.features = 4;
  d.labels = 2;
  const uint32_t label = 1;
  CHECK(d.add_row(nullptr, nullptr, 3, &label, 1).message() == "Dataset::add_row: row 0: ids or values is null");
  CHECK(d.add_row(nullptr, nullptr, 0, nullptr, 1).message() == "Dataset::add_row: row 0: labels is null");
  CHECK(d.add_row(nullptr, nullptr, 0, nullptr, 0).ok());  // an empty row is fine
  CHECK(normalize_rows(nullptr).message() == "normalize_rows: data is null");
  CHECK(normalize_rows(&d).ok());
  CHECK_FALSE(read_xc("x", nullptr).ok());
  CHECK_FALSE(parse_xc(nullptr, 5, "x", &d).ok());
  CHECK_FALSE(make_synthetic(SyntheticConfig(), nullptr, &d).ok());
  CHECK_FALSE(load_model("x", nullptr).ok());
  CHECK_FALSE(write_file_atomic("x", nullptr, 3).ok());
  Hasher h;
  uint32_t codes[4];
  float v[4] = {1, 2, 3, 4};
  CHECK_FALSE(h.hash(v, codes).ok());  // not initialized
  HashConfig hc;
  hc.dim = 4;
  hc.K = 3;
  hc.L = 4;
  REQUIRE(h.init(hc).ok());
  CHECK_FALSE(h.hash(nullptr, codes).ok());
  CHECK_FALSE(h.hash_batch(v, 1, 4, nullptr).ok());
  const uint32_t bad_id[] = {9};
  CHECK_MESSAGE(contains(h.hash_sparse(bad_id, v, 1, codes).message(), "out of range"), "");
  HashTables t;
  CHECK_FALSE(t.insert(0, codes).ok());  // not initialized
  TableConfig tc;
  tc.K = 3;
  tc.L = 4;
  REQUIRE(t.init(tc).ok());
  CHECK_FALSE(t.insert(0, nullptr).ok());
  CHECK_FALSE(t.query(codes, nullptr).ok());
  CHECK_FALSE(HashTables::keep_top_hits(nullptr, 3).ok());
  CHECK(t.build(nullptr, 0).ok());  // no items: empty tables
  Model m;
  CHECK_FALSE(m.train_epoch(d).ok());  // not initialized
  REQUIRE(m.init(small_config(OutputMode::full), 4, 2).ok());
  CHECK_FALSE(m.train_batch(d, nullptr, 1).ok());
  CHECK_FALSE(m.evaluate(d, InferMode::full, nullptr).ok());
  CHECK_FALSE(m.predict(nullptr, nullptr, 2, 1, InferMode::full, nullptr).ok());
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

TEST_CASE("hardening: a planted FILE.tmp symlink is never followed") {
  TempDir dir;
  Dataset train, test;
  make_data(40, 7, &train, &test);
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), train.features, train.labels).ok());
  const std::string victim = dir.file("victim.txt"), target = dir.file("model.bin");
  write_bytes(victim, "precious");
  REQUIRE(symlink(victim.c_str(), (target + ".tmp").c_str()) == 0);
  Status st = save_model(m, target);
  REQUIRE_MESSAGE(st.ok(), st.message());
  CHECK(read_bytes(victim) == "precious");
  Model back;
  CHECK(load_model(target, &back).ok());
  // The same for write_xc and write_file_atomic.
  const std::string data = dir.file("data.txt");
  REQUIRE(symlink(victim.c_str(), (data + ".tmp").c_str()) == 0);
  CHECK(write_xc(data, train).ok());
  CHECK(write_file_atomic(dir.file("any.csv"), "a,b\n", 4).ok());
  CHECK(read_bytes(victim) == "precious");
  CHECK(read_bytes(dir.file("any.csv")) == "a,b\n");
}

TEST_CASE("hardening: targets that are not regular files are refused; nothing is left behind") {
  TempDir dir;
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 5, 3).ok());
  Status st = save_model(m, "/dev/null");
  CHECK(st.message() == "/dev/null: exists and is not a regular file (a device, FIFO or socket); nothing was written");
  st = save_model(m, dir.path);
  CHECK(st.message() == dir.path + ": is a directory; nothing was written");
  st = save_model(m, dir.file("missing/model.bin"));
  CHECK_MESSAGE(contains(st.message(), "cannot create a temporary file in " + dir.file("missing")), st.message());
  CHECK_FALSE(save_model(m, "").ok());
  CHECK(check_writable(dir.file("fine.bin")).ok());
  CHECK_FALSE(exists(dir.file("fine.bin")));
  CHECK_FALSE(check_writable(dir.file("missing/x.bin")).ok());
  CHECK_FALSE(check_writable(dir.path).ok());
  // Nothing but the directories made above remains.
  DIR* d = opendir(dir.path.c_str());
  REQUIRE(d);
  size_t entries = 0;
  while (dirent* e = readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
  closedir(d);
  CHECK(entries == 0);
}

TEST_CASE("hardening: a save that runs out of disk fails and leaves the old model") {
  TempDir dir;
  Dataset train, test;
  make_data(40, 8, &train, &test);
  Model small, big;
  REQUIRE(small.init(small_config(OutputMode::full), train.features, train.labels).ok());
  Config bc = small_config(OutputMode::lsh);
  bc.hidden = 64;
  REQUIRE(big.init(bc, 5000, train.labels).ok());
  const std::string path = dir.file("model.bin");
  REQUIRE(save_model(small, path).ok());
  const std::string before = read_bytes(path);
  // In a child whose files may not grow past 64 KiB (as a full disk would refuse the write).
  const bool refused = in_child([&] {
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = 64 << 10;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) return false;
    Status st = save_model(big, path);
    return !st.ok() && contains(st.message(), "write failed") && contains(st.message(), "left as it was");
  });
  CHECK(refused);
  CHECK(read_bytes(path) == before);
  DIR* d = opendir(dir.path.c_str());
  REQUIRE(d);
  size_t entries = 0;
  while (dirent* e = readdir(d)) entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
  closedir(d);
  CHECK(entries == 1);  // no temporary left
}

TEST_CASE("hardening: concurrent saves to one path leave one complete model and all report success") {
  TempDir dir;
  Dataset train, test;
  make_data(40, 9, &train, &test);
  Model a, b;
  Config ca = small_config(OutputMode::full), cb = small_config(OutputMode::lsh);
  cb.seed = 77;
  REQUIRE(a.init(ca, train.features, train.labels).ok());
  REQUIRE(b.init(cb, train.features, train.labels).ok());
  const std::string path = dir.file("shared.bin");
  const std::string bytes_a = state_bytes(a, dir), bytes_b = state_bytes(b, dir);
  std::atomic<int> failures{0};
  auto saver = [&](const Model& m) {
    for (int i = 0; i < 20; ++i)
      if (!save_model(m, path).ok()) ++failures;
  };
  std::thread ta(saver, std::cref(a)), tb(saver, std::cref(b));
  ta.join();
  tb.join();
  CHECK(failures.load() == 0);
  const std::string now = read_bytes(path);
  CHECK((now == bytes_a || now == bytes_b));
  Model back;
  CHECK(load_model(path, &back).ok());
}

TEST_CASE("hardening: a model file cut in END's checksum or with a flipped version says so") {
  TempDir dir;
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 5, 3).ok());
  const std::string path = dir.file("m.bin");
  REQUIRE(save_model(m, path).ok());
  std::string bytes = read_bytes(path);
  write_bytes(dir.file("cut.bin"), bytes.substr(0, bytes.size() - 2));
  Model back;
  Status st = load_model(dir.file("cut.bin"), &back);
  CHECK_MESSAGE(contains(st.message(), "file truncated in section END : its 0 bytes and 4-byte checksum need 4, 2 remain"),
                st.message());
  for (char version : {'\1', '\2', '\3'}) {
    std::string flipped = bytes;
    flipped[8] = version;  // format version 4 -> 1, 2 or 3
    write_bytes(dir.file("v.bin"), flipped);
    st = load_model(dir.file("v.bin"), &back);
    CHECK_MESSAGE(contains(st.message(), "the header says version " + std::to_string(int(version))), st.message());
    CHECK_MESSAGE(contains(st.message(), "corrupted version field"), st.message());
  }
  // And a version-3 file whose version field says 2: its CONF is 4 bytes too long for that.
  std::string v3 = read_bytes(std::string(MONGOOSE_SOURCE_DIR) + "/tests/models/v3-full.bin");
  v3[8] = 2;
  write_bytes(dir.file("v.bin"), v3);
  st = load_model(dir.file("v.bin"), &back);
  CHECK_MESSAGE(contains(st.message(), "but format version 2 has"), st.message());
  CHECK_MESSAGE(contains(st.message(), "corrupted version field"), st.message());
  st = load_model(dir.path, &back);
  CHECK(st.message() == dir.path + ": is a directory, not a model file");
}

// ---------------------------------------------------------------------------------------------
// Cases found by a hostile review of the first hardening pass
// ---------------------------------------------------------------------------------------------

TEST_CASE("hardening: a Dataset claiming SIZE_MAX rows is refused, not wrapped") {
  Dataset d;
  d.features = 4;
  d.labels = 2;
  d.rows = SIZE_MAX;
  d.row_offsets.clear();
  d.label_offsets.clear();
  CHECK_MESSAGE(contains(validate(d).message(), "need rows + 1 entries"), validate(d).message());
  CHECK_FALSE(normalize_rows(&d).ok());
  TempDir dir;
  CHECK_FALSE(write_xc(dir.file("x.txt"), d).ok());
  const uint32_t id = 1;
  const float v = 1;
  CHECK(contains(d.add_row(&id, &v, 1, nullptr, 0).message(), "inconsistent"));
  CHECK(d.rows == SIZE_MAX);
  Model m;
  REQUIRE(m.init(small_config(OutputMode::full), 4, 2).ok());
  CHECK_FALSE(m.train_epoch(d).ok());
}

TEST_CASE("hardening: calls from inside on_progress that would replace the model are refused") {
  Dataset train, test;
  make_data(64, 11, &train, &test);
  Config c = small_config(OutputMode::lsh);
  Model m;
  std::vector<std::string> refusals;
  c.on_progress = [&](const Progress&) -> bool {
    refusals.push_back(m.init(small_config(OutputMode::full), train.features, train.labels).message());
    refusals.push_back(m.train_epoch(train).message());
    const uint32_t row = 0;
    refusals.push_back(m.train_batch(train, &row, 1).message());
    Metrics met;
    refusals.push_back(m.evaluate(test, InferMode::full, &met).ok() ? "" : "evaluate failed");  // reading is fine
    return true;
  };
  REQUIRE(m.init(c, train.features, train.labels).ok());
  TempDir dir;
  REQUIRE(save_model(m, dir.file("m.bin")).ok());
  Status st = m.train_epoch(train);
  REQUIRE_MESSAGE(st.ok(), st.message());
  REQUIRE(refusals.size() >= 4);
  CHECK(contains(refusals[0], "called while the model trains"));
  CHECK(contains(refusals[1], "called while the model trains"));
  CHECK(contains(refusals[2], "called while the model trains"));
  CHECK(refusals[3].empty());
  CHECK(m.stats().batches == 8);  // the epoch ran as if nothing had been asked
  CHECK(m.init(small_config(OutputMode::full), train.features, train.labels).ok());  // after: fine
}

TEST_CASE("hardening: max_line_bytes at the top of its range does not wrap") {
  TempDir dir;
  std::string text = "2 5 3\n0";
  for (int i = 0; i < 5; ++i) text += " " + std::to_string(i) + ":1";
  text += "\n1 2:1\n";
  write_bytes(dir.file("ok.txt"), text);
  for (size_t limit : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 2}) {
    ReadOptions o;
    o.max_line_bytes = limit;
    Dataset d;
    Status st = read_xc(dir.file("ok.txt"), &d, o);
    CHECK_MESSAGE(st.ok(), st.message());
    CHECK(d.rows == 2);
  }
}

TEST_CASE("hardening: the memory budget counts the hash projection and its learner") {
  Config c;
  c.output = OutputMode::lsh;
  c.hidden = 4096;
  c.K = 24;
  c.L = 1024;
  c.learn_hash = true;
  c.max_bytes = size_t(64) << 20;
  Model m;
  Status st = m.init(c, 10, 10);
  CHECK_MESSAGE(contains(st.message(), "over the memory limit of 67108864"), st.message());
  OutputLayer layer;
  st = layer.init(c, 4096, 10);
  CHECK_MESSAGE(contains(st.message(), "over the memory limit of 67108864"), st.message());
}

TEST_CASE("hardening: item ids too large for the query scratch are refused") {
  TableConfig tc;
  tc.K = 2;
  tc.L = 1;
  HashTables t;
  REQUIRE(t.init(tc).ok());
  const uint32_t code = 1;
  REQUIRE(t.insert(0xFFFFFFFFu, &code).ok());
  QueryResult qr;
  Status st = t.query(&code, &qr);
  if (sizeof(size_t) >= 8 && default_max_bytes >= (uint64_t(1) << 34)) {
    CHECK(st.ok());  // a 16 GB scratch would fit the budget
  } else {
    CHECK_MESSAGE(contains(st.message(), "query scratch"), st.message());
  }
  QueryResult hand;
  hand.ids = {5};
  hand.hits = {1};
  CHECK(contains(HashTables::keep_top_hits(&hand, 1).message(), "not filled by query"));
}

TEST_CASE("hardening: a FIFO as a model file is refused at once; saves keep the target's permissions") {
  TempDir dir;
  const std::string fifo = dir.file("model.fifo");
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  Model m;
  Status st = load_model(fifo, &m);  // would block in fopen if it opened first
  CHECK_MESSAGE(contains(st.message(), "not a regular file"), st.message());
  OutputLayer layer;
  CHECK_FALSE(load_layer(fifo, &layer).ok());
  REQUIRE(m.init(small_config(OutputMode::full), 5, 3).ok());
  const std::string path = dir.file("private.bin");
  write_bytes(path, "old");
  REQUIRE(chmod(path.c_str(), 0600) == 0);
  REQUIRE(save_model(m, path).ok());
  struct stat st_mode;
  REQUIRE(stat(path.c_str(), &st_mode) == 0);
  CHECK((st_mode.st_mode & 0777) == 0600);
  // A target name near NAME_MAX still leaves room for the temporary.
  const std::string longname = dir.file(std::string(240, 'm') + ".bin");
  st = save_model(m, longname);
  CHECK_MESSAGE(st.ok(), st.message());
}

TEST_CASE("hardening: crafted model files with impossible optimizer state or counters are refused") {
  TempDir dir;
  Model m;
  Dataset train, test;
  make_data(40, 12, &train, &test);
  REQUIRE(m.init(small_config(OutputMode::full), train.features, train.labels).ok());
  REQUIRE(m.train_epoch(train).ok());
  const std::string path = dir.file("m.bin");
  REQUIRE(save_model(m, path).ok());
  const std::string good = read_bytes(path);
  // Walk the sections: tag (4), length (u64), payload, CRC-32C of tag + length + payload.
  auto find = [&](const std::string& b, const std::string& tag, size_t* payload, uint64_t* len) {
    size_t pos = 16;
    while (pos + 16 <= b.size()) {
      uint64_t n = 0;
      for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(b[pos + 4 + size_t(i)])) << (8 * i);
      if (b.compare(pos, 4, tag) == 0) {
        *payload = pos + 12;
        *len = n;
        return pos;
      }
      pos += size_t(12 + n + 4);
    }
    return size_t(0);
  };
  auto reseal = [&](std::string& b, size_t at, uint64_t len) {
    const uint32_t crc = crc32c(b.data() + at, size_t(12 + len));
    for (int i = 0; i < 4; ++i) b[at + 12 + size_t(len) + size_t(i)] = char((crc >> (8 * i)) & 0xFF);
  };
  // A negative second moment (the last float of OUTA is a v).
  std::string bad = good;
  size_t payload = 0;
  uint64_t len = 0;
  size_t at = find(bad, "OUTA", &payload, &len);
  REQUIRE(at);
  const float minus = -1.0f;
  uint32_t minus_bits;
  std::memcpy(&minus_bits, &minus, 4);
  for (size_t i = 0; i < 4; ++i)  // files are little-endian whatever the host (s390x is not)
    bad[payload + size_t(len) - 4 + i] = char((minus_bits >> (8 * i)) & 0xFF);
  reseal(bad, at, len);
  write_bytes(dir.file("bad.bin"), bad);
  Model back;
  Status st = load_model(dir.file("bad.bin"), &back);
  CHECK_MESSAGE(contains(st.message(), "is negative"), st.message());
  // An END section that is not empty.
  bad = good;
  at = find(bad, "END ", &payload, &len);
  REQUIRE(at);
  bad[at + 4] = 1;
  bad.insert(payload, 1, 'x');
  reseal(bad, at, 1);
  write_bytes(dir.file("bad.bin"), bad);
  st = load_model(dir.file("bad.bin"), &back);
  CHECK_MESSAGE(contains(st.message(), "must be empty"), st.message());
  // A Config with an unknown Simd value.
  Config c = small_config(OutputMode::full);
  c.simd = Simd(9);
  CHECK(contains(validate(c).message(), "Config.simd"));
}
