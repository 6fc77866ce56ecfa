// Model I/O tests: crc32c, save_model / load_model round trips (predictions, weights, config,
// continued training), corrupted, truncated and crafted files, atomic saves, training that meets
// a non-finite loss, and the corpus of malformed XC files in tests/malformed/ (expected.tsv).
//
// The file layout used to locate sections is the one documented in mongoose.h ([SECTION] Model
// I/O): a 16-byte header ("MONGOOSE", version u32, section count u32), then per section
// tag (4) + payload length (u64) + payload + CRC-32C (u32) of tag + length + payload.
// Models are small (hidden 4..16, at most a few hundred labels) and every seed is fixed.

#include <doctest/doctest.h>

#include "../mongoose.h"
#include "common.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace mongoose;

namespace {

uint32_t get_le32(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(b[at + size_t(i)])) << (8 * i);
  return v;
}
uint64_t get_le64(const std::string& b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(b[at + size_t(i)])) << (8 * i);
  return v;
}
void put_le32(std::string& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + size_t(i)] = char((v >> (8 * i)) & 0xFF);
}
void put_le64(std::string& b, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + size_t(i)] = char((v >> (8 * i)) & 0xFF);
}

// One section of a model file, as laid out in mongoose.h.
struct Section {
  std::string tag;
  size_t offset = 0;   // of the tag
  uint64_t length = 0; // payload bytes
  size_t payload() const { return offset + 12; }
  size_t crc() const { return offset + 12 + size_t(length); }
  size_t end() const { return crc() + 4; }
};

// Walks the sections of a valid file (REQUIREs that they tile the file exactly).
std::vector<Section> sections_of(const std::string& file) {
  std::vector<Section> out;
  REQUIRE(file.size() >= 16);
  size_t at = 16;
  while (at < file.size()) {
    REQUIRE(at + 12 <= file.size());
    Section s;
    s.tag = file.substr(at, 4);
    s.offset = at;
    s.length = get_le64(file, at + 4);
    REQUIRE(s.length <= file.size() - at - 16);
    out.push_back(s);
    at = s.end();
  }
  REQUIRE(at == file.size());
  return out;
}

Section find_section(const std::vector<Section>& all, const std::string& tag) {
  for (const Section& s : all)
    if (s.tag == tag) return s;
  FAIL("no section ", tag);
  return {};
}

// The section holding byte `at` ("header" for the first 16 bytes).
std::string where(const std::vector<Section>& all, size_t at) {
  if (at < 16) return "header";
  for (const Section& s : all)
    if (at >= s.offset && at < s.end()) return "'" + s.tag + "'";
  return "?";
}

// ---- Models. ----

// A bit-exact copy of a model's weights (empty when it is not initialized).
struct Snapshot {
  std::vector<float> W1, b1, W2;
  size_t features = 0, hidden = 0, labels = 0, stride = 0;
};

Snapshot snapshot(const Model& m) {
  Snapshot s;
  if (!m.initialized()) return s;
  Model::Weights w = m.weights();
  s.features = w.features;
  s.hidden = w.hidden;
  s.labels = w.labels;
  s.stride = w.output_stride;
  s.W1.assign(w.W1, w.W1 + w.features * w.hidden);
  s.b1.assign(w.b1, w.b1 + w.hidden);
  s.W2.assign(w.W2, w.W2 + w.labels * w.output_stride);
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

bool same_snapshot(const Snapshot& a, const Snapshot& b) {
  return a.features == b.features && a.hidden == b.hidden && a.labels == b.labels && a.stride == b.stride &&
         same_bits(a.W1, b.W1) && same_bits(a.b1, b.b1) && same_bits(a.W2, b.W2);
}

// Compares the weights() memory of two models bit for bit.
bool same_weights(const Model& a, const Model& b) { return same_snapshot(snapshot(a), snapshot(b)); }

template <class T>
bool bits_equal(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Every Config field except the callback, bit for bit.
void check_same_config(const Config& a, const Config& b) {
#define MONGOOSE_SAME(field) CHECK_MESSAGE(bits_equal(a.field, b.field), "Config." #field " differs")
  MONGOOSE_SAME(hidden);
  MONGOOSE_SAME(output);
  MONGOOSE_SAME(learning_rate);
  MONGOOSE_SAME(beta1);
  MONGOOSE_SAME(beta2);
  MONGOOSE_SAME(adam_eps);
  MONGOOSE_SAME(batch_size);
  MONGOOSE_SAME(threads);
  MONGOOSE_SAME(seed);
  MONGOOSE_SAME(simd);
  MONGOOSE_SAME(hash);
  MONGOOSE_SAME(K);
  MONGOOSE_SAME(L);
  MONGOOSE_SAME(hash_density);
  MONGOOSE_SAME(bucket_capacity);
  MONGOOSE_SAME(bucket_policy);
  MONGOOSE_SAME(min_active);
  MONGOOSE_SAME(max_active);
  MONGOOSE_SAME(sampling_correction);
  MONGOOSE_SAME(infer_shortlist);
  MONGOOSE_SAME(rehash_every);
  MONGOOSE_SAME(rehash_decay);
  MONGOOSE_SAME(new_hash_every);
  MONGOOSE_SAME(scheduler);
  MONGOOSE_SAME(check_every);
  MONGOOSE_SAME(detector_bits);
  MONGOOSE_SAME(detector_sample);
  MONGOOSE_SAME(tau);
  MONGOOSE_SAME(full_rebuild_fraction);
  MONGOOSE_SAME(drift_epsilon);
  MONGOOSE_SAME(learn_hash);
  MONGOOSE_SAME(learn_every);
  MONGOOSE_SAME(learn_queries);
  MONGOOSE_SAME(hash_steps);
  MONGOOSE_SAME(hash_lr);
  MONGOOSE_SAME(hash_binarize);
  MONGOOSE_SAME(hash_loss);
  MONGOOSE_SAME(triplet_margin);
  MONGOOSE_SAME(tail_drift);
#undef MONGOOSE_SAME
}

// Synthetic train/test data.
void synthetic(size_t features, size_t labels, size_t train_rows, size_t test_rows, uint64_t seed, Dataset* train,
               Dataset* test) {
  SyntheticConfig sc;
  sc.features = features;
  sc.labels = labels;
  sc.train_rows = train_rows;
  sc.test_rows = test_rows;
  sc.max_labels = std::min<size_t>(3, labels);
  sc.prototype_features = std::min<size_t>(6, features);
  sc.noise_features = 2;
  sc.seed = seed;
  Status st = make_synthetic(sc, train, test);
  REQUIRE_MESSAGE(st.ok(), st.message());
}

// Top-10 predictions of both models on the first `rows` rows of `data` must be bit-identical.
void check_same_predictions(const Model& a, const Model& b, const Dataset& data, InferMode mode, size_t rows) {
  size_t differ = 0, first = size_t(-1), predicted = 0;
  std::vector<Scored> pa, pb;
  for (size_t r = 0; r < std::min(rows, data.rows); ++r) {
    Dataset::Row row = data.row(r);
    Status sa = a.predict(row.ids, row.values, row.nnz, 10, mode, &pa);
    Status sb = b.predict(row.ids, row.values, row.nnz, 10, mode, &pb);
    REQUIRE_MESSAGE(sa.ok(), sa.message());
    REQUIRE_MESSAGE(sb.ok(), sb.message());
    predicted += pa.size();
    bool same = pa.size() == pb.size();
    for (size_t i = 0; same && i < pa.size(); ++i)
      same = pa[i].label == pb[i].label && bits_equal(pa[i].score, pb[i].score);
    if (!same) {
      ++differ;
      if (first == size_t(-1)) first = r;
    }
  }
  CHECK_MESSAGE(differ == 0, differ, " rows predict differently, the first is row ", first);
  CHECK(predicted > 0);
}

// Small configurations: hidden 16, one thread, fixed seeds.
Config full_config() {
  Config c;
  c.hidden = 16;
  c.output = OutputMode::full;
  c.learning_rate = 0.004f;
  c.beta1 = 0.85f;
  c.beta2 = 0.995f;
  c.adam_eps = 2e-8f;
  c.batch_size = 32;
  c.threads = 1;
  c.seed = 1234;
  return c;
}

Config lsh_config() {
  Config c = full_config();
  c.output = OutputMode::lsh;
  c.K = 6;
  c.L = 8;
  c.min_active = 48;
  c.max_active = 32;
  c.rehash_every = 5;
  c.rehash_decay = 0.01f;
  c.infer_shortlist = 5;
  return c;
}

Config lsh_incremental_learned_config() {
  Config c = lsh_config();
  c.scheduler = Scheduler::incremental;
  c.check_every = 3;
  c.detector_bits = 12;
  c.full_rebuild_fraction = 0.4f;
  c.drift_epsilon = 0.05f;
  c.learn_hash = true;
  c.learn_every = 4;
  c.learn_queries = 8;
  c.hash_steps = 5;
  c.hash_lr = 0.02f;
  c.hash_loss = HashLoss::triplet;
  c.triplet_margin = 0.3f;
  c.tail_drift = 1.25f;
  c.hash_density = 0.5f;
  // Buckets larger than the label count never fill, so a bucket's contents are exactly the
  // neurons stored under its code, however they got there (rebuild or in-place update).
  c.bucket_capacity = 512;
  c.bucket_policy = BucketPolicy::fifo;
  return c;
}

Config lsh_dwta_config() {
  Config c = lsh_config();
  c.hash = HashFamily::dwta;
  c.K = 4;
  c.L = 6;
  c.scheduler = Scheduler::detect;
  c.check_every = 4;
  c.tau = 0.1f;
  c.detector_sample = 100;
  c.new_hash_every = 7;  // a saved hash generation > 0
  c.sampling_correction = false;
  c.infer_shortlist = 20;
  return c;
}

// A model trained for `epochs` epochs.
void trained(const Config& cfg, const Dataset& train, int epochs, Model* m) {
  Status st = m->init(cfg, train.features, train.labels);
  REQUIRE_MESSAGE(st.ok(), st.message());
  for (int e = 0; e < epochs; ++e) {
    st = m->train_epoch(train);
    REQUIRE_MESSAGE(st.ok(), st.message());
  }
}

// A model to load into, with a shape unlike any saved here, so that a failed load that touched
// it would show.
void bystander(Model* m) {
  Config c;
  c.hidden = 3;
  c.threads = 1;
  c.seed = 99;
  REQUIRE(m->init(c, 7, 5).ok());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CRC-32C
// ---------------------------------------------------------------------------------------------

TEST_CASE("io: crc32c matches the Castagnoli test vectors and composes incrementally") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  CHECK(crc32c("", 0) == 0u);
  CHECK(crc32c(nullptr, 0) == 0u);
  CHECK(crc32c(nullptr, 0, 0xE3069283u) == 0xE3069283u);  // nothing more: unchanged
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, ascending 0..31.
  unsigned char buf[32];
  std::memset(buf, 0, sizeof buf);
  CHECK(crc32c(buf, 32) == 0x8A9136AAu);
  std::memset(buf, 0xFF, sizeof buf);
  CHECK(crc32c(buf, 32) == 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = (unsigned char)i;
  CHECK(crc32c(buf, 32) == 0x46DD794Eu);

  // Incremental == one-shot, for every split point of a longer buffer.
  std::vector<unsigned char> data(1000);
  Rng rng(5);
  for (auto& b : data) b = (unsigned char)(rng.next() & 0xFF);
  const uint32_t whole = crc32c(data.data(), data.size());
  size_t bad = 0;
  for (size_t cut = 0; cut <= data.size(); ++cut)
    if (crc32c(data.data() + cut, data.size() - cut, crc32c(data.data(), cut)) != whole) ++bad;
  CHECK(bad == 0);
  // Three pieces, and byte by byte.
  uint32_t c = crc32c(data.data(), 10);
  c = crc32c(data.data() + 10, 500, c);
  c = crc32c(data.data() + 510, 490, c);
  CHECK(c == whole);
  uint32_t bytewise = 0;
  for (unsigned char b : data) bytewise = crc32c(&b, 1, bytewise);
  CHECK(bytewise == whole);
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

TEST_CASE("io: save then load reproduces the model exactly") {
  Dataset train, test;
  synthetic(500, 300, 600, 150, 11, &train, &test);
  TempDir dir;

  struct Case {
    const char* name;
    Config cfg;
  };
  const Case cases[] = {
      {"full", full_config()},
      {"lsh (simhash, fixed scheduler)", lsh_config()},
      {"lsh (incremental scheduler, learned hash)", lsh_incremental_learned_config()},
      {"lsh (dwta, detect scheduler, new hash functions)", lsh_dwta_config()},
  };
  for (const Case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const bool lsh = c.cfg.output == OutputMode::lsh;
    Model model;
    trained(c.cfg, train, 2, &model);
    // Then batches of a few rows only, so that the saved state is mid-epoch and the label
    // frequencies (the lsh shortlist) have moved since the last epoch ended.
    for (uint32_t b = 0; b < 20; ++b) {
      std::vector<uint32_t> rows;
      for (uint32_t i = 0; i < 30; ++i) rows.push_back(uint32_t(train.rows) - 1 - (i + b) % 3);
      Status bst = model.train_batch(train, rows.data(), rows.size());
      REQUIRE_MESSAGE(bst.ok(), bst.message());
    }
    if (c.cfg.learn_hash) CHECK(model.stats().learn_rounds > 0);  // the projection was learned
    const std::string path = dir.file(std::string("model_") + (lsh ? "lsh" : "full") + std::to_string(int(c.cfg.hash)) +
                                      std::to_string(int(c.cfg.scheduler)) + ".bin");
    Status st = save_model(model, path);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(exists(path));
    CHECK_FALSE(exists(path + ".tmp"));

    // Load into a model that already holds something else: it is replaced.
    Model loaded;
    bystander(&loaded);
    st = load_model(path, &loaded);
    REQUIRE_MESSAGE(st.ok(), st.message());
    REQUIRE(loaded.initialized());
    CHECK(loaded.features() == model.features());
    CHECK(loaded.labels() == model.labels());
    check_same_config(loaded.config(), model.config());
    CHECK(same_weights(loaded, model));
    // (The tables' memory depends on their history: incremental updates leave it different.)
    if (c.cfg.scheduler != Scheduler::incremental) CHECK(loaded.parameter_bytes() == model.parameter_bytes());

    check_same_predictions(model, loaded, test, InferMode::full, test.rows);
    check_same_predictions(model, loaded, train, InferMode::full, 100);
    if (lsh) {
      check_same_predictions(model, loaded, test, InferMode::lsh, test.rows);
      check_same_predictions(model, loaded, train, InferMode::lsh, 100);
    }
    for (InferMode mode : {InferMode::full, InferMode::lsh}) {
      if (mode == InferMode::lsh && !lsh) continue;
      Metrics ma, mb;
      REQUIRE(model.evaluate(test, mode, &ma).ok());
      REQUIRE(loaded.evaluate(test, mode, &mb).ok());
      CHECK(ma.p_at_1 == mb.p_at_1);
      CHECK(ma.p_at_3 == mb.p_at_3);
      CHECK(ma.p_at_5 == mb.p_at_5);
      CHECK(ma.mean_candidates == mb.mean_candidates);
    }

    // The weight sections hold exactly the weights() memory (little-endian floats).
    {
      const std::string file = read_bytes(path);
      const std::vector<Section> layout = sections_of(file);
      const Snapshot snap = snapshot(model);
      // INPW holds the input layer's W1 then b1; OUTW the output layer's rows.
      std::vector<float> input = snap.W1;
      input.insert(input.end(), snap.b1.begin(), snap.b1.end());
      const std::pair<const char*, const std::vector<float>*> parts[] = {{"INPW", &input}, {"OUTW", &snap.W2}};
      for (const auto& part : parts) {
        const Section s = find_section(layout, part.first);
        REQUIRE(s.length == part.second->size() * 4);
        bool same = true;
        for (size_t i = 0; i < part.second->size(); ++i) {
          uint32_t u;
          std::memcpy(&u, &(*part.second)[i], 4);
          same = same && get_le32(file, s.payload() + 4 * i) == u;
        }
        CHECK_MESSAGE(same, "section ", part.first, " differs from weights()");
      }
    }

    // Saving the loaded model gives the same bytes: nothing saved is lost or altered by a load.
    const std::string again = path + ".again";
    st = save_model(loaded, again);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(read_bytes(again) == read_bytes(path));

    // Without the optimizer state: smaller, same weights and predictions.
    const std::string light = path + ".light";
    SaveOptions no_adam;
    no_adam.optimizer_state = false;
    st = save_model(model, light, no_adam);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(read_bytes(light).size() < read_bytes(path).size());
    Model light_model;
    st = load_model(light, &light_model);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(same_weights(light_model, model));
    check_same_predictions(model, light_model, test, InferMode::full, 50);
    if (lsh) check_same_predictions(model, light_model, test, InferMode::lsh, 50);
  }
}

TEST_CASE("io: a loaded full model trains on exactly like the original") {
  Dataset train, test;
  synthetic(400, 200, 500, 10, 12, &train, &test);
  TempDir dir;
  for (uint32_t threads : {1u, 2u}) {
    CAPTURE(threads);
    Config cfg = full_config();
    cfg.threads = threads;
    Model model;
    trained(cfg, train, 1, &model);
    const std::string path = dir.file("full_" + std::to_string(threads) + ".bin");
    Status st = save_model(model, path);
    REQUIRE_MESSAGE(st.ok(), st.message());
    Model loaded;
    st = load_model(path, &loaded);
    REQUIRE_MESSAGE(st.ok(), st.message());
    REQUIRE(same_weights(loaded, model));
    // One more epoch on both (same shuffle: epoch number and seed are saved; same Adam state).
    REQUIRE(model.train_epoch(train).ok());
    REQUIRE(loaded.train_epoch(train).ok());
    CHECK(same_weights(loaded, model));
    // And one more explicit batch.
    std::vector<uint32_t> rows = {3, 1, 4, 1, 5, 9, 2, 6};
    float la = 0, lb = 0;
    REQUIRE(model.train_batch(train, rows.data(), rows.size(), &la).ok());
    REQUIRE(loaded.train_batch(train, rows.data(), rows.size(), &lb).ok());
    CHECK(bits_equal(la, lb));
    CHECK(same_weights(loaded, model));
  }
}

TEST_CASE("io: LoadOptions.override_training replaces the training settings only") {
  Dataset train, test;
  synthetic(100, 40, 100, 10, 13, &train, &test);
  TempDir dir;
  Model model;
  trained(lsh_config(), train, 1, &model);
  const std::string path = dir.file("m.bin");
  REQUIRE(save_model(model, path).ok());

  Config other = full_config();
  other.hidden = 77;  // shape and index settings come from the file
  other.output = OutputMode::full;
  other.K = 3;
  other.learning_rate = 0.25f;
  other.batch_size = 7;
  other.threads = 2;
  other.beta1 = 0.5f;
  int calls = 0;
  other.on_progress = [&calls](const Progress&) { ++calls; return true; };
  LoadOptions opt;
  opt.override_training = &other;
  Model loaded;
  Status st = load_model(path, &loaded, opt);
  REQUIRE_MESSAGE(st.ok(), st.message());
  CHECK(loaded.config().learning_rate == 0.25f);
  CHECK(loaded.config().batch_size == 7u);
  CHECK(loaded.config().threads == 2u);
  CHECK(loaded.config().beta1 == 0.5f);
  CHECK(loaded.config().hidden == model.config().hidden);
  CHECK(loaded.config().output == OutputMode::lsh);
  CHECK(loaded.config().K == model.config().K);
  CHECK(same_weights(loaded, model));
  check_same_predictions(model, loaded, train, InferMode::lsh, 20);
  REQUIRE(loaded.train_epoch(train).ok());
  CHECK(calls > 0);
}

TEST_CASE("io: every Simd setting is saved and loaded as it was, neon included") {
  // A file records the requested level, not the table that ran, so a model saved with Simd::neon
  // on an ARM build also loads on x86 (where it runs the scalar table).
  Dataset train, test;
  synthetic(40, 20, 64, 16, 17, &train, &test);
  TempDir dir;
  for (Simd simd : {Simd::automatic, Simd::scalar, Simd::avx2, Simd::neon}) {
    CAPTURE(int(simd));
    Config c = full_config();
    c.simd = simd;
    Model model;
    trained(c, train, 1, &model);
    const std::string path = dir.file("simd.bin");
    REQUIRE(save_model(model, path).ok());
    Model loaded;
    Status st = load_model(path, &loaded);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(loaded.config().simd == simd);
    check_same_predictions(model, loaded, test, InferMode::full, test.rows);
  }
}

// ---------------------------------------------------------------------------------------------
// Damaged and crafted files
// ---------------------------------------------------------------------------------------------

namespace {

// A model of a few KB: 21 features, hidden 4, 11 labels (distinct numbers, found in CONF below).
void small_model(OutputMode output, Model* m) {
  Dataset train, test;
  synthetic(21, 11, 64, 1, 21, &train, &test);
  Config c;
  c.hidden = 4;
  c.output = output;
  c.batch_size = 16;
  c.threads = 1;
  c.seed = 3;
  c.K = 4;
  c.L = 4;
  c.min_active = 4;
  c.max_active = 4;
  c.rehash_every = 3;
  trained(c, train, 2, m);
}

// Loads `path` into a pre-initialized model and checks that it fails, names the file, and leaves
// the model as it was. Returns the message ("" when the load wrongly succeeded).
std::string expect_load_failure(const std::string& path, const LoadOptions& options = {}) {
  Model target;
  bystander(&target);
  const Snapshot before = snapshot(target);
  Status st = load_model(path, &target, options);
  CHECK_FALSE(st.ok());
  CHECK(same_snapshot(snapshot(target), before));
  CHECK(target.features() == 7);
  CHECK(target.labels() == 5);
  if (st.ok()) return "";
  const std::string base = path.substr(path.find_last_of('/') + 1);
  CHECK_MESSAGE(st.message().find(base) != std::string::npos, st.message());
  return st.message();
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// Flips bits [first, last) of `path` one at a time, `stride` apart, loading after each;
// every load must fail with a message naming the file and leave the target as it was. Restores
// the file. Returns a description
// of the flips that loaded anyway.
std::string flip_bits(const std::string& path, size_t first, size_t last, size_t stride, size_t* tried) {
  const std::string original = read_bytes(path);
  const std::vector<Section> layout = sections_of(original);
  Model target;
  bystander(&target);
  const Snapshot before = snapshot(target);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::string loaded_anyway;
  const std::string base = path.substr(path.find_last_of('/') + 1);
  size_t accepted = 0, changed_target = 0, unnamed = 0;
  *tried = 0;
  for (size_t bit = first; bit < std::min(last, original.size() * 8); bit += stride) {
    const size_t at = bit / 8;
    const char flipped = char(original[at] ^ (1 << (bit % 8)));
    REQUIRE(pwrite(fd, &flipped, 1, off_t(at)) == 1);
    Status st = load_model(path, &target);
    REQUIRE(pwrite(fd, &original[at], 1, off_t(at)) == 1);
    ++*tried;
    if (st.ok()) {
      if (accepted++ < 8) loaded_anyway += "byte " + std::to_string(at) + " bit " + std::to_string(bit % 8) + " (" + where(layout, at) + ") ";
      bystander(&target);  // so the next comparisons are meaningful
      continue;
    }
    if (st.message().find(base) == std::string::npos) ++unnamed;
    if (!same_snapshot(snapshot(target), before)) {
      ++changed_target;
      bystander(&target);
    }
  }
  close(fd);
  CHECK(read_bytes(path) == original);
  CHECK_MESSAGE(unnamed == 0, unnamed, " failures without a message naming the file");
  CHECK_MESSAGE(changed_target == 0, changed_target, " failed loads changed the target model");
  if (accepted) loaded_anyway = std::to_string(accepted) + " flips loaded anyway: " + loaded_anyway;
  return loaded_anyway;
}

}  // namespace

TEST_CASE("io: every single-bit flip of a small model file is refused") {
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    const bool lsh = output == OutputMode::lsh;
    CAPTURE(lsh);
    Model m;
    small_model(output, &m);
    const std::string path = dir.file(lsh ? "small_lsh.bin" : "small_full.bin");
    REQUIRE(save_model(m, path).ok());
    const size_t size = read_bytes(path).size();
    CAPTURE(size);
    CHECK(size < 4096);
    // Every bit of the full-softmax file; every 3rd bit of the lsh one (all sections covered).
    size_t tried = 0;
    std::string accepted = flip_bits(path, 0, size * 8, lsh ? 3 : 1, &tried);
    CHECK_MESSAGE(accepted.empty(), accepted);
    CHECK(tried >= size * 8 / 3);
    // The header's section count in particular (not covered by any checksum): every bit.
    accepted = flip_bits(path, 12 * 8, 16 * 8, 1, &tried);  // bytes 12..15
    CHECK_MESSAGE(accepted.empty(), accepted);
  }
}

TEST_CASE("io: truncated files and trailing bytes are refused") {
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Model m;
    small_model(output, &m);
    const std::string good = dir.file("good.bin");
    REQUIRE(save_model(m, good).ok());
    const std::string bytes = read_bytes(good);
    const std::string cut = dir.file("cut.bin");
    size_t accepted = 0, silent = 0, changed = 0;
    Model target;
    bystander(&target);
    const Snapshot before = snapshot(target);
    // Every length from size - 1 down to 0: the whole file once, then shortened in place.
    write_bytes(cut, bytes);
    int fd = open(cut.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    for (size_t n = bytes.size(); n-- > 0;) {
      REQUIRE(ftruncate(fd, off_t(n)) == 0);
      Status st = load_model(cut, &target);
      if (st.ok()) {
        ++accepted;
        bystander(&target);
        continue;
      }
      if (!contains(st.message(), "cut.bin")) ++silent;
      if (!same_snapshot(snapshot(target), before)) {
        ++changed;
        bystander(&target);
      }
    }
    close(fd);
    CHECK_MESSAGE(accepted == 0, accepted, " truncated files loaded");
    CHECK_MESSAGE(silent == 0, silent, " failures without a message naming the file");
    CHECK_MESSAGE(changed == 0, changed, " failed loads changed the target");
    // The shortest cuts and the cut before the last checksum say "truncated".
    write_bytes(cut, bytes.substr(0, bytes.size() - 1));
    CHECK(contains(expect_load_failure(cut), "truncated"));
    write_bytes(cut, "");
    CHECK(contains(expect_load_failure(cut), "truncated"));

    for (const std::string& extra : {std::string(1, '\0'), std::string("x"), std::string(16, '\0')}) {
      write_bytes(cut, bytes + extra);
      CHECK(contains(expect_load_failure(cut), "trailing"));
    }
    // A second copy of the END section after the first.
    write_bytes(cut, bytes + bytes.substr(bytes.size() - 16));
    expect_load_failure(cut);
  }
}

TEST_CASE("io: wrong magic, unknown version, missing file") {
  TempDir dir;
  Model m;
  small_model(OutputMode::full, &m);
  const std::string good = dir.file("good.bin");
  REQUIRE(save_model(m, good).ok());
  const std::string bytes = read_bytes(good);
  REQUIRE(bytes.substr(0, 8) == "MONGOOSE");
  REQUIRE(get_le32(bytes, 8) == 4u);

  const std::string bad = dir.file("bad.bin");
  std::string b = bytes;
  b[0] = 'm';
  write_bytes(bad, b);
  CHECK(contains(expect_load_failure(bad), "not a mongoose model"));
  write_bytes(bad, "this is a text file, not a model at all\n");
  CHECK(contains(expect_load_failure(bad), "not a mongoose model"));
  write_bytes(bad, std::string(64, '\0'));
  CHECK(contains(expect_load_failure(bad), "not a mongoose model"));

  // Only the version field changes; everything after it is intact and valid.
  for (uint32_t version : {0u, 5u, 0x01000000u, 0xFFFFFFFFu}) {
    CAPTURE(version);
    b = bytes;
    put_le32(b, 8, version);
    write_bytes(bad, b);
    const std::string msg = expect_load_failure(bad);
    CHECK_MESSAGE(contains(msg, "unknown format version"), msg);
    CHECK_MESSAGE(contains(msg, std::to_string(version)), msg);
  }

  Model target;
  bystander(&target);
  const Snapshot before = snapshot(target);
  Status st = load_model(dir.file("does_not_exist.bin"), &target);
  CHECK_FALSE(st.ok());
  CHECK(contains(st.message(), "does_not_exist.bin"));
  CHECK(same_snapshot(snapshot(target), before));
  CHECK_FALSE(load_model(good, nullptr).ok());
  // A directory is not a model.
  st = load_model(dir.path, &target);
  CHECK_FALSE(st.ok());
  CHECK(same_snapshot(snapshot(target), before));
}

TEST_CASE("io: LoadOptions expectations and the memory limit") {
  TempDir dir;
  Model m;
  small_model(OutputMode::full, &m);
  const std::string path = dir.file("m.bin");
  REQUIRE(save_model(m, path).ok());

  LoadOptions opt;
  opt.expect_features = 21;
  opt.expect_labels = 11;
  Model ok_model;
  Status st = load_model(path, &ok_model, opt);
  REQUIRE_MESSAGE(st.ok(), st.message());
  CHECK(same_weights(ok_model, m));

  opt.expect_features = 20;
  std::string msg = expect_load_failure(path, opt);
  CHECK_MESSAGE(contains(msg, "the model takes 21 features, the caller expects 20"), msg);
  opt.expect_features = 21;
  opt.expect_labels = 12;
  msg = expect_load_failure(path, opt);
  CHECK_MESSAGE(contains(msg, "the model has 11 labels, the caller expects 12"), msg);
  opt.expect_features = 0;
  opt.expect_labels = 10;
  msg = expect_load_failure(path, opt);
  CHECK_MESSAGE(contains(msg, "the model has 11 labels, the caller expects 10"), msg);

  // The weights: (21 x 4 + 4 + 11 x stride) floats.
  const Model::Weights w = m.weights();
  const size_t weight_bytes = (w.features * w.hidden + w.hidden + w.labels * w.output_stride) * sizeof(float);
  LoadOptions small;
  for (size_t limit : {size_t(0), size_t(100), weight_bytes / 2, weight_bytes - 1}) {
    CAPTURE(limit);
    small.max_bytes = limit;
    msg = expect_load_failure(path, small);
    CHECK_MESSAGE(contains(msg, "memory limit"), msg);
  }
  small.max_bytes = size_t(1) << 20;  // plenty
  st = load_model(path, &ok_model, small);
  CHECK_MESSAGE(st.ok(), st.message());
}

TEST_CASE("io: NETW and OUTC with valid checksums but impossible shapes fail fast on the file size") {
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Model m;
    small_model(output, &m);
    const std::string path = dir.file("m.bin");
    REQUIRE(save_model(m, path).ok());
    const std::string bytes = read_bytes(path);
    const std::vector<Section> layout = sections_of(bytes);
    REQUIRE(layout.front().tag == "NETW");
    REQUIRE(layout[1].tag == "OUTC");
    const Section net = find_section(layout, "NETW"), out = find_section(layout, "OUTC");
    // Our framing is right: the stored checksum is the CRC-32C of tag + length + payload.
    REQUIRE(get_le32(bytes, net.crc()) == crc32c(bytes.data() + net.offset, 12 + size_t(net.length)));

    // The fields are not documented one by one: find the 64-bit counts 21 (features, in NETW)
    // and 11 (labels, in OUTC).
    auto find_u64 = [&](const Section& sec, uint64_t value) {
      std::vector<size_t> at;
      for (size_t i = 0; i + 8 <= sec.length; i += 4)
        if (get_le64(bytes, sec.payload() + i) == value) at.push_back(sec.payload() + i);
      REQUIRE_MESSAGE(at.size() == 1, "the value ", value, " occurs ", at.size(), " times in ", sec.tag);
      return at[0];
    };
    const size_t features_at = find_u64(net, 21), labels_at = find_u64(out, 11);
    auto reseal = [&](std::string& b, const Section& sec) {
      put_le32(b, sec.crc(), crc32c(b.data() + sec.offset, 12 + size_t(sec.length)));
    };

    const std::string crafted = dir.file("crafted.bin");
    struct Patch {
      size_t at;
      uint64_t value;
    };
    const Patch patches[] = {{labels_at, 1000000000ull}, {labels_at, 0xFFFFFFFFull}, {features_at, 1000000000ull},
                             {features_at, 0xFFFFFFFFull}};
    for (const Patch& p : patches) {
      CAPTURE(p.value);
      std::string b = bytes;
      put_le64(b, p.at, p.value);
      // Without a new checksum the checksum catches it.
      write_bytes(crafted, b);
      CHECK(contains(expect_load_failure(crafted), "checksum"));
      // With one, only the size check can.
      reseal(b, p.at == labels_at ? out : net);
      write_bytes(crafted, b);
      LoadOptions no_limit;
      no_limit.max_bytes = ~size_t(0);  // the memory limit must not be what stops it
      auto t0 = std::chrono::steady_clock::now();
      std::string msg = expect_load_failure(crafted, no_limit);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      CHECK_MESSAGE(ms < 100.0, "took ", ms, " ms");
      CHECK_MESSAGE(contains(msg, "more bytes than the file has"), msg);
      CHECK_MESSAGE(contains(msg, std::to_string(p.value)), msg);
    }

    // A label count one too large (fits the file): the sections' sizes disagree with OUTC.
    std::string b = bytes;
    put_le64(b, labels_at, 12);
    reseal(b, out);
    write_bytes(crafted, b);
    std::string msg = expect_load_failure(crafted);
    CHECK_MESSAGE(contains(msg, "expected"), msg);
  }
}

// The predictions the library that wrote tests/models/v3-*.bin made with them (see the folder's
// README): "file mode row label:score ...".
std::vector<std::vector<Scored>> v3_predictions(const std::string& file, const std::string& mode) {
  std::ifstream in(std::string(MONGOOSE_SOURCE_DIR) + "/tests/models/v3-predictions.txt");
  REQUIRE_MESSAGE(in.good(), "tests/models/v3-predictions.txt is missing");
  std::vector<std::vector<Scored>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string f, m, item;
    size_t row;
    ls >> f >> m >> row;
    if (f != file || m != mode) continue;
    std::vector<Scored> top;
    while (ls >> item) {
      const size_t colon = item.find(':');
      top.push_back({uint32_t(std::stoul(item.substr(0, colon))), std::stof(item.substr(colon + 1))});
    }
    out.push_back(top);
  }
  return out;
}

// The model predicts what the recorded predictions say: the same labels, scores within float
// rounding of another instruction set.
void check_v3_predictions(const Model& m, const Dataset& test, const std::string& file) {
  for (InferMode mode : {InferMode::full, InferMode::lsh}) {
    if (mode == InferMode::lsh && m.config().output != OutputMode::lsh) continue;
    const auto expected = v3_predictions(file, mode == InferMode::full ? "full" : "lsh");
    REQUIRE(expected.size() == test.rows);
    size_t differ = 0;
    std::vector<Scored> top;
    for (size_t r = 0; r < test.rows; ++r) {
      const Dataset::Row row = test.row(r);
      REQUIRE(m.predict(row.ids, row.values, row.nnz, 3, mode, &top).ok());
      bool same = top.size() == expected[r].size();
      for (size_t i = 0; same && i < top.size(); ++i)
        same = top[i].label == expected[r][i].label && std::fabs(top[i].score - expected[r][i].score) <= 1e-5f;
      differ += !same;
    }
    CHECK_MESSAGE(differ == 0, file, ": ", differ, " rows predict differently from the recorded predictions");
  }
}

TEST_CASE("io: files of format versions 1, 2 and 3 still load, as they were trained, and save as version 4") {
  TempDir dir;
  // The data the fixtures were trained and recorded on (make_synthetic is deterministic).
  SyntheticConfig sc;
  sc.features = 21;
  sc.labels = 11;
  sc.train_rows = 120;
  sc.test_rows = 30;
  sc.max_labels = 3;
  sc.prototype_features = 6;
  sc.noise_features = 2;
  sc.seed = 5;
  Dataset train, test;
  REQUIRE(make_synthetic(sc, &train, &test).ok());
  for (const char* name : {"v3-full.bin", "v3-lsh.bin"}) {
    CAPTURE(name);
    const std::string v3 = read_bytes(std::string(MONGOOSE_SOURCE_DIR) + "/tests/models/" + name);
    REQUIRE(get_le32(v3, 8) == 3u);
    const bool lsh = std::string(name) == "v3-lsh.bin";
    Model loaded;
    const std::string v3_path = dir.file("v3.bin");
    write_bytes(v3_path, v3);
    Status st = load_model(v3_path, &loaded);
    REQUIRE_MESSAGE(st.ok(), st.message());
    CHECK(loaded.config().tail_drift == (lsh ? 0.5f : Config().tail_drift));
    check_v3_predictions(loaded, test, name);
    // Saved again it is a version-4 file that loads to the same predictions.
    REQUIRE(save_model(loaded, dir.file("v4.bin")).ok());
    CHECK(get_le32(read_bytes(dir.file("v4.bin")), 8) == 4u);
    Model again;
    REQUIRE(load_model(dir.file("v4.bin"), &again).ok());
    check_same_predictions(loaded, again, test, InferMode::full, test.rows);
    check_v3_predictions(again, test, name);
    // It trains on, and so does the version-3 model (same steps, bit for bit).
    REQUIRE(loaded.train_epoch(train).ok());
    REQUIRE(again.train_epoch(train).ok());
    check_same_predictions(loaded, again, test, InferMode::full, test.rows);

    // Older CONFs lack the last fields: version 2 tail_drift (f32), version 1 also hash_loss (u32)
    // and triplet_margin (f32).
    const Section conf = find_section(sections_of(v3), "CONF");
    for (uint32_t version : {1u, 2u}) {
      CAPTURE(version);
      const size_t cut = version == 1 ? 12 : 4;
      std::string old = v3.substr(0, conf.payload() + size_t(conf.length) - cut);
      old += std::string(4, '\0');  // the CRC, set below
      old += v3.substr(conf.end());
      put_le32(old, 8, version);
      put_le64(old, conf.offset + 4, conf.length - cut);
      put_le32(old, conf.crc() - cut, crc32c(old.data() + conf.offset, 12 + size_t(conf.length) - cut));
      const std::string old_path = dir.file("old.bin");
      write_bytes(old_path, old);
      Model older;
      st = load_model(old_path, &older);
      REQUIRE_MESSAGE(st.ok(), st.message());
      CHECK(older.config().hash_loss == (version == 1 || !lsh ? Config().hash_loss : HashLoss::triplet));
      CHECK(older.config().triplet_margin == (version == 1 || !lsh ? Config().triplet_margin : 0.75f));
      CHECK(older.config().tail_drift == 0.0f);  // older models were trained without it
      check_v3_predictions(older, test, name);
      // An older header in front of the version-3 CONF is refused: the sizes disagree.
      std::string mixed = v3;
      put_le32(mixed, 8, version);
      write_bytes(old_path, mixed);
      CHECK(contains(expect_load_failure(old_path), "CONF"));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Atomic save
// ---------------------------------------------------------------------------------------------

TEST_CASE("io: save_model writes through a temporary file and never damages the old one") {
  TempDir dir;
  Model m;
  small_model(OutputMode::full, &m);
  Model other;
  small_model(OutputMode::lsh, &other);
  const std::string path = dir.file("model.bin");
  REQUIRE(save_model(m, path).ok());
  CHECK_FALSE(exists(path + ".tmp"));
  const std::string good = read_bytes(path);

  // Overwriting an existing file works and leaves no temporary behind.
  REQUIRE(save_model(other, path).ok());
  CHECK_FALSE(exists(path + ".tmp"));
  Model back;
  REQUIRE(load_model(path, &back).ok());
  CHECK(same_weights(back, other));
  REQUIRE(save_model(m, path).ok());
  CHECK(read_bytes(path) == good);

  // A directory that does not exist.
  Status st = save_model(m, dir.file("no/such/dir/model.bin"));
  CHECK_FALSE(st.ok());
  CHECK_MESSAGE(contains(st.message(), "no/such/dir/model.bin"), st.message());
  CHECK_FALSE(exists(dir.file("no")));

  // Something at the old fixed temporary name is neither used nor an obstacle: the temporary's
  // name is new each time (and created exclusively).
  REQUIRE(mkdir((path + ".tmp").c_str(), 0700) == 0);
  st = save_model(other, path);
  CHECK_MESSAGE(st.ok(), st.message());
  REQUIRE(load_model(path, &back).ok());
  CHECK(same_weights(back, other));
  REQUIRE(rmdir((path + ".tmp").c_str()) == 0);
  REQUIRE(save_model(m, path).ok());

  // A directory as the target is refused before anything is written.
  const std::string dir_target = dir.file("target_dir");
  REQUIRE(mkdir(dir_target.c_str(), 0700) == 0);
  write_bytes(dir_target + "/keep", "x");
  st = save_model(m, dir_target);
  CHECK_FALSE(st.ok());
  CHECK_MESSAGE(contains(st.message(), "is a directory"), st.message());
  CHECK(read_bytes(dir_target + "/keep") == "x");
  CHECK(read_bytes(path) == good);

  // An uninitialized model is not saved, and nothing is written.
  Model empty;
  st = save_model(empty, dir.file("empty.bin"));
  CHECK_FALSE(st.ok());
  CHECK_FALSE(exists(dir.file("empty.bin")));
  CHECK_FALSE(exists(dir.file("empty.bin.tmp")));
}

// ---------------------------------------------------------------------------------------------
// Non-finite training
// ---------------------------------------------------------------------------------------------

namespace {

Config nonfinite_config(OutputMode output) {
  Config c = output == OutputMode::full ? full_config() : lsh_config();
  c.batch_size = 16;
  c.K = 4;
  c.L = 4;
  c.min_active = 8;
  c.max_active = 8;
  c.sampling_correction = true;  // label counts: must be left as they were too
  return c;
}

// Rows of 64 features whose values are all +-`magnitude`, two labels each. Filled in by hand:
// add_row refuses magnitudes above max_feature_value, and the tests below need them too.
Dataset large_values_dataset(float magnitude, size_t rows) {
  Dataset d;
  d.features = 64;
  d.labels = 40;
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t f = 0; f < 64; ++f) {
      d.feature_ids.push_back(f);
      d.feature_values.push_back((f + r) % 2 ? -magnitude : magnitude);
    }
    const uint32_t a = r % 40, b = (r % 40 + 1 + r / 40) % 40;
    d.label_ids.push_back(std::min(a, b));
    d.label_ids.push_back(a == b ? (a + 1) % 40 : std::max(a, b));
    d.row_offsets.push_back(d.feature_ids.size());
    d.label_offsets.push_back(d.label_ids.size());
    ++d.rows;
  }
  return d;
}

// Rewrites the float payload of section `tag` with f(i) and recomputes its checksum.
template <class F>
void rewrite_floats(std::string& file, const std::string& tag, F&& f) {
  const Section s = find_section(sections_of(file), tag);
  REQUIRE(s.length % 4 == 0);
  for (size_t i = 0; i < s.length / 4; ++i) {
    const float v = f(i);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    put_le32(file, s.payload() + 4 * i, u);
  }
  put_le32(file, s.crc(), crc32c(file.data() + s.offset, 12 + size_t(s.length)));
}

bool all_finite(const Snapshot& s) {
  for (const std::vector<float>* v : {&s.W1, &s.b1, &s.W2})
    for (float x : *v)
      if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

TEST_CASE("io: a non-finite loss is an error and leaves the model as it was") {
  // Inputs are bounded by the library, so a non-finite loss needs extreme weights: a model file
  // whose output rows are all 3e38 (finite, so the file is valid) with W1 = 0 and b1 = 1, so every
  // hidden unit is 1 and every logit overflows to +inf.
  Dataset train, test;
  synthetic(64, 40, 128, 1, 31, &train, &test);
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Model m;
    trained(nonfinite_config(output), train, 1, &m);
    const std::string path = dir.file("extreme.bin");
    REQUIRE(save_model(m, path).ok());
    std::string file = read_bytes(path);
    const Model::Weights w = m.weights();
    const size_t stride = w.output_stride, H = w.hidden;
    const size_t w1_floats = w.features * H;  // INPW: W1, then b1
    rewrite_floats(file, "INPW", [&](size_t i) { return i < w1_floats ? 0.0f : 1.0f; });
    rewrite_floats(file, "OUTW", [&](size_t i) { return i % stride <= H ? 3e38f : 0.0f; });
    write_bytes(path, file);
    Model extreme;
    Status st = load_model(path, &extreme);
    REQUIRE_MESSAGE(st.ok(), st.message());
    const Snapshot before = snapshot(extreme);

    const uint32_t rows[] = {0, 1, 2, 3, 4, 5, 6, 7};
    float loss = 123.0f;
    st = extreme.train_batch(train, rows, 8, &loss);
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(contains(st.message(), "loss is not finite"), st.message());
    CHECK(same_snapshot(snapshot(extreme), before));
    CHECK(extreme.stats().batches == 0);

    st = extreme.train_epoch(train);
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(contains(st.message(), "loss is not finite"), st.message());
    CHECK(same_snapshot(snapshot(extreme), before));

    // No trace anywhere in what a model file holds (step, epoch, label counts, Adam moments...):
    // saving it again gives the same bytes.
    const std::string again = dir.file("extreme_again.bin");
    REQUIRE(save_model(extreme, again).ok());
    CHECK(read_bytes(again) == file);
  }
}

TEST_CASE("io: inputs too large to train on are refused and leave the model as it was") {
  Dataset train, test;
  synthetic(64, 40, 128, 1, 32, &train, &test);
  TempDir dir;
  for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
    CAPTURE(int(output));
    Model m, twin;
    trained(nonfinite_config(output), train, 1, &m);
    trained(nonfinite_config(output), train, 1, &twin);
    const Snapshot before = snapshot(m);
    REQUIRE(save_model(m, dir.file("before.bin")).ok());

    // Finite values of 3e38: the hidden layer would overflow.
    const Dataset huge = large_values_dataset(3e38f, 40);
    const uint32_t rows[] = {0, 1, 2, 3};
    Status st = m.train_batch(huge, rows, 4);
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(!st.message().empty(), "no message");
    CHECK(same_snapshot(snapshot(m), before));
    st = m.train_epoch(huge);
    REQUIRE_FALSE(st.ok());
    CHECK(same_snapshot(snapshot(m), before));
    REQUIRE(save_model(m, dir.file("after.bin")).ok());
    CHECK(read_bytes(dir.file("after.bin")) == read_bytes(dir.file("before.bin")));

    // Training goes on exactly as if the refused batches had not been offered.
    const uint32_t good[] = {8, 9, 10, 11, 12, 13, 14, 15};
    float la = 0, lb = 0;
    REQUIRE(m.train_batch(train, good, 8, &la).ok());
    REQUIRE(twin.train_batch(train, good, 8, &lb).ok());
    CHECK(bits_equal(la, lb));
    CHECK(same_weights(m, twin));
  }
}

TEST_CASE("io: whatever large inputs training accepts, the model stays finite and loadable") {
  // Accepted batches with large inputs must not leave non-finite weights or optimizer state
  // (which save_model would write and load_model refuse).
  TempDir dir;
  for (float magnitude : {3e38f, 9e17f, 3e17f, 1e12f}) {
    for (OutputMode output : {OutputMode::full, OutputMode::lsh}) {
      CAPTURE(magnitude);
      CAPTURE(int(output));
      const Dataset large = large_values_dataset(magnitude, 64);
      Model m;
      REQUIRE(m.init(nonfinite_config(output), 64, 40).ok());
      size_t accepted = 0;
      for (int epoch = 0; epoch < 3; ++epoch) accepted += m.train_epoch(large).ok();
      CHECK(all_finite(snapshot(m)));
      const std::string path = dir.file("large.bin");
      Status st = save_model(m, path);
      REQUIRE_MESSAGE(st.ok(), st.message());
      Model back;
      st = load_model(path, &back);
      CHECK_MESSAGE(st.ok(), accepted, " epochs accepted, then the saved model does not load: ", st.message());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed XC corpus
// ---------------------------------------------------------------------------------------------

TEST_CASE("io: every file of the malformed XC corpus fails with exactly its expected message") {
  const std::string dir = std::string(MONGOOSE_SOURCE_DIR) + "/tests/malformed/";
  std::ifstream tsv(dir + "expected.tsv", std::ios::binary);
  REQUIRE_MESSAGE(tsv.good(), "cannot open ", dir, "expected.tsv");
  std::string line;
  size_t listed = 0, line_no = 0;
  std::vector<std::string> names;
  while (std::getline(tsv, line)) {
    ++line_no;
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    REQUIRE_MESSAGE(tab != std::string::npos, "expected.tsv:", line_no, ": no tab");
    const std::string name = line.substr(0, tab), expected = line.substr(tab + 1);
    CAPTURE(name);
    REQUIRE(name.find('/') == std::string::npos);
    CHECK(std::find(names.begin(), names.end(), name) == names.end());  // listed once
    names.push_back(name);
    CHECK_MESSAGE(expected.rfind(name + ":", 0) == 0, "the message must start with the file name: ", expected);
    ++listed;

    // The Dataset passed in is left untouched.
    Dataset d;
    d.features = 3;
    d.labels = 2;
    const uint32_t ids[] = {2};
    const float vals[] = {42.0f};
    const uint32_t labels[] = {1};
    REQUIRE(d.add_row(ids, vals, 1, labels, 1).ok());
    const Dataset before = d;
    Status st = read_xc(dir + name, &d);
    CHECK_FALSE(st.ok());
    CHECK(st.message() == dir + expected);  // read_xc names the path it was given
    CHECK(d.rows == before.rows);
    CHECK(d.features == before.features);
    CHECK(d.labels == before.labels);
    CHECK(d.row_offsets == before.row_offsets);
    CHECK(d.feature_ids == before.feature_ids);
    CHECK(same_bits(d.feature_values, before.feature_values));
    CHECK(d.label_offsets == before.label_offsets);
    CHECK(d.label_ids == before.label_ids);

    // The in-memory parser agrees, given the same name.
    const std::string text = read_bytes(dir + name);
    Dataset d2 = before;
    st = parse_xc(text.data(), text.size(), name, &d2);
    CHECK(st.message() == expected);
    CHECK(d2.rows == before.rows);
  }
  CHECK_MESSAGE(listed >= 40, "only ", listed, " malformed files are listed in expected.tsv");
  // Every corpus file is listed (a file added without an expectation would go untested).
  DIR* d = opendir(dir.c_str());
  REQUIRE(d != nullptr);
  size_t files = 0;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() < 4 || n.compare(n.size() - 4, 4, ".txt") != 0) continue;
    ++files;
    CHECK_MESSAGE(std::find(names.begin(), names.end(), n) != names.end(), n, " is not listed in expected.tsv");
  }
  closedir(d);
  CHECK(files == listed);
}
