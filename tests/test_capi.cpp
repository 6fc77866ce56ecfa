// C API tests: datasets from CSR arrays and files, training, evaluation, prediction, save/load,
// agreement with the C++ API bit for bit, and every bad argument refused with a code and message.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../mongoose.h"
#include "common.h"

namespace {

// A dataset's arrays in the C API's CSR layout.
struct Csr {
  size_t rows = 0, features = 0, labels = 0;
  std::vector<uint64_t> indptr{0}, label_indptr{0};
  std::vector<uint32_t> indices, label_indices;
  std::vector<float> values;
};

Csr csr_of(const mongoose::Dataset& d) {
  Csr c;
  c.rows = d.rows;
  c.features = d.features;
  c.labels = d.labels;
  c.indptr = d.row_offsets;
  c.indices = d.feature_ids;
  c.values = d.feature_values;
  c.label_indptr = d.label_offsets;
  c.label_indices = d.label_ids;
  return c;
}

int from_csr(const Csr& c, mg_dataset** out, mg_error* err) {
  return mg_dataset_from_csr(c.rows, c.features, c.labels, c.indptr.data(), c.indices.data(), c.values.data(),
                             c.indices.size(), c.label_indptr.data(), c.label_indices.data(), c.label_indices.size(),
                             out, err);
}

// Two rows over 4 features and 3 labels.
Csr small_csr() {
  Csr c;
  c.rows = 2;
  c.features = 4;
  c.labels = 3;
  c.indptr = {0, 2, 3};
  c.indices = {0, 3, 1};
  c.values = {1.0f, 0.5f, 2.0f};
  c.label_indptr = {0, 1, 3};
  c.label_indices = {2, 0, 1};
  return c;
}

bool mentions(const mg_error& err, const char* what) { return std::strstr(err.message, what) != nullptr; }

mongoose::Dataset synthetic_train, synthetic_test;

void make_data() {
  if (synthetic_train.rows) return;
  mongoose::SyntheticConfig sc;
  sc.train_rows = 1500;
  sc.test_rows = 300;
  sc.features = 400;
  sc.labels = 120;
  REQUIRE(mongoose::make_synthetic(sc, &synthetic_train, &synthetic_test).ok());
}

}  // namespace

TEST_CASE("capi: mg_config_init gives the library's defaults") {
  mg_config c;
  std::memset(&c, 0xff, sizeof c);
  mg_config_init(&c);
  const mongoose::Config d;
  CHECK(c.output == MG_OUTPUT_FULL);
  CHECK(c.hidden == d.hidden);
  CHECK(c.learning_rate == d.learning_rate);
  CHECK(c.batch_size == d.batch_size);
  CHECK(c.threads == d.threads);
  CHECK(c.seed == d.seed);
  CHECK(c.scalar == 0);
  CHECK(c.hash == MG_HASH_SIMHASH);
  CHECK(c.K == d.K);
  CHECK(c.L == d.L);
  CHECK(c.min_active == d.min_active);
  CHECK(c.max_active == d.max_active);
  CHECK(c.tail_drift == d.tail_drift);
  CHECK(c.rehash_every == d.rehash_every);
  CHECK(c.infer_shortlist == d.infer_shortlist);
  CHECK(c.max_bytes == d.max_bytes);
  mg_config_init(nullptr);  // nothing happens
}

TEST_CASE("capi: a dataset from CSR arrays, and its getters") {
  mg_error err;
  mg_dataset* d = nullptr;
  Csr c = small_csr();
  REQUIRE(from_csr(c, &d, &err) == MG_OK);
  CHECK(err.code == MG_OK);
  CHECK(err.message[0] == '\0');
  CHECK(mg_dataset_rows(d) == 2);
  CHECK(mg_dataset_features(d) == 4);
  CHECK(mg_dataset_labels(d) == 3);
  CHECK(mg_dataset_normalize(d, &err) == MG_OK);
  mg_dataset_free(d);
  CHECK(mg_dataset_rows(nullptr) == 0);
  CHECK(mg_dataset_features(nullptr) == 0);
  CHECK(mg_dataset_labels(nullptr) == 0);
  mg_dataset_free(nullptr);

  // No values (every value 1), no labels, err NULL.
  d = nullptr;
  REQUIRE(mg_dataset_from_csr(2, 4, 3, c.indptr.data(), c.indices.data(), nullptr, 3, nullptr, nullptr, 0, &d,
                              nullptr) == MG_OK);
  CHECK(mg_dataset_rows(d) == 2);
  mg_dataset_free(d);

  // No rows at all.
  const uint64_t zero = 0;
  REQUIRE(mg_dataset_from_csr(0, 4, 3, &zero, nullptr, nullptr, 0, &zero, nullptr, 0, &d, &err) == MG_OK);
  CHECK(mg_dataset_rows(d) == 0);
  mg_dataset_free(d);
}

TEST_CASE("capi: bad CSR arrays are refused with MG_ERROR_ARGUMENT and a message") {
  mg_error err;
  mg_dataset* d = reinterpret_cast<mg_dataset*>(&err);  // set to NULL on every error
  const Csr good = small_csr();
  auto refused = [&](const Csr& c, const char* what) {
    d = reinterpret_cast<mg_dataset*>(&err);
    CHECK(from_csr(c, &d, &err) == MG_ERROR_ARGUMENT);
    CHECK(err.code == MG_ERROR_ARGUMENT);
    CHECK(d == nullptr);
    CHECK_MESSAGE(mentions(err, what), err.message, " should mention ", what);
  };
  Csr c = good;
  c.indices[1] = 4;
  refused(c, "feature id 4");
  c = good;
  c.label_indices[0] = 3;
  refused(c, "label");
  c = good;
  c.values[2] = std::numeric_limits<float>::quiet_NaN();
  refused(c, "finite");
  c = good;
  c.values[0] = std::numeric_limits<float>::infinity();
  refused(c, "finite");
  c = good;
  c.indices[1] = 0;  // twice in row 0
  refused(c, "twice");
  c = good;
  c.indptr[0] = 1;
  refused(c, "feature_indptr[0]");
  c = good;
  c.indptr = {0, 3, 2};
  refused(c, "feature_indptr[2]");
  c = good;
  c.indptr = {0, 2, 2};  // ends before the nnz given (3)
  refused(c, "nnz");
  c = good;
  c.label_indptr = {0, 4, 3};
  refused(c, "label_indptr[1]");
  c = good;
  c.features = 0;
  refused(c, "features");

  d = nullptr;
  CHECK(mg_dataset_from_csr(2, 4, 3, nullptr, good.indices.data(), nullptr, 3, nullptr, nullptr, 0, &d, &err) ==
        MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "feature_indptr is NULL"));
  CHECK(mg_dataset_from_csr(2, 4, 3, good.indptr.data(), nullptr, nullptr, 3, nullptr, nullptr, 0, &d, &err) ==
        MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "feature_indices is NULL"));
  CHECK(mg_dataset_from_csr(2, 4, 3, good.indptr.data(), good.indices.data(), nullptr, 3, nullptr, nullptr, 3, &d,
                            &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "label_indptr is NULL"));
  CHECK(mg_dataset_from_csr(2, 4, 3, good.indptr.data(), good.indices.data(), nullptr, 3, good.label_indptr.data(),
                            nullptr, 3, &d, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "label_indices is NULL"));
  CHECK(mg_dataset_from_csr(2, 4, 3, good.indptr.data(), good.indices.data(), nullptr, 3, nullptr, nullptr, 0,
                            nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "out is NULL"));
  // A size that cannot be allocated is refused before anything is read.
  const uint64_t huge[2] = {0, uint64_t(1) << 40};
  CHECK(mg_dataset_from_csr(1, 4, 3, huge, good.indices.data(), nullptr, size_t(1) << 40, nullptr, nullptr, 0, &d,
                            &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "budget"));
  CHECK(mg_dataset_normalize(nullptr, &err) == MG_ERROR_ARGUMENT);
}

TEST_CASE("capi: reading files, and their errors") {
  TempDir dir;
  const std::string path = dir.file("tiny.txt");
  write_bytes(path, "2 4 3\n2 0:1 3:0.5\n0,1 1:2\n");
  mg_error err;
  mg_dataset* d = nullptr;
  REQUIRE(mg_dataset_read(path.c_str(), &d, &err) == MG_OK);
  CHECK(mg_dataset_rows(d) == 2);
  mg_dataset_free(d);

  write_bytes(path, "2 4 3\n2 0:1 9:0.5\n0,1 1:2\n");
  CHECK(mg_dataset_read(path.c_str(), &d, &err) == MG_ERROR_FILE);
  CHECK(d == nullptr);
  CHECK(mentions(err, "tiny.txt:2"));
  CHECK(mg_dataset_read(dir.file("missing.txt").c_str(), &d, &err) == MG_ERROR_FILE);
  CHECK(mentions(err, "missing.txt"));
  CHECK(mg_dataset_read(nullptr, &d, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_dataset_read(path.c_str(), nullptr, &err) == MG_ERROR_ARGUMENT);
  // A message longer than the buffer is cut, still terminated.
  const std::string long_path = dir.file(std::string(1500, 'x'));
  CHECK(mg_dataset_read(long_path.c_str(), &d, &err) == MG_ERROR_FILE);
  CHECK(std::strlen(err.message) == sizeof err.message - 1);
}

TEST_CASE("capi: bad models, configurations and calls are refused") {
  mg_error err;
  mg_config cfg;
  mg_config_init(&cfg);
  mg_model* m = reinterpret_cast<mg_model*>(&err);
  CHECK(mg_model_create(nullptr, 4, 3, &m, &err) == MG_ERROR_ARGUMENT);
  CHECK(m == nullptr);
  CHECK(mentions(err, "config is NULL"));
  CHECK(mg_model_create(&cfg, 4, 3, nullptr, &err) == MG_ERROR_ARGUMENT);
  cfg.output = 7;
  CHECK(mg_model_create(&cfg, 4, 3, &m, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "output is 7"));
  mg_config_init(&cfg);
  cfg.hash = -1;
  CHECK(mg_model_create(&cfg, 4, 3, &m, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "hash"));
  mg_config_init(&cfg);
  cfg.hidden = 0;
  CHECK(mg_model_create(&cfg, 4, 3, &m, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "hidden"));
  mg_config_init(&cfg);
  cfg.learning_rate = std::numeric_limits<float>::quiet_NaN();
  CHECK(mg_model_create(&cfg, 4, 3, &m, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "learning_rate"));
  mg_config_init(&cfg);
  CHECK(mg_model_create(&cfg, 0, 3, &m, &err) == MG_ERROR_FAILED);
  CHECK(m == nullptr);
  cfg.max_bytes = 1000;
  CHECK(mg_model_create(&cfg, 4000, 3, &m, &err) == MG_ERROR_FAILED);
  CHECK(mentions(err, "bytes"));

  mg_config_init(&cfg);
  cfg.threads = 1;
  REQUIRE(mg_model_create(&cfg, 4, 3, &m, &err) == MG_OK);
  CHECK(mg_model_features(m) == 4);
  CHECK(mg_model_labels(m) == 3);
  CHECK(mg_model_features(nullptr) == 0);
  CHECK(mg_model_labels(nullptr) == 0);
  mg_dataset* d = nullptr;
  REQUIRE(from_csr(small_csr(), &d, &err) == MG_OK);

  CHECK(mg_model_train_epoch(nullptr, d, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_train_epoch(m, nullptr, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_train_batch(nullptr, d, 0, 1, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_train_batch(m, d, 1, 1, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "[1, 1)"));
  CHECK(mg_model_train_batch(m, d, 0, 3, nullptr, &err) == MG_ERROR_ARGUMENT);
  float loss = -1;
  CHECK(mg_model_train_batch(m, d, 0, 2, &loss, &err) == MG_OK);
  CHECK(loss > 0);

  mg_metrics metrics;
  CHECK(mg_model_evaluate(nullptr, d, MG_INFER_FULL, &metrics, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_evaluate(m, d, MG_INFER_FULL, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_evaluate(m, d, 5, &metrics, &err) == MG_ERROR_ARGUMENT);
  CHECK(mentions(err, "infer is 5"));
  CHECK(mg_model_evaluate(m, d, MG_INFER_LSH, &metrics, &err) == MG_ERROR_FAILED);  // a full model
  CHECK(mg_model_evaluate(m, d, MG_INFER_FULL, &metrics, &err) == MG_OK);
  CHECK(metrics.rows == 2);

  const uint32_t ids[2] = {0, 3};
  const float values[2] = {1.0f, 0.5f};
  uint32_t labels[5];
  float scores[5];
  size_t count = 9;
  CHECK(mg_model_predict(nullptr, ids, values, 2, 2, MG_INFER_FULL, labels, scores, &count, &err) == MG_ERROR_ARGUMENT);
  CHECK(count == 0);
  CHECK(mg_model_predict(m, ids, values, 2, 2, MG_INFER_FULL, nullptr, scores, &count, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_predict(m, nullptr, values, 2, 2, MG_INFER_FULL, labels, scores, &count, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_predict(m, ids, values, 2, 0, MG_INFER_FULL, labels, scores, &count, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_predict(m, ids, values, 2, 2, 3, labels, scores, &count, &err) == MG_ERROR_ARGUMENT);
  const uint32_t bad_ids[2] = {0, 4};
  CHECK(mg_model_predict(m, bad_ids, values, 2, 2, MG_INFER_FULL, labels, scores, &count, &err) == MG_ERROR_FAILED);
  CHECK(mentions(err, "4"));
  const float nan_values[2] = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(mg_model_predict(m, ids, nan_values, 2, 2, MG_INFER_FULL, labels, scores, &count, &err) == MG_ERROR_FAILED);
  CHECK(mg_model_predict(m, ids, values, 2, 5, MG_INFER_FULL, labels, scores, &count, &err) == MG_OK);
  CHECK(count == 3);  // min(k, labels)
  CHECK(scores[0] >= scores[1]);
  CHECK(mg_model_predict(m, ids, nullptr, 2, 2, MG_INFER_FULL, labels, nullptr, nullptr, nullptr) == MG_OK);

  CHECK(mg_model_predict_dataset(m, nullptr, 2, MG_INFER_FULL, labels, scores, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_predict_dataset(m, d, 0, MG_INFER_FULL, labels, scores, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_predict_dataset(m, d, 2, MG_INFER_FULL, labels, scores, &err) == MG_OK);
  // A dataset with more features than the model is refused by the model.
  Csr wide = small_csr();
  wide.features = 10;
  wide.indices[1] = 9;
  mg_dataset* w = nullptr;
  REQUIRE(from_csr(wide, &w, &err) == MG_OK);
  CHECK(mg_model_train_epoch(m, w, nullptr, &err) == MG_ERROR_FAILED);
  CHECK(mg_model_predict_dataset(m, w, 2, MG_INFER_FULL, labels, scores, &err) == MG_ERROR_FAILED);
  CHECK(mentions(err, "row 0"));
  mg_dataset_free(w);

  TempDir dir;
  CHECK(mg_model_save(nullptr, dir.file("m.bin").c_str(), &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_save(m, nullptr, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_save(m, dir.file("no/such/dir/m.bin").c_str(), &err) == MG_ERROR_FILE);
  CHECK(mentions(err, "no/such/dir"));
  mg_model* loaded = reinterpret_cast<mg_model*>(&err);
  CHECK(mg_model_load(dir.file("missing.bin").c_str(), &loaded, &err) == MG_ERROR_FILE);
  CHECK(loaded == nullptr);
  write_bytes(dir.file("junk.bin"), "not a model");
  CHECK(mg_model_load(dir.file("junk.bin").c_str(), &loaded, &err) == MG_ERROR_FILE);
  CHECK(mg_model_load(nullptr, &loaded, &err) == MG_ERROR_ARGUMENT);
  CHECK(mg_model_load(dir.file("junk.bin").c_str(), nullptr, &err) == MG_ERROR_ARGUMENT);
  mg_model_free(m);
  mg_model_free(nullptr);
  mg_dataset_free(d);
}

TEST_CASE("capi: training through the C API equals mongoose::Model bit for bit; save and load") {
  make_data();
  mg_error err;
  mg_dataset* train = nullptr;
  mg_dataset* test = nullptr;
  REQUIRE(from_csr(csr_of(synthetic_train), &train, &err) == MG_OK);
  REQUIRE(from_csr(csr_of(synthetic_test), &test, &err) == MG_OK);
  for (int32_t output : {MG_OUTPUT_FULL, MG_OUTPUT_LSH, MG_OUTPUT_MONGOOSE}) {
    CAPTURE(output);
    mg_config cfg;
    mg_config_init(&cfg);
    cfg.output = output;
    cfg.hidden = 32;
    cfg.threads = 2;
    cfg.seed = 5;
    cfg.min_active = 32;
    mg_model* m = nullptr;
    REQUIRE(mg_model_create(&cfg, mg_dataset_features(train), mg_dataset_labels(train), &m, &err) == MG_OK);

    mongoose::Config c;
    c.output = output == MG_OUTPUT_FULL ? mongoose::OutputMode::full : mongoose::OutputMode::lsh;
    if (output == MG_OUTPUT_MONGOOSE) {
      c.scheduler = mongoose::Scheduler::detect;
      c.learn_hash = true;
    }
    c.hidden = 32;
    c.threads = 2;
    c.seed = 5;
    c.min_active = 32;
    mongoose::Model model;
    REQUIRE(model.init(c, synthetic_train.features, synthetic_train.labels).ok());

    for (int e = 0; e < 2; ++e) {
      double loss = 0;
      REQUIRE(mg_model_train_epoch(m, train, &loss, &err) == MG_OK);
      REQUIRE(model.train_epoch(synthetic_train).ok());
      CHECK(loss == model.stats().mean_loss_last_epoch);
    }
    float batch_loss = 0, cpp_loss = 0;
    REQUIRE(mg_model_train_batch(m, train, 10, 60, &batch_loss, &err) == MG_OK);
    std::vector<uint32_t> rows;
    for (uint32_t r = 10; r < 60; ++r) rows.push_back(r);
    REQUIRE(model.train_batch(synthetic_train, rows.data(), rows.size(), &cpp_loss).ok());
    CHECK(batch_loss == cpp_loss);

    mg_metrics metrics;
    mongoose::Metrics expected;
    REQUIRE(mg_model_evaluate(m, test, MG_INFER_FULL, &metrics, &err) == MG_OK);
    REQUIRE(model.evaluate(synthetic_test, mongoose::InferMode::full, &expected).ok());
    CHECK(metrics.p_at_1 == expected.p_at_1);
    CHECK(metrics.p_at_3 == expected.p_at_3);
    CHECK(metrics.p_at_5 == expected.p_at_5);
    CHECK(metrics.rows == synthetic_test.rows);
    CHECK(metrics.p_at_1 > 0.3);  // it learned something

    const size_t k = 5, n = synthetic_test.rows;
    std::vector<uint32_t> labels(n * k);
    std::vector<float> scores(n * k);
    REQUIRE(mg_model_predict_dataset(m, test, k, MG_INFER_FULL, labels.data(), scores.data(), &err) == MG_OK);
    for (size_t r = 0; r < n; r += 37) {
      const mongoose::Dataset::Row row = synthetic_test.row(r);
      std::vector<mongoose::Scored> top;
      REQUIRE(model.predict(row.ids, row.values, row.nnz, k, mongoose::InferMode::full, &top).ok());
      uint32_t one_labels[5];
      float one_scores[5];
      size_t count = 0;
      REQUIRE(mg_model_predict(m, row.ids, row.values, row.nnz, k, MG_INFER_FULL, one_labels, one_scores, &count,
                               &err) == MG_OK);
      REQUIRE(count == k);
      for (size_t i = 0; i < k; ++i) {
        CHECK(labels[r * k + i] == top[i].label);
        CHECK(scores[r * k + i] == top[i].score);
        CHECK(one_labels[i] == top[i].label);
      }
    }
    if (output != MG_OUTPUT_FULL) {
      mg_metrics lsh;
      CHECK(mg_model_evaluate(m, test, MG_INFER_LSH, &lsh, &err) == MG_OK);
    }

    TempDir dir;
    const std::string path = dir.file("model.bin");
    REQUIRE(mg_model_save(m, path.c_str(), &err) == MG_OK);
    mg_model* loaded = nullptr;
    REQUIRE(mg_model_load(path.c_str(), &loaded, &err) == MG_OK);
    CHECK(mg_model_labels(loaded) == synthetic_train.labels);
    mg_metrics again;
    REQUIRE(mg_model_evaluate(loaded, test, MG_INFER_FULL, &again, &err) == MG_OK);
    CHECK(again.p_at_1 == metrics.p_at_1);
    CHECK(again.p_at_5 == metrics.p_at_5);
    mg_model_free(loaded);
    mg_model_free(m);
  }
  // k above the label count pads each row.
  mg_config cfg;
  mg_config_init(&cfg);
  cfg.hidden = 8;
  mg_model* m = nullptr;
  REQUIRE(mg_model_create(&cfg, 400, 120, &m, &err) == MG_OK);
  const size_t k = 130;
  std::vector<uint32_t> labels(synthetic_test.rows * k);
  std::vector<float> scores(synthetic_test.rows * k);
  REQUIRE(mg_model_predict_dataset(m, test, k, MG_INFER_FULL, labels.data(), scores.data(), &err) == MG_OK);
  CHECK(labels[k - 1] == UINT32_MAX);
  CHECK(std::isinf(scores[k - 1]));
  CHECK(labels[119] < 120);
  mg_model_free(m);
  mg_dataset_free(train);
  mg_dataset_free(test);
}
