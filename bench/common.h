// bench/common.h - what bench/xc.cpp and bench/ablation.cpp share: the datasets and the options
// both take (--data, --epochs, --threads, --datasets, --help), the skip rule for missing data, one
// run's loading, epoch loop and summary, running it in a forked child that pipes its numbers back
// (fork, pipe, wait4), and the report helpers (banner, dataset heading, aligned tables).
// Header-only (everything in an anonymous namespace); each benchmark is still built alone with
// `c++ -O2 -std=c++17 -pthread bench/X.cpp mongoose.cpp`.
#pragma once

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
#include <cstdint>
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
// Datasets and options
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

// The options every benchmark takes; a benchmark derives its Options from this.
struct BenchOptions {
  std::string data = "../shared/data";
  int epochs = 5;
  uint32_t threads = 2;
  std::vector<std::string> datasets{"citeulike-t", "delicious"};
};

// The usage lines of BenchOptions; the benchmark prints its own options after them.
void print_common_usage(FILE* out, const char* program) {
  std::fprintf(out,
               "usage: %s [options]\n"
               "  --data DIR           folder with citeulike-t/ and delicious/ (../shared/data)\n"
               "  --epochs E           training epochs per run, >= 1 (5)\n"
               "  --threads T          worker threads, 0 = all cores (2)\n"
               "  --datasets LIST      comma-separated subset of citeulike-t,delicious (both)\n",
               program);
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

// An option whose value is a comma-separated list of known names (repeats dropped).
struct ListOption {
  const char* flag;                 // e.g. "--modes"
  std::vector<std::string>* value;  // set from the option's value
  std::vector<std::string> known;
  const char* empty_error;          // the error when the list is empty
  const char* noun;                 // an unknown name is "unknown <noun> 'name' (expected <expected>)"
  const char* expected;
};

// Sets *opt.value from v; returns "" or an error message.
std::string parse_list(const ListOption& opt, const std::string& v) {
  *opt.value = split_commas(v);
  if (opt.value->empty()) return opt.empty_error;
  for (const std::string& name : *opt.value)
    if (std::find(opt.known.begin(), opt.known.end(), name) == opt.known.end())
      return std::string("unknown ") + opt.noun + " '" + name + "' (expected " + opt.expected + ")";
  return "";
}

// Parses "--name value" pairs into *o (the options of BenchOptions) and the benchmark's own list
// option `extra`; --help or -h prints usage(stdout) and exits with 0. Returns "" or an error message.
std::string parse_bench_args(int argc, char** argv, BenchOptions* o, void (*usage)(FILE*), const ListOption& extra) {
  std::vector<std::string> dataset_names;
  for (const DatasetSpec& spec : kDatasets) dataset_names.push_back(spec.name);
  const ListOption datasets{"--datasets", &o->datasets, dataset_names,
                            "--datasets needs at least one of citeulike-t,delicious", "dataset",
                            "citeulike-t or delicious"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) return "missing value after " + a;
    std::string v = argv[++i];
    long x = 0;
    std::string error;
    if (a == "--data") {
      o->data = v;
    } else if (a == "--epochs") {
      if (!parse_int(v, 1, 1000000, &x)) return "bad value '" + v + "' for --epochs (expected 1..1000000)";
      o->epochs = int(x);
    } else if (a == "--threads") {
      if (!parse_int(v, 0, 1024, &x)) return "bad value '" + v + "' for --threads (expected 0..1024)";
      o->threads = uint32_t(x);
    } else if (a == datasets.flag) {
      error = parse_list(datasets, v);
    } else if (a == extra.flag) {
      error = parse_list(extra, v);
    } else {
      return "unknown option " + a;
    }
    if (!error.empty()) return error;
  }
  return "";
}

// Prints "<program>: <error>" and the usage to stderr; returns the exit status of a usage error (2).
int usage_error(const char* program, const std::string& error, void (*usage)(FILE*)) {
  std::fprintf(stderr, "%s: %s\n", program, error.c_str());
  usage(stderr);
  return 2;
}

// The first line of the output: "mongoose <version> <name> benchmark: epochs=... data=...".
void print_banner(const char* name, const BenchOptions& o, const Config& defaults) {
  std::printf("mongoose %d.%d %s benchmark: epochs=%d threads=%u simd=%s data=%s\n", MONGOOSE_VERSION_MAJOR,
              MONGOOSE_VERSION_MINOR, name, o.epochs, o.threads, mongoose::kernels(defaults.simd).name,
              o.data.c_str());
}

std::string dataset_dir(const BenchOptions& o, const DatasetSpec& spec) { return o.data + "/" + spec.folder + "/"; }

bool file_exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode);
}

// True when spec was asked for and both its files exist; prints "skipped: ..." when a file is missing.
bool dataset_wanted(const BenchOptions& o, const DatasetSpec& spec) {
  if (std::find(o.datasets.begin(), o.datasets.end(), spec.name) == o.datasets.end()) return false;
  const std::string dir = dataset_dir(o, spec);
  std::string missing;
  for (const char* f : {spec.train_file, spec.test_file})
    if (!file_exists(dir + f)) missing += (missing.empty() ? "" : ", ") + dir + f;
  if (!missing.empty()) {
    std::printf("skipped: %s: %s not found\n", spec.name, missing.c_str());
    std::fflush(stdout);
    return false;
  }
  return true;
}

//-----------------------------------------------------------------------------------------------
// One run: read the data, train, evaluate. Its numbers travel back to the parent through a pipe,
// so a run's summary and epoch records are trivially copyable (RunResultOf checks it). A
// benchmark's RunSummary derives from CommonSummary and its EpochRecord from CommonEpoch.
//-----------------------------------------------------------------------------------------------

struct CommonEpoch {
  int epoch = 0;             // 1-based
  double train_seconds = 0;  // cumulative, Model::stats().seconds
  double loss = 0;           // mean loss of the epoch
  double p1 = 0, p5 = 0;
};

struct CommonSummary {
  bool ok = false;
  char error[512] = {0};
  int epochs = 0;  // epochs completed (and evaluated)
  size_t train_rows = 0, test_rows = 0, features = 0, labels = 0;
  double load_seconds = 0;
  TrainStats stats;                   // at the end of training
  double full_ms_per_example = kNaN;  // InferMode::full, after the last epoch
  double lsh_p1 = kNaN, lsh_p5 = kNaN, lsh_candidates = kNaN, lsh_ms_per_example = kNaN;  // InferMode::lsh
};

template <class Summary, class Epoch>
struct RunResultOf {
  static_assert(std::is_trivially_copyable<Summary>::value, "sent through a pipe");
  static_assert(std::is_trivially_copyable<Epoch>::value, "sent through a pipe");
  Summary summary;
  std::vector<Epoch> epochs;
};

void set_error(CommonSummary* s, const std::string& message) {
  std::snprintf(s->error, sizeof s->error, "%s", message.c_str());
  s->ok = false;
}

// Reads spec's training and test files into *train and *test and records the load time and their
// sizes in *s. False, with the error in *s, when a file cannot be read or the test file declares
// more features or labels than the training file.
bool load_dataset(const BenchOptions& o, const DatasetSpec& spec, Dataset* train, Dataset* test, CommonSummary* s) {
  const std::string dir = dataset_dir(o, spec);
  const double t0 = now_seconds();
  Status st = mongoose::read_xc(dir + spec.train_file, train);
  if (st.ok()) st = mongoose::read_xc(dir + spec.test_file, test);
  if (!st.ok()) {
    set_error(s, st.message());
    return false;
  }
  s->load_seconds = now_seconds() - t0;
  s->train_rows = train->rows;
  s->test_rows = test->rows;
  s->features = train->features;
  s->labels = train->labels;
  if (test->features > train->features || test->labels > train->labels) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s declares %zu features and %zu labels, more than the training file (%zu, %zu)",
                  spec.test_file, test->features, test->labels, train->features, train->labels);
    set_error(s, buf);
    return false;
  }
  return true;
}

// Model::init(cfg) for the training set's features and labels; false, with the error in *s, when it fails.
bool init_model(const Config& cfg, const Dataset& train, Model* model, CommonSummary* s) {
  const Status st = model->init(cfg, train.features, train.labels);
  if (!st.ok()) set_error(s, st.message());
  return st.ok();
}

// Trains `epochs` epochs, evaluating on test with InferMode::full after each (evaluation is not
// training time). After each evaluation an Epoch record gets epoch (1-based), train_seconds
// (cumulative, Model::stats().seconds), loss, p1 and p5; on_epoch(&record, wall seconds of the
// train_epoch call, metrics) fills in the rest and prints the epoch line; then the record is
// appended to r->epochs and r->summary gets epochs and full_ms_per_example. Returns the first error.
template <class Summary, class Epoch, class OnEpoch>
Status train_epochs(Model* model, const Dataset& train, const Dataset& test, int epochs,
                    RunResultOf<Summary, Epoch>* r, OnEpoch on_epoch) {
  Status st;
  Metrics m;
  for (int e = 0; e < epochs; ++e) {
    const double w0 = now_seconds();
    st = model->train_epoch(train);
    const double wall = now_seconds() - w0;
    if (!st.ok()) break;
    st = model->evaluate(test, InferMode::full, &m);
    if (!st.ok()) break;
    const TrainStats& ts = model->stats();
    Epoch rec;
    rec.epoch = e + 1;
    rec.train_seconds = ts.seconds;
    rec.loss = ts.mean_loss_last_epoch;
    rec.p1 = m.p_at_1;
    rec.p5 = m.p_at_5;
    on_epoch(&rec, wall, m);
    r->epochs.push_back(rec);
    r->summary.epochs = rec.epoch;
    r->summary.full_ms_per_example = m.ms_per_example;
  }
  return st;
}

// Evaluates on test with InferMode::lsh into the summary's lsh_p1, lsh_p5, lsh_candidates and
// lsh_ms_per_example (left as they were when it fails).
Status evaluate_lsh(const Model& model, const Dataset& test, CommonSummary* s) {
  Metrics lm;
  const Status st = model.evaluate(test, InferMode::lsh, &lm);
  if (st.ok()) {
    s->lsh_p1 = lm.p_at_1;
    s->lsh_p5 = lm.p_at_5;
    s->lsh_candidates = lm.mean_candidates;
    s->lsh_ms_per_example = lm.ms_per_example;
  }
  return st;
}

// The run's outcome: ok when st is, else failed with st's message.
void finish_run(const Status& st, CommonSummary* s) {
  if (st.ok()) s->ok = true;
  else set_error(s, st.message());
}

//-----------------------------------------------------------------------------------------------
// Fork, pipe, wait4
//-----------------------------------------------------------------------------------------------

// Calls io (::read or ::write) until all n bytes at p are transferred; false on EOF or error before that.
template <class Byte, class Io>
bool transfer_all(Io io, int fd, Byte* p, size_t n) {
  while (n > 0) {
    ssize_t done = io(fd, p, n);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    p += done;
    n -= size_t(done);
  }
  return true;
}

bool write_all(int fd, const void* data, size_t n) {
  return transfer_all(::write, fd, static_cast<const char*>(data), n);
}

// Reads exactly n bytes; false on EOF or error before that.
bool read_all(int fd, void* data, size_t n) { return transfer_all(::read, fd, static_cast<char*>(data), n); }

// Runs run() (which returns a RunResultOf) in a forked child and reads its result back through a pipe,
// so that the child's peak RSS is the run's alone; *peak_rss_mb (when not null) gets it, or nan. If
// pipe or fork fails, prints "<program>: fork failed (<reason>); running <in_process>" to stderr and
// runs run() here. A child that returns no result gives a failed RunResultOf saying why.
template <class Run>
auto run_in_child(const char* program, const std::string& in_process, Run run, double* peak_rss_mb)
    -> decltype(run()) {
  using Result = decltype(run());
  using Epoch = typename decltype(Result::epochs)::value_type;
  if (peak_rss_mb) *peak_rss_mb = kNaN;
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
    std::fprintf(stderr, "%s: fork failed (%s); running %s\n", program, std::strerror(errno), in_process.c_str());
    return run();
  }
  if (pid == 0) {  // child
    ::close(fds[0]);
    Result r = run();
    const uint64_t n = r.epochs.size();
    bool ok = write_all(fds[1], &r.summary, sizeof r.summary) && write_all(fds[1], &n, sizeof n) &&
              (n == 0 || write_all(fds[1], r.epochs.data(), n * sizeof(Epoch)));
    std::fflush(stdout);
    std::fflush(stderr);
    ::close(fds[1]);
    ::_exit(ok ? 0 : 1);
  }
  // parent
  ::close(fds[1]);
  Result r;
  uint64_t n = 0;
  bool got = read_all(fds[0], &r.summary, sizeof r.summary) && read_all(fds[0], &n, sizeof n) && n < (1u << 24);
  if (got) {
    r.epochs.resize(size_t(n));
    got = n == 0 || read_all(fds[0], r.epochs.data(), size_t(n) * sizeof(Epoch));
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
    r = Result();
    std::string why = "child process returned no result";
    if (w == pid && WIFSIGNALED(status)) why += " (killed by signal " + std::to_string(WTERMSIG(status)) + ")";
    else if (w == pid && WIFEXITED(status)) why += " (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    set_error(&r.summary, why);
  }
  if (w == pid && peak_rss_mb) *peak_rss_mb = double(ru.ru_maxrss) / 1024.0;  // Linux: KiB
  return r;
}

// Prints "failed: <dataset> <what>: <error>" when the run failed; returns whether it did.
template <class Result>
bool report_failure(const DatasetSpec& spec, const char* what, const Result& r) {
  if (r.summary.ok) return false;
  std::printf("failed: %s %s: %s\n", spec.name, what, r.summary.error);
  std::fflush(stdout);
  return true;
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

// "== <dataset>: train ... rows, ..." from the first run that succeeded, or just "== <dataset>".
template <class Result>
void print_dataset_heading(const DatasetSpec& spec, const std::vector<Result>& results) {
  std::printf("\n== %s", spec.name);
  for (const Result& r : results)
    if (r.summary.ok) {
      std::printf(": train %zu rows, test %zu rows, %zu features, %zu labels (load %.2f s)", r.summary.train_rows,
                  r.summary.test_rows, r.summary.features, r.summary.labels, r.summary.load_seconds);
      break;
    }
  std::printf("\n");
}

}  // namespace
