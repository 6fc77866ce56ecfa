// Tests for the Hash tables section: TableConfig validation, insert/query against brute force,
// FIFO and reservoir buckets, remove/update against a reference model, keep_top_hits, build()
// determinism across thread counts, memory accounting.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "../mongoose.h"

namespace {

using mongoose::BucketPolicy;
using mongoose::HashTables;
using mongoose::QueryResult;
using mongoose::Rng;
using mongoose::Status;
using mongoose::TableConfig;

TableConfig table_config(uint32_t K, uint32_t L, uint32_t capacity,
                         BucketPolicy policy = BucketPolicy::reservoir, uint64_t seed = 1) {
  TableConfig c;
  c.K = K;
  c.L = L;
  c.bucket_capacity = capacity;
  c.policy = policy;
  c.seed = seed;
  return c;
}

std::vector<uint32_t> random_codes(Rng& rng, uint32_t K, uint32_t L) {
  std::vector<uint32_t> c(L);
  for (uint32_t& x : c) x = rng.below(1u << K);
  return c;
}

std::vector<uint32_t> sorted(std::vector<uint32_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// The expected query result, computed from the buckets: ids in first-seen order (tables in
// order, each bucket in its stored order) with the number of probed buckets holding each id.
void brute_force_query(const HashTables& tables, const uint32_t* codes,
                       std::vector<uint32_t>* ids, std::vector<uint16_t>* hits) {
  ids->clear();
  hits->clear();
  std::map<uint32_t, size_t> index;
  for (uint32_t t = 0; t < tables.config().L; ++t) {
    for (uint32_t id : tables.bucket(t, codes[t])) {
      auto it = index.find(id);
      if (it == index.end()) {
        index[id] = ids->size();
        ids->push_back(id);
        hits->push_back(1);
      } else {
        ++(*hits)[it->second];
      }
    }
  }
}

void check_query(const HashTables& tables, const uint32_t* codes, QueryResult* r) {
  tables.query(codes, r);
  std::vector<uint32_t> ids;
  std::vector<uint16_t> hits;
  brute_force_query(tables, codes, &ids, &hits);
  REQUIRE(r->ids.size() == r->hits.size());
  CHECK(r->ids == ids);
  CHECK(r->hits == hits);
}

// Every bucket of `tables` holds exactly the ids the model puts there (as sets; no eviction).
void check_against_model(const HashTables& tables,
                         const std::map<uint32_t, std::vector<uint32_t>>& model) {
  const TableConfig& c = tables.config();
  std::vector<std::vector<std::vector<uint32_t>>> want(
      c.L, std::vector<std::vector<uint32_t>>(size_t(1) << c.K));
  for (const auto& [id, codes] : model)
    for (uint32_t t = 0; t < c.L; ++t) want[t][codes[t]].push_back(id);
  size_t total = 0;
  for (uint32_t t = 0; t < c.L; ++t) {
    for (uint32_t b = 0; b < (1u << c.K); ++b) {
      CAPTURE(t);
      CAPTURE(b);
      REQUIRE(sorted(tables.bucket(t, b)) == want[t][b]);  // model ids are visited in order
      total += want[t][b].size();
    }
  }
  CHECK(tables.stored_ids() == total);
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("validate(TableConfig) accepts the documented ranges and names bad fields") {
  CHECK(mongoose::validate(TableConfig{}).ok());
  CHECK(mongoose::validate(table_config(1, 1, 1)).ok());
  CHECK(mongoose::validate(table_config(24, 1024, 65535)).ok());
  CHECK(mongoose::validate(table_config(10, 50, 128, BucketPolicy::fifo)).ok());

  struct Case {
    const char* what;
    TableConfig config;
    const char* field;
  };
  std::vector<Case> cases = {
      {"K=0", table_config(0, 10, 16), "K"},
      {"K=25", table_config(25, 10, 16), "K"},
      {"L=0", table_config(6, 0, 16), "L"},
      {"L=1025", table_config(6, 1025, 16), "L"},
      {"capacity=0", table_config(6, 10, 0), "bucket_capacity"},
      {"capacity=65536", table_config(6, 10, 65536), "bucket_capacity"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    Status st = mongoose::validate(c.config);
    REQUIRE_FALSE(st.ok());
    CAPTURE(st.message());
    CHECK(contains(st.message(), c.field));
    HashTables t;
    CHECK_FALSE(t.init(c.config).ok());
  }
}

TEST_CASE("Fresh tables are empty") {
  HashTables t;
  REQUIRE(t.init(table_config(8, 5, 16)).ok());
  CHECK(t.stored_ids() == 0);
  for (uint32_t table = 0; table < 5; ++table)
    for (uint32_t b = 0; b < 256; ++b) CHECK(t.bucket(table, b).empty());
  QueryResult r;
  std::vector<uint32_t> codes(5, 3);
  t.query(codes.data(), &r);
  CHECK(r.ids.empty());
  CHECK(r.hits.empty());
}

TEST_CASE("insert then query equals the brute-force union of the buckets with hit counts") {
  for (uint32_t K : {2u, 5u, 12u}) {
    CAPTURE(K);
    const uint32_t L = 9, n = 3000;
    HashTables t;
    REQUIRE(t.init(table_config(K, L, 65535)).ok());  // no eviction
    Rng rng(K);
    std::map<uint32_t, std::vector<uint32_t>> model;
    for (uint32_t id = 0; id < n; ++id) {
      uint32_t item = id * 7 + 3;  // sparse, non-contiguous ids
      model[item] = random_codes(rng, K, L);
      t.insert(item, model[item].data());
    }
    CHECK(t.stored_ids() == size_t(n) * L);
    check_against_model(t, model);
    QueryResult r;
    for (int q = 0; q < 100; ++q) {
      // Queries at stored codes (hits) and at random codes.
      std::vector<uint32_t> codes =
          q % 2 ? random_codes(rng, K, L) : model[uint32_t(rng.below(n)) * 7 + 3];
      check_query(t, codes.data(), &r);
      // Every id is distinct, hits are in [1, L].
      CHECK(std::set<uint32_t>(r.ids.begin(), r.ids.end()).size() == r.ids.size());
      for (uint16_t h : r.hits) CHECK((h >= 1 && h <= L));
    }
    // An item queried at its own codes is found in all L tables.
    auto& own = model[3];
    t.query(own.data(), &r);
    auto it = std::find(r.ids.begin(), r.ids.end(), 3u);
    REQUIRE(it != r.ids.end());
    CHECK(r.hits[size_t(it - r.ids.begin())] == L);
  }
}

TEST_CASE("query handles large ids and the top bucket of K=24") {
  const uint32_t K = 24, L = 3;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, 8)).ok());
  const uint32_t top = (1u << K) - 1;
  std::vector<uint32_t> codes = {top, 0, top / 2};
  // (QueryResult keeps a slot per item id, so ids are meant to be dense: 0..N-1.)
  t.insert(5000000u, codes.data());
  t.insert(7, codes.data());
  CHECK(t.stored_ids() == 6);
  CHECK(sorted(t.bucket(0, top)) == std::vector<uint32_t>{7, 5000000u});
  QueryResult r;
  check_query(t, codes.data(), &r);
  CHECK(r.ids.size() == 2);
  CHECK(r.hits == std::vector<uint16_t>{3, 3});
  // Buckets are allocated lazily: K=24 with two items costs far less than 2^24 buckets.
  CHECK(t.bytes_used() < (size_t(16) << 20));
}

TEST_CASE("FIFO buckets keep the newest capacity ids") {
  const uint32_t K = 3, L = 4, C = 5;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, C, BucketPolicy::fifo)).ok());
  // Table t: item i goes to bucket (i + t) % 2 for even t, bucket 7 for odd t.
  std::vector<std::vector<std::vector<uint32_t>>> offered(L, std::vector<std::vector<uint32_t>>(8));
  for (uint32_t id = 0; id < 40; ++id) {
    std::vector<uint32_t> codes(L);
    for (uint32_t tb = 0; tb < L; ++tb) codes[tb] = tb % 2 == 0 ? (id + tb) % 2 : 7;
    t.insert(id, codes.data());
    for (uint32_t tb = 0; tb < L; ++tb) offered[tb][codes[tb]].push_back(id);
    // After every insert each bucket holds the last min(C, offered) ids offered to it.
    for (uint32_t tb = 0; tb < L; ++tb) {
      for (uint32_t b = 0; b < 8; ++b) {
        const auto& o = offered[tb][b];
        std::vector<uint32_t> want(o.end() - long(std::min<size_t>(C, o.size())), o.end());
        CAPTURE(id);
        CAPTURE(tb);
        CAPTURE(b);
        REQUIRE(sorted(t.bucket(tb, b)) == sorted(want));
      }
    }
  }
  CHECK(t.stored_ids() == size_t(L) * C * 2 - size_t(L / 2) * C);  // even: 2 full, odd: 1 full
}

TEST_CASE("FIFO after remove: the bucket still evicts its oldest remaining id") {
  HashTables t;
  REQUIRE(t.init(table_config(2, 1, 3, BucketPolicy::fifo)).ok());
  uint32_t code = 1;
  for (uint32_t id : {10u, 11u, 12u}) t.insert(id, &code);
  t.remove(11, &code);
  t.insert(13, &code);  // fits: 10 12 13
  CHECK(sorted(t.bucket(0, 1)) == std::vector<uint32_t>{10, 12, 13});
  t.insert(14, &code);  // evicts 10
  CHECK(sorted(t.bucket(0, 1)) == std::vector<uint32_t>{12, 13, 14});
  t.insert(15, &code);  // evicts 12
  CHECK(sorted(t.bucket(0, 1)) == std::vector<uint32_t>{13, 14, 15});
}

TEST_CASE("Reservoir buckets keep a uniform sample of the ids offered") {
  // 64 ids offered to one bucket of capacity 8 in every table; each table is one trial. Over
  // 4 seeds x 500 tables = 2000 trials every id should be kept with probability 8/64.
  const uint32_t K = 2, L = 500, C = 8, n = 64;
  std::vector<double> kept(n, 0.0);
  size_t trials = 0;
  std::vector<uint32_t> codes(L, 2);
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    HashTables t;
    REQUIRE(t.init(table_config(K, L, C, BucketPolicy::reservoir, seed)).ok());
    for (uint32_t id = 0; id < n; ++id) t.insert(id, codes.data());
    CHECK(t.stored_ids() == size_t(L) * C);
    for (uint32_t tb = 0; tb < L; ++tb) {
      const std::vector<uint32_t>& b = t.bucket(tb, 2);
      REQUIRE(b.size() == C);
      REQUIRE(std::set<uint32_t>(b.begin(), b.end()).size() == C);  // no duplicates
      for (uint32_t id : b) {
        REQUIRE(id < n);
        kept[id] += 1;
      }
      ++trials;
    }
  }
  const double expected = double(trials) * C / n;  // 250
  double chi2 = 0;
  for (double k : kept) chi2 += (k - expected) * (k - expected) / expected;
  // 63 degrees of freedom: mean 63, 99.9% quantile ~103. (Sampling without replacement makes
  // the statistic a little smaller still.) FIFO or keep-first would give chi2 in the thousands.
  MESSAGE("reservoir chi2 over 64 ids (63 dof): " << chi2);
  CHECK(chi2 < 110.0);
  // The first and the last ids are no more likely than the middle ones.
  double first8 = 0, last8 = 0;
  for (uint32_t i = 0; i < 8; ++i) {
    first8 += kept[i];
    last8 += kept[n - 1 - i];
  }
  CHECK(std::fabs(first8 - 8 * expected) < 5 * std::sqrt(8 * expected));
  CHECK(std::fabs(last8 - 8 * expected) < 5 * std::sqrt(8 * expected));
}

TEST_CASE("Reservoir: a long single stream into one bucket stays uniform over time") {
  // One table, 20,000 ids through a bucket of 100: inclusion by id decile must be uniform.
  HashTables t;
  REQUIRE(t.init(table_config(1, 1, 100, BucketPolicy::reservoir, 9)).ok());
  uint32_t code = 0;
  const uint32_t n = 20000;
  std::vector<double> per_block(10, 0.0);
  // Repeat with 30 independent streams (different seeds) to have 3000 kept ids in all.
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    REQUIRE(t.init(table_config(1, 1, 100, BucketPolicy::reservoir, seed)).ok());
    for (uint32_t id = 0; id < n; ++id) t.insert(id, &code);
    REQUIRE(t.bucket(0, 0).size() == 100);
    for (uint32_t id : t.bucket(0, 0)) per_block[id / (n / 10)] += 1;
  }
  double chi2 = 0;
  for (double k : per_block) chi2 += (k - 300.0) * (k - 300.0) / 300.0;
  MESSAGE("reservoir stream chi2 over 10 blocks (9 dof): " << chi2);
  CHECK(chi2 < 30.0);  // 9 dof: 99.9% quantile ~27.9
}

TEST_CASE("Below capacity, reservoir and FIFO keep every id") {
  for (BucketPolicy p : {BucketPolicy::fifo, BucketPolicy::reservoir}) {
    HashTables t;
    REQUIRE(t.init(table_config(4, 6, 20, p)).ok());
    Rng rng(3);
    std::map<uint32_t, std::vector<uint32_t>> model;
    for (uint32_t id = 0; id < 40; ++id) {  // 40 ids over 16 buckets: at most ~10 per bucket
      model[id] = random_codes(rng, 4, 6);
      t.insert(id, model[id].data());
    }
    bool any_full = false;
    for (uint32_t tb = 0; tb < 6; ++tb)
      for (uint32_t b = 0; b < 16; ++b) any_full = any_full || t.bucket(tb, b).size() >= 20;
    REQUIRE_FALSE(any_full);
    check_against_model(t, model);
  }
}

TEST_CASE("remove and update agree with a reference model under random operations") {
  for (BucketPolicy p : {BucketPolicy::fifo, BucketPolicy::reservoir}) {
    const uint32_t K = 3, L = 5;
    HashTables t;
    REQUIRE(t.init(table_config(K, L, 4000, p, 5)).ok());
    Rng rng(p == BucketPolicy::fifo ? 10 : 11);
    std::map<uint32_t, std::vector<uint32_t>> model;
    std::vector<uint32_t> live;
    uint32_t next_id = 0;
    QueryResult r;
    for (int op = 0; op < 4000; ++op) {
      uint32_t kind = rng.below(10);
      if (kind < 4 || live.empty()) {  // insert a new id
        uint32_t id = next_id++ * 3 + 1;
        model[id] = random_codes(rng, K, L);
        t.insert(id, model[id].data());
        live.push_back(id);
      } else if (kind < 6) {  // remove a live id
        size_t k = rng.below(uint32_t(live.size()));
        uint32_t id = live[k];
        t.remove(id, model[id].data());
        model.erase(id);
        live[k] = live.back();
        live.pop_back();
      } else if (kind < 9) {  // update a live id; about half the tables keep their code
        uint32_t id = live[rng.below(uint32_t(live.size()))];
        std::vector<uint32_t> fresh = model[id];
        for (uint32_t& c : fresh)
          if (rng.below(2)) c = rng.below(1u << K);
        t.update(id, model[id].data(), fresh.data());
        model[id] = fresh;
      } else {  // remove an id that is absent (never inserted, or already removed): no-op
        uint32_t id = rng.below(2) ? 999999u : next_id * 3 + 2;
        std::vector<uint32_t> codes = random_codes(rng, K, L);
        t.remove(id, codes.data());
      }
      if (op % 97 == 0) {
        check_against_model(t, model);
        check_query(t, random_codes(rng, K, L).data(), &r);
      }
    }
    check_against_model(t, model);
    CHECK(t.stored_ids() == model.size() * L);
    // Removing everything leaves empty buckets.
    for (auto& [id, codes] : model) t.remove(id, codes.data());
    CHECK(t.stored_ids() == 0);
    for (uint32_t tb = 0; tb < L; ++tb)
      for (uint32_t b = 0; b < (1u << K); ++b) CHECK(t.bucket(tb, b).empty());
  }
}

TEST_CASE("update with identical codes keeps the id exactly once") {
  HashTables t;
  REQUIRE(t.init(table_config(4, 3, 10)).ok());
  std::vector<uint32_t> codes = {1, 2, 3};
  t.insert(42, codes.data());
  t.update(42, codes.data(), codes.data());
  CHECK(t.stored_ids() == 3);
  for (uint32_t tb = 0; tb < 3; ++tb) CHECK(t.bucket(tb, codes[tb]) == std::vector<uint32_t>{42});
  std::vector<uint32_t> moved = {1, 5, 3};
  t.update(42, codes.data(), moved.data());
  CHECK(t.bucket(1, 2).empty());
  CHECK(t.bucket(1, 5) == std::vector<uint32_t>{42});
  CHECK(t.bucket(0, 1) == std::vector<uint32_t>{42});
  CHECK(t.stored_ids() == 3);
}

TEST_CASE("keep_top_hits keeps the m most-hit items, ties by first-seen order") {
  const uint32_t K = 4, L = 10;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, 1000)).ok());
  std::vector<uint32_t> query(L, 0);  // the query probes bucket 0 everywhere
  Rng rng(21);
  // Item i is placed in bucket 0 of a random subset of tables, elsewhere in bucket 1+.
  for (uint32_t id = 0; id < 200; ++id) {
    std::vector<uint32_t> codes(L);
    for (uint32_t& c : codes) c = rng.below(3) == 0 ? 0 : 1 + rng.below(15);
    t.insert(id, codes.data());
  }
  QueryResult full;
  t.query(query.data(), &full);
  REQUIRE(full.ids.size() > 50);
  // The expected order: stable sort by hits, descending.
  std::vector<size_t> order(full.ids.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return full.hits[a] > full.hits[b]; });
  for (size_t m : {size_t(0), size_t(1), size_t(7), size_t(30), full.ids.size(),
                   full.ids.size() + 5}) {
    CAPTURE(m);
    QueryResult r;
    t.query(query.data(), &r);
    HashTables::keep_top_hits(&r, m);
    size_t want = std::min(m, full.ids.size());
    REQUIRE(r.ids.size() == want);
    REQUIRE(r.hits.size() == want);
    for (size_t i = 0; i < want; ++i) {
      CHECK(r.ids[i] == full.ids[order[i]]);
      CHECK(r.hits[i] == full.hits[order[i]]);
    }
    // The result is reusable afterwards: a new query gives the fresh answer.
    t.query(query.data(), &r);
    CHECK(r.ids == full.ids);
    CHECK(r.hits == full.hits);
  }
}

TEST_CASE("QueryResult reuse across queries gives the same results as fresh ones") {
  const uint32_t K = 6, L = 20;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, 64, BucketPolicy::reservoir, 3)).ok());
  Rng rng(13);
  std::vector<std::vector<uint32_t>> item_codes;
  for (uint32_t id = 0; id < 5000; ++id) {
    item_codes.push_back(random_codes(rng, K, L));
    t.insert(id, item_codes.back().data());
  }
  QueryResult reused;
  for (int q = 0; q < 200; ++q) {
    std::vector<uint32_t> codes =
        q % 3 ? random_codes(rng, K, L) : item_codes[rng.below(uint32_t(item_codes.size()))];
    // Sometimes probe fewer distinct buckets (repeated small codes) for small results.
    if (q % 5 == 0)
      for (uint32_t& c : codes) c = rng.below(2);
    QueryResult fresh;
    t.query(codes.data(), &fresh);
    t.query(codes.data(), &reused);
    CHECK(reused.ids == fresh.ids);
    CHECK(reused.hits == fresh.hits);
    if (q % 4 == 1) HashTables::keep_top_hits(&reused, 10);
    if (q % 7 == 2) reused.clear();
    CHECK((q % 7 != 2 || reused.ids.empty()));
  }
  // A result used on other tables (different ids) still works.
  HashTables small;
  REQUIRE(small.init(table_config(K, L, 64)).ok());
  std::vector<uint32_t> codes = random_codes(rng, K, L);
  small.insert(3, codes.data());
  small.query(codes.data(), &reused);
  CHECK(reused.ids == std::vector<uint32_t>{3});
  CHECK(reused.hits == std::vector<uint16_t>{uint16_t(L)});
}

TEST_CASE("build() is deterministic and the same for 1, 2 and many threads") {
  for (BucketPolicy p : {BucketPolicy::reservoir, BucketPolicy::fifo}) {
    const uint32_t K = 6, L = 13, C = 8;  // small capacity: replacement choices matter
    const size_t n = 6000;
    Rng rng(17);
    std::vector<uint32_t> codes(n * L);
    for (size_t i = 0; i < n; ++i)
      for (uint32_t tb = 0; tb < L; ++tb)
        codes[i * L + tb] = rng.below(4) == 0 ? rng.below(1u << K) : rng.below(8);  // skewed
    HashTables a, b, c, d;
    REQUIRE(a.init(table_config(K, L, C, p, 99)).ok());
    REQUIRE(b.init(table_config(K, L, C, p, 99)).ok());
    REQUIRE(c.init(table_config(K, L, C, p, 99)).ok());
    REQUIRE(d.init(table_config(K, L, C, p, 99)).ok());
    a.build(codes.data(), n, 1);
    b.build(codes.data(), n, 2);
    c.build(codes.data(), n, 32);  // more threads than tables
    for (size_t i = 0; i < n; ++i) d.insert(uint32_t(i), codes.data() + i * L);
    CHECK(a.stored_ids() == b.stored_ids());
    CHECK(a.stored_ids() == c.stored_ids());
    CHECK(a.stored_ids() == d.stored_ids());
    bool same_as_inserts = true;
    for (uint32_t tb = 0; tb < L; ++tb) {
      for (uint32_t bk = 0; bk < (1u << K); ++bk) {
        CAPTURE(tb);
        CAPTURE(bk);
        REQUIRE(a.bucket(tb, bk) == b.bucket(tb, bk));
        REQUIRE(a.bucket(tb, bk) == c.bucket(tb, bk));
        REQUIRE(a.bucket(tb, bk).size() <= C);
        // What build stores is a sample of the ids whose code is bk in table tb.
        for (uint32_t id : a.bucket(tb, bk)) REQUIRE(codes[size_t(id) * L + tb] == bk);
        same_as_inserts = same_as_inserts && sorted(a.bucket(tb, bk)) == sorted(d.bucket(tb, bk));
      }
    }
    // build() = clear() then insert 0..n-1: the same tables as the inserts into fresh tables.
    CHECK(same_as_inserts);
    // Rebuilding gives the same tables again (build clears first), whatever was there before.
    std::vector<uint32_t> extra(L, 1);
    b.insert(123456, extra.data());
    b.build(codes.data(), n, 2);
    HashTables e;
    REQUIRE(e.init(table_config(K, L, C, p, 99)).ok());
    e.build(codes.data(), n, 1);
    size_t rebuilt_same = 0, buckets = 0;
    for (uint32_t tb = 0; tb < L; ++tb)
      for (uint32_t bk = 0; bk < (1u << K); ++bk) {
        rebuilt_same += b.bucket(tb, bk) == e.bucket(tb, bk);
        ++buckets;
      }
    CHECK(std::find(b.bucket(0, 1).begin(), b.bucket(0, 1).end(), 123456u) ==
          b.bucket(0, 1).end());
    CHECK(b.stored_ids() == e.stored_ids());
    CHECK(rebuilt_same == buckets);
    // build with n = 0 empties the tables.
    a.build(codes.data(), 0, 2);
    CHECK(a.stored_ids() == 0);
  }
}

TEST_CASE("bytes_used grows with content and drops after clear(); stored_ids counts") {
  const uint32_t K = 10, L = 20;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, 128)).ok());
  const size_t empty_bytes = t.bytes_used();
  CHECK(t.stored_ids() == 0);
  Rng rng(1);
  std::vector<uint32_t> codes;
  size_t prev = empty_bytes;
  size_t count = 0;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 2000; ++i) {
      std::vector<uint32_t> c = random_codes(rng, K, L);
      t.insert(uint32_t(count++), c.data());
    }
    CHECK(t.stored_ids() == count * L);
    size_t now = t.bytes_used();
    CHECK(now > prev);
    // Memory is dominated by the ids: at least 4 bytes each, and not wildly more.
    CHECK(now >= t.stored_ids() * 4);
    CHECK(now <= t.stored_ids() * 4 * 4 + empty_bytes + (size_t(1) << 20));
    prev = now;
  }
  t.clear();
  CHECK(t.stored_ids() == 0);
  CHECK(t.bytes_used() < prev / 4);
  CHECK(t.bytes_used() <= empty_bytes + (size_t(64) << 10));
  for (uint32_t tb = 0; tb < L; ++tb) CHECK(t.bucket(tb, 5).empty());
  // The tables work after clear().
  std::vector<uint32_t> c(L, 5);
  t.insert(7, c.data());
  CHECK(t.stored_ids() == L);
  CHECK(t.bucket(3, 5) == std::vector<uint32_t>{7});
}

TEST_CASE("Buckets at capacity: stored_ids counts min(capacity, offered) per bucket") {
  HashTables t;
  REQUIRE(t.init(table_config(1, 2, 10, BucketPolicy::reservoir, 4)).ok());
  for (uint32_t id = 0; id < 25; ++id) {
    std::vector<uint32_t> c = {0, id % 2};
    t.insert(id, c.data());
  }
  // Table 0: one bucket with 25 offered -> 10; table 1: 13 and 12 offered -> 10 + 10.
  CHECK(t.stored_ids() == 30);
  CHECK(t.bucket(0, 0).size() == 10);
  CHECK(t.bucket(0, 1).empty());
  CHECK(t.bucket(1, 0).size() == 10);
  CHECK(t.bucket(1, 1).size() == 10);
}

TEST_CASE("Reservoir: after removals a bucket below capacity keeps every new id") {
  HashTables t;
  REQUIRE(t.init(table_config(2, 1, 4, BucketPolicy::reservoir, 8)).ok());
  uint32_t code = 3;
  for (uint32_t id = 0; id < 50; ++id) t.insert(id, &code);  // many offered, 4 kept
  REQUIRE(t.bucket(0, 3).size() == 4);
  std::vector<uint32_t> kept = t.bucket(0, 3);
  for (uint32_t id : kept) t.remove(id, &code);
  CHECK(t.bucket(0, 3).empty());
  for (uint32_t id = 100; id < 104; ++id) t.insert(id, &code);
  CHECK(sorted(t.bucket(0, 3)) == std::vector<uint32_t>{100, 101, 102, 103});
  t.clear();
  for (uint32_t id = 200; id < 204; ++id) t.insert(id, &code);
  CHECK(sorted(t.bucket(0, 3)) == std::vector<uint32_t>{200, 201, 202, 203});
}

TEST_CASE("query with more than 65,535 distinct candidates counts hits correctly") {
  // Table 0's bucket 0 holds 65,535 ids; tables 1 and 2's bucket 0 hold 100 more ids each (the
  // same ones). Querying bucket 0 everywhere gives 65,635 distinct ids, the last 100 with 2 hits.
  const uint32_t L = 3, C = 65535, extra = 100;
  HashTables t;
  REQUIRE(t.init(table_config(2, L, C, BucketPolicy::fifo)).ok());
  std::vector<uint32_t> first = {0, 1, 1}, second = {1, 0, 0};
  for (uint32_t id = 0; id < C; ++id) t.insert(id, first.data());
  for (uint32_t id = C; id < C + extra; ++id) t.insert(id, second.data());
  std::vector<uint32_t> q = {0, 0, 0};
  QueryResult r;
  t.query(q.data(), &r);
  REQUIRE(r.ids.size() == size_t(C) + extra);
  REQUIRE(r.hits.size() == size_t(C) + extra);
  size_t twice = 0;
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (r.ids[i] >= C) {
      CHECK(r.hits[i] == 2);
      ++twice;
    } else if (r.hits[i] != 1) {
      CHECK(r.hits[i] == 1);
    }
  }
  CHECK(twice == extra);
  HashTables::keep_top_hits(&r, 10);
  REQUIRE(r.ids.size() == 10);
  for (size_t i = 0; i < 10; ++i) CHECK(r.ids[i] == C + i);
  // Reused afterwards.
  t.query(q.data(), &r);
  CHECK(r.ids.size() == size_t(C) + extra);
}

TEST_CASE("Memory follows what is stored, also for large K") {
  // K=24: 2^24 buckets per table could never be allocated eagerly. 500 items with random codes
  // touch 500 distinct buckets per table; the memory added by them must stay proportional to
  // the ids stored (here at most 1 KB per stored id), whatever the allocation granularity.
  const uint32_t K = 24, L = 4, n = 500;
  HashTables t;
  REQUIRE(t.init(table_config(K, L, 128)).ok());
  const size_t empty_bytes = t.bytes_used();
  CHECK(empty_bytes <= size_t(L) << 20);  // the empty directory: at most 1 MB per table
  Rng rng(77);
  for (uint32_t id = 0; id < n; ++id) {
    std::vector<uint32_t> c = random_codes(rng, K, L);
    t.insert(id, c.data());
  }
  REQUIRE(t.stored_ids() == size_t(n) * L);
  const size_t grown = t.bytes_used() - empty_bytes;
  MESSAGE("K=24: " << grown << " bytes for " << t.stored_ids() << " stored ids ("
                   << double(grown) / double(t.stored_ids()) << " per id), empty tables "
                   << empty_bytes << " bytes");
  CHECK(grown <= t.stored_ids() * 1024);
}
