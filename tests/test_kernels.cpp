// Tests for the dense kernels (every entry of mongoose::Kernels: the scalar path and the vector
// path this build and CPU run, AVX2 or NEON) and Rng.
//
// Every kernel is compared with a plain double-precision reference written here, for every length
// n = 0..300 (gemm: a grid of shapes), on buffers offset by one float from the allocation (so the
// vector paths see unaligned pointers), with fixed-seed random inputs.
//
// Tolerance policy (relative 1e-5, in the form that is honest for float arithmetic):
//  * Sums (dot, row_scores, sparse_matvec, gemm, and the element-wise kernels viewed as sums of a
//    few terms): |got - ref| <= 1e-5 * sum_i |term_i|. A float accumulation of terms t_i has an
//    error bounded by (a small multiple of) eps * sum |t_i|, whatever the summation order, so
//    this is the natural bound: it does not blow up under cancellation, and an empty sum must be
//    exactly 0.
//  * Single values of unknown magnitude (logsumexp, softmax's return): |got - ref| <= 1e-5 *
//    max(1, |ref|).
//  * Softmax probabilities are compared in the log domain, log p_i = x_i - lse, so their error is
//    the error of lse plus the rounding of x_i - lse: |log got - log ref| <= 1e-5 + 4 * FLT_EPSILON
//    * max(|lse|, max|x|). Probabilities below 1e-30 (underflowed, possibly to denormals or zero)
//    are compared absolutely: |got - ref| <= 1e-30.
//  * relu, relu_backward, scale by a power of two: exact.
// Input-only buffers have NaN guards around them (a read past the end would poison the result);
// output buffers have finite sentinels that must stay bit-identical (no write past the end).

#include <doctest/doctest.h>

#include "../mongoose.h"
#include "common.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using mongoose::AdamStep;
using mongoose::Kernels;
using mongoose::Rng;
using mongoose::Simd;

namespace {

constexpr double kRel = 1e-5;
constexpr size_t kMaxN = 300;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = 777.25f;

// Every vector level, its table's name and whether this build and CPU have it.
struct VectorLevel {
  Simd level;
  const char* name;
  bool available;
};
std::vector<VectorLevel> all_vector_levels() {
  return {{Simd::avx2, "avx2", mongoose::cpu_has_avx2()}, {Simd::neon, "neon", mongoose::cpu_has_neon()}};
}

// The kernel tables under test: scalar always, plus the vector table this build and CPU run.
std::vector<const Kernels*> paths_under_test() {
  std::vector<const Kernels*> paths{&mongoose::kernels(Simd::scalar)};
  for (Simd level : vector_levels()) paths.push_back(&mongoose::kernels(level));
  if (paths.size() == 1) MESSAGE("no vector kernels in this build or CPU (scalar path tested only)");
  return paths;
}

// A float buffer of n elements starting one float after the allocation (unaligned for AVX), with
// one guard element before and after.
class Buf {
 public:
  Buf(size_t n, float guard) : store_(n + 2, guard), n_(n), guard_(guard) {}
  float* p() { return store_.data() + 1; }
  const float* p() const { return store_.data() + 1; }
  float& operator[](size_t i) { return store_[i + 1]; }
  float operator[](size_t i) const { return store_[i + 1]; }
  size_t size() const { return n_; }
  // True when both guards still hold their value bit for bit (NaN guards included).
  bool guards_intact() const {
    return same_bits(store_.front(), guard_) && same_bits(store_.back(), guard_);
  }
  static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

 private:
  std::vector<float> store_;
  size_t n_;
  float guard_;
};

float uniform_in(Rng& rng, float lo, float hi) { return lo + (hi - lo) * rng.uniform(); }

void fill_uniform(Rng& rng, Buf& b, float lo = -1.0f, float hi = 1.0f) {
  for (size_t i = 0; i < b.size(); ++i) b[i] = uniform_in(rng, lo, hi);
}

// Collects mismatches and reports the first one with its context; one doctest check per batch.
class Mismatches {
 public:
  void context(const char* kernel, const Kernels& k, size_t n) {
    kernel_ = kernel;
    path_ = k.name;
    n_ = n;
  }
  // |got - ref| <= tol (false for NaN got).
  void close(double got, double ref, double tol, const char* what, size_t i) {
    if (std::fabs(got - ref) <= tol) return;
    record(what, i, got, ref, tol);
  }
  void exact(float got, float ref, const char* what, size_t i) {
    if (Buf::same_bits(got, ref) || got == ref) return;  // +0 == -0 accepted
    record(what, i, got, ref, 0.0);
  }
  void require(bool ok, const char* what) {
    if (!ok) record(what, 0, 0, 0, 0);
  }
  size_t count() const { return count_; }
  const std::string& first() const { return first_; }
  std::string summary() const { return first_ + " (" + std::to_string(count_) + " mismatches)"; }

 private:
  void record(const char* what, size_t i, double got, double ref, double tol) {
    if (count_++ == 0) {
      char buf[400];
      std::snprintf(buf, sizeof buf, "%s [%s] n=%zu: %s[%zu] = %.9g, reference %.9g, tolerance %.3g",
                    kernel_, path_, n_, what, i, got, ref, tol);
      first_ = buf;
    }
  }
  const char* kernel_ = "";
  const char* path_ = "";
  size_t n_ = 0;
  size_t count_ = 0;
  std::string first_;
};

#define CHECK_NO_MISMATCH(m) CHECK_MESSAGE((m).count() == 0, (m).summary())

// Float-ish strides used as leading dimensions (always larger than the row width).
size_t ld_for(size_t width, size_t extra) { return width + extra; }

}  // namespace

TEST_CASE("kernels: table selection") {
  const Kernels& s = mongoose::kernels(Simd::scalar);
  CHECK(s.level == Simd::scalar);
  CHECK(std::string(s.name) == "scalar");
  const Kernels& a = mongoose::kernels(Simd::automatic);
  const Kernels& def = mongoose::kernels();
  CHECK(&a == &def);
  CHECK(mongoose::cpu_has_avx2() == mongoose::cpu_has_avx2());  // cached, stable
  CHECK(mongoose::cpu_has_neon() == mongoose::cpu_has_neon());
  // A build has at most one vector level (x86: AVX2, ARM: NEON); automatic picks it when this CPU
  // has it, each explicit level gives its own table or falls back to scalar.
  std::vector<const Kernels*> tables{&s, &a};
  const Kernels* expected_automatic = &s;
  int available = 0;
  for (const VectorLevel& v : all_vector_levels()) {
    const std::string name = v.name;
    CAPTURE(name);
    const Kernels& x = mongoose::kernels(v.level);
    tables.push_back(&x);
    CHECK(x.level == (v.available ? v.level : Simd::scalar));
    CHECK(std::string(x.name) == (v.available ? v.name : "scalar"));
    if (v.available) {
      expected_automatic = &x;
      ++available;
    } else {
      MESSAGE(name << " path skipped: not in this build or CPU");
    }
  }
  CHECK(available <= 1);
  CHECK(&a == expected_automatic);
  CHECK(vector_levels().size() == size_t(available));
  for (const Kernels* k : tables) {
    CHECK(bool(k->dot));
    CHECK(bool(k->axpy));
    CHECK(bool(k->scale));
    CHECK(bool(k->add));
    CHECK(bool(k->row_scores));
    CHECK(bool(k->sparse_matvec));
    CHECK(bool(k->relu));
    CHECK(bool(k->relu_backward));
    CHECK(bool(k->logsumexp));
    CHECK(bool(k->softmax));
    CHECK(bool(k->adam));
    CHECK(bool(k->gemm_nt));
    CHECK(bool(k->gemm_nn_acc));
    CHECK(bool(k->gemm_tn_acc));
    CHECK(bool(k->rows_axpy));
  }
}

TEST_CASE("kernels: dot") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(101);
    for (size_t n = 0; n <= kMaxN; ++n) {
      mm.context("dot", *k, n);
      Buf a(n, kNaN), b(n, kNaN);
      fill_uniform(rng, a);
      fill_uniform(rng, b);
      double ref = 0, terms = 0;
      for (size_t i = 0; i < n; ++i) {
        ref += double(a[i]) * double(b[i]);
        terms += std::fabs(double(a[i]) * double(b[i]));
      }
      mm.close(k->dot(a.p(), b.p(), n), ref, kRel * terms, "result", 0);
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: axpy, scale, add") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(102);
    for (size_t n = 0; n <= kMaxN; ++n) {
      Buf x(n, kNaN), y(n, kSentinel), y0(n, 0.0f);
      fill_uniform(rng, x);
      fill_uniform(rng, y0);

      mm.context("axpy", *k, n);
      const float alpha = uniform_in(rng, -2.0f, 2.0f);
      for (size_t i = 0; i < n; ++i) y[i] = y0[i];
      k->axpy(alpha, x.p(), y.p(), n);
      for (size_t i = 0; i < n; ++i) {
        double t = double(alpha) * x[i];
        mm.close(y[i], y0[i] + t, kRel * (std::fabs(y0[i]) + std::fabs(t)), "y", i);
      }
      mm.require(y.guards_intact(), "guard of y overwritten");
      mm.require(x.guards_intact(), "guard of x changed");

      mm.context("scale", *k, n);
      const float beta = uniform_in(rng, -3.0f, 3.0f);
      for (size_t i = 0; i < n; ++i) y[i] = y0[i];
      k->scale(beta, y.p(), n);
      for (size_t i = 0; i < n; ++i) {
        double ref = double(beta) * y0[i];
        mm.close(y[i], ref, kRel * std::fabs(ref), "x", i);
      }
      mm.require(y.guards_intact(), "guard of x overwritten");
      // Scaling by a power of two is exact.
      for (size_t i = 0; i < n; ++i) y[i] = y0[i];
      k->scale(-0.5f, y.p(), n);
      for (size_t i = 0; i < n; ++i) mm.exact(y[i], -0.5f * y0[i], "x (scale -0.5)", i);

      mm.context("add", *k, n);
      for (size_t i = 0; i < n; ++i) y[i] = y0[i];
      k->add(x.p(), y.p(), n);
      for (size_t i = 0; i < n; ++i) {
        double ref = double(y0[i]) + x[i];
        mm.close(y[i], ref, kRel * (std::fabs(y0[i]) + std::fabs(x[i])), "y", i);
      }
      mm.require(y.guards_intact(), "guard of y overwritten");
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: row_scores (with and without rows, with and without bias)") {
  constexpr size_t R = 19;  // rows of W
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(103);
    for (size_t n = 0; n <= kMaxN; ++n) {
      const size_t ld = ld_for(n, 1 + n % 5);
      Buf W(R * ld, kNaN), x(n, kNaN), bias(R, kNaN);
      for (size_t r = 0; r < R; ++r)
        for (size_t c = 0; c < ld; ++c) W[r * ld + c] = c < n ? uniform_in(rng, -1, 1) : kNaN;
      fill_uniform(rng, x);
      fill_uniform(rng, bias, -3.0f, 3.0f);
      const size_t list_count = n % 50 == 0 ? 0 : 1 + (n * 7) % 29;  // may exceed R: duplicates
      std::vector<uint32_t> list(list_count + 1);
      for (size_t i = 0; i < list_count; ++i) list[i] = rng.below(R);
      for (int use_rows = 0; use_rows < 2; ++use_rows) {
        for (int use_bias = 0; use_bias < 2; ++use_bias) {
          mm.context(use_rows ? (use_bias ? "row_scores(rows, bias)" : "row_scores(rows)")
                              : (use_bias ? "row_scores(bias)" : "row_scores"),
                     *k, n);
          const size_t count = use_rows ? list_count : n % (R + 1);
          const uint32_t* rows = use_rows ? list.data() : nullptr;
          Buf out(count, kSentinel);
          k->row_scores(W.p(), ld, rows, count, x.p(), n, use_bias ? bias.p() : nullptr, out.p());
          for (size_t i = 0; i < count; ++i) {
            const size_t r = rows ? rows[i] : i;
            double ref = 0, terms = 0;
            for (size_t c = 0; c < n; ++c) {
              double t = double(W[r * ld + c]) * x[c];
              ref += t;
              terms += std::fabs(t);
            }
            if (use_bias) {
              ref += bias[r];
              terms += std::fabs(bias[r]);
            }
            mm.close(out[i], ref, kRel * terms, "out", i);
          }
          mm.require(out.guards_intact(), "guard of out overwritten");
        }
      }
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: rows_axpy") {
  constexpr size_t R = 19;  // rows of W
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(113);
    for (size_t n = 0; n <= kMaxN; ++n) {
      const size_t ld = ld_for(n, 1 + n % 5);
      Buf W(R * ld, kNaN);
      for (size_t r = 0; r < R; ++r)
        for (size_t c = 0; c < ld; ++c) W[r * ld + c] = c < n ? uniform_in(rng, -1, 1) : kNaN;
      const size_t count = n % 50 == 0 ? 0 : 1 + (n * 7) % 29;  // may exceed R: duplicates
      std::vector<uint32_t> rows(count + 1);
      for (size_t i = 0; i < count; ++i) rows[i] = rng.below(R);
      Buf coef(count + 1, kNaN), out(n, kNaN);
      fill_uniform(rng, coef, -2.0f, 2.0f);
      fill_uniform(rng, out);
      Buf out0 = out;
      mm.context("rows_axpy", *k, n);
      k->rows_axpy(W.p(), ld, rows.data(), count, coef.p(), n, out.p());
      for (size_t c = 0; c < n; ++c) {
        double ref = out0[c], terms = std::fabs(ref);
        for (size_t i = 0; i < count; ++i) {
          double t = double(coef[i]) * W[rows[i] * ld + c];
          ref += t;
          terms += std::fabs(t);
        }
        mm.close(out[c], ref, kRel * terms, "out", c);
      }
      mm.require(out.guards_intact(), "guard of out overwritten");
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: sparse_matvec") {
  constexpr size_t R = 23;  // rows of W (the input dimension)
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(104);
    for (size_t n = 0; n <= kMaxN; ++n) {
      mm.context("sparse_matvec", *k, n);
      const size_t ld = ld_for(n, 1 + n % 3);
      Buf W(R * ld, kNaN);
      for (size_t r = 0; r < R; ++r)
        for (size_t c = 0; c < ld; ++c) W[r * ld + c] = c < n ? uniform_in(rng, -1, 1) : kNaN;
      const size_t nnz = n % 13;  // includes nnz = 0 (out must not change)
      std::vector<uint32_t> ids(nnz + 1);
      std::vector<float> values(nnz + 1);
      for (size_t j = 0; j < nnz; ++j) {
        ids[j] = rng.below(R);  // duplicates allowed: they simply add up
        values[j] = uniform_in(rng, -2, 2);
      }
      Buf out(n, kSentinel), out0(n, 0.0f);
      fill_uniform(rng, out0);
      for (size_t c = 0; c < n; ++c) out[c] = out0[c];
      k->sparse_matvec(ids.data(), values.data(), nnz, W.p(), ld, n, out.p());
      for (size_t c = 0; c < n; ++c) {
        double ref = out0[c], terms = std::fabs(out0[c]);
        for (size_t j = 0; j < nnz; ++j) {
          double t = double(values[j]) * W[ids[j] * ld + c];
          ref += t;
          terms += std::fabs(t);
        }
        mm.close(out[c], ref, kRel * terms, "out", c);
      }
      mm.require(out.guards_intact(), "guard of out overwritten");
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: relu and relu_backward") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(105);
    for (size_t n = 0; n <= kMaxN; ++n) {
      Buf x(n, kSentinel), x0(n, 0.0f);
      fill_uniform(rng, x0);
      // Exact zeros of both signs must come out as zero (and be treated as "not active").
      for (size_t i = 0; i < n; i += 7) x0[i] = (i % 14 == 0) ? 0.0f : -0.0f;
      for (size_t i = 0; i < n; ++i) x[i] = x0[i];

      mm.context("relu", *k, n);
      k->relu(x.p(), n);
      for (size_t i = 0; i < n; ++i) mm.exact(x[i], x0[i] > 0 ? x0[i] : 0.0f, "x", i);
      mm.require(x.guards_intact(), "guard of x overwritten");

      mm.context("relu_backward", *k, n);
      Buf act(n, kNaN), grad(n, kSentinel), grad0(n, 0.0f);
      for (size_t i = 0; i < n; ++i) act[i] = x[i];  // a real ReLU output: >= 0, with zeros
      fill_uniform(rng, grad0);
      for (size_t i = 0; i < n; ++i) grad[i] = grad0[i];
      k->relu_backward(act.p(), grad.p(), n);
      for (size_t i = 0; i < n; ++i) mm.exact(grad[i], act[i] > 0 ? grad0[i] : 0.0f, "grad", i);
      mm.require(grad.guards_intact(), "guard of grad overwritten");

      // A raw pre-activation as `act` (negative values) must also gate: act > 0 only.
      for (size_t i = 0; i < n; ++i) {
        act[i] = x0[i];
        grad[i] = grad0[i];
      }
      k->relu_backward(act.p(), grad.p(), n);
      for (size_t i = 0; i < n; ++i) mm.exact(grad[i], x0[i] > 0 ? grad0[i] : 0.0f, "grad(raw act)", i);
    }
    CHECK_NO_MISMATCH(mm);
  }
}

namespace {

// Input families for the log-sum-exp tests: stability needs large magnitudes and offsets.
enum class LseInput { small, wide80, offset_plus_1000, offset_minus_1000, bimodal80, spike, constant };
const LseInput kLseInputs[] = {LseInput::small, LseInput::wide80, LseInput::offset_plus_1000,
                               LseInput::offset_minus_1000, LseInput::bimodal80, LseInput::spike, LseInput::constant};
const char* lse_input_name(LseInput f) {
  switch (f) {
    case LseInput::small: return "uniform[-1,1)";
    case LseInput::wide80: return "uniform[-80,80)";
    case LseInput::offset_plus_1000: return "1000+uniform[-5,5)";
    case LseInput::offset_minus_1000: return "-1000+uniform[-5,5)";
    case LseInput::bimodal80: return "+-80+uniform[-1,1)";
    case LseInput::spike: return "one spike at 90, rest uniform[-20,-10)";
    case LseInput::constant: return "constant 42.5";
  }
  return "?";
}
void fill_lse(Rng& rng, Buf& b, LseInput f) {
  for (size_t i = 0; i < b.size(); ++i) {
    switch (f) {
      case LseInput::small: b[i] = uniform_in(rng, -1, 1); break;
      case LseInput::wide80: b[i] = uniform_in(rng, -80, 80); break;
      case LseInput::offset_plus_1000: b[i] = 1000.0f + uniform_in(rng, -5, 5); break;
      case LseInput::offset_minus_1000: b[i] = -1000.0f + uniform_in(rng, -5, 5); break;
      case LseInput::bimodal80: b[i] = (rng.below(2) ? 80.0f : -80.0f) + uniform_in(rng, -1, 1); break;
      case LseInput::spike: b[i] = uniform_in(rng, -20, -10); break;
      case LseInput::constant: b[i] = 42.5f; break;
    }
  }
  // exp(90) overflows float: only a shift by the true maximum keeps this finite.
  if (f == LseInput::spike && b.size() > 0) b[rng.below(uint32_t(b.size()))] = 90.0f;
}
double lse_reference(const Buf& x) {
  if (x.size() == 0) return -std::numeric_limits<double>::infinity();
  double m = x[0];
  for (size_t i = 1; i < x.size(); ++i) m = std::max(m, double(x[i]));
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += std::exp(double(x[i]) - m);
  return m + std::log(s);
}

}  // namespace

TEST_CASE("kernels: logsumexp") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(106);
    for (LseInput f : kLseInputs) {
      for (size_t n = 0; n <= kMaxN; ++n) {
        mm.context(lse_input_name(f), *k, n);
        Buf x(n, kNaN);
        fill_lse(rng, x, f);
        const float got = k->logsumexp(x.p(), n);
        const double ref = lse_reference(x);
        if (n == 0) {
          mm.require(std::isinf(got) && got < 0, "logsumexp of nothing must be -inf");
          continue;
        }
        mm.require(std::isfinite(got), "logsumexp not finite");
        mm.close(got, ref, kRel * std::max(1.0, std::fabs(ref)), "logsumexp", 0);
      }
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: softmax") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(107);
    for (LseInput f : kLseInputs) {
      for (size_t n = 0; n <= kMaxN; ++n) {
        mm.context(lse_input_name(f), *k, n);
        Buf x(n, kSentinel), x0(n, 0.0f);
        fill_lse(rng, x0, f);
        for (size_t i = 0; i < n; ++i) x[i] = x0[i];
        const float got = k->softmax(x.p(), n);
        mm.require(x.guards_intact(), "guard of x overwritten");
        const double lse = lse_reference(x0);
        if (n == 0) {
          mm.require(std::isinf(got) && got < 0, "softmax of nothing must return -inf");
          continue;
        }
        mm.close(got, lse, kRel * std::max(1.0, std::fabs(lse)), "returned logsumexp", 0);
        double max_abs_x = 0, sum = 0;
        for (size_t i = 0; i < n; ++i) max_abs_x = std::max(max_abs_x, std::fabs(double(x0[i])));
        const double log_tol = 1e-5 + 4.0 * FLT_EPSILON * std::max(std::fabs(lse), max_abs_x);
        for (size_t i = 0; i < n; ++i) {
          const double ref = std::exp(double(x0[i]) - lse);
          sum += x[i];
          if (ref >= 1e-30) {
            mm.require(x[i] > 0, "probability not positive");
            if (x[i] > 0) mm.close(std::log(double(x[i])), std::log(ref), log_tol, "log p", i);
          } else {
            mm.close(x[i], ref, 1e-30, "p (underflow range)", i);
          }
        }
        mm.close(sum, 1.0, 1e-5, "sum of probabilities", 0);
        if (f == LseInput::constant) {
          for (size_t i = 0; i < n; ++i) mm.close(x[i], 1.0 / double(n), 1e-5 / double(n), "p (constant)", i);
        }
      }
    }
    CHECK_NO_MISMATCH(mm);
  }
}

TEST_CASE("kernels: AdamStep::at") {
  const AdamStep s1 = AdamStep::at(0.01f, 0.9f, 0.999f, 1e-8f, 1);
  CHECK(s1.lr == 0.01f);
  CHECK(s1.beta1 == 0.9f);
  CHECK(s1.beta2 == 0.999f);
  CHECK(s1.eps == 1e-8f);
  for (uint64_t t : {uint64_t(1), uint64_t(2), uint64_t(10), uint64_t(1000), uint64_t(1000000)}) {
    const AdamStep s = AdamStep::at(1e-3f, 0.9f, 0.999f, 1e-8f, t);
    const double c1 = 1.0 / (1.0 - std::pow(double(0.9f), double(t)));
    const double c2 = 1.0 / (1.0 - std::pow(double(0.999f), double(t)));
    INFO("t = " << t);
    CHECK(std::fabs(s.c1 - c1) <= 1e-6 * c1);
    CHECK(std::fabs(s.c2 - c2) <= 1e-6 * c2);
  }
  // Defaults are the identity corrections.
  AdamStep d;
  CHECK(d.c1 == 1.0f);
  CHECK(d.c2 == 1.0f);
}

TEST_CASE("kernels: adam") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(108);
    for (uint64_t t : {uint64_t(1), uint64_t(7), uint64_t(5000)}) {
      const AdamStep st = AdamStep::at(0.01f, 0.9f, 0.999f, 1e-8f, t);
      for (size_t n = 0; n <= kMaxN; ++n) {
        mm.context(t == 1 ? "adam t=1" : t == 7 ? "adam t=7" : "adam t=5000", *k, n);
        Buf w(n, kSentinel), g(n, kNaN), m(n, kSentinel), v(n, kSentinel);
        Buf w0(n, 0), m0(n, 0), v0(n, 0);
        fill_uniform(rng, w0);
        fill_uniform(rng, g);
        fill_uniform(rng, m0, -0.3f, 0.3f);
        fill_uniform(rng, v0, 0.0f, 0.2f);
        if (t == 1) {  // the real first step: zero moments
          for (size_t i = 0; i < n; ++i) m0[i] = v0[i] = 0;
        }
        for (size_t i = 0; i < n; ++i) {
          w[i] = w0[i];
          m[i] = m0[i];
          v[i] = v0[i];
        }
        k->adam(w.p(), g.p(), m.p(), v.p(), n, st);
        for (size_t i = 0; i < n; ++i) {
          const double b1 = st.beta1, b2 = st.beta2, gi = g[i];
          const double mt1 = b1 * m0[i], mt2 = (1.0 - b1) * gi;
          const double vt1 = b2 * v0[i], vt2 = (1.0 - b2) * gi * gi;
          const double mr = mt1 + mt2, vr = vt1 + vt2;
          const double step = double(st.lr) * (mr * st.c1) / (std::sqrt(vr * st.c2) + st.eps);
          const double wr = double(w0[i]) - step;
          mm.close(m[i], mr, kRel * (std::fabs(mt1) + std::fabs(mt2)), "m", i);
          mm.close(v[i], vr, kRel * (std::fabs(vt1) + std::fabs(vt2)), "v", i);
          mm.close(w[i], wr, kRel * (std::fabs(w0[i]) + std::fabs(step)), "w", i);
        }
        mm.require(w.guards_intact() && m.guards_intact() && v.guards_intact(), "guard overwritten");
      }
    }
    CHECK_NO_MISMATCH(mm);
  }
}

namespace {

struct Shape {
  size_t M, N, K;
};

std::vector<Shape> gemm_shapes() {
  std::vector<Shape> shapes;
  const size_t small[] = {0, 1, 3, 8, 13, 17};
  for (size_t M : small)
    for (size_t N : small)
      for (size_t K : small) shapes.push_back({M, N, K});
  shapes.push_back({37, 29, 136});
  shapes.push_back({64, 40, 33});
  shapes.push_back({5, 129, 24});
  shapes.push_back({128, 50, 136});
  shapes.push_back({9, 300, 7});
  return shapes;
}

// A rows x width matrix with leading dimension ld > width, offset by one float; the padding
// holds `pad` (NaN for inputs: reading it would poison the result).
Buf make_matrix(Rng& rng, size_t rows, size_t width, size_t ld, float pad) {
  Buf b(rows * ld, pad);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < ld; ++c) b[r * ld + c] = c < width ? uniform_in(rng, -1, 1) : pad;
  return b;
}

}  // namespace

TEST_CASE("kernels: gemm_nt") {
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(109);
    for (const Shape& s : gemm_shapes()) {
      char label[80];
      std::snprintf(label, sizeof label, "gemm_nt M=%zu N=%zu K=%zu", s.M, s.N, s.K);
      mm.context(label, *k, s.M * s.N * s.K);
      const size_t lda = s.K + 3, ldb = s.K + 5, ldc = s.N + 2;
      Buf A = make_matrix(rng, s.M, s.K, lda, kNaN);
      Buf B = make_matrix(rng, s.N, s.K, ldb, kNaN);
      Buf C(s.M * ldc, kSentinel);
      // C is output only: start from NaN inside the matrix, sentinels in the padding.
      for (size_t i = 0; i < s.M; ++i)
        for (size_t j = 0; j < ldc; ++j) C[i * ldc + j] = j < s.N ? kNaN : kSentinel;
      k->gemm_nt(s.M, s.N, s.K, A.p(), lda, B.p(), ldb, C.p(), ldc);
      for (size_t i = 0; i < s.M; ++i) {
        for (size_t j = 0; j < s.N; ++j) {
          double ref = 0, terms = 0;
          for (size_t kk = 0; kk < s.K; ++kk) {
            double t = double(A[i * lda + kk]) * B[j * ldb + kk];
            ref += t;
            terms += std::fabs(t);
          }
          mm.close(C[i * ldc + j], ref, kRel * terms, "C[i*ldc+j]", i * ldc + j);
        }
        for (size_t j = s.N; j < ldc; ++j) mm.exact(C[i * ldc + j], kSentinel, "C padding", i * ldc + j);
      }
      mm.require(C.guards_intact(), "guard of C overwritten");
    }
    CHECK_NO_MISMATCH(mm);
  }
}

namespace {

// C += A B (gemm_nn_acc, A is M x K) or C += A^T B (gemm_tn_acc, A is K x M) on every gemm shape,
// against a double reference that starts from C's initial (random) values.
void check_gemm_acc(bool a_transposed, uint64_t seed) {
  const char* name = a_transposed ? "gemm_tn_acc" : "gemm_nn_acc";
  for (const Kernels* k : paths_under_test()) {
    Mismatches mm;
    Rng rng(seed);
    for (const Shape& s : gemm_shapes()) {
      char label[80];
      std::snprintf(label, sizeof label, "%s M=%zu N=%zu K=%zu", name, s.M, s.N, s.K);
      mm.context(label, *k, s.M * s.N * s.K);
      const size_t lda = (a_transposed ? s.M : s.K) + 2, ldb = s.N + 3, ldc = s.N + 1;
      Buf A = a_transposed ? make_matrix(rng, s.K, s.M, lda, kNaN) : make_matrix(rng, s.M, s.K, lda, kNaN);
      Buf B = make_matrix(rng, s.K, s.N, ldb, kNaN);
      Buf C = make_matrix(rng, s.M, s.N, ldc, kSentinel);
      Buf C0 = C;
      (a_transposed ? k->gemm_tn_acc : k->gemm_nn_acc)(s.M, s.N, s.K, A.p(), lda, B.p(), ldb, C.p(), ldc);
      for (size_t i = 0; i < s.M; ++i) {
        for (size_t j = 0; j < s.N; ++j) {
          double ref = C0[i * ldc + j], terms = std::fabs(ref);
          for (size_t kk = 0; kk < s.K; ++kk) {
            double t = double(a_transposed ? A[kk * lda + i] : A[i * lda + kk]) * B[kk * ldb + j];
            ref += t;
            terms += std::fabs(t);
          }
          mm.close(C[i * ldc + j], ref, kRel * terms, "C[i*ldc+j]", i * ldc + j);
        }
        for (size_t j = s.N; j < ldc; ++j) mm.exact(C[i * ldc + j], kSentinel, "C padding", i * ldc + j);
      }
      mm.require(C.guards_intact(), "guard of C overwritten");
    }
    CHECK_NO_MISMATCH(mm);
  }
}

}  // namespace

TEST_CASE("kernels: gemm_nn_acc") { check_gemm_acc(false, 110); }

TEST_CASE("kernels: gemm_tn_acc") { check_gemm_acc(true, 112); }

TEST_CASE("kernels: scalar and vector (avx2, neon) agree on a training-sized problem") {
  // Not a reference test: a quick consistency check of the two paths on larger inputs than the
  // sweeps above (hidden 128, 4096 labels), where only accumulation order may differ.
  if (vector_levels().empty()) MESSAGE("no vector kernels in this build or CPU: nothing to compare");
  for (Simd level : vector_levels()) {
    const Kernels& s = mongoose::kernels(Simd::scalar);
    const Kernels& a = mongoose::kernels(level);
    const std::string name = a.name;
    CAPTURE(name);
    Rng rng(111);
    const size_t n = 128, rows = 4096;
    Buf W(rows * n, kNaN), x(n, kNaN);
    fill_uniform(rng, W);
    fill_uniform(rng, x);
    Buf out_s(rows, kSentinel), out_a(rows, kSentinel);
    s.row_scores(W.p(), n, nullptr, rows, x.p(), n, nullptr, out_s.p());
    a.row_scores(W.p(), n, nullptr, rows, x.p(), n, nullptr, out_a.p());
    double worst = 0;
    for (size_t i = 0; i < rows; ++i) {
      double terms = 0;
      for (size_t c = 0; c < n; ++c) terms += std::fabs(double(W[i * n + c]) * x[c]);
      worst = std::max(worst, std::fabs(double(out_s[i]) - out_a[i]) / terms);
    }
    CHECK(worst <= 2 * kRel);
    const float ls = s.softmax(out_s.p(), rows), la = a.softmax(out_a.p(), rows);
    CHECK(std::fabs(ls - la) <= kRel * std::max(1.0f, std::fabs(ls)));
  }
}

//-----------------------------------------------------------------------------------------------
// Rng
//-----------------------------------------------------------------------------------------------

namespace {

// Independent reference of the documented algorithm: SplitMix64 outputs seed a xoshiro256**
// state (four consecutive SplitMix64 outputs starting from the seed).
struct ReferenceXoshiro {
  uint64_t s[4];
  static uint64_t splitmix(uint64_t& x) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  static uint64_t rotl(uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }
  explicit ReferenceXoshiro(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t& w : s) w = splitmix(x);
  }
  uint64_t next() {
    const uint64_t out = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
  }
};

}  // namespace

TEST_CASE("rng: determinism and the documented algorithm") {
  Rng a(12345), b(12345), c(12346);
  bool same = true, differs = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next(), y = b.next(), z = c.next();
    same = same && x == y;
    differs = differs || x != z;
  }
  CHECK(same);
  CHECK(differs);

  Rng d1, d2(1);
  CHECK(d1.next() == d2.next());

  // Same seed, same sequence on every platform: SplitMix64-seeded xoshiro256**.
  for (uint64_t seed : {uint64_t(0), uint64_t(1), uint64_t(0xDEADBEEFull), ~uint64_t(0)}) {
    Rng r(seed);
    ReferenceXoshiro ref(seed);
    bool match = true;
    for (int i = 0; i < 100; ++i) match = match && r.next() == ref.next();
    INFO("seed " << seed);
    CHECK(match);
  }

  // Mixed draws replay identically too.
  Rng p(99), q(99);
  bool replay = true;
  for (int i = 0; i < 1000; ++i) {
    replay = replay && p.below(1000) == q.below(1000);
    replay = replay && p.uniform() == q.uniform();
    replay = replay && p.gaussian() == q.gaussian();
  }
  CHECK(replay);
}

TEST_CASE("rng: below(n) is in range and uniform") {
  Rng rng(7);
  for (uint32_t n : {1u, 2u, 3u, 7u, 10u, 1000u, (1u << 31) + 1u, 0xFFFFFFFFu}) {
    bool in_range = true;
    for (int i = 0; i < 20000; ++i) in_range = in_range && rng.below(n) < n;
    INFO("n = " << n);
    CHECK(in_range);
  }
  // Counts for n = 10 over 100k draws: each ~10000 +- 95 (1 sigma); allow 5%.
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 100000; ++i) ++counts[rng.below(10)];
  for (int i = 0; i < 10; ++i) {
    INFO("bucket " << i << " count " << counts[i]);
    CHECK(std::abs(counts[i] - 10000) <= 500);
  }
  // A range where plain modulo of 32 bits would be very biased: n = 3 * 2^30. Draws below 2^31
  // should be 2/3 of all (modulo reduction would give 3/4... of a 32-bit source).
  const uint32_t big = 3u << 30;
  int low = 0;
  for (int i = 0; i < 100000; ++i) low += rng.below(big) < (1u << 31);
  CHECK(std::fabs(low / 100000.0 - 2.0 / 3.0) <= 0.01);
}

TEST_CASE("rng: uniform in [0, 1)") {
  Rng rng(8);
  const int n = 100000;
  double sum = 0, sum2 = 0;
  float lo = 1, hi = 0;
  bool in_range = true;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    in_range = in_range && u >= 0.0f && u < 1.0f;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sum2 += double(u) * u;
  }
  CHECK(in_range);
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(std::fabs(mean - 0.5) <= 0.005);
  CHECK(std::fabs(var - 1.0 / 12.0) <= 0.003);
  CHECK(lo < 0.001f);
  CHECK(hi > 0.999f);
}

TEST_CASE("rng: gaussian mean 0, variance 1") {
  Rng rng(9);
  const int n = 100000;
  double sum = 0, sum2 = 0, sum4 = 0;
  bool finite = true;
  int beyond3 = 0;
  for (int i = 0; i < n; ++i) {
    const double g = rng.gaussian();
    finite = finite && std::isfinite(g);
    sum += g;
    sum2 += g * g;
    sum4 += g * g * g * g;
    beyond3 += std::fabs(g) > 3.0;
  }
  CHECK(finite);
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(std::fabs(mean) <= 0.02);
  CHECK(std::fabs(var - 1.0) <= 0.03);
  CHECK(std::fabs(sum4 / n - 3.0) <= 0.15);              // normal kurtosis
  CHECK(beyond3 >= 200);                                  // expected 270
  CHECK(beyond3 <= 350);
}

TEST_CASE("rng: mix_seed") {
  CHECK(mongoose::mix_seed(1, 2, 3) == mongoose::mix_seed(1, 2, 3));
  CHECK(mongoose::mix_seed(1, 2) == mongoose::mix_seed(1, 2, 0));
  CHECK(mongoose::mix_seed(1, 2, 3) != mongoose::mix_seed(1, 2, 4));
  CHECK(mongoose::mix_seed(1, 2, 3) != mongoose::mix_seed(2, 1, 3));
  CHECK(mongoose::mix_seed(0, 0, 0) != mongoose::mix_seed(0, 0, 1));
  CHECK(mongoose::mix_seed(0, 1, 0) != mongoose::mix_seed(1, 0, 0));
}
