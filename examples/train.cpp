// mongoose-train: trains a model on XC text files and reports P@k.
//
//   c++ -O2 -std=c++17 -pthread examples/train.cpp mongoose.cpp -o mongoose-train
//   ./mongoose-train --train train.txt --test test.txt --epochs 5 --output lsh
//
// Prints a progress line on stderr when it is a terminal, and exactly one line on stdout:
//   result mode=... epochs=E train_seconds=X examples_per_second=X p@1=X p@3=X p@5=X peak_rss_mb=X ...
// Exit status: 0 on success, 1 on a training or data error, 2 on a usage error.
// Before training it checks what would otherwise fail after it: every input exists and parses, the
// --save and --log destinations can be created, and no output is the same file as an input.

#include "../mongoose.h"

#if defined(_WIN32)
#define PSAPI_VERSION 2  // GetProcessMemoryInfo from kernel32 (K32GetProcessMemoryInfo): no -lpsapi
#include <io.h>
#include <windows.h>
#include <psapi.h>
#else
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string train, test, log, save, load;
  int epochs = 5;
  double time_limit = 0;  // seconds of training; 0 = none
  bool normalize = false;
  std::string infer = "full";
  bool eval_every_epoch = true;
  bool mongoose_mode = false;  // --output mongoose: lsh + scheduler + learned hashing
  mongoose::Config cfg;
};

void usage(FILE* out) {
  const mongoose::Config d;  // the defaults shown below are the library's
  std::fprintf(out,
               "usage: mongoose-train --train FILE --test FILE [options]\n"
               "  --hidden N          hidden units of the input layer (128)\n"
               "  --hidden-layers W,W further dense ReLU layers of these widths after it (none)\n"
               "  --input sparse|dense  input layer: embedding bag, or dense matrix for up to\n"
               "                      ~10^4 dense features (sparse)\n"
               "  --epochs E          epochs (5)\n"
               "  --batch B           batch size (128)\n"
               "  --lr LR             Adam learning rate (0.001)\n"
               "  --threads T         worker threads, 0 = all cores (0)\n"
               "  --seed S            random seed (42)\n"
               "  --time-limit SEC    stop training after this many seconds (none)\n"
               "  --log FILE          CSV per epoch: epoch,seconds,loss,p@1,p@3,p@5\n"
               "  --normalize on|off  scale each input row to unit L2 norm (off)\n"
               "  --eval-every-epoch on|off  evaluate after each epoch (on; the last epoch always)\n"
               "  --output full|lsh|mongoose  output layer (full); mongoose = lsh with the\n"
               "                      detect scheduler and learned hashing on\n"
               "  --hash simhash|dwta hash family for lsh (simhash)\n"
               "  --K N --L N         bits per table, tables (%u, %u)\n"
               "  --bucket-capacity N ids per bucket (128)\n"
               "  --min-active N      shared set: batch labels plus random neurons up to N (%u)\n"
               "  --max-active N      retrieved neurons per example, 0 = no cap (%u)\n"
               "  --exact-retrieval on|off  retrieve the max-active best neurons by brute force\n"
               "                      instead of the tables: the perfect-hashing bound (off)\n"
               "  --rehash-every N    re-insert all neurons every N batches, 0 = never (50)\n"
               "  --rehash-decay X    period grows by exp(X * rehashes) (0)\n"
               "  --new-hash-every N  new hash functions every N batches, 0 = never (0)\n"
               "  --scheduler fixed|detect|incremental  when to update the tables (fixed)\n"
               "  --tau X             detect: rebuild when this fraction of detector bits flipped (0.05)\n"
               "  --check-every N     detect/incremental: batches between checks (50)\n"
               "  --detector-bits N   change-detector bits per neuron, 1..24 (16)\n"
               "  --learn-hash on|off learned hash functions (off)\n"
               "  --learn-every N     batches between learning rounds, 0 = at each rebuild (0)\n"
               "  --hash-lr X         learning rate of the projection (0.01)\n"
               "  --hash-steps N      Adam steps per learning round (20)\n"
               "  --binarize on|off   use sign(learned projection) (off)\n"
               "  --hash-loss bce|triplet  the learner's loss: BCE on mined pairs, or the cosine\n"
               "                      triplet hinge on (query, missed top, retrieved low) (bce)\n"
               "  --triplet-margin X  triplet: margin between the two cosines, (0, 2] (%g)\n"
               "  --sampling-correction on|off  subtract log(inclusion probability) from shared logits\n"
               "  --tail-drift X      lsh: the full softmax's downward drift of inactive rows, in\n"
               "                      learning rates per batch, [0, 10] (%g; 0 = off)\n"
               "  --infer full|lsh    inference mode for the final evaluation (full)\n"
               "  --infer-shortlist N lsh inference also scores the N most frequent labels (%u; 0 = the\n"
               "                      tables alone)\n"
               "  --retrieval on|off  lsh: retrieved neurons join each example's active set (on; off =\n"
               "                      the shared set alone, a plain sampled softmax)\n"
               "  --probes N          multi-probe: per table also the buckets of the N least certain\n"
               "                      bits flipped, in training (0)\n"
               "  --infer-probes N    the same for --infer lsh (0)\n"
               "  --bf16 on|off       store the output layer's rows and Adam moments as bfloat16 (off)\n"
               "  --save FILE         save the trained model (atomically: a new temporary file, then\n"
               "                      a rename; checked before training)\n"
               "  --load FILE         start from a saved model (continue training, or --epochs 0 to\n"
               "                      only evaluate); its shape and index settings win\n"
               "  --scalar            force the portable scalar kernels\n",
               d.K, d.L, d.min_active, d.max_active, double(d.triplet_margin), double(d.tail_drift), d.infer_shortlist);
}

// A whole decimal integer in [lo, hi]: digits only, so "1.5", "0x10", "-1" and "1e3" are refused
// rather than truncated or reinterpreted.
bool parse_count(const std::string& v, uint64_t lo, uint64_t hi, uint64_t* out) {
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) return false;
  uint64_t n = 0;
  auto res = std::from_chars(v.data(), v.data() + v.size(), n);
  if (res.ec != std::errc() || res.ptr != v.data() + v.size() || n < lo || n > hi) return false;
  *out = n;
  return true;
}

// A finite decimal number in [lo, hi] ("1e-3" is fine; hex floats, inf and nan are not).
bool parse_real(const std::string& v, double lo, double hi, double* out) {
  if (v.empty() || v.find_first_not_of("0123456789.eE+-") != std::string::npos) return false;
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (errno || end != v.c_str() + v.size() || !std::isfinite(x) || x < lo || x > hi) return false;
  if (x != 0 && float(x) == 0.0f) return false;  // would silently become 0 (a feature turned off)
  *out = x;
  return true;
}

// Options that take a value; anything else but --help and --scalar is unknown.
bool takes_value(const std::string& a) {
  static const char* const names[] = {
      "--train", "--test", "--log", "--save", "--load", "--hidden", "--hidden-layers", "--input", "--epochs", "--batch", "--lr", "--threads",
      "--seed", "--time-limit", "--normalize", "--eval-every-epoch", "--output", "--hash", "--K", "--L",
      "--bucket-capacity", "--min-active", "--max-active", "--rehash-every", "--rehash-decay", "--new-hash-every",
      "--scheduler", "--tau", "--check-every", "--detector-bits", "--learn-hash", "--learn-every", "--hash-lr",
      "--hash-steps", "--binarize", "--hash-loss", "--triplet-margin", "--exact-retrieval", "--tail-drift",
      "--sampling-correction", "--infer", "--infer-shortlist", "--retrieval", "--probes", "--infer-probes", "--bf16"};
  for (const char* n : names)
    if (a == n) return true;
  return false;
}

// Parses argv into *o; returns an empty string or an error message.
std::string parse_args(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (a == "--scalar") {
      o->cfg.simd = mongoose::Simd::scalar;
      continue;
    }
    if (!takes_value(a)) return "unknown option " + a;
    if (i + 1 >= argc) return "missing value after " + a;
    std::string v = argv[++i];
    double x = 0;
    uint64_t n = 0;
    auto num = [&](double lo, double hi) { return parse_real(v, lo, hi, &x); };
    auto count = [&](uint64_t lo, uint64_t hi) { return parse_count(v, lo, hi, &n); };
    auto bad = [&](const char* range) { return "bad value '" + v + "' for " + a + " (expected " + range + ")"; };
    auto path = [&](std::string* out) -> bool {
      *out = v;
      return !v.empty();
    };
    auto onoff = [&](bool* flag) -> bool {
      if (v == "on") *flag = true;
      else if (v == "off") *flag = false;
      else return false;
      return true;
    };
    if (a == "--train") { if (!path(&o->train)) return a + " needs a file path"; }
    else if (a == "--test") { if (!path(&o->test)) return a + " needs a file path"; }
    else if (a == "--log") { if (!path(&o->log)) return a + " needs a file path"; }
    else if (a == "--save") { if (!path(&o->save)) return a + " needs a file path"; }
    else if (a == "--load") { if (!path(&o->load)) return a + " needs a file path"; }
    else if (a == "--hidden") { if (!count(1, 65536)) return bad("an integer in 1..65536"); o->cfg.hidden = uint32_t(n); }
    else if (a == "--hidden-layers") {
      // Comma-separated widths, each an integer in 1..65536; "" is not allowed (omit the flag).
      o->cfg.hidden_layers.clear();
      size_t start = 0;
      for (;;) {
        const size_t comma = v.find(',', start);
        uint64_t w = 0;
        if (!parse_count(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start), 1, 65536, &w))
          return bad("comma-separated integers in 1..65536, e.g. 256,128");
        o->cfg.hidden_layers.push_back(uint32_t(w));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (a == "--input") {
      if (v == "sparse") o->cfg.input = mongoose::InputKind::sparse;
      else if (v == "dense") o->cfg.input = mongoose::InputKind::dense;
      else return bad("sparse or dense");
    }
    else if (a == "--epochs") { if (!count(0, 1000000)) return bad("an integer in 0..1000000"); o->epochs = int(n); }
    else if (a == "--batch") { if (!count(1, 65536)) return bad("an integer in 1..65536"); o->cfg.batch_size = uint32_t(n); }
    else if (a == "--lr") { if (!num(1e-9, 1)) return bad("a number in [1e-9, 1]"); o->cfg.learning_rate = float(x); }
    else if (a == "--threads") { if (!count(0, 1024)) return bad("an integer in 0..1024"); o->cfg.threads = uint32_t(n); }
    else if (a == "--seed") { if (!count(0, ~uint64_t(0))) return bad("an integer in 0..18446744073709551615"); o->cfg.seed = n; }
    else if (a == "--time-limit") { if (!num(0, 1e9)) return bad("seconds >= 0"); o->time_limit = x; }
    else if (a == "--normalize") { if (!onoff(&o->normalize)) return bad("on or off"); }
    else if (a == "--eval-every-epoch") { if (!onoff(&o->eval_every_epoch)) return bad("on or off"); }
    else if (a == "--output") {
      o->mongoose_mode = false;
      if (v == "full") o->cfg.output = mongoose::OutputMode::full;
      else if (v == "lsh") o->cfg.output = mongoose::OutputMode::lsh;
      else if (v == "mongoose") {
        o->cfg.output = mongoose::OutputMode::lsh;
        o->cfg.scheduler = mongoose::Scheduler::detect;
        o->cfg.learn_hash = true;  // a learning round at each rebuild the detector triggers
        o->mongoose_mode = true;
      } else return bad("full, lsh or mongoose");
    } else if (a == "--hash") {
      if (v == "simhash") o->cfg.hash = mongoose::HashFamily::simhash;
      else if (v == "dwta") o->cfg.hash = mongoose::HashFamily::dwta;
      else return bad("simhash or dwta");
    } else if (a == "--K") { if (!count(1, 24)) return bad("an integer in 1..24"); o->cfg.K = uint32_t(n); }
    else if (a == "--L") { if (!count(1, 1024)) return bad("an integer in 1..1024"); o->cfg.L = uint32_t(n); }
    else if (a == "--bucket-capacity") { if (!count(1, 65535)) return bad("an integer in 1..65535"); o->cfg.bucket_capacity = uint32_t(n); }
    else if (a == "--min-active") { if (!count(0, 4294967295)) return bad("an integer in 0..4294967295"); o->cfg.min_active = uint32_t(n); }
    else if (a == "--max-active") { if (!count(0, 4294967295)) return bad("an integer in 0..4294967295"); o->cfg.max_active = uint32_t(n); }
    else if (a == "--rehash-every") { if (!count(0, 4294967295)) return bad("an integer in 0..4294967295"); o->cfg.rehash_every = uint32_t(n); }
    else if (a == "--rehash-decay") { if (!num(0, 1)) return bad("0..1"); o->cfg.rehash_decay = float(x); }
    else if (a == "--new-hash-every") { if (!count(0, 4294967295)) return bad("an integer in 0..4294967295"); o->cfg.new_hash_every = uint32_t(n); }
    else if (a == "--scheduler") {
      if (v == "fixed") o->cfg.scheduler = mongoose::Scheduler::fixed;
      else if (v == "detect") o->cfg.scheduler = mongoose::Scheduler::detect;
      else if (v == "incremental") o->cfg.scheduler = mongoose::Scheduler::incremental;
      else return bad("fixed, detect or incremental");
    } else if (a == "--tau") { if (!num(1e-9, 1)) return bad("a number in [1e-9, 1]"); o->cfg.tau = float(x); }
    else if (a == "--check-every") { if (!count(1, 4294967295)) return bad("an integer in 1..4294967295"); o->cfg.check_every = uint32_t(n); }
    else if (a == "--detector-bits") { if (!count(1, 24)) return bad("an integer in 1..24"); o->cfg.detector_bits = uint32_t(n); }
    else if (a == "--learn-hash") { if (!onoff(&o->cfg.learn_hash)) return bad("on or off"); }
    else if (a == "--learn-every") { if (!count(0, 4294967295)) return bad("an integer in 0..4294967295"); o->cfg.learn_every = uint32_t(n); }
    else if (a == "--hash-lr") { if (!num(1e-9, 1)) return bad("a number in [1e-9, 1]"); o->cfg.hash_lr = float(x); }
    else if (a == "--hash-steps") { if (!count(1, 10000)) return bad("an integer in 1..10000"); o->cfg.hash_steps = uint32_t(n); }
    else if (a == "--binarize") { if (!onoff(&o->cfg.hash_binarize)) return bad("on or off"); }
    else if (a == "--hash-loss") {
      if (v == "bce") o->cfg.hash_loss = mongoose::HashLoss::bce;
      else if (v == "triplet") o->cfg.hash_loss = mongoose::HashLoss::triplet;
      else return bad("bce or triplet");
    } else if (a == "--triplet-margin") { if (!num(1e-9, 2)) return bad("a number in [1e-9, 2]"); o->cfg.triplet_margin = float(x); }
    else if (a == "--exact-retrieval") { if (!onoff(&o->cfg.exact_retrieval)) return bad("on or off"); }
    else if (a == "--tail-drift") { if (!num(0, 10)) return bad("a number in [0, 10]"); o->cfg.tail_drift = float(x); }
    else if (a == "--sampling-correction") { if (!onoff(&o->cfg.sampling_correction)) return bad("on or off"); }
    else if (a == "--retrieval") { if (!onoff(&o->cfg.retrieval)) return bad("on or off"); }
    else if (a == "--bf16") { if (!onoff(&o->cfg.bf16)) return bad("on or off"); }
    else if (a == "--probes") { if (!count(0, 24)) return bad("an integer in 0..24"); o->cfg.probes = uint32_t(n); }
    else if (a == "--infer-probes") { if (!count(0, 24)) return bad("an integer in 0..24"); o->cfg.infer_probes = uint32_t(n); }
    else if (a == "--infer-shortlist") { if (!count(0, 4294967295u)) return bad("an integer in 0..4294967295"); o->cfg.infer_shortlist = uint32_t(n); }
    else if (a == "--infer") {
      if (v != "full" && v != "lsh") return bad("full or lsh");
      o->infer = v;
    } else return "unknown option " + a;
  }
  if (o->train.empty()) return "--train FILE is required";
  if (o->test.empty()) return "--test FILE is required";
  // With --load the file's output mode wins; main checks --infer lsh against it before training.
  if (o->infer == "lsh" && o->load.empty() && o->cfg.output != mongoose::OutputMode::lsh) return "--infer lsh needs --output lsh";
  return "";
}

// The path with its directory resolved (symlinks, "..", "./"), for files that may not exist yet:
// realpath of the directory, then the last component.
#if defined(_WIN32)
std::string resolved(const std::string& path) {
  char* full = _fullpath(nullptr, path.c_str(), 0);
  if (!full) return path;
  std::string out = full;
  std::free(full);
  return out;
}

// Windows has no inode numbers in stat: the volume serial number and file index name a file.
bool same_file(const std::string& a, const std::string& b) {
  auto identity = [](const std::string& path, BY_HANDLE_FILE_INFORMATION* info) {
    HANDLE h = CreateFileA(path.c_str(), 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr);
    if (h == INVALID_HANDLE_VALUE) return false;
    const bool ok = GetFileInformationByHandle(h, info) != 0;
    CloseHandle(h);
    return ok;
  };
  BY_HANDLE_FILE_INFORMATION ia, ib;
  if (identity(a, &ia) && identity(b, &ib))
    return ia.dwVolumeSerialNumber == ib.dwVolumeSerialNumber && ia.nFileIndexHigh == ib.nFileIndexHigh &&
           ia.nFileIndexLow == ib.nFileIndexLow;
  return _stricmp(resolved(a).c_str(), resolved(b).c_str()) == 0;
}
#else
std::string resolved(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  char* real = realpath(dir.c_str(), nullptr);
  if (!real) return path;
  std::string out = std::string(real) + "/" + name;
  std::free(real);
  return out;
}

// True when both paths name one file: the same device and inode when both exist (however they
// are spelled: hard links too), else the same resolved path.
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return resolved(a) == resolved(b);
}
#endif

// The outputs are neither an input nor each other, and can be created: checked before training,
// so that a run is never lost to a destination that fails at the end.
std::string check_outputs(const Options& o) {
  const std::pair<const char*, const std::string*> inputs[] = {{"--train", &o.train}, {"--test", &o.test}, {"--load", &o.load}};
  const std::pair<const char*, const std::string*> outputs[] = {{"--save", &o.save}, {"--log", &o.log}};
  for (const auto& out : outputs) {
    if (out.second->empty()) continue;
    for (const auto& in : inputs)
      if (!in.second->empty() && (*in.second == *out.second || same_file(*in.second, *out.second)))
        return std::string(out.first) + " " + *out.second + " is the same file as " + in.first + " " + *in.second +
               "; it would be overwritten";
    mongoose::Status st = mongoose::check_writable(*out.second);
    if (!st.ok()) return std::string(out.first) + ": " + st.message();
  }
  if (!o.save.empty() && !o.log.empty() && (o.save == o.log || same_file(o.save, o.log)))
    return "--save and --log name the same file " + o.save;
  return "";
}

double peak_rss_mb() {
#if defined(_WIN32)
  PROCESS_MEMORY_COUNTERS pmc;
  if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc)) return 0;
  return double(pmc.PeakWorkingSetSize) / (1024.0 * 1024.0);
#else
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
#endif
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string err = parse_args(argc, argv, &o);
  if (!err.empty()) {
    std::fprintf(stderr, "mongoose-train: %s\n", err.c_str());
    usage(stderr);
    return 2;
  }
  err = check_outputs(o);
  if (!err.empty()) {
    std::fprintf(stderr, "mongoose-train: %s\n", err.c_str());
    return 1;
  }
  mongoose::Dataset train, test;
  mongoose::Status st = mongoose::read_dataset(o.train, &train);
  if (st.ok()) st = mongoose::read_dataset(o.test, &test);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  if (test.features != train.features || test.labels != train.labels) {
    std::fprintf(stderr, "mongoose-train: %s declares %zu features and %zu labels, %s %zu and %zu: not the same data set\n",
                 o.test.c_str(), test.features, test.labels, o.train.c_str(), train.features, train.labels);
    return 1;
  }
  if (test.rows == 0) {
    std::fprintf(stderr, "mongoose-train: %s has no rows to evaluate on\n", o.test.c_str());
    return 1;
  }
  if (o.normalize) {
    mongoose::normalize_rows(&train);
    mongoose::normalize_rows(&test);
  }

#if defined(_WIN32)
  const bool tty = _isatty(_fileno(stderr)) != 0;
#else
  const bool tty = isatty(STDERR_FILENO);
#endif
  double time_limit = o.time_limit;
  bool out_of_time = false;
  o.cfg.on_progress = [&](const mongoose::Progress& p) {
    if (tty && (p.batch % 10 == 0 || p.batch == p.batches_in_epoch))
      std::fprintf(stderr, "\repoch %llu  batch %llu/%llu  loss %.4f  %.1f s   ",
                   (unsigned long long)p.epoch + 1, (unsigned long long)p.batch,
                   (unsigned long long)p.batches_in_epoch, p.mean_loss, p.seconds);
    if (time_limit > 0 && p.seconds >= time_limit) {
      out_of_time = true;
      return false;
    }
    return true;
  };

  mongoose::Model model;
  if (o.load.empty()) {
    st = model.init(o.cfg, train.features, train.labels);
  } else {
    mongoose::LoadOptions lo;
    lo.expect_features = train.features;
    lo.expect_labels = train.labels;
    lo.override_training = &o.cfg;
    st = mongoose::load_model(o.load, &model, lo);
    if (st.ok()) {
      o.cfg = model.config();
      o.mongoose_mode = o.mongoose_mode && o.cfg.output == mongoose::OutputMode::lsh;
      if (o.infer == "lsh" && o.cfg.output != mongoose::OutputMode::lsh)
        st = mongoose::Status::error("--infer lsh: " + o.load + " is a full-softmax model (no tables to infer with)");
    }
  }
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  // The CSV log is rewritten whole after each epoch, atomically (never half a file).
  std::string log_text = "epoch,seconds,loss,p@1,p@3,p@5\n";
  mongoose::Metrics m;
  int epochs_done = 0;
  bool evaluated_last = false;
  for (int e = 0; e < o.epochs && !out_of_time; ++e) {
    st = model.train_epoch(train);
    if (!st.ok()) break;
    ++epochs_done;
    evaluated_last = false;
    if (o.eval_every_epoch || e + 1 == o.epochs || out_of_time) {
      st = model.evaluate(test, mongoose::InferMode::full, &m);
      if (!st.ok()) break;
      evaluated_last = true;
      const mongoose::TrainStats& s = model.stats();
      if (tty) std::fprintf(stderr, "\repoch %d  loss %.4f  train %.1f s  p@1 %.4f  p@3 %.4f  p@5 %.4f\n", e + 1,
                            s.mean_loss_last_epoch, s.seconds, m.p_at_1, m.p_at_3, m.p_at_5);
      if (!o.log.empty()) {
        char row[160];
        std::snprintf(row, sizeof row, "%d,%.3f,%.5f,%.5f,%.5f,%.5f\n", e + 1, s.seconds, s.mean_loss_last_epoch,
                      m.p_at_1, m.p_at_3, m.p_at_5);
        log_text += row;
        st = mongoose::write_file_atomic(o.log, log_text.data(), log_text.size());
        if (!st.ok()) break;
      }
    }
  }
  if (st.ok() && !evaluated_last) st = model.evaluate(test, mongoose::InferMode::full, &m);
  if (st.ok() && !o.save.empty()) st = mongoose::save_model(model, o.save);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  const mongoose::TrainStats& s = model.stats();
  std::string line = "result mode=" + std::string(o.mongoose_mode ? "mongoose" : o.cfg.output == mongoose::OutputMode::lsh ? "lsh" : "full");
  char buf[512];
  std::snprintf(buf, sizeof buf,
                " epochs=%d train_seconds=%.3f examples_per_second=%.1f p@1=%.4f p@3=%.4f p@5=%.4f peak_rss_mb=%.1f"
                " parameter_mb=%.1f data_mb=%.1f",
                epochs_done, s.seconds, s.seconds > 0 ? double(s.examples) / s.seconds : 0.0, m.p_at_1, m.p_at_3,
                m.p_at_5, peak_rss_mb(), double(model.parameter_bytes()) / 1e6, double(train.bytes() + test.bytes()) / 1e6);
  line += buf;
  if (o.cfg.output == mongoose::OutputMode::lsh) {
    std::snprintf(buf, sizeof buf, " active_mean=%.1f rehashes=%llu rehash_seconds=%.3f", s.active_mean(),
                  (unsigned long long)s.rehashes, s.rehash_seconds);
    line += buf;
    double recall = 0, retrieved = 0;
    st = model.retrieval_recall(test, 1000, 5, &recall, &retrieved);
    if (!st.ok()) {
      std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
      return 1;
    }
    std::snprintf(buf, sizeof buf,
                  " rebuilds=%llu reinserted=%llu schedule_seconds=%.3f learn_seconds=%.3f recall_top5=%.4f"
                  " retrieved_mean=%.1f checks=%llu learn_rounds=%llu",
                  (unsigned long long)s.rehashes, (unsigned long long)s.reinserted,
                  s.rehash_seconds + s.detect_seconds + s.reinsert_seconds, s.learn_seconds, recall, retrieved,
                  (unsigned long long)s.checks, (unsigned long long)s.learn_rounds);
    line += buf;
    if (s.learn_rounds)
      std::snprintf(buf, sizeof buf, " learn_recall_before=%.4f learn_recall_after=%.4f learn_loss_before=%.4f learn_loss_after=%.4f",
                    s.recall_before_sum / double(s.learn_rounds), s.recall_after_sum / double(s.learn_rounds),
                    s.learn_loss_before, s.learn_loss_after), line += buf;
  }
  std::snprintf(buf, sizeof buf,
                " split_hidden=%.3f split_hash=%.3f split_query=%.3f split_fwdbwd=%.3f split_update=%.3f",
                s.hidden_seconds, s.hash_seconds, s.query_seconds, s.forward_backward_seconds, s.update_seconds);
  line += buf;
  if (o.infer == "lsh") {
    mongoose::Metrics full_m = m, lsh_m;
    st = model.evaluate(test, mongoose::InferMode::lsh, &lsh_m);
    if (!st.ok()) {
      std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
      return 1;
    }
    std::snprintf(buf, sizeof buf, " infer_p@1=%.4f infer_ms=%.4f full_infer_ms=%.4f infer_candidates=%.1f",
                  lsh_m.p_at_1, lsh_m.ms_per_example, full_m.ms_per_example, lsh_m.mean_candidates);
    line += buf;
  }
  std::printf("%s\n", line.c_str());
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "mongoose-train: writing the result line failed: %s\n", std::strerror(errno));
    return 1;
  }
  return 0;
}
