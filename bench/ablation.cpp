// bench/ablation.cpp - what each part of MONGOOSE buys: full softmax, SLIDE-style LSH with a fixed
// rebuild period, the change-detecting and incremental schedulers, learned hash functions, and the
// whole MONGOOSE recipe, trained side by side on real extreme-classification data.
//
// Build:  c++ -O2 -std=c++17 -pthread bench/ablation.cpp mongoose.cpp -o bench-ablation
// Run:    ./bench-ablation [--data DIR] [--epochs 5] [--threads 2]
//                          [--datasets citeulike-t,delicious]
//                          [--variants full,lsh-fixed,lsh-detect,lsh-incremental,lsh-learned,mongoose]
//         (DIR defaults to ../shared/data, relative to the current directory; it should hold
//          citeulike-t/citeulike-t_{train,test}.txt and delicious/delicious_{train,test}.txt.
//          A missing dataset is reported as "skipped: ... not found" and the run goes on.)
//
// The variants. Every field not listed comes from mongoose::Config defaults (hidden units, batch
// size, learning rate, seed, K, L, bucket capacity, active-set sizes, rehash period, check period,
// detector bits, tau, hash-learning steps, ...), so tuning the defaults in mongoose.h is what this
// benchmark sees. All variants of a run get the same epochs and threads.
//   full             output=full
//   lsh-fixed        output=lsh, scheduler=fixed                  (SLIDE: rebuild every rehash_every)
//   lsh-detect       output=lsh, scheduler=detect                 (rebuild when detector bits flip)
//   lsh-incremental  output=lsh, scheduler=incremental            (re-insert only moved neurons)
//   lsh-learned      output=lsh, scheduler=fixed, learn_hash=true (learn at every rebuild)
//   mongoose         output=lsh, scheduler=detect, learn_hash=true, learn_every=0 (as mongoose-train --output mongoose)
//
// What it measures. After every epoch each model is evaluated on the whole test set with
// InferMode::full (P@1, P@5); evaluation is not training time (train seconds come from
// Model::stats().seconds). At the end of training, per variant: best and final P@1, P@5, train
// seconds, full rebuilds (TrainStats::rehashes), the seconds spent keeping the index current
// (rehash + detect + reinsert) and their share of training, neurons re-inserted one by one, checks,
// hash-learning rounds and seconds, the mean active-set size, the tables' top-5 retrieval recall
// (Model::retrieval_recall over up to 1000 test rows spread over the file) with the mean number of
// neurons retrieved, and for lsh variants P@1 with InferMode::lsh. Learned variants also report the
// mean top-5 recall on the mined queries before/after a learning round and the last round's loss
// before/after.
//
// Each (dataset, variant) run happens in its own forked child process, which reads the data,
// trains, evaluates and pipes its numbers back (if fork fails it runs in-process).
//
// Output (stdout): one line per epoch as it goes, then per dataset a P@1-per-epoch table, the
// ablation table, the learned-hash lines, and one line per variant against lsh-fixed:
//   ratio <dataset> <variant>/lsh-fixed p@1=+X.XXXX time=X rebuilds=X recall=X
// (final P@1 difference, train seconds ratio, rebuilds ratio, retrieval recall ratio). The last
// line is machine-readable:
//   result citeulike_mongoose_p1_gain=X citeulike_rebuild_reduction=X citeulike_schedule_share=X
//          citeulike_recall_gain_learned=X
// (mongoose final P@1 minus lsh-fixed final P@1; lsh-fixed rebuilds / mongoose rebuilds, inf when
// mongoose never rebuilt; mongoose (rehash + detect + reinsert + learn seconds) / train seconds;
// lsh-learned recall / lsh-fixed recall), nan when a needed run was skipped or failed.
//
// All timings are wall clock and vary with machine load (other processes, frequency scaling,
// memory bandwidth shared with other jobs): compare runs made on an idle machine, or the ratios
// of variants measured in the same run. Accuracy figures are deterministic for a given seed and
// thread count only up to floating-point summation order.
//
// Exit status: 0 when every requested run that had its data succeeded (missing datasets are
// skipped, not errors), 1 when a run failed, 2 on a usage error.

#include "../mongoose.h"

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
#include <limits>
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
using mongoose::Scheduler;
using mongoose::Status;
using mongoose::TrainStats;

const double kNaN = std::nan("");
const double kInf = std::numeric_limits<double>::infinity();

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

//-----------------------------------------------------------------------------------------------
// Datasets, variants, options
//-----------------------------------------------------------------------------------------------

struct DatasetSpec {
  const char* name;  // as on the command line and in the output
  const char* key;   // prefix in the result line
  const char* folder;
  const char* train_file;
  const char* test_file;
};

const DatasetSpec kDatasets[] = {
    {"citeulike-t", "citeulike", "citeulike-t", "citeulike-t_train.txt", "citeulike-t_test.txt"},
    {"delicious", "delicious", "delicious", "delicious_train.txt", "delicious_test.txt"},
};

struct VariantSpec {
  const char* name;
  OutputMode output;
  Scheduler scheduler;
  bool learn_hash;
  uint32_t learn_every;  // used only when learn_hash
};

const VariantSpec kVariants[] = {
    {"full", OutputMode::full, Scheduler::fixed, false, 0},
    {"lsh-fixed", OutputMode::lsh, Scheduler::fixed, false, 0},
    {"lsh-detect", OutputMode::lsh, Scheduler::detect, false, 0},
    {"lsh-incremental", OutputMode::lsh, Scheduler::incremental, false, 0},
    {"lsh-learned", OutputMode::lsh, Scheduler::fixed, true, 0},
    {"mongoose", OutputMode::lsh, Scheduler::detect, true, 0},
};
const size_t kNumVariants = sizeof kVariants / sizeof kVariants[0];

struct Options {
  std::string data = "../shared/data";
  int epochs = 5;
  uint32_t threads = 2;
  std::vector<std::string> datasets{"citeulike-t", "delicious"};
  std::vector<std::string> variants;  // empty = all
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: bench-ablation [options]\n"
               "  --data DIR           folder with citeulike-t/ and delicious/ (../shared/data)\n"
               "  --epochs E           training epochs per run, >= 1 (5)\n"
               "  --threads T          worker threads, 0 = all cores (2)\n"
               "  --datasets LIST      comma-separated subset of citeulike-t,delicious (both)\n"
               "  --variants LIST      comma-separated subset of full,lsh-fixed,lsh-detect,\n"
               "                       lsh-incremental,lsh-learned,mongoose (all)\n");
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
    } else if (a == "--variants") {
      o->variants = split_commas(v);
      if (o->variants.empty()) return "--variants needs at least one variant";
      for (const std::string& name : o->variants) {
        bool known = false;
        for (const VariantSpec& spec : kVariants) known = known || name == spec.name;
        if (!known)
          return "unknown variant '" + name +
                 "' (expected full, lsh-fixed, lsh-detect, lsh-incremental, lsh-learned or mongoose)";
      }
    } else {
      return "unknown option " + a;
    }
  }
  return "";
}

Config config_of(const VariantSpec& v, uint32_t threads) {
  Config cfg;  // library defaults; only the fields that define the variant are set here
  cfg.output = v.output;
  cfg.threads = threads;
  if (v.output == OutputMode::lsh) {
    cfg.scheduler = v.scheduler;
    cfg.learn_hash = v.learn_hash;
    if (v.learn_hash) cfg.learn_every = v.learn_every;
  }
  return cfg;
}

const char* scheduler_name(Scheduler s) {
  switch (s) {
    case Scheduler::fixed: return "fixed";
    case Scheduler::detect: return "detect";
    case Scheduler::incremental: return "incremental";
  }
  return "?";
}

//-----------------------------------------------------------------------------------------------
// One run: read the data, train, evaluate. Its numbers travel back to the parent through a pipe,
// so everything below is trivially copyable.
//-----------------------------------------------------------------------------------------------

struct EpochRecord {
  int epoch = 0;             // 1-based
  double train_seconds = 0;  // cumulative, Model::stats().seconds
  double loss = 0;           // mean loss of the epoch
  double p1 = 0, p5 = 0;
  uint64_t rehashes = 0;     // cumulative full rebuilds
};

struct RunSummary {
  bool ok = false;
  char error[512] = {0};
  int epochs = 0;  // epochs completed (and evaluated)
  size_t train_rows = 0, test_rows = 0, features = 0, labels = 0;
  double load_seconds = 0;
  bool all_active = false;  // lsh with min_active >= labels: exact softmax, tables never updated
  uint32_t min_active = 0;
  TrainStats stats;  // at the end of training
  double recall = kNaN, mean_retrieved = kNaN;  // Model::retrieval_recall, k = 5
  size_t recall_rows = 0;
  double lsh_p1 = kNaN, lsh_p5 = kNaN, lsh_candidates = kNaN, lsh_ms_per_example = kNaN;
  double full_ms_per_example = kNaN;
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

const size_t kRecallRows = 1000;
const size_t kRecallK = 5;

RunResult run_one(const Options& o, const DatasetSpec& spec, const VariantSpec& variant) {
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

  const Config cfg = config_of(variant, o.threads);
  const bool is_lsh = variant.output == OutputMode::lsh;
  s.min_active = cfg.min_active;
  s.all_active = is_lsh && size_t(cfg.min_active) >= train.labels;
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
    rec.loss = ts.mean_loss_last_epoch;
    rec.p1 = m.p_at_1;
    rec.p5 = m.p_at_5;
    rec.rehashes = ts.rehashes;
    r.epochs.push_back(rec);
    s.epochs = rec.epoch;
    s.full_ms_per_example = m.ms_per_example;
    std::printf("epoch %-11s %-15s %3d  train_s=%8.2f  p@1=%.4f  p@5=%.4f  loss=%.4f  rebuilds=%llu  "
                "epoch_wall_s=%.2f  eval_s=%.2f\n",
                spec.name, variant.name, rec.epoch, rec.train_seconds, rec.p1, rec.p5, rec.loss,
                (unsigned long long)rec.rehashes, wall, m.seconds);
    std::fflush(stdout);
  }
  s.stats = model.stats();
  if (st.ok() && is_lsh) {
    s.recall_rows = std::min(kRecallRows, test.rows);
    st = model.retrieval_recall(test, kRecallRows, kRecallK, &s.recall, &s.mean_retrieved);
    if (st.ok()) {
      Metrics lm;
      st = model.evaluate(test, InferMode::lsh, &lm);
      if (st.ok()) {
        s.lsh_p1 = lm.p_at_1;
        s.lsh_p5 = lm.p_at_5;
        s.lsh_candidates = lm.mean_candidates;
        s.lsh_ms_per_example = lm.ms_per_example;
      }
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
// Fork, pipe, wait
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

RunResult run_isolated(const Options& o, const DatasetSpec& spec, const VariantSpec& variant) {
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
  if (pid < 0) {  // no pipe or no fork: run here
    std::fprintf(stderr, "bench-ablation: fork failed (%s); running %s %s in-process\n", std::strerror(errno),
                 spec.name, variant.name);
    return run_one(o, spec, variant);
  }
  if (pid == 0) {  // child
    ::close(fds[0]);
    RunResult r = run_one(o, spec, variant);
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
  pid_t w;
  do {
    w = ::waitpid(pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  if (!got) {
    r = RunResult();
    std::string why = "child process returned no result";
    if (w == pid && WIFSIGNALED(status)) why += " (killed by signal " + std::to_string(WTERMSIG(status)) + ")";
    else if (w == pid && WIFEXITED(status)) why += " (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    set_error(&r.summary, why);
  }
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

std::string fmt_u(uint64_t v) { return std::to_string((unsigned long long)v); }

double ratio(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return kNaN;
  if (b == 0) return a == 0 ? kNaN : kInf;
  return a / b;
}

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

// The figures the ratio and result lines are made of; nan when the run is missing or failed.
struct Figures {
  bool present = false, lsh = false;
  double p1_final = kNaN, p1_best = kNaN, p5_final = kNaN;
  int best_epoch = 0;
  double train_seconds = kNaN;
  double rebuilds = kNaN;        // lsh only
  double schedule_seconds = kNaN;  // rehash + detect + reinsert (lsh only)
  double learn_seconds = kNaN;     // lsh only
  double recall = kNaN;            // lsh only
};

Figures figures_of(const VariantSpec& v, const RunResult* r) {
  Figures f;
  if (!r || !r->summary.ok || r->epochs.empty()) return f;
  const RunSummary& s = r->summary;
  const TrainStats& t = s.stats;
  f.present = true;
  f.lsh = v.output == OutputMode::lsh;
  f.p1_final = r->epochs.back().p1;
  f.p5_final = r->epochs.back().p5;
  f.p1_best = r->epochs.front().p1;
  f.best_epoch = r->epochs.front().epoch;
  for (const EpochRecord& e : r->epochs)
    if (e.p1 > f.p1_best) {
      f.p1_best = e.p1;
      f.best_epoch = e.epoch;
    }
  f.train_seconds = t.seconds;
  if (f.lsh) {
    f.rebuilds = double(t.rehashes);
    f.schedule_seconds = t.rehash_seconds + t.detect_seconds + t.reinsert_seconds;
    f.learn_seconds = t.learn_seconds;
    f.recall = s.recall;
  }
  return f;
}

struct DatasetReport {
  const DatasetSpec* spec = nullptr;
  std::vector<const VariantSpec*> variants;
  std::vector<RunResult> results;
  const RunResult* find(const char* name) const {
    for (size_t i = 0; i < variants.size(); ++i)
      if (std::strcmp(variants[i]->name, name) == 0) return &results[i];
    return nullptr;
  }
};

void report_dataset(const DatasetReport& rep) {
  const DatasetSpec& spec = *rep.spec;
  std::printf("\n== %s", spec.name);
  for (const RunResult& r : rep.results)
    if (r.summary.ok) {
      std::printf(": train %zu rows, test %zu rows, %zu features, %zu labels (load %.2f s)", r.summary.train_rows,
                  r.summary.test_rows, r.summary.features, r.summary.labels, r.summary.load_seconds);
      break;
    }
  std::printf("\n");

  // P@1 (InferMode::full) after each epoch.
  size_t max_epochs = 0;
  for (const RunResult& r : rep.results) max_epochs = std::max(max_epochs, r.epochs.size());
  {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> head{"p@1 by epoch"};
    for (size_t e = 0; e < max_epochs; ++e) head.push_back("ep" + std::to_string(e + 1));
    head.push_back("train_s");
    rows.push_back(head);
    for (size_t i = 0; i < rep.variants.size(); ++i) {
      const RunResult& r = rep.results[i];
      std::vector<std::string> row{rep.variants[i]->name};
      for (size_t e = 0; e < max_epochs; ++e) row.push_back(e < r.epochs.size() ? fmt("%.4f", r.epochs[e].p1) : "-");
      row.push_back(r.epochs.empty() ? "-" : fmt("%.2f", r.epochs.back().train_seconds));
      rows.push_back(row);
    }
    print_table(rows);
  }
  std::printf("\n");

  // The ablation table.
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"variant", "best_p@1(ep)", "final_p@1", "p@5", "train_s", "rebuilds", "sched_s", "sched_%",
                  "reinserted", "checks", "learn_rounds", "learn_s", "active", "recall@5", "retrieved",
                  "lsh_p@1"});
  bool any_all_active = false;
  for (size_t i = 0; i < rep.variants.size(); ++i) {
    const VariantSpec& v = *rep.variants[i];
    const RunResult& r = rep.results[i];
    const RunSummary& s = r.summary;
    if (!s.ok || r.epochs.empty()) {
      rows.push_back({v.name, "failed"});
      continue;
    }
    const Figures f = figures_of(v, &r);
    const TrainStats& t = s.stats;
    any_all_active = any_all_active || s.all_active;
    if (!f.lsh) {
      rows.push_back({v.name, fmt("%.4f", f.p1_best) + "(" + std::to_string(f.best_epoch) + ")",
                      fmt("%.4f", f.p1_final), fmt("%.4f", f.p5_final), fmt("%.2f", f.train_seconds), "-", "-", "-",
                      "-", "-", "-", "-", fmt("%.0f", double(s.labels)), "-", "-", "-"});
      continue;
    }
    const double share = t.seconds > 0 ? 100.0 * f.schedule_seconds / t.seconds : kNaN;
    rows.push_back({v.name, fmt("%.4f", f.p1_best) + "(" + std::to_string(f.best_epoch) + ")",
                    fmt("%.4f", f.p1_final), fmt("%.4f", f.p5_final), fmt("%.2f", f.train_seconds),
                    fmt_u(t.rehashes), fmt("%.2f", f.schedule_seconds), fmt("%.1f", share), fmt_u(t.reinserted),
                    fmt_u(t.checks), fmt_u(t.learn_rounds), fmt("%.2f", t.learn_seconds),
                    fmt("%.0f", t.active_mean()), fmt("%.4f", s.recall), fmt("%.0f", s.mean_retrieved),
                    fmt("%.4f", s.lsh_p1)});
  }
  print_table(rows);
  for (size_t i = 0; i < rep.variants.size(); ++i)
    if (!rep.results[i].summary.ok)
      std::printf("  %s failed: %s\n", rep.variants[i]->name, rep.results[i].summary.error);
  std::printf("  (sched_s = rebuild + detect + reinsert seconds, sched_%% of train_s; active = mean active-set "
              "size, all labels for full; recall@5 / retrieved = Model::retrieval_recall over up to %zu test "
              "rows; lsh_p@1 = evaluate with InferMode::lsh)\n",
              kRecallRows);
  if (any_all_active)
    for (size_t i = 0; i < rep.variants.size(); ++i) {
      const RunSummary& s = rep.results[i].summary;
      if (s.ok && s.all_active) {
        std::printf("  note: %zu labels <= min_active %u: every neuron is always active (exact softmax); the "
                    "tables are built once at init and never updated, so the lsh variants do not differ in "
                    "training and recall@5 / lsh_p@1 measure the initial random tables\n",
                    s.labels, s.min_active);
        break;
      }
    }

  // Detail lines: scheduler time split and hash learning.
  for (size_t i = 0; i < rep.variants.size(); ++i) {
    const VariantSpec& v = *rep.variants[i];
    const RunSummary& s = rep.results[i].summary;
    if (!s.ok || rep.results[i].epochs.empty() || v.output != OutputMode::lsh) continue;
    const TrainStats& t = s.stats;
    std::printf("  sched %s %s: rebuild_s=%.2f detect_s=%.2f reinsert_s=%.2f checks=%llu last_flip_fraction=%.4f "
                "lsh_candidates=%.0f lsh_ms/ex=%.3f full_ms/ex=%.3f\n",
                spec.name, v.name, t.rehash_seconds, t.detect_seconds, t.reinsert_seconds,
                (unsigned long long)t.checks, t.last_flip_fraction, s.lsh_candidates, s.lsh_ms_per_example,
                s.full_ms_per_example);
    if (!v.learn_hash) continue;
    const double rounds = double(t.learn_rounds);
    const double mean_rebuild = t.rehashes ? t.rehash_seconds / double(t.rehashes) : kNaN;
    std::printf("  learn %s %s: rounds=%llu pairs=%llu recall_before=%.4f recall_after=%.4f (mean over rounds, "
                "top-5 on mined queries) loss_before=%.4f loss_after=%.4f (last round) learn_s=%.2f "
                "(includes ~%.2f s of rebuilds also counted in rebuild_s)\n",
                spec.name, v.name, (unsigned long long)t.learn_rounds, (unsigned long long)t.pairs_mined,
                rounds > 0 ? t.recall_before_sum / rounds : kNaN, rounds > 0 ? t.recall_after_sum / rounds : kNaN,
                t.learn_loss_before, t.learn_loss_after, t.learn_seconds,
                std::isnan(mean_rebuild) ? 0.0 : mean_rebuild * rounds);
  }

  // Ratios against lsh-fixed.
  const VariantSpec* fixed_spec = nullptr;
  for (const VariantSpec& v : kVariants)
    if (std::strcmp(v.name, "lsh-fixed") == 0) fixed_spec = &v;
  const Figures base = figures_of(*fixed_spec, rep.find("lsh-fixed"));
  for (size_t i = 0; i < rep.variants.size(); ++i) {
    const VariantSpec& v = *rep.variants[i];
    if (std::strcmp(v.name, "lsh-fixed") == 0) continue;
    const Figures f = figures_of(v, &rep.results[i]);
    std::printf("ratio %s %s/lsh-fixed p@1=%+.4f time=%.3f rebuilds=%.3f recall=%.3f\n", spec.name, v.name,
                f.p1_final - base.p1_final, ratio(f.train_seconds, base.train_seconds), ratio(f.rebuilds, base.rebuilds),
                ratio(f.recall, base.recall));
  }
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
    std::fprintf(stderr, "bench-ablation: %s\n", err.c_str());
    usage(stderr);
    return 2;
  }
  // Run datasets and variants in a fixed order whatever order they were listed in.
  std::vector<const VariantSpec*> variants;
  for (const VariantSpec& v : kVariants)
    if (o.variants.empty() || std::find(o.variants.begin(), o.variants.end(), v.name) != o.variants.end())
      variants.push_back(&v);

  const Config d;
  std::printf("mongoose %d.%d ablation benchmark: epochs=%d threads=%u simd=%s data=%s\n", MONGOOSE_VERSION_MAJOR,
              MONGOOSE_VERSION_MINOR, o.epochs, o.threads, mongoose::kernels(d.simd).name, o.data.c_str());
  std::printf("config defaults: hidden=%u batch=%u lr=%g seed=%llu | lsh: hash=%s K=%u L=%u density=%g "
              "bucket_capacity=%u min_active=%u max_active=%u rehash_every=%u rehash_decay=%g | scheduler: "
              "check_every=%u detector_bits=%u tau=%g full_rebuild_fraction=%g drift_epsilon=%g | learning: "
              "learn_queries=%u hash_steps=%u hash_lr=%g binarize=%d\n",
              d.hidden, d.batch_size, double(d.learning_rate), (unsigned long long)d.seed,
              d.hash == mongoose::HashFamily::dwta ? "dwta" : "simhash", d.K, d.L, double(d.hash_density),
              d.bucket_capacity, d.min_active, d.max_active, d.rehash_every, double(d.rehash_decay), d.check_every,
              d.detector_bits, double(d.tau), double(d.full_rebuild_fraction), double(d.drift_epsilon),
              d.learn_queries, d.hash_steps, double(d.hash_lr), int(d.hash_binarize));
  std::printf("variants:");
  for (const VariantSpec* v : variants) {
    const Config c = config_of(*v, o.threads);
    if (c.output == OutputMode::full)
      std::printf(" %s(output=full)", v->name);
    else
      std::printf(" %s(lsh scheduler=%s learn_hash=%d learn_every=%u)", v->name, scheduler_name(c.scheduler),
                  int(c.learn_hash), c.learn_every);
  }
  std::printf("\n(timings are wall clock and vary with machine load)\n");
  std::fflush(stdout);

  bool any_failed = false;
  std::vector<DatasetReport> reports;
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
    DatasetReport rep;
    rep.spec = &spec;
    for (const VariantSpec* v : variants) {
      RunResult r = run_isolated(o, spec, *v);
      if (!r.summary.ok) {
        any_failed = true;
        std::printf("failed: %s %s: %s\n", spec.name, v->name, r.summary.error);
        std::fflush(stdout);
      }
      rep.variants.push_back(v);
      rep.results.push_back(std::move(r));
    }
    reports.push_back(std::move(rep));
  }

  double p1_gain = kNaN, rebuild_reduction = kNaN, schedule_share = kNaN, recall_gain = kNaN;
  for (const DatasetReport& rep : reports) {
    report_dataset(rep);
    if (std::strcmp(rep.spec->key, "citeulike") != 0) continue;
    const Figures fixed = figures_of(kVariants[1], rep.find("lsh-fixed"));
    const Figures learned = figures_of(kVariants[4], rep.find("lsh-learned"));
    const Figures mongo = figures_of(kVariants[5], rep.find("mongoose"));
    p1_gain = mongo.p1_final - fixed.p1_final;
    rebuild_reduction = ratio(fixed.rebuilds, mongo.rebuilds);
    if (fixed.present && mongo.present && mongo.rebuilds == 0) rebuild_reduction = kInf;  // never rebuilt
    if (mongo.present && mongo.train_seconds > 0)
      schedule_share = (mongo.schedule_seconds + mongo.learn_seconds) / mongo.train_seconds;
    recall_gain = ratio(learned.recall, fixed.recall);
  }
  std::printf("result citeulike_mongoose_p1_gain=%.4f citeulike_rebuild_reduction=%.3f citeulike_schedule_share=%.4f "
              "citeulike_recall_gain_learned=%.3f\n",
              p1_gain, rebuild_reduction, schedule_share, recall_gain);
  return any_failed ? 1 : 0;
}
