// Tests for the Hashing section: HashConfig validation, SimHash (dense and sparse projections)
// and DWTA. Statistical checks use fixed seeds, so every run sees the same numbers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../mongoose.h"
#include "common.h"

namespace {

using mongoose::HashConfig;
using mongoose::HashFamily;
using mongoose::Hasher;
using mongoose::Rng;
using mongoose::Status;

constexpr double kPi = 3.14159265358979323846;

HashConfig simhash_config(uint32_t dim, uint32_t K, uint32_t L, float density = 1.0f,
                          uint64_t seed = 1) {
  HashConfig c;
  c.family = HashFamily::simhash;
  c.dim = dim;
  c.K = K;
  c.L = L;
  c.density = density;
  c.seed = seed;
  return c;
}

HashConfig dwta_config(uint32_t dim, uint32_t K, uint32_t L, uint32_t bin_bits = 3,
                       uint64_t seed = 1) {
  HashConfig c;
  c.family = HashFamily::dwta;
  c.dim = dim;
  c.K = K;
  c.L = L;
  c.bin_bits = bin_bits;
  c.seed = seed;
  return c;
}

std::vector<float> gaussian_vector(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.gaussian();
  return v;
}

double dot_d(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Two unit vectors of dimension `dim` at angle `theta`: u random, v = cos(t) u + sin(t) w with w
// a random unit vector orthogonal to u.
void pair_at_angle(Rng& rng, size_t dim, double theta, std::vector<float>* u_out,
                   std::vector<float>* v_out) {
  std::vector<double> u(dim), w(dim);
  for (double& x : u) x = rng.gaussian();
  for (double& x : w) x = rng.gaussian();
  double nu = 0;
  for (double x : u) nu += x * x;
  nu = std::sqrt(nu);
  for (double& x : u) x /= nu;
  double uw = 0;
  for (size_t i = 0; i < dim; ++i) uw += u[i] * w[i];
  for (size_t i = 0; i < dim; ++i) w[i] -= uw * u[i];
  double nw = 0;
  for (double x : w) nw += x * x;
  nw = std::sqrt(nw);
  for (double& x : w) x /= nw;
  u_out->resize(dim);
  v_out->resize(dim);
  for (size_t i = 0; i < dim; ++i) {
    (*u_out)[i] = float(u[i]);
    (*v_out)[i] = float(std::cos(theta) * u[i] + std::sin(theta) * w[i]);
  }
}

// The SimHash bit of column `col` for vector v, computed in double from the projection.
double projection_dot(const Hasher& h, const float* v, uint32_t col) {
  const HashConfig& c = h.config();
  const std::vector<float>& P = h.projection();
  const size_t cols = size_t(c.K) * c.L;
  double s = 0;
  for (size_t d = 0; d < c.dim; ++d) s += double(P[d * cols + col]) * double(v[d]);
  return s;
}

// Checks SimHash codes `got` for dense vector v against the definition: bit b of table t is
// (P[:, t*K+b] . v > 0). A differing bit is tolerated only when the exact dot product is so
// close to 0 that float rounding may decide its sign. Returns the number of bits that differ.
size_t check_simhash_codes(const Hasher& h, const float* v, const uint32_t* got) {
  const HashConfig& c = h.config();
  double vnorm = std::sqrt(dot_d(v, v, c.dim));
  size_t differing = 0;
  for (uint32_t t = 0; t < c.L; ++t) {
    REQUIRE(got[t] < (uint32_t(1) << c.K));
    for (uint32_t b = 0; b < c.K; ++b) {
      double d = projection_dot(h, v, t * c.K + b);
      uint32_t want = d > 0 ? 1u : 0u;
      uint32_t bit = (got[t] >> b) & 1u;
      if (bit != want) {
        ++differing;
        CHECK_MESSAGE(std::fabs(d) < 1e-4 * (1.0 + vnorm),
                      "table " << t << " bit " << b << ": code bit " << bit << " but dot " << d);
      }
    }
  }
  return differing;
}

// Codes of two hashings agree except on bits whose dot product is within rounding of 0.
void check_same_simhash(const Hasher& h, const float* v, const uint32_t* a, const uint32_t* b) {
  const HashConfig& c = h.config();
  double vnorm = std::sqrt(dot_d(v, v, c.dim));
  for (uint32_t t = 0; t < c.L; ++t) {
    if (a[t] == b[t]) continue;
    for (uint32_t bit = 0; bit < c.K; ++bit) {
      if (((a[t] ^ b[t]) >> bit) & 1u) {
        double d = projection_dot(h, v, t * c.K + bit);
        CHECK_MESSAGE(std::fabs(d) < 1e-4 * (1.0 + vnorm),
                      "table " << t << " bit " << bit << " differs, dot " << d);
      }
    }
  }
}

size_t popcount32(uint32_t x) {
  size_t n = 0;
  for (; x; x &= x - 1) ++n;
  return n;
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

std::string lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// A sparse vector: `nnz` distinct sorted ids below dim with the given values.
struct Sparse {
  std::vector<uint32_t> ids;
  std::vector<float> values;
  std::vector<float> dense(uint32_t dim) const {
    std::vector<float> d(dim, 0.0f);
    for (size_t i = 0; i < ids.size(); ++i) d[ids[i]] = values[i];
    return d;
  }
};

Sparse random_sparse(Rng& rng, uint32_t dim, size_t nnz, bool allow_negative) {
  std::vector<uint32_t> all(dim);
  std::iota(all.begin(), all.end(), 0u);
  for (size_t i = 0; i < nnz; ++i) std::swap(all[i], all[i + rng.below(uint32_t(dim - i))]);
  Sparse s;
  s.ids.assign(all.begin(), all.begin() + long(nnz));
  std::sort(s.ids.begin(), s.ids.end());
  for (size_t i = 0; i < nnz; ++i) {
    float x = 0.05f + rng.uniform();  // never 0
    if (allow_negative && rng.below(2)) x = -x;
    s.values.push_back(x);
  }
  return s;
}

size_t count_equal(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] == b[i];
  return n;
}

}  // namespace

//-----------------------------------------------------------------------------------------------
// validate(HashConfig)
//-----------------------------------------------------------------------------------------------

TEST_CASE("validate(HashConfig) accepts the documented ranges") {
  CHECK(mongoose::validate(simhash_config(1, 1, 1)).ok());
  CHECK(mongoose::validate(simhash_config(64, 24, 1024)).ok());
  CHECK(mongoose::validate(simhash_config(64, 8, 50, 1.0f / 3.0f)).ok());
  CHECK(mongoose::validate(simhash_config(64, 8, 50, 1e-3f)).ok());
  CHECK(mongoose::validate(dwta_config(100, 6, 50, 1)).ok());
  CHECK(mongoose::validate(dwta_config(100, 6, 50, 8)).ok());
  HashConfig defaults;
  defaults.dim = 10;
  CHECK(mongoose::validate(defaults).ok());  // the defaults with a dimension
}

TEST_CASE("validate(HashConfig) names the bad field") {
  struct Case {
    const char* what;
    HashConfig config;
    const char* field;
  };
  auto with = [](HashConfig c, auto f) {
    f(c);
    return c;
  };
  const HashConfig s = simhash_config(16, 6, 10);
  const HashConfig d = dwta_config(16, 6, 10);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases = {
      {"K=0", with(s, [](HashConfig& c) { c.K = 0; }), "K"},
      {"K=25", with(s, [](HashConfig& c) { c.K = 25; }), "K"},
      {"L=0", with(s, [](HashConfig& c) { c.L = 0; }), "L"},
      {"L=1025", with(s, [](HashConfig& c) { c.L = 1025; }), "L"},
      {"dim=0", with(s, [](HashConfig& c) { c.dim = 0; }), "dim"},
      {"dwta dim=0", with(d, [](HashConfig& c) { c.dim = 0; }), "dim"},
      {"dwta K=0", with(d, [](HashConfig& c) { c.K = 0; }), "K"},
      {"dwta K=25", with(d, [](HashConfig& c) { c.K = 25; }), "K"},
      {"dwta L=1025", with(d, [](HashConfig& c) { c.L = 1025; }), "L"},
      {"density=0", with(s, [](HashConfig& c) { c.density = 0.0f; }), "density"},
      {"density<0", with(s, [](HashConfig& c) { c.density = -0.5f; }), "density"},
      {"density>1", with(s, [](HashConfig& c) { c.density = 1.0001f; }), "density"},
      {"density=NaN", with(s, [&](HashConfig& c) { c.density = nan; }), "density"},
      {"density=inf",
       with(s, [](HashConfig& c) { c.density = std::numeric_limits<float>::infinity(); }),
       "density"},
      {"bin_bits=0", with(d, [](HashConfig& c) { c.bin_bits = 0; }), "bin_bits"},
      {"bin_bits=9", with(d, [](HashConfig& c) { c.bin_bits = 9; }), "bin_bits"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    Status st = mongoose::validate(c.config);
    REQUIRE_FALSE(st.ok());
    CAPTURE(st.message());
    CHECK(contains(st.message(), c.field));
    // Hasher::init refuses the same configurations.
    Hasher h;
    CHECK_FALSE(h.init(c.config).ok());
  }
}

//-----------------------------------------------------------------------------------------------
// SimHash
//-----------------------------------------------------------------------------------------------

TEST_CASE("SimHash per-bit collision rate is 1 - theta/pi") {
  const uint32_t dim = 64, K = 8, L = 256;  // 2048 independent bits per pair
  const double bits = double(K) * L;
  for (float density : {1.0f, 1.0f / 3.0f}) {
    Hasher h;
    REQUIRE(h.init(simhash_config(dim, K, L, density, 12345)).ok());
    Rng rng(777);
    std::vector<uint32_t> cu(L), cv(L);
    for (double theta : {0.0, 0.3, 0.8, 1.5, 2.5, kPi}) {
      CAPTURE(density);
      CAPTURE(theta);
      std::vector<float> u, v;
      pair_at_angle(rng, dim, theta, &u, &v);
      h.hash(u.data(), cu.data());
      h.hash(v.data(), cv.data());
      size_t agree = 0;
      for (uint32_t t = 0; t < L; ++t) {
        REQUIRE(cu[t] < (1u << K));
        REQUIRE(cv[t] < (1u << K));
        agree += K - popcount32(cu[t] ^ cv[t]);
      }
      const double rate = double(agree) / bits;
      const double p = 1.0 - theta / kPi;
      // At p = 0 or 1 sigma is 0; allow the odd bit decided by rounding on exact ties.
      const double sigma = std::max(std::sqrt(p * (1.0 - p) / bits), 1.0 / bits);
      CAPTURE(rate);
      CAPTURE(p);
      CHECK(std::fabs(rate - p) <= 3.0 * sigma);
    }
  }
}

TEST_CASE("SimHash codes are K-bit for every K, also at the extremes") {
  Rng rng(5);
  for (uint32_t K : {1u, 2u, 7u, 13u, 24u}) {
    for (float density : {1.0f, 0.33f}) {
      CAPTURE(K);
      CAPTURE(density);
      const uint32_t dim = 10, L = 9;
      Hasher h;
      REQUIRE(h.init(simhash_config(dim, K, L, density, K)).ok());
      REQUIRE(h.projection().size() == size_t(dim) * K * L);
      std::vector<uint32_t> codes(L);
      uint32_t seen_or = 0;
      for (int i = 0; i < 40; ++i) {
        std::vector<float> v = gaussian_vector(rng, dim);
        h.hash(v.data(), codes.data());
        for (uint32_t c : codes) {
          CHECK(c < (uint64_t(1) << K));
          seen_or |= c;
        }
        check_simhash_codes(h, v.data(), codes.data());
      }
      // Every bit position is used by some code (the top bit too).
      CHECK(seen_or == (uint32_t((uint64_t(1) << K) - 1)));
    }
  }
}

TEST_CASE("SimHash sparse projections: entries in {-1, 0, +1} with the requested density") {
  const uint32_t dim = 300, K = 8, L = 50;
  Hasher h;
  REQUIRE(h.init(simhash_config(dim, K, L, 1.0f / 3.0f, 9)).ok());
  const std::vector<float>& P = h.projection();
  REQUIRE(P.size() == size_t(dim) * K * L);
  size_t nonzero = 0, plus = 0;
  for (float x : P) {
    REQUIRE((x == 0.0f || x == 1.0f || x == -1.0f));
    nonzero += x != 0.0f;
    plus += x == 1.0f;
  }
  const double n = double(P.size());
  const double frac = double(nonzero) / n;
  CHECK(std::fabs(frac - 1.0 / 3.0) < 5.0 * std::sqrt((1.0 / 3.0) * (2.0 / 3.0) / n));
  CHECK(std::fabs(double(plus) / double(nonzero) - 0.5) < 5.0 * std::sqrt(0.25 / double(nonzero)));

  // Dense projections: Gaussian-looking (mean ~0, variance ~1), no zeros.
  Hasher g;
  REQUIRE(g.init(simhash_config(dim, K, L, 1.0f, 9)).ok());
  double sum = 0, sum2 = 0;
  size_t zeros = 0;
  for (float x : g.projection()) {
    REQUIRE(std::isfinite(x));
    sum += x;
    sum2 += double(x) * x;
    zeros += x == 0.0f;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(std::fabs(mean) < 0.02);
  CHECK(std::fabs(var - 1.0) < 0.05);
  CHECK(zeros < 10);
}

TEST_CASE("SimHash codes follow the definition bit b of table t = (P[:, t*K+b] . v > 0)") {
  Rng rng(31);
  for (float density : {1.0f, 1.0f / 3.0f}) {
    const uint32_t dim = 33, K = 7, L = 11;
    Hasher h;
    REQUIRE(h.init(simhash_config(dim, K, L, density, 4)).ok());
    std::vector<uint32_t> codes(L);
    for (int i = 0; i < 50; ++i) {
      std::vector<float> v = gaussian_vector(rng, dim);
      h.hash(v.data(), codes.data());
      check_simhash_codes(h, v.data(), codes.data());
    }
  }
}

TEST_CASE("SimHash set_projection: known +-1 matrix gives the brute-force sign codes") {
  const uint32_t dim = 16, K = 5, L = 7;
  const size_t cols = size_t(K) * L;
  Hasher h;
  REQUIRE(h.init(simhash_config(dim, K, L)).ok());
  Rng rng(99);
  std::vector<float> P(size_t(dim) * cols);
  for (float& x : P) x = rng.below(2) ? 1.0f : -1.0f;
  REQUIRE(h.set_projection(P).ok());
  CHECK(h.projection() == P);

  std::vector<uint32_t> codes(L), sparse_codes(L);
  for (int i = 0; i < 200; ++i) {
    // Small integer inputs: every dot product is exact in float, ties (dot == 0) give bit 0.
    std::vector<float> v(dim);
    std::vector<uint32_t> ids;
    std::vector<float> vals;
    for (uint32_t d = 0; d < dim; ++d) {
      int x = int(rng.below(7)) - 3;
      v[d] = float(x);
      if (x != 0) {
        ids.push_back(d);
        vals.push_back(float(x));
      }
    }
    h.hash(v.data(), codes.data());
    h.hash_sparse(ids.data(), vals.data(), ids.size(), sparse_codes.data());
    for (uint32_t t = 0; t < L; ++t) {
      uint32_t want = 0;
      for (uint32_t b = 0; b < K; ++b) {
        float s = 0;
        for (uint32_t d = 0; d < dim; ++d) s += P[d * cols + t * K + b] * v[d];
        if (s > 0) want |= 1u << b;
      }
      CAPTURE(i);
      CAPTURE(t);
      CHECK(codes[t] == want);
      CHECK(sparse_codes[t] == want);
    }
  }

  // A real-valued (learned-looking) projection works too.
  std::vector<float> Q(size_t(dim) * cols);
  for (float& x : Q) x = rng.gaussian() * 0.01f;
  REQUIRE(h.set_projection(Q).ok());
  CHECK(h.projection() == Q);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> v = gaussian_vector(rng, dim);
    h.hash(v.data(), codes.data());
    check_simhash_codes(h, v.data(), codes.data());
  }
}

TEST_CASE("SimHash set_projection rejects bad input with clear errors and keeps the old one") {
  const uint32_t dim = 8, K = 4, L = 3;
  Hasher h;
  REQUIRE(h.init(simhash_config(dim, K, L)).ok());
  const std::vector<float> before = h.projection();
  const size_t n = size_t(dim) * K * L;

  for (size_t size : {size_t(0), n - 1, n + 1, size_t(dim) * K}) {
    CAPTURE(size);
    Status st = h.set_projection(std::vector<float>(size, 1.0f));
    REQUIRE_FALSE(st.ok());
    CAPTURE(st.message());
    CHECK(contains(lower(st.message()), "projection"));
    // The message states the size that was expected.
    CHECK(contains(st.message(), std::to_string(n)));
    CHECK(h.projection() == before);
  }
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> P(n, 0.5f);
    P[n / 2] = bad;
    Status st = h.set_projection(P);
    REQUIRE_FALSE(st.ok());
    CAPTURE(st.message());
    CHECK(contains(lower(st.message()), "projection"));
    CHECK(h.projection() == before);
  }
}

TEST_CASE("SimHash hash_sparse equals hash of the dense equivalent") {
  Rng rng(2024);
  for (float density : {1.0f, 1.0f / 3.0f}) {
    const uint32_t dim = 200, K = 9, L = 40;
    Hasher h;
    REQUIRE(h.init(simhash_config(dim, K, L, density, 17)).ok());
    std::vector<uint32_t> dense_codes(L), sparse_codes(L);
    for (size_t nnz : {size_t(0), size_t(1), size_t(5), size_t(60), size_t(200)}) {
      for (int rep = 0; rep < 5; ++rep) {
        Sparse s = random_sparse(rng, dim, nnz, true);
        std::vector<float> d = s.dense(dim);
        h.hash(d.data(), dense_codes.data());
        h.hash_sparse(s.ids.data(), s.values.data(), nnz, sparse_codes.data());
        CAPTURE(nnz);
        check_same_simhash(h, d.data(), dense_codes.data(), sparse_codes.data());
        for (uint32_t c : sparse_codes) CHECK(c < (1u << K));
        if (nnz == 0) {
          // The zero vector: every dot is 0, so every bit is 0.
          for (uint32_t t = 0; t < L; ++t) CHECK(sparse_codes[t] == 0u);
          for (uint32_t t = 0; t < L; ++t) CHECK(dense_codes[t] == 0u);
        }
      }
    }
  }
}

TEST_CASE("SimHash is invariant to positive scaling") {
  Rng rng(8);
  const uint32_t dim = 50, K = 6, L = 30;
  Hasher h;
  REQUIRE(h.init(simhash_config(dim, K, L)).ok());
  std::vector<uint32_t> a(L), b(L);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> v = gaussian_vector(rng, dim), w(dim);
    for (uint32_t d = 0; d < dim; ++d) w[d] = v[d] * 4.0f;  // power of 2: exact
    h.hash(v.data(), a.data());
    h.hash(w.data(), b.data());
    CHECK(a == b);
  }
}

TEST_CASE("hash_batch equals per-vector hash (ld > dim, padding never read)") {
  Rng rng(3);
  for (HashFamily family : {HashFamily::simhash, HashFamily::dwta}) {
    for (float density : {1.0f, 1.0f / 3.0f}) {
      if (family == HashFamily::dwta && density != 1.0f) continue;
      const uint32_t dim = 37, K = 8, L = 23;
      const size_t n = 101, ld = dim + 11;
      HashConfig c = family == HashFamily::simhash ? simhash_config(dim, K, L, density, 6)
                                                   : dwta_config(dim, K, L, 3, 6);
      Hasher h;
      REQUIRE(h.init(c).ok());
      std::vector<float> vs(n * ld, std::numeric_limits<float>::quiet_NaN());
      for (size_t i = 0; i < n; ++i)
        for (size_t d = 0; d < dim; ++d)
          vs[i * ld + d] = (i % 7 == 3 && d % 3 != 0) ? 0.0f : rng.gaussian();
      std::vector<uint32_t> batch(n * L, 0xdeadbeefu), batch2(n * L, 0u), one(L);
      std::vector<float> scratch;
      h.hash_batch(vs.data(), n, ld, batch.data(), &scratch);
      h.hash_batch(vs.data(), n, ld, batch2.data(), &scratch);  // reused scratch
      CHECK(batch == batch2);
      std::vector<uint32_t> batch3(n * L, 0u);
      h.hash_batch(vs.data(), n, ld, batch3.data());  // no scratch
      CHECK(batch == batch3);
      for (size_t i = 0; i < n; ++i) {
        CAPTURE(i);
        h.hash(vs.data() + i * ld, one.data());
        for (uint32_t t = 0; t < L; ++t) REQUIRE(batch[i * L + t] < (1u << K));
        if (family == HashFamily::simhash) {
          check_same_simhash(h, vs.data() + i * ld, one.data(), batch.data() + i * L);
        } else {
          CHECK(std::equal(one.begin(), one.end(), batch.begin() + long(i * L)));
        }
      }
      // Subsets of rows give the same codes as the full batch.
      std::vector<uint32_t> part(3 * L);
      h.hash_batch(vs.data() + 50 * ld, 3, ld, part.data(), &scratch);
      if (family == HashFamily::dwta)
        CHECK(std::equal(part.begin(), part.end(), batch.begin() + long(50 * L)));
      // n = 0 touches nothing.
      uint32_t untouched = 42;
      h.hash_batch(vs.data(), 0, ld, &untouched, &scratch);
      CHECK(untouched == 42u);
    }
  }
}

TEST_CASE("SimHash determinism: same seed same codes, different seed different projection") {
  for (float density : {1.0f, 1.0f / 3.0f}) {
    Hasher a, b, c;
    REQUIRE(a.init(simhash_config(40, 8, 20, density, 77)).ok());
    REQUIRE(b.init(simhash_config(40, 8, 20, density, 77)).ok());
    REQUIRE(c.init(simhash_config(40, 8, 20, density, 78)).ok());
    CHECK(a.projection() == b.projection());
    CHECK(a.projection() != c.projection());
    // Re-initialising gives the same projection again.
    REQUIRE(c.init(simhash_config(40, 8, 20, density, 77)).ok());
    CHECK(a.projection() == c.projection());
    Rng rng(1);
    std::vector<uint32_t> ca(20), cb(20);
    for (int i = 0; i < 20; ++i) {
      std::vector<float> v = gaussian_vector(rng, 40);
      a.hash(v.data(), ca.data());
      b.hash(v.data(), cb.data());
      CHECK(ca == cb);
    }
  }
  // Tables differ from one another (not the same column repeated).
  Hasher h;
  REQUIRE(h.init(simhash_config(40, 4, 8, 1.0f, 5)).ok());
  const std::vector<float>& P = h.projection();
  bool all_same = true;
  for (size_t d = 0; d < 40; ++d) all_same = all_same && P[d * 32 + 0] == P[d * 32 + 4];
  CHECK_FALSE(all_same);
}

TEST_CASE("Scalar and vector (AVX2, NEON) hashers give the same codes") {
  const std::vector<mongoose::Simd> levels = vector_levels();
  if (levels.empty()) MESSAGE("no vector kernels in this build or CPU: nothing to compare");
  for (mongoose::Simd level : levels) {
    const std::string name = mongoose::kernels(level).name;
    CAPTURE(name);
    Rng rng(12);
    for (HashFamily family : {HashFamily::simhash, HashFamily::dwta}) {
      HashConfig c = family == HashFamily::simhash ? simhash_config(70, 8, 30, 1.0f, 2)
                                                   : dwta_config(70, 8, 30, 3, 2);
      Hasher hs, hv;
      REQUIRE(hs.init(c, mongoose::Simd::scalar).ok());
      REQUIRE(hv.init(c, level).ok());
      std::vector<uint32_t> a(30), b(30);
      for (int i = 0; i < 30; ++i) {
        std::vector<float> v = gaussian_vector(rng, 70);
        hs.hash(v.data(), a.data());
        hv.hash(v.data(), b.data());
        if (family == HashFamily::simhash)
          check_same_simhash(hs, v.data(), a.data(), b.data());
        else
          CHECK(a == b);
      }
    }
  }
}

//-----------------------------------------------------------------------------------------------
// DWTA
//-----------------------------------------------------------------------------------------------

TEST_CASE("DWTA codes stay in [0, 2^K) for empty, one-hot, dense and negative inputs") {
  Rng rng(41);
  for (uint32_t bin_bits : {1u, 2u, 3u, 4u, 5u, 8u}) {
    for (uint32_t K : {1u, 2u, 3u, 5u, 6u, 7u, 8u, 10u, 13u, 24u}) {
      for (uint32_t dim : {1u, 3u, 8u, 100u, 1000u}) {
        CAPTURE(bin_bits);
        CAPTURE(K);
        CAPTURE(dim);
        const uint32_t L = 16;
        Hasher h;
        REQUIRE(h.init(dwta_config(dim, K, L, bin_bits, K * 31 + dim)).ok());
        const uint64_t limit = uint64_t(1) << K;
        std::vector<uint32_t> codes(L);
        auto check_range = [&]() {
          for (uint32_t c : codes) REQUIRE(c < limit);
        };
        // All-zero input, dense and sparse.
        std::vector<float> zero(dim, 0.0f);
        h.hash(zero.data(), codes.data());
        check_range();
        std::vector<uint32_t> zero_codes = codes;
        h.hash_sparse(nullptr, nullptr, 0, codes.data());
        check_range();
        CHECK(codes == zero_codes);
        // One non-zero, positive or negative, at the first, last and a random position.
        for (uint32_t pos : {0u, dim - 1, rng.below(dim)}) {
          for (float val : {1.0f, -2.5f, 1e-30f}) {
            std::vector<float> v(dim, 0.0f);
            v[pos] = val;
            h.hash(v.data(), codes.data());
            check_range();
            std::vector<uint32_t> dense_codes = codes;
            h.hash_sparse(&pos, &val, 1, codes.data());
            check_range();
            CHECK(codes == dense_codes);
          }
        }
        // Dense Gaussian input (half negative), all-negative input, constant input (all ties).
        std::vector<float> v = gaussian_vector(rng, dim);
        h.hash(v.data(), codes.data());
        check_range();
        for (float& x : v) x = -std::fabs(x) - 0.1f;
        h.hash(v.data(), codes.data());
        check_range();
        std::vector<float> flat(dim, 0.5f);
        h.hash(flat.data(), codes.data());
        check_range();
        // Batch path too.
        std::vector<uint32_t> batch(size_t(L) * 2);
        std::vector<float> two(size_t(dim) * 2, 0.0f);
        two[dim + dim / 2] = 3.0f;
        h.hash_batch(two.data(), 2, dim, batch.data());
        for (uint32_t c : batch) REQUIRE(c < limit);
      }
    }
  }
}

TEST_CASE("DWTA uses the whole code range") {
  // With many random inputs every K-bit code value should appear in some table, including the
  // top ones: a packing that loses bits (natural-log shifts, overlapping bins) fails this.
  for (uint32_t bin_bits : {2u, 3u}) {
    for (uint32_t K : {4u, 5u, 6u}) {
      CAPTURE(bin_bits);
      CAPTURE(K);
      const uint32_t dim = 256, L = 32;
      Hasher h;
      REQUIRE(h.init(dwta_config(dim, K, L, bin_bits, 3)).ok());
      Rng rng(K * 10 + bin_bits);
      std::vector<bool> seen(size_t(1) << K, false);
      std::vector<uint32_t> codes(L);
      for (int i = 0; i < 200; ++i) {
        std::vector<float> v = gaussian_vector(rng, dim);
        h.hash(v.data(), codes.data());
        for (uint32_t c : codes) {
          REQUIRE(c < (1u << K));
          seen[c] = true;
        }
      }
      CHECK(std::count(seen.begin(), seen.end(), true) == long(seen.size()));
    }
  }
}

TEST_CASE("DWTA hash_sparse equals hash of the dense equivalent") {
  Rng rng(55);
  for (uint32_t bin_bits : {2u, 3u, 4u}) {
    for (uint32_t K : {5u, 6u, 8u, 12u}) {
      const uint32_t dim = 500, L = 50;
      Hasher h;
      REQUIRE(h.init(dwta_config(dim, K, L, bin_bits, 100 + K)).ok());
      std::vector<uint32_t> dense_codes(L), sparse_codes(L), shuffled_codes(L);
      for (size_t nnz : {size_t(1), size_t(2), size_t(10), size_t(80), size_t(500)}) {
        for (bool negative : {false, true}) {
          CAPTURE(bin_bits);
          CAPTURE(K);
          CAPTURE(nnz);
          CAPTURE(negative);
          Sparse s = random_sparse(rng, dim, nnz, negative);
          std::vector<float> d = s.dense(dim);
          h.hash(d.data(), dense_codes.data());
          h.hash_sparse(s.ids.data(), s.values.data(), nnz, sparse_codes.data());
          CHECK(dense_codes == sparse_codes);
          // The order of the listed coordinates does not matter (distinct values).
          std::vector<size_t> perm(nnz);
          std::iota(perm.begin(), perm.end(), size_t(0));
          for (size_t i = nnz; i > 1; --i) std::swap(perm[i - 1], perm[rng.below(uint32_t(i))]);
          std::vector<uint32_t> ids2(nnz);
          std::vector<float> vals2(nnz);
          for (size_t i = 0; i < nnz; ++i) {
            ids2[i] = s.ids[perm[i]];
            vals2[i] = s.values[perm[i]];
          }
          h.hash_sparse(ids2.data(), vals2.data(), nnz, shuffled_codes.data());
          CHECK(shuffled_codes == sparse_codes);
        }
      }
    }
  }
}

TEST_CASE("DWTA: identical inputs collide everywhere, scaling does not matter, seeds differ") {
  Rng rng(66);
  const uint32_t dim = 1000, K = 6, L = 100;
  Hasher h, same, other;
  REQUIRE(h.init(dwta_config(dim, K, L, 3, 1)).ok());
  REQUIRE(same.init(dwta_config(dim, K, L, 3, 1)).ok());
  REQUIRE(other.init(dwta_config(dim, K, L, 3, 2)).ok());
  std::vector<uint32_t> a(L), b(L), c(L);
  size_t differs_with_seed = 0;
  for (int i = 0; i < 20; ++i) {
    Sparse s = random_sparse(rng, dim, 30, false);
    h.hash_sparse(s.ids.data(), s.values.data(), s.ids.size(), a.data());
    h.hash_sparse(s.ids.data(), s.values.data(), s.ids.size(), b.data());
    CHECK(a == b);
    same.hash_sparse(s.ids.data(), s.values.data(), s.ids.size(), b.data());
    CHECK(a == b);
    // WTA depends only on the order of the values: a positive scale changes nothing.
    std::vector<float> scaled = s.values;
    for (float& x : scaled) x *= 7.25f;
    h.hash_sparse(s.ids.data(), scaled.data(), s.ids.size(), b.data());
    CHECK(a == b);
    other.hash_sparse(s.ids.data(), s.values.data(), s.ids.size(), c.data());
    differs_with_seed += L - count_equal(a, c);
  }
  // A different seed gives different permutations: most table codes change.
  CHECK(differs_with_seed > 20 * L / 2);
}

TEST_CASE("DWTA: similar sparse vectors collide more often than dissimilar ones") {
  Rng rng(88);
  const uint32_t dim = 2000, L = 512;
  for (uint32_t bin_bits : {2u, 3u}) {
    for (uint32_t K : {6u, 8u}) {
      CAPTURE(bin_bits);
      CAPTURE(K);
      Hasher h;
      REQUIRE(h.init(dwta_config(dim, K, L, bin_bits, 1000 + K)).ok());
      std::vector<uint32_t> ca(L), cb(L), cc(L);
      size_t similar = 0, dissimilar = 0, total = 0;
      for (int pair = 0; pair < 20; ++pair) {
        Sparse a = random_sparse(rng, dim, 80, false);
        // Similar: the same support and values except 8 of the 80 entries moved elsewhere.
        Sparse b = a;
        std::vector<float> d = a.dense(dim);
        for (int m = 0; m < 8; ++m) {
          size_t k = rng.below(uint32_t(b.ids.size()));
          uint32_t target;
          do target = rng.below(dim);
          while (d[target] != 0.0f);
          d[target] = d[b.ids[k]];
          d[b.ids[k]] = 0.0f;
          b.ids[k] = target;
        }
        Sparse bs;
        for (uint32_t i = 0; i < dim; ++i)
          if (d[i] != 0.0f) {
            bs.ids.push_back(i);
            bs.values.push_back(d[i]);
          }
        Sparse c = random_sparse(rng, dim, 80, false);
        h.hash_sparse(a.ids.data(), a.values.data(), a.ids.size(), ca.data());
        h.hash_sparse(bs.ids.data(), bs.values.data(), bs.ids.size(), cb.data());
        h.hash_sparse(c.ids.data(), c.values.data(), c.ids.size(), cc.data());
        similar += count_equal(ca, cb);
        dissimilar += count_equal(ca, cc);
        total += L;
      }
      const double ps = double(similar) / double(total);
      const double pd = double(dissimilar) / double(total);
      CAPTURE(ps);
      CAPTURE(pd);
      MESSAGE("DWTA bin_bits=" << bin_bits << " K=" << K << ": similar " << ps << ", dissimilar "
                               << pd);
      CHECK(ps > pd + 0.15);
      CHECK(ps > 2.0 * pd);
      // Dissimilar vectors collide not much more than chance would give with some structure.
      CHECK(pd < 0.25);
    }
  }
}

TEST_CASE("DWTA with a dimension not a multiple of the bin size covers every coordinate") {
  // Each coordinate alone must influence some code: a one-hot at any position differs from the
  // all-zero code in at least one table when L is large (otherwise that coordinate is ignored).
  const uint32_t dim = 37, K = 6, L = 64;
  Hasher h;
  REQUIRE(h.init(dwta_config(dim, K, L, 3, 11)).ok());
  std::vector<uint32_t> codes(L), other(L);
  size_t distinct_pairs = 0, pairs = 0;
  for (uint32_t i = 0; i < dim; ++i) {
    float one = 1.0f;
    h.hash_sparse(&i, &one, 1, codes.data());
    for (uint32_t c : codes) REQUIRE(c < (1u << K));
    for (uint32_t j = i + 1; j < dim; ++j) {
      h.hash_sparse(&j, &one, 1, other.data());
      distinct_pairs += codes != other;
      ++pairs;
    }
  }
  // Different one-hot vectors must hash differently (in some table).
  CHECK(distinct_pairs == pairs);
}
