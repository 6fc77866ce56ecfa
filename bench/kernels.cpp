// bench/kernels.cpp - vector (AVX2 on x86, NEON on ARM) versus scalar throughput of every dense
// kernel, in one run.
//
//   c++ -O2 -std=c++17 -pthread bench/kernels.cpp mongoose.cpp -o bench-kernels && ./bench-kernels
//   ./bench-kernels 20      # milliseconds per table cell (default 75)
//
// For n = 128 (L1), 4096 (L1/L2) and 4,194,304 (main memory) elements, and for the gemm kernels
// the shapes M x N x K = 128x128x136 and 128x1024x136, each cell runs the kernel repeatedly for
// about 75 ms (three slices; the best slice counts) and reports GFLOP/s for arithmetic kernels or
// GB/s (minimum bytes read + written) for streaming ones. Every result feeds a checksum that is
// printed, so no call can be dropped. The last line is machine-readable:
//   result dot_speedup_l1=X axpy_speedup_l1=X gemm_nt_gflops=X
// (speedups are vector/scalar at n = 128, the vector table being what Simd::automatic picks;
// gemm_nt_gflops is the best path at 128x128x136).

#include "../mongoose.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

using mongoose::Kernels;
using mongoose::Simd;

namespace {

double g_checksum = 0;  // every kernel result ends up here; printed at the end

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs fn repeatedly for about `seconds` (three slices, after a calibration) and returns the best
// time per call.
double seconds_per_call(const std::function<void()>& fn, double seconds) {
  fn();  // warm up (page faults, caches)
  size_t reps = 1;
  double t = 0;
  for (;;) {  // calibrate: grow reps until one batch takes >= 5 ms
    const double t0 = now();
    for (size_t r = 0; r < reps; ++r) fn();
    t = now() - t0;
    if (t >= 0.005 || reps >= (size_t(1) << 40)) break;
    reps *= t > 0 ? std::max<size_t>(2, size_t(0.006 / t)) : 8;
  }
  const double per_call_estimate = t / double(reps);
  const size_t slice_reps = std::max<size_t>(1, size_t(seconds / 3.0 / per_call_estimate));
  double best = 1e300;
  for (int slice = 0; slice < 3; ++slice) {
    const double t0 = now();
    for (size_t r = 0; r < slice_reps; ++r) fn();
    best = std::min(best, (now() - t0) / double(slice_reps));
  }
  return best;
}

std::vector<float> random_vector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  mongoose::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

// One benchmark: a setup that builds its buffers for a size, then returns the timed call.
struct Case {
  std::string kernel;
  std::string size;    // printed
  const char* unit;    // "GFLOP/s" or "GB/s"
  double work;         // flops or bytes per call
  // Builds buffers for kernel table k and returns the call to time (owning its buffers).
  std::function<std::function<void()>(const Kernels& k)> make;
};

std::string size_label(size_t n) {
  if (n >= (size_t(1) << 20) && n % (size_t(1) << 20) == 0) return "n=" + std::to_string(n >> 20) + "M";
  return "n=" + std::to_string(n);
}

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  const size_t sizes[] = {128, 4096, size_t(4) << 20};
  static constexpr size_t hidden = 128;  // row width for the layer kernels (the default hidden size)

  for (size_t n : sizes) {
    cases.push_back({"dot", size_label(n), "GFLOP/s", 2.0 * n, [n](const Kernels& k) {
      auto a = std::make_shared<std::vector<float>>(random_vector(n, 1));
      auto b = std::make_shared<std::vector<float>>(random_vector(n, 2));
      return std::function<void()>([k, a, b, n] { g_checksum += k.dot(a->data(), b->data(), n); });
    }});
  }
  for (size_t n : sizes) {
    cases.push_back({"axpy", size_label(n), "GB/s", 12.0 * n, [n](const Kernels& k) {
      auto x = std::make_shared<std::vector<float>>(random_vector(n, 3));
      auto y = std::make_shared<std::vector<float>>(random_vector(n, 4));
      return std::function<void()>([k, x, y, n] {
        k.axpy(1e-7f, x->data(), y->data(), n);
        g_checksum += (*y)[n / 2];
      });
    }});
  }
  for (size_t n : sizes) {
    cases.push_back({"scale", size_label(n), "GB/s", 8.0 * n, [n](const Kernels& k) {
      auto x = std::make_shared<std::vector<float>>(random_vector(n, 5));
      auto flip = std::make_shared<bool>(false);
      return std::function<void()>([k, x, flip, n] {
        *flip = !*flip;  // alternate 1.0001 and its inverse so values stay bounded
        k.scale(*flip ? 1.0001f : 1.0f / 1.0001f, x->data(), n);
        g_checksum += (*x)[n - 1];
      });
    }});
  }
  for (size_t n : sizes) {
    cases.push_back({"add", size_label(n), "GB/s", 12.0 * n, [n](const Kernels& k) {
      auto x = std::make_shared<std::vector<float>>(random_vector(n, 6, -1e-7f, 1e-7f));
      auto y = std::make_shared<std::vector<float>>(random_vector(n, 7));
      return std::function<void()>([k, x, y, n] {
        k.add(x->data(), y->data(), n);
        g_checksum += (*y)[0];
      });
    }});
  }
  for (size_t n : sizes) {
    // n weights as n / 128 rows of width 128, all rows scored (with bias): a full output layer.
    const size_t rows = n / hidden;
    cases.push_back({"row_scores", size_label(n), "GFLOP/s", 2.0 * n, [rows](const Kernels& k) {
      auto W = std::make_shared<std::vector<float>>(random_vector(rows * hidden, 8));
      auto x = std::make_shared<std::vector<float>>(random_vector(hidden, 9));
      auto bias = std::make_shared<std::vector<float>>(random_vector(rows, 10));
      auto out = std::make_shared<std::vector<float>>(rows);
      return std::function<void()>([k, W, x, bias, out, rows] {
        k.row_scores(W->data(), hidden, nullptr, rows, x->data(), hidden, bias->data(), out->data());
        g_checksum += (*out)[rows - 1];
      });
    }});
  }
  for (size_t n : sizes) {
    // n weights as n / 128 input rows of width 128; every row used once, in a random order.
    const size_t rows = n / hidden;
    cases.push_back({"sparse_matvec", size_label(n), "GFLOP/s", 2.0 * n, [rows](const Kernels& k) {
      auto W = std::make_shared<std::vector<float>>(random_vector(rows * hidden, 11));
      auto ids = std::make_shared<std::vector<uint32_t>>(rows);
      mongoose::Rng rng(12);
      for (size_t i = 0; i < rows; ++i) (*ids)[i] = uint32_t(i);
      for (size_t i = rows; i > 1; --i) std::swap((*ids)[i - 1], (*ids)[rng.below(uint32_t(i))]);
      auto values = std::make_shared<std::vector<float>>(random_vector(rows, 13, -1e-3f, 1e-3f));
      auto out = std::make_shared<std::vector<float>>(hidden, 0.0f);
      return std::function<void()>([k, W, ids, values, out, rows] {
        k.sparse_matvec(ids->data(), values->data(), rows, W->data(), hidden, hidden, out->data());
        g_checksum += (*out)[0];
      });
    }});
  }
  for (size_t n : sizes) {
    cases.push_back({"relu", size_label(n), "GB/s", 8.0 * n, [n](const Kernels& k) {
      auto x0 = std::make_shared<std::vector<float>>(random_vector(n, 14));
      auto x = std::make_shared<std::vector<float>>(*x0);
      return std::function<void()>([k, x, n] {
        k.relu(x->data(), n);  // idempotent after the first call; same work every call
        g_checksum += (*x)[n / 3];
      });
    }});
  }
  for (size_t n : sizes) {
    // Minimum traffic: read and write each element once (the kernel makes three passes).
    cases.push_back({"softmax", size_label(n), "GB/s", 8.0 * n, [n](const Kernels& k) {
      auto x = std::make_shared<std::vector<float>>(random_vector(n, 15, -5.0f, 5.0f));
      return std::function<void()>([k, x, n] { g_checksum += k.softmax(x->data(), n); });
    }});
  }
  for (size_t n : sizes) {
    // Reads w, g, m, v and writes w, m, v: 28 bytes per parameter.
    cases.push_back({"adam", size_label(n), "GB/s", 28.0 * n, [n](const Kernels& k) {
      auto w = std::make_shared<std::vector<float>>(random_vector(n, 16));
      auto g = std::make_shared<std::vector<float>>(random_vector(n, 17));
      auto m = std::make_shared<std::vector<float>>(n, 0.0f);
      auto v = std::make_shared<std::vector<float>>(n, 0.0f);
      const mongoose::AdamStep step = mongoose::AdamStep::at(1e-4f, 0.9f, 0.999f, 1e-8f, 10);
      return std::function<void()>([k, w, g, m, v, n, step] {
        k.adam(w->data(), g->data(), m->data(), v->data(), n, step);
        g_checksum += (*w)[n / 2];
      });
    }});
  }
  struct Shape {
    size_t M, N, K;
  };
  const Shape shapes[] = {{128, 128, 136}, {128, 1024, 136}};
  for (const Shape& s : shapes) {
    const std::string label = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
    cases.push_back({"gemm_nt", label, "GFLOP/s", 2.0 * s.M * s.N * s.K, [s](const Kernels& k) {
      auto A = std::make_shared<std::vector<float>>(random_vector(s.M * s.K, 18));
      auto B = std::make_shared<std::vector<float>>(random_vector(s.N * s.K, 19));
      auto C = std::make_shared<std::vector<float>>(s.M * s.N);
      return std::function<void()>([k, A, B, C, s] {
        k.gemm_nt(s.M, s.N, s.K, A->data(), s.K, B->data(), s.K, C->data(), s.N);
        g_checksum += (*C)[s.M * s.N - 1];
      });
    }});
  }
  for (const Shape& s : shapes) {
    const std::string label = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
    cases.push_back({"gemm_nn_acc", label, "GFLOP/s", 2.0 * s.M * s.N * s.K, [s](const Kernels& k) {
      auto A = std::make_shared<std::vector<float>>(random_vector(s.M * s.K, 20, -1e-4f, 1e-4f));
      auto B = std::make_shared<std::vector<float>>(random_vector(s.K * s.N, 21));
      auto C = std::make_shared<std::vector<float>>(random_vector(s.M * s.N, 22));
      return std::function<void()>([k, A, B, C, s] {
        k.gemm_nn_acc(s.M, s.N, s.K, A->data(), s.K, B->data(), s.N, C->data(), s.N);
        g_checksum += (*C)[0];
      });
    }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  double cell_ms = 75;
  if (argc > 1) {
    cell_ms = std::atof(argv[1]);
    if (!(cell_ms > 0)) {
      std::fprintf(stderr, "usage: %s [milliseconds per cell, default 75]\n", argv[0]);
      return 2;
    }
  }
  const double cell_seconds = cell_ms / 1000.0;
  const Kernels& scalar = mongoose::kernels(Simd::scalar);
  const Kernels& fast = mongoose::kernels(Simd::automatic);  // the best table this CPU runs
  const bool vector = fast.level != Simd::scalar;
  const std::string ratio_label = std::string(fast.name) + "/scalar";
  if (!vector) std::printf("no vector kernels (AVX2/FMA or NEON) on this CPU: timing the scalar path only\n");
  std::printf("mongoose %d.%d kernel benchmark, %.0f ms per cell (best of 3 slices)\n\n",
              MONGOOSE_VERSION_MAJOR, MONGOOSE_VERSION_MINOR, cell_ms);
  std::printf("%-14s %-14s %-8s %10s %10s %12s\n", "kernel", "size", "unit", "scalar",
              vector ? fast.name : "-", vector ? ratio_label.c_str() : "");

  double dot_l1 = std::nan(""), axpy_l1 = std::nan(""), gemm_nt_gflops = std::nan("");
  for (const Case& c : make_cases()) {
    double rate_scalar, rate_fast = std::nan("");
    {
      std::function<void()> call = c.make(scalar);
      rate_scalar = c.work / seconds_per_call(call, cell_seconds) * 1e-9;
    }
    if (vector) {
      std::function<void()> call = c.make(fast);
      rate_fast = c.work / seconds_per_call(call, cell_seconds) * 1e-9;
    }
    const double ratio = rate_fast / rate_scalar;
    if (vector) {
      std::printf("%-14s %-14s %-8s %10.2f %10.2f %11.2fx\n", c.kernel.c_str(), c.size.c_str(), c.unit,
                  rate_scalar, rate_fast, ratio);
    } else {
      std::printf("%-14s %-14s %-8s %10.2f\n", c.kernel.c_str(), c.size.c_str(), c.unit, rate_scalar);
    }
    std::fflush(stdout);
    if (c.size == "n=128" && c.kernel == "dot") dot_l1 = ratio;
    if (c.size == "n=128" && c.kernel == "axpy") axpy_l1 = ratio;
    if (c.size == "128x128x136" && c.kernel == "gemm_nt") gemm_nt_gflops = vector ? rate_fast : rate_scalar;
  }
  std::printf("\nchecksum %.6g (ignore; keeps the work observable)\n", g_checksum);
  std::printf("result dot_speedup_l1=%.2f axpy_speedup_l1=%.2f gemm_nt_gflops=%.2f\n", dot_l1, axpy_l1,
              gemm_nt_gflops);
  return 0;
}
