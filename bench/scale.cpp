// bench/scale.cpp - the LSH layer where it is meant to work: 10^5..10^6 labels with long tails.
//
// Build:  c++ -O2 -std=c++17 -pthread bench/scale.cpp mongoose.cpp -o bench-scale
// Run:    ./bench-scale --train TRAIN --test TEST [--eval EVAL] [--name NAME] [--epochs 1]
//                       [--threads 2] [--variants shared,simhash,mongoose,perfect,full]
//                       [--full-seconds 600] [--checkpoints 25600,102400,...|none] [--csv FILE]
//                       [--infer-sweep on] [--sweep-K 8,10,12] [--sweep-L 16,32,64]
//                       [--sweep-probes 0,2,4] [--sweep-mips on,off] [--set KEY=VALUE ...]
//   The data sets come from bench/make_xml1m.cpp and bench/make_lm_data.py (see bench/README.md).
//   TEST is used for the final numbers; EVAL (default TEST) for the checkpoints on the way.
//
// Variants (every other field: mongoose::Config defaults, then --set overrides, e.g. --set K=12):
//   shared     the shared set alone (retrieval off): a sampled softmax with the batch's labels and
//              random negatives, the sampling correction and tail drift
//   simhash    + the neurons SimHash tables retrieve (incremental scheduler over updated neurons)
//   learned    + learned hash functions (a learning round every learn_every = 500 batches)
//   perfect    + perfect retrieval: each example's max_active best neurons by brute force (the bound)
//   full       the full softmax, stopped after --full-seconds of training (it is ~100x slower;
//              perfect stops there too)
//   lsh        the library's lsh defaults (fixed rebuild period), as mongoose-train --output lsh
//   mongoose   the detect scheduler with learned hashing, as mongoose-train --output mongoose
// Each variant trains for --epochs (full: or until its time is up), evaluated with exact scoring
// (InferMode::full) on EVAL at each checkpoint of examples seen, so variants compare at equal
// examples; the last checkpoint is the end of training, evaluated on TEST.
//
// Per variant it prints the training speed (examples per second of training time), P@1/P@5 at
// every checkpoint, the upkeep share, the memory traffic (TrainStats::bytes_moved) and the
// achieved GB/s against a STREAM triad (a[i] = b[i] + s c[i] over 3 x 128 MB on the same threads)
// measured in this run: the roofline; and against the layer's own access pattern at its best (an
// Adam step on random 136-float rows of a labels-sized array), which is what bounds it. With --infer-sweep on it also measures, on the trained
// simhash, learned and lsh models, InferMode::lsh without the shortlist for a grid of index settings
// (K, L, probes; rebuild_index) against exact scoring: P@1 kept and time per example. The grid is
// --sweep-K x --sweep-L x --sweep-probes x --sweep-mips (defaults shown above).
// --csv writes every checkpoint as "name,variant,examples,train_seconds,p1,p5" (for bench/plot.py).

#include "../mongoose.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

// STREAM's triad a[i] = b[i] + s * c[i] on `threads` threads: the best of 5 runs, in GB/s counted
// as STREAM does (3 arrays of 8-byte... here 4-byte floats: 12 bytes per element).
double triad_gbs(unsigned threads) {
  const size_t n = size_t(32) << 20;  // 32M floats = 128 MB per array
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const size_t i0 = n * t / threads, i1 = n * (t + 1) / threads;
        for (size_t i = i0; i < i1; ++i) a[i] = b[i] + 3.0f * c[i];
      });
    for (auto& th : pool) th.join();
    const double s = now() - t0;
    best = std::max(best, 12.0 * double(n) / s / 1e9);
  }
  volatile float sink = a[n / 2];
  (void)sink;
  return best;
}

// The layer's own access pattern at its best: one Adam step (read w, m, v and the gradient,
// write w, m, v) on rows of `ld` floats picked at random among `rows`, on `threads` threads, with
// the library's kernel. Counted as 7 passes over a row, as TrainStats::bytes_moved counts them.
double random_rows_gbs(unsigned threads, size_t rows, size_t ld) {
  std::vector<float> w(rows * ld, 0.1f), m(rows * ld, 0.0f), v(rows * ld, 0.0f);
  const mongoose::Kernels& k = mongoose::kernels();
  const mongoose::AdamStep st = mongoose::AdamStep::at(1e-3f, 0.9f, 0.999f, 1e-8f, 1);
  const size_t per_thread = 200000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        mongoose::Rng rng(mongoose::mix_seed(7, t, rep));
        std::vector<float> g(ld, 1e-3f);
        for (size_t i = 0; i < per_thread; ++i) {
          const size_t r = rng.below(uint32_t(rows));
          k.adam(&w[r * ld], g.data(), &m[r * ld], &v[r * ld], ld, st);
        }
      });
    for (auto& th : pool) th.join();
    best = std::max(best, 7.0 * double(threads * per_thread) * double(ld) * 4 / (now() - t0) / 1e9);
  }
  return best;
}

struct Options {
  std::string train, test, eval, name = "data", csv;
  double epochs = 1;
  unsigned threads = 2;
  double full_seconds = 600;
  std::vector<std::string> variants{"shared", "simhash", "mongoose", "perfect", "full"};
  std::vector<size_t> checkpoints{25600, 51200, 102400, 204800};
  bool infer_sweep = false;
  std::vector<uint32_t> sweep_K{8, 10, 12}, sweep_L{16, 32, 64}, sweep_probes{0, 2, 4};
  std::vector<bool> sweep_mips{true, false};
  std::vector<std::pair<std::string, std::string>> sets;
};

// Applies one KEY=VALUE to a Config (the fields a scale run tunes).
bool set_field(mongoose::Config* c, const std::string& key, const std::string& value) {
  const double v = std::atof(value.c_str());
  const uint32_t u = uint32_t(std::strtoul(value.c_str(), nullptr, 10));
  if (key == "K") c->K = u;
  else if (key == "L") c->L = u;
  else if (key == "hidden") c->hidden = u;
  else if (key == "min_active") c->min_active = u;
  else if (key == "max_active") c->max_active = u;
  else if (key == "bucket_capacity") c->bucket_capacity = u;
  else if (key == "bucket_policy") c->bucket_policy = value == "fifo" ? mongoose::BucketPolicy::fifo : mongoose::BucketPolicy::reservoir;
  else if (key == "probes") c->probes = u;
  else if (key == "infer_probes") c->infer_probes = u;
  else if (key == "check_every") c->check_every = u;
  else if (key == "rehash_every") c->rehash_every = u;
  else if (key == "learn_every") c->learn_every = u;
  else if (key == "learn_queries") c->learn_queries = u;
  else if (key == "tail_drift") c->tail_drift = float(v);
  else if (key == "lr") c->learning_rate = float(v);
  else if (key == "batch") c->batch_size = u;
  else if (key == "scheduler")
    c->scheduler = value == "fixed" ? mongoose::Scheduler::fixed : value == "detect" ? mongoose::Scheduler::detect : mongoose::Scheduler::incremental;
  else if (key == "drift_epsilon") c->drift_epsilon = float(v);
  else if (key == "mips") c->mips = value == "on";
  else if (key == "bf16") c->bf16 = value == "on";
  else return false;
  return true;
}

mongoose::Config variant_config(const std::string& v, const Options& o) {
  mongoose::Config c;
  c.threads = o.threads;
  c.output = v == "full" ? mongoose::OutputMode::full : mongoose::OutputMode::lsh;
  if (v == "mongoose") {  // as mongoose-train --output mongoose
    c.scheduler = mongoose::Scheduler::detect;
    c.learn_hash = true;
  }
  if (v == "shared" || v == "simhash" || v == "learned" || v == "perfect") {
    c.scheduler = mongoose::Scheduler::incremental;
    c.infer_shortlist = 0;
  }
  if (v == "shared") c.retrieval = false;
  if (v == "learned") {
    c.learn_hash = true;
    c.learn_every = 500;
  }
  if (v == "perfect") c.exact_retrieval = true;
  for (const auto& kv : o.sets) set_field(&c, kv.first, kv.second);
  return c;
}

struct Checkpoint {
  size_t examples;
  double seconds, p1, p5;
};

// The LSH inference sweep on a trained model: P@1 kept and the speed-up over exact scoring.
void infer_sweep(mongoose::Model& model, const mongoose::Dataset& test, const std::string& variant, const Options& o) {
  mongoose::Metrics exact;
  if (!model.evaluate(test, mongoose::InferMode::full, &exact).ok()) return;
  std::printf("  infer %s exact: p@1=%.4f ms=%.4f\n", variant.c_str(), exact.p_at_1, exact.ms_per_example);
  for (bool mips : o.sweep_mips)
  for (uint32_t K : o.sweep_K)
    for (uint32_t L : o.sweep_L) {
      mongoose::Config index = model.config();
      index.mips = mips;
      index.K = K;
      index.L = L;
      index.bucket_capacity = std::max<uint32_t>(128, uint32_t(2 * model.labels() >> K));
      for (uint32_t p : o.sweep_probes) {
        if (p > K) continue;
        index.infer_probes = p;
        mongoose::Status st = model.rebuild_index(index);
        mongoose::Metrics m;
        if (st.ok()) st = model.evaluate(test, mongoose::InferMode::lsh, &m);
        if (!st.ok()) {
          std::printf("  infer %s K=%u L=%u probes=%u: %s\n", variant.c_str(), K, L, p, st.message().c_str());
          continue;
        }
        std::printf("  infer %s mips=%d K=%u L=%u cap=%u probes=%u: p@1=%.4f kept=%.3f candidates=%.0f ms=%.4f speedup=%.1f\n",
                    variant.c_str(), int(mips), K, L, index.bucket_capacity, p, m.p_at_1, exact.p_at_1 > 0 ? m.p_at_1 / exact.p_at_1 : 0.0,
                    m.mean_candidates, m.ms_per_example, m.ms_per_example > 0 ? exact.ms_per_example / m.ms_per_example : 0.0);
        std::fflush(stdout);
      }
    }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--train") o.train = v;
    else if (a == "--test") o.test = v;
    else if (a == "--eval") o.eval = v;
    else if (a == "--name") o.name = v;
    else if (a == "--csv") o.csv = v;
    else if (a == "--epochs") o.epochs = std::atof(v.c_str());
    else if (a == "--threads") o.threads = unsigned(std::atoi(v.c_str()));
    else if (a == "--full-seconds") o.full_seconds = std::atof(v.c_str());
    else if (a == "--variants") o.variants = split(v, ',');
    else if (a == "--infer-sweep") o.infer_sweep = v == "on";
    else if (a == "--sweep-K" || a == "--sweep-L" || a == "--sweep-probes") {
      std::vector<uint32_t>& grid = a == "--sweep-K" ? o.sweep_K : a == "--sweep-L" ? o.sweep_L : o.sweep_probes;
      grid.clear();
      for (const std::string& x : split(v, ',')) grid.push_back(uint32_t(std::strtoul(x.c_str(), nullptr, 10)));
    } else if (a == "--sweep-mips") {
      o.sweep_mips.clear();
      for (const std::string& x : split(v, ',')) o.sweep_mips.push_back(x == "on");
    }
    else if (a == "--checkpoints") {
      o.checkpoints.clear();
      if (v != "none")
        for (const std::string& c : split(v, ',')) o.checkpoints.push_back(size_t(std::atoll(c.c_str())));
    } else if (a == "--set") {
      const size_t eq = v.find('=');
      mongoose::Config probe;
      if (eq == std::string::npos || !set_field(&probe, v.substr(0, eq), v.substr(eq + 1))) {
        std::fprintf(stderr, "bench-scale: bad --set %s\n", v.c_str());
        return 2;
      }
      o.sets.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      std::fprintf(stderr, "bench-scale: unknown option %s (see the header of bench/scale.cpp)\n", a.c_str());
      return 2;
    }
  }
  if (o.train.empty() || o.test.empty()) {
    std::fprintf(stderr, "usage: bench-scale --train TRAIN --test TEST [options] (see bench/scale.cpp)\n");
    return 2;
  }
  if (o.eval.empty()) o.eval = o.test;
  mongoose::Dataset train, test, eval;
  const double t0 = now();
  mongoose::Status st = mongoose::read_dataset(o.train, &train);
  const double read_s = now() - t0;
  if (st.ok()) st = mongoose::read_dataset(o.test, &test);
  if (st.ok()) st = mongoose::read_dataset(o.eval, &eval);
  if (!st.ok()) {
    std::printf("%s: skipped: %s\n", o.name.c_str(), st.message().c_str());
    return 0;
  }
  const double triad = triad_gbs(o.threads);
  const double random_rows = random_rows_gbs(o.threads, train.labels, 136);
  std::printf("bench-scale %s: %zu train rows, %zu test rows (%zu for checkpoints), %zu features, %zu labels; read %.1f s "
              "(%.0f MB/s); threads %u; STREAM triad %.1f GB/s; Adam on random rows %.1f GB/s\n",
              o.name.c_str(), train.rows, test.rows, eval.rows, train.features, train.labels, read_s,
              double(train.bytes()) / 1e6 / std::max(read_s, 1e-9), o.threads, triad, random_rows);
  std::FILE* csv = o.csv.empty() ? nullptr : std::fopen(o.csv.c_str(), "a");
  for (const std::string& variant : o.variants) {
    mongoose::Config cfg = variant_config(variant, o);
    // The two brute-force variants (full softmax; perfect retrieval: a full forward pass per
    // batch) stop after --full-seconds of training: at 10^6 labels an epoch would take hours.
    const bool brute_force = variant == "full" || variant == "perfect";
    const double deadline = brute_force ? o.full_seconds : 1e30;
    mongoose::Model model;
    st = model.init(cfg, train.features, train.labels);
    if (!st.ok()) {
      std::printf("  %s: %s\n", variant.c_str(), st.message().c_str());
      continue;
    }
    // Train batch by batch in epoch order, stopping at each checkpoint to evaluate.
    std::vector<Checkpoint> marks;
    const size_t total = size_t(o.epochs * double(train.rows));
    std::vector<size_t> stops;
    for (size_t c : o.checkpoints)
      if (c < total) stops.push_back(c);
    stops.push_back(total);
    std::vector<uint32_t> order(train.rows);
    mongoose::Rng rng(cfg.seed);
    size_t seen = 0, epoch_pos = train.rows;
    bool out_of_time = false;
    for (size_t stop : stops) {
      while (seen < stop && !out_of_time) {
        if (epoch_pos >= train.rows) {
          for (size_t i = 0; i < order.size(); ++i) order[i] = uint32_t(i);
          for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(uint32_t(i))]);
          epoch_pos = 0;
        }
        const size_t n = std::min<size_t>({cfg.batch_size, stop - seen, train.rows - epoch_pos});
        st = model.train_batch(train, order.data() + epoch_pos, n);
        if (!st.ok()) break;
        epoch_pos += n;
        seen += n;
        out_of_time = model.stats().seconds >= deadline;
      }
      if (!st.ok()) break;
      mongoose::Metrics m;
      const bool last = stop == stops.back() || out_of_time;
      st = model.evaluate(last ? test : eval, mongoose::InferMode::full, &m);
      if (!st.ok()) break;
      marks.push_back({seen, model.stats().seconds, m.p_at_1, m.p_at_5});
      std::printf("  checkpoint %s %-8s examples=%zu train_s=%.1f p@1=%.4f p@5=%.4f%s\n", o.name.c_str(), variant.c_str(), seen,
                  model.stats().seconds, m.p_at_1, m.p_at_5, last ? " (test)" : "");
      std::fflush(stdout);
      if (csv) std::fprintf(csv, "%s,%s,%zu,%.3f,%.5f,%.5f\n", o.name.c_str(), variant.c_str(), seen, model.stats().seconds, m.p_at_1, m.p_at_5);
      if (csv) std::fflush(csv);  // a run stopped part-way keeps its checkpoints
      if (out_of_time) break;
    }
    if (!st.ok()) {
      std::printf("  %s: %s\n", variant.c_str(), st.message().c_str());
      continue;
    }
    const mongoose::TrainStats& s = model.stats();
    const double upkeep = s.rehash_seconds + s.detect_seconds + s.reinsert_seconds + s.learn_seconds;
    const double gbs = s.seconds > 0 ? s.bytes_moved / s.seconds / 1e9 : 0;
    std::printf("  result %s %-8s examples=%llu train_s=%.1f ex_per_s=%.0f p@1=%.4f p@5=%.4f active=%.0f rebuilds=%llu "
                "reinserted=%llu learn_rounds=%llu upkeep_s=%.1f (%.0f%%) bytes_per_batch_mb=%.2f gb_per_s=%.2f roofline=%.0f%% "
                "random_row_roofline=%.0f%% params_mb=%.0f\n",
                o.name.c_str(), variant.c_str(), (unsigned long long)s.examples, s.seconds, s.seconds > 0 ? double(s.examples) / s.seconds : 0.0,
                marks.back().p1, marks.back().p5, s.active_mean(), (unsigned long long)s.rehashes, (unsigned long long)s.reinserted,
                (unsigned long long)s.learn_rounds, upkeep, s.seconds > 0 ? 100.0 * upkeep / s.seconds : 0.0,
                s.batches ? s.bytes_moved / double(s.batches) / 1e6 : 0.0, gbs, triad > 0 ? 100.0 * gbs / triad : 0.0,
                random_rows > 0 ? 100.0 * gbs / random_rows : 0.0, double(model.parameter_bytes()) / 1e6);
    std::printf("  split %s %-8s hidden=%.1f hash=%.1f query=%.1f fwdbwd=%.1f update=%.1f rehash=%.1f detect=%.1f reinsert=%.1f learn=%.1f\n",
                o.name.c_str(), variant.c_str(), s.hidden_seconds, s.hash_seconds, s.query_seconds, s.forward_backward_seconds,
                s.update_seconds, s.rehash_seconds, s.detect_seconds, s.reinsert_seconds, s.learn_seconds);
    std::fflush(stdout);
    if (o.infer_sweep && (variant == "simhash" || variant == "learned" || variant == "lsh")) infer_sweep(model, test, variant, o);
  }
  if (csv) std::fclose(csv);
  return 0;
}
