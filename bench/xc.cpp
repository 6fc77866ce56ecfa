// bench/xc.cpp - full softmax vs LSH-sampled output layer on real extreme-classification data.
//
// Build:  c++ -O2 -std=c++17 -pthread bench/xc.cpp mongoose.cpp -o bench-xc
// Run:    ./bench-xc [--data DIR] [--epochs 5] [--threads 2]
//                    [--datasets citeulike-t,delicious] [--modes full,lsh]
//         (DIR defaults to ../shared/data, relative to the current directory; it should hold
//          citeulike-t/citeulike-t_{train,test}.txt and delicious/delicious_{train,test}.txt.
//          A missing dataset is reported as "skipped: ... not found" and the run goes on.)
//
// What it measures. For each dataset and each output mode (full softmax, lsh), the same network
// (mongoose::Config defaults: hidden units, batch size, learning rate, seed, and for lsh the
// default K, L, bucket capacity, active-set sizes and rehash period, so tuning the defaults in
// mongoose.h is what this benchmark sees) is trained for the same number of epochs on the same
// number of threads. After every epoch it is evaluated on the test set with InferMode::full
// (P@1, P@5); evaluation time is not counted as training time (train seconds come from
// Model::stats().seconds). At the end an lsh model is also evaluated with InferMode::lsh
// (P@1 and ms/example, against the full inference ms/example of the same model).
//
// Each (dataset, mode) run happens in its own forked child process, which reads the data, trains,
// evaluates and pipes its numbers back, so the peak RSS (wait4's ru_maxrss) is that run's alone:
// data + model + index + scratch. If fork fails the run happens in-process and the peak RSS is
// reported as n/a (the parameter MB column, Model::parameter_bytes(), is always there).
//
// Output (stdout): one line per epoch as it goes, then per dataset an aligned table, the training
// time split (TrainStats: hidden, hash, query, forward_backward, update, rehash seconds), and
//   ratio <dataset> lsh/full seconds_per_epoch=X p@1_final=X p@1_best=X infer_speedup=X
// The last line is machine-readable:
//   result citeulike_epoch_ratio=X citeulike_p1_ratio=X delicious_epoch_ratio=X delicious_p1_ratio=X
// (lsh/full seconds per epoch and lsh/full final P@1; nan when a dataset or mode was not run).
//
// All timings are wall clock and vary with machine load (other processes, frequency scaling,
// memory bandwidth shared with other jobs): compare runs made on an idle machine, or the ratios
// of the two modes measured in the same run.
//
// Exit status: 0 when every requested run that had its data succeeded (missing datasets are
// skipped, not errors), 1 when a run failed, 2 on a usage error.

#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

//-----------------------------------------------------------------------------------------------
// Options
//-----------------------------------------------------------------------------------------------

struct Options : BenchOptions {
  std::vector<std::string> modes{"full", "lsh"};
};

void usage(FILE* out) {
  print_common_usage(out, "bench-xc");
  std::fprintf(out, "  --modes LIST         comma-separated subset of full,lsh (both)\n");
}

// Returns "" or an error message.
std::string parse_args(int argc, char** argv, Options* o) {
  return parse_bench_args(argc, argv, o, usage,
                          {"--modes", &o->modes, {"full", "lsh"}, "--modes needs at least one of full,lsh", "mode",
                           "full or lsh"});
}

//-----------------------------------------------------------------------------------------------
// One run: read the data, train, evaluate (run in a child process by run_in_child).
//-----------------------------------------------------------------------------------------------

struct EpochRecord : CommonEpoch {
  double wall_seconds = 0;  // wall time of the train_epoch call (cross-check)
  double p3 = 0;
  double eval_seconds = 0, eval_ms_per_example = 0;
};

struct RunSummary : CommonSummary {
  double parameter_mb = 0;
  double peak_rss_mb = kNaN;  // filled in by the parent (wait4)
};
using RunResult = RunResultOf<RunSummary, EpochRecord>;

const char* mode_name(OutputMode m) { return m == OutputMode::lsh ? "lsh" : "full"; }

RunResult run_one(const Options& o, const DatasetSpec& spec, OutputMode mode) {
  RunResult r;
  RunSummary& s = r.summary;
  Dataset train, test;
  if (!load_dataset(o, spec, &train, &test, &s)) return r;

  Config cfg;  // library defaults; only the output layer and the thread count are set here
  cfg.output = mode;
  cfg.threads = o.threads;
  Model model;
  if (!init_model(cfg, train, &model, &s)) return r;

  Status st = train_epochs(&model, train, test, o.epochs, &r, [&](EpochRecord* rec, double wall, const Metrics& m) {
    rec->wall_seconds = wall;
    rec->p3 = m.p_at_3;
    rec->eval_seconds = m.seconds;
    rec->eval_ms_per_example = m.ms_per_example;
    std::printf("epoch %-11s %-4s %3d  train_s=%8.2f  p@1=%.4f  p@5=%.4f  loss=%.4f  epoch_wall_s=%.2f  eval_s=%.2f\n",
                spec.name, mode_name(mode), rec->epoch, rec->train_seconds, rec->p1, rec->p5, rec->loss, wall,
                rec->eval_seconds);
    std::fflush(stdout);
  });
  s.stats = model.stats();
  s.parameter_mb = double(model.parameter_bytes()) / (1024.0 * 1024.0);
  if (st.ok() && mode == OutputMode::lsh) st = evaluate_lsh(model, test, &s);
  finish_run(st, &s);
  return r;
}

// Runs run_one in its own child process; the peak RSS is that child's (n/a when fork fails).
RunResult run_isolated(const Options& o, const DatasetSpec& spec, OutputMode mode) {
  double peak_rss_mb = kNaN;
  RunResult r = run_in_child("bench-xc", std::string(spec.name) + " " + mode_name(mode) + " in-process, peak RSS n/a",
                             [&] { return run_one(o, spec, mode); }, &peak_rss_mb);
  r.summary.peak_rss_mb = peak_rss_mb;
  return r;
}

//-----------------------------------------------------------------------------------------------
// Report
//-----------------------------------------------------------------------------------------------

double ratio(double a, double b) { return (std::isnan(a) || std::isnan(b) || b == 0) ? kNaN : a / b; }

struct ModeFigures {
  bool present = false;
  double seconds_per_epoch = kNaN, p1_final = kNaN, p1_best = kNaN, infer_ms_full = kNaN, infer_ms_lsh = kNaN;
};

ModeFigures figures_of(const RunResult& r) {
  ModeFigures f;
  const RunSummary& s = r.summary;
  if (!s.ok || r.epochs.empty()) return f;
  f.present = true;
  f.seconds_per_epoch = s.stats.seconds / double(r.epochs.size());
  f.p1_final = r.epochs.back().p1;
  f.p1_best = r.epochs.front().p1;
  for (const EpochRecord& e : r.epochs) f.p1_best = std::max(f.p1_best, e.p1);
  f.infer_ms_full = s.full_ms_per_example;
  f.infer_ms_lsh = s.lsh_ms_per_example;
  return f;
}

// Table, time split and ratio line for one dataset; returns {epoch ratio, final P@1 ratio}.
std::pair<double, double> report_dataset(const DatasetSpec& spec, const std::vector<std::string>& modes,
                                         const std::vector<RunResult>& results) {
  const RunResult* full = nullptr;
  const RunResult* lsh = nullptr;
  print_dataset_heading(spec, results);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"mode", "best_p@1(ep)", "final_p@1", "p@5", "train_s", "s/epoch", "active", "rehashes",
                  "rehash_s", "peak_rss_mb", "params_mb", "infer_p@1", "full_ms/ex", "lsh_ms/ex"});
  for (size_t i = 0; i < modes.size(); ++i) {
    const RunResult& r = results[i];
    const RunSummary& s = r.summary;
    if (modes[i] == "full") full = &r;
    else lsh = &r;
    if (!s.ok || r.epochs.empty()) {
      rows.push_back({modes[i], "failed"});
      continue;
    }
    ModeFigures f = figures_of(r);
    int best_epoch = 1;
    for (const EpochRecord& e : r.epochs)
      if (e.p1 == f.p1_best) {
        best_epoch = e.epoch;
        break;
      }
    const bool is_lsh = modes[i] == "lsh";
    const double active = is_lsh ? s.stats.active_mean() : double(s.labels);
    rows.push_back({modes[i], fmt("%.4f", f.p1_best) + "(" + std::to_string(best_epoch) + ")", fmt("%.4f", f.p1_final),
                    fmt("%.4f", r.epochs.back().p5), fmt("%.2f", s.stats.seconds), fmt("%.2f", f.seconds_per_epoch),
                    fmt("%.0f", active), std::to_string(s.stats.rehashes), fmt("%.2f", s.stats.rehash_seconds),
                    fmt("%.1f", s.peak_rss_mb), fmt("%.1f", s.parameter_mb), is_lsh ? fmt("%.4f", s.lsh_p1) : "-",
                    fmt("%.3f", s.full_ms_per_example), is_lsh ? fmt("%.3f", s.lsh_ms_per_example) : "-"});
  }
  print_table(rows);
  for (size_t i = 0; i < modes.size(); ++i)
    if (!results[i].summary.ok)
      std::printf("  %s failed: %s\n", modes[i].c_str(), results[i].summary.error);

  // Time split of training (for lsh, where the next bottleneck shows; full for reference).
  for (size_t i = 0; i < modes.size(); ++i) {
    const RunSummary& s = results[i].summary;
    if (!s.ok || results[i].epochs.empty()) continue;
    const TrainStats& t = s.stats;
    const double parts = t.hidden_seconds + t.hash_seconds + t.query_seconds + t.forward_backward_seconds +
                         t.update_seconds + t.rehash_seconds;
    auto pct = [&](double x) { return t.seconds > 0 ? 100.0 * x / t.seconds : 0.0; };
    std::printf("  split %s %s (train s, %% of %.2f s): hidden=%.2f (%.0f%%) hash=%.2f (%.0f%%) query=%.2f (%.0f%%) "
                "forward_backward=%.2f (%.0f%%) update=%.2f (%.0f%%) rehash=%.2f (%.0f%%) other=%.2f (%.0f%%)\n",
                spec.name, modes[i].c_str(), t.seconds, t.hidden_seconds, pct(t.hidden_seconds), t.hash_seconds,
                pct(t.hash_seconds), t.query_seconds, pct(t.query_seconds), t.forward_backward_seconds,
                pct(t.forward_backward_seconds), t.update_seconds, pct(t.update_seconds), t.rehash_seconds,
                pct(t.rehash_seconds), t.seconds - parts, pct(t.seconds - parts));
    if (modes[i] == "lsh")
      std::printf("  lsh inference %s: p@1=%.4f p@5=%.4f candidates/example=%.1f ms/example=%.3f (full %.3f)\n",
                  spec.name, s.lsh_p1, s.lsh_p5, s.lsh_candidates, s.lsh_ms_per_example, s.full_ms_per_example);
  }

  ModeFigures ff = full ? figures_of(*full) : ModeFigures();
  ModeFigures lf = lsh ? figures_of(*lsh) : ModeFigures();
  const double epoch_ratio = ratio(lf.seconds_per_epoch, ff.seconds_per_epoch);
  const double p1_ratio = ratio(lf.p1_final, ff.p1_final);
  std::printf("ratio %s lsh/full seconds_per_epoch=%.3f p@1_final=%.3f p@1_best=%.3f infer_speedup=%.2f\n", spec.name,
              epoch_ratio, p1_ratio, ratio(lf.p1_best, ff.p1_best), ratio(lf.infer_ms_full, lf.infer_ms_lsh));
  return {epoch_ratio, p1_ratio};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string err = parse_args(argc, argv, &o);
  if (!err.empty()) return usage_error("bench-xc", err, usage);
  // Run datasets and modes in a fixed order whatever order they were listed in.
  std::vector<std::string> modes;
  for (const char* m : {"full", "lsh"})
    if (std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end()) modes.push_back(m);

  const Config defaults;
  print_banner("xc", o, defaults);
  std::printf("config defaults: hidden=%u batch=%u lr=%g seed=%llu | lsh: hash=%s K=%u L=%u density=%g "
              "bucket_capacity=%u policy=%s min_active=%u max_active=%u rehash_every=%u rehash_decay=%g "
              "new_hash_every=%u\n",
              defaults.hidden, defaults.batch_size, double(defaults.learning_rate),
              (unsigned long long)defaults.seed, defaults.hash == mongoose::HashFamily::dwta ? "dwta" : "simhash",
              defaults.K, defaults.L, double(defaults.hash_density), defaults.bucket_capacity,
              defaults.bucket_policy == mongoose::BucketPolicy::fifo ? "fifo" : "reservoir", defaults.min_active,
              defaults.max_active, defaults.rehash_every, double(defaults.rehash_decay), defaults.new_hash_every);
  std::printf("(timings are wall clock and vary with machine load)\n");
  std::fflush(stdout);

  double cite_epoch = kNaN, cite_p1 = kNaN, deli_epoch = kNaN, deli_p1 = kNaN;
  bool any_failed = false;
  struct Report {
    const DatasetSpec* spec;
    std::vector<RunResult> results;
  };
  std::vector<Report> reports;
  for (const DatasetSpec& spec : kDatasets) {
    if (!dataset_wanted(o, spec)) continue;
    Report rep{&spec, {}};
    for (const std::string& m : modes) {
      RunResult r = run_isolated(o, spec, m == "lsh" ? OutputMode::lsh : OutputMode::full);
      if (report_failure(spec, m.c_str(), r)) any_failed = true;
      rep.results.push_back(std::move(r));
    }
    reports.push_back(std::move(rep));
  }

  for (const Report& rep : reports) {
    std::pair<double, double> q = report_dataset(*rep.spec, modes, rep.results);
    if (std::strcmp(rep.spec->key, "citeulike") == 0) {
      cite_epoch = q.first;
      cite_p1 = q.second;
    } else {
      deli_epoch = q.first;
      deli_p1 = q.second;
    }
  }
  std::printf("result citeulike_epoch_ratio=%.3f citeulike_p1_ratio=%.3f delicious_epoch_ratio=%.3f "
              "delicious_p1_ratio=%.3f\n",
              cite_epoch, cite_p1, deli_epoch, deli_p1);
  return any_failed ? 1 : 0;
}
