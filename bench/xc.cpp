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

#include "../mongoose.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using mongoose::Config;
using mongoose::Dataset;
using mongoose::InferMode;
using mongoose::Metrics;
using mongoose::Model;
using mongoose::OutputMode;
using mongoose::Status;
using mongoose::TrainStats;

const double kNaN = std::nan("");

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

//-----------------------------------------------------------------------------------------------
// Options
//-----------------------------------------------------------------------------------------------

struct DatasetSpec {
  const char* name;       // as on the command line and in the output
  const char* key;        // prefix in the result line
  const char* folder;
  const char* train_file;
  const char* test_file;
};

const DatasetSpec kDatasets[] = {
    {"citeulike-t", "citeulike", "citeulike-t", "citeulike-t_train.txt", "citeulike-t_test.txt"},
    {"delicious", "delicious", "delicious", "delicious_train.txt", "delicious_test.txt"},
};

struct Options {
  std::string data = "../shared/data";
  int epochs = 5;
  uint32_t threads = 2;
  std::vector<std::string> datasets{"citeulike-t", "delicious"};
  std::vector<std::string> modes{"full", "lsh"};
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: bench-xc [options]\n"
               "  --data DIR           folder with citeulike-t/ and delicious/ (../shared/data)\n"
               "  --epochs E           training epochs per run, >= 1 (5)\n"
               "  --threads T          worker threads, 0 = all cores (2)\n"
               "  --datasets LIST      comma-separated subset of citeulike-t,delicious (both)\n"
               "  --modes LIST         comma-separated subset of full,lsh (both)\n");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(start, comma - start);
    if (!item.empty() && std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

bool parse_int(const std::string& s, long lo, long hi, long* out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (errno || end == s.c_str() || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// Returns "" or an error message.
std::string parse_args(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) return "missing value after " + a;
    std::string v = argv[++i];
    long x = 0;
    if (a == "--data") {
      o->data = v;
    } else if (a == "--epochs") {
      if (!parse_int(v, 1, 1000000, &x)) return "bad value '" + v + "' for --epochs (expected 1..1000000)";
      o->epochs = int(x);
    } else if (a == "--threads") {
      if (!parse_int(v, 0, 1024, &x)) return "bad value '" + v + "' for --threads (expected 0..1024)";
      o->threads = uint32_t(x);
    } else if (a == "--datasets") {
      o->datasets = split_commas(v);
      if (o->datasets.empty()) return "--datasets needs at least one of citeulike-t,delicious";
      for (const std::string& d : o->datasets) {
        bool known = false;
        for (const DatasetSpec& spec : kDatasets) known = known || d == spec.name;
        if (!known) return "unknown dataset '" + d + "' (expected citeulike-t or delicious)";
      }
    } else if (a == "--modes") {
      o->modes = split_commas(v);
      if (o->modes.empty()) return "--modes needs at least one of full,lsh";
      for (const std::string& m : o->modes)
        if (m != "full" && m != "lsh") return "unknown mode '" + m + "' (expected full or lsh)";
    } else {
      return "unknown option " + a;
    }
  }
  return "";
}

//-----------------------------------------------------------------------------------------------
// One run: read the data, train, evaluate. Its numbers travel back to the parent through a pipe,
// so everything below is trivially copyable.
//-----------------------------------------------------------------------------------------------

struct EpochRecord {
  int epoch = 0;               // 1-based
  double train_seconds = 0;    // cumulative, Model::stats().seconds
  double wall_seconds = 0;     // wall time of the train_epoch call (cross-check)
  double loss = 0;             // mean loss of the epoch
  double p1 = 0, p3 = 0, p5 = 0;
  double eval_seconds = 0, eval_ms_per_example = 0;
};

struct RunSummary {
  bool ok = false;
  char error[512] = {0};
  int epochs = 0;              // epochs completed (and evaluated)
  size_t train_rows = 0, test_rows = 0, features = 0, labels = 0;
  double load_seconds = 0;
  TrainStats stats;            // at the end of training
  double parameter_mb = 0;
  double full_ms_per_example = kNaN;   // InferMode::full, after the last epoch
  double lsh_p1 = kNaN, lsh_p5 = kNaN, lsh_ms_per_example = kNaN, lsh_candidates = kNaN;
  double peak_rss_mb = kNaN;           // filled in by the parent (wait4)
};
static_assert(std::is_trivially_copyable<EpochRecord>::value, "sent through a pipe");
static_assert(std::is_trivially_copyable<RunSummary>::value, "sent through a pipe");

struct RunResult {
  RunSummary summary;
  std::vector<EpochRecord> epochs;
};

void set_error(RunSummary* s, const std::string& message) {
  std::snprintf(s->error, sizeof s->error, "%s", message.c_str());
  s->ok = false;
}

const char* mode_name(OutputMode m) { return m == OutputMode::lsh ? "lsh" : "full"; }

RunResult run_one(const Options& o, const DatasetSpec& spec, OutputMode mode) {
  RunResult r;
  RunSummary& s = r.summary;
  const std::string dir = o.data + "/" + spec.folder + "/";
  const double t0 = now_seconds();
  Dataset train, test;
  Status st = mongoose::read_xc(dir + spec.train_file, &train);
  if (st.ok()) st = mongoose::read_xc(dir + spec.test_file, &test);
  if (!st.ok()) {
    set_error(&s, st.message());
    return r;
  }
  s.load_seconds = now_seconds() - t0;
  s.train_rows = train.rows;
  s.test_rows = test.rows;
  s.features = train.features;
  s.labels = train.labels;
  if (test.features > train.features || test.labels > train.labels) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s declares %zu features and %zu labels, more than the training file (%zu, %zu)",
                  spec.test_file, test.features, test.labels, train.features, train.labels);
    set_error(&s, buf);
    return r;
  }

  Config cfg;  // library defaults; only the output layer and the thread count are set here
  cfg.output = mode;
  cfg.threads = o.threads;
  Model model;
  st = model.init(cfg, train.features, train.labels);
  if (!st.ok()) {
    set_error(&s, st.message());
    return r;
  }

  Metrics m;
  for (int e = 0; e < o.epochs; ++e) {
    const double w0 = now_seconds();
    st = model.train_epoch(train);
    const double wall = now_seconds() - w0;
    if (!st.ok()) break;
    st = model.evaluate(test, InferMode::full, &m);
    if (!st.ok()) break;
    const TrainStats& ts = model.stats();
    EpochRecord rec;
    rec.epoch = e + 1;
    rec.train_seconds = ts.seconds;
    rec.wall_seconds = wall;
    rec.loss = ts.mean_loss_last_epoch;
    rec.p1 = m.p_at_1;
    rec.p3 = m.p_at_3;
    rec.p5 = m.p_at_5;
    rec.eval_seconds = m.seconds;
    rec.eval_ms_per_example = m.ms_per_example;
    r.epochs.push_back(rec);
    s.epochs = rec.epoch;
    s.full_ms_per_example = m.ms_per_example;
    std::printf("epoch %-11s %-4s %3d  train_s=%8.2f  p@1=%.4f  p@5=%.4f  loss=%.4f  epoch_wall_s=%.2f  eval_s=%.2f\n",
                spec.name, mode_name(mode), rec.epoch, rec.train_seconds, rec.p1, rec.p5, rec.loss, wall,
                rec.eval_seconds);
    std::fflush(stdout);
  }
  s.stats = model.stats();
  s.parameter_mb = double(model.parameter_bytes()) / (1024.0 * 1024.0);
  if (st.ok() && mode == OutputMode::lsh) {
    Metrics lm;
    st = model.evaluate(test, InferMode::lsh, &lm);
    if (st.ok()) {
      s.lsh_p1 = lm.p_at_1;
      s.lsh_p5 = lm.p_at_5;
      s.lsh_ms_per_example = lm.ms_per_example;
      s.lsh_candidates = lm.mean_candidates;
    }
  }
  if (!st.ok()) {
    set_error(&s, st.message());
    return r;
  }
  s.ok = true;
  return r;
}

//-----------------------------------------------------------------------------------------------
// Fork, pipe, wait4
//-----------------------------------------------------------------------------------------------

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

// Reads exactly n bytes; false on EOF or error before that.
bool read_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t got = ::read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= size_t(got);
  }
  return true;
}

RunResult run_isolated(const Options& o, const DatasetSpec& spec, OutputMode mode) {
  int fds[2];
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = -1;
  if (::pipe(fds) == 0) {
    pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
    }
  }
  if (pid < 0) {  // no pipe or no fork: run here; the peak RSS would not be this run's
    std::fprintf(stderr, "bench-xc: fork failed (%s); running %s %s in-process, peak RSS n/a\n",
                 std::strerror(errno), spec.name, mode_name(mode));
    RunResult r = run_one(o, spec, mode);
    r.summary.peak_rss_mb = kNaN;
    return r;
  }
  if (pid == 0) {  // child
    ::close(fds[0]);
    RunResult r = run_one(o, spec, mode);
    const uint64_t n = r.epochs.size();
    bool ok = write_all(fds[1], &r.summary, sizeof r.summary) && write_all(fds[1], &n, sizeof n) &&
              (n == 0 || write_all(fds[1], r.epochs.data(), n * sizeof(EpochRecord)));
    std::fflush(stdout);
    std::fflush(stderr);
    ::close(fds[1]);
    ::_exit(ok ? 0 : 1);
  }
  // parent
  ::close(fds[1]);
  RunResult r;
  uint64_t n = 0;
  bool got = read_all(fds[0], &r.summary, sizeof r.summary) && read_all(fds[0], &n, sizeof n) && n < (1u << 24);
  if (got) {
    r.epochs.resize(size_t(n));
    got = n == 0 || read_all(fds[0], r.epochs.data(), size_t(n) * sizeof(EpochRecord));
  }
  ::close(fds[0]);
  int status = 0;
  struct rusage ru;
  std::memset(&ru, 0, sizeof ru);
  pid_t w;
  do {
    w = ::wait4(pid, &status, 0, &ru);
  } while (w < 0 && errno == EINTR);
  if (!got) {
    r = RunResult();
    std::string why = "child process returned no result";
    if (w == pid && WIFSIGNALED(status)) why += " (killed by signal " + std::to_string(WTERMSIG(status)) + ")";
    else if (w == pid && WIFEXITED(status)) why += " (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    set_error(&r.summary, why);
  }
  if (w == pid) r.summary.peak_rss_mb = double(ru.ru_maxrss) / 1024.0;  // Linux: KiB
  return r;
}

//-----------------------------------------------------------------------------------------------
// Report
//-----------------------------------------------------------------------------------------------

std::string fmt(const char* format, double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

double ratio(double a, double b) { return (std::isnan(a) || std::isnan(b) || b == 0) ? kNaN : a / b; }

// Prints rows of cells with each column as wide as its widest cell (first column left-aligned).
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], row[c].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c) line += "  ";
      const std::string& cell = row[c];
      const std::string pad(width[c] - cell.size(), ' ');
      line += c == 0 ? cell + pad : pad + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("  %s\n", line.c_str());
  }
}

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
  std::printf("\n== %s", spec.name);
  for (const RunResult& r : results)
    if (r.summary.ok) {
      std::printf(": train %zu rows, test %zu rows, %zu features, %zu labels (load %.2f s)", r.summary.train_rows,
                  r.summary.test_rows, r.summary.features, r.summary.labels, r.summary.load_seconds);
      break;
    }
  std::printf("\n");
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

bool file_exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string err = parse_args(argc, argv, &o);
  if (!err.empty()) {
    std::fprintf(stderr, "bench-xc: %s\n", err.c_str());
    usage(stderr);
    return 2;
  }
  // Run datasets and modes in a fixed order whatever order they were listed in.
  std::vector<std::string> modes;
  for (const char* m : {"full", "lsh"})
    if (std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end()) modes.push_back(m);

  const Config defaults;
  std::printf("mongoose %d.%d xc benchmark: epochs=%d threads=%u simd=%s data=%s\n", MONGOOSE_VERSION_MAJOR,
              MONGOOSE_VERSION_MINOR, o.epochs, o.threads, mongoose::kernels(defaults.simd).name, o.data.c_str());
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
    if (std::find(o.datasets.begin(), o.datasets.end(), spec.name) == o.datasets.end()) continue;
    const std::string dir = o.data + "/" + spec.folder + "/";
    std::string missing;
    for (const char* f : {spec.train_file, spec.test_file})
      if (!file_exists(dir + f)) missing += (missing.empty() ? "" : ", ") + dir + f;
    if (!missing.empty()) {
      std::printf("skipped: %s: %s not found\n", spec.name, missing.c_str());
      std::fflush(stdout);
      continue;
    }
    Report rep{&spec, {}};
    for (const std::string& m : modes) {
      RunResult r = run_isolated(o, spec, m == "lsh" ? OutputMode::lsh : OutputMode::full);
      if (!r.summary.ok) {
        any_failed = true;
        std::printf("failed: %s %s: %s\n", spec.name, m.c_str(), r.summary.error);
        std::fflush(stdout);
      }
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
