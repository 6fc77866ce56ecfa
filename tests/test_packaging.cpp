// The public header's own small types for packaging: Config::on_progress (ProgressCallback, which
// keeps <functional> out of mongoose.h) behaves as the std::function it replaced.
#include <doctest/doctest.h>

#include <functional>

#include "../mongoose.h"

using mongoose::Progress;
using mongoose::ProgressCallback;

namespace {
bool stop_at_batch_two(const Progress& p) { return p.batch < 2; }
}  // namespace

TEST_CASE("packaging: ProgressCallback takes what std::function<bool(const Progress&)> took") {
  Progress p;
  p.batch = 3;
  ProgressCallback empty;
  CHECK(!empty);
  ProgressCallback none = nullptr;
  CHECK(!none);
  ProgressCallback from_function = stop_at_batch_two;
  REQUIRE(from_function);
  CHECK(!from_function(p));
  bool (*null_pointer)(const Progress&) = nullptr;
  CHECK(!ProgressCallback(null_pointer));
  CHECK(!ProgressCallback(std::function<bool(const Progress&)>()));
  ProgressCallback from_std = std::function<bool(const Progress&)>([](const Progress&) { return true; });
  CHECK(from_std(p));

  // Copies hold copies of the callable (a mutable lambda's state is not shared), as std::function.
  int calls = 0;
  ProgressCallback counting = [n = 0, &calls](const Progress&) mutable { calls = ++n; return n < 3; };
  CHECK(counting(p));
  ProgressCallback copy = counting;
  CHECK(copy(p));
  CHECK(calls == 2);
  CHECK(counting(p));  // its own count: 2
  CHECK(calls == 2);
  CHECK(!copy(p));     // the copy's: 3
  ProgressCallback moved = std::move(copy);
  CHECK(moved);
  copy = moved;
  CHECK(copy);
  copy = nullptr;
  CHECK(!copy);

  // In a Config: copied with it, assigned a lambda, and stopping an epoch.
  mongoose::Config c;
  CHECK(!c.on_progress);
  int batches = 0;
  c.on_progress = [&batches](const Progress&) { return ++batches < 2; };
  mongoose::Config c2 = c;
  CHECK(c2.on_progress(p));
  CHECK(batches == 1);
  mongoose::Dataset train, test;
  mongoose::SyntheticConfig sc;
  sc.train_rows = 2000;
  sc.test_rows = 10;
  sc.features = 100;
  sc.labels = 20;
  REQUIRE(mongoose::make_synthetic(sc, &train, &test).ok());
  c.hidden = 8;
  c.threads = 1;
  batches = 0;
  mongoose::Model model;
  REQUIRE(model.init(c, train.features, train.labels).ok());
  REQUIRE(model.train_epoch(train).ok());
  CHECK(batches == 2);
  CHECK(model.stats().batches == 2);
}

TEST_CASE("packaging: ProgressCallback from a captureless lambda and a function reference") {
  Progress p;
  ProgressCallback lambda = [](const Progress&) { return false; };
  REQUIRE(lambda);
  CHECK(!lambda(p));
  ProgressCallback reference(stop_at_batch_two);
  CHECK(reference(p));
}
