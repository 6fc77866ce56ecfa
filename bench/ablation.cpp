// bench/ablation.cpp - what each part of MONGOOSE buys: full softmax, SLIDE-style LSH with a fixed
// rebuild period, a perfect-hashing upper bound, the change-detecting and incremental schedulers,
// learned hash functions, and the whole MONGOOSE recipe, trained side by side on real
// extreme-classification data, over one or more seeds.
//
// Build:  c++ -O2 -std=c++17 -pthread bench/ablation.cpp mongoose.cpp -o bench-ablation
// Run:    ./bench-ablation [--data DIR] [--epochs 5] [--threads 2] [--seeds 42]
//                          [--datasets citeulike-t,delicious]
//                          [--variants full,lsh-fixed,lsh-nodrift,lsh-exact,lsh-detect,lsh-incremental,lsh-learned,mongoose,
//                                      mongoose-triplet]
//         (DIR defaults to ../shared/data, relative to the current directory; it should hold
//          citeulike-t/citeulike-t_{train,test}.txt and delicious/delicious_{train,test}.txt.
//          A missing dataset is reported as "skipped: ... not found" and the run goes on.
//          --seeds takes comma-separated unsigned integers (repeats dropped); every (dataset,
//          variant) is trained once per seed with Config::seed set to it. The default, 42, is the
//          Config default.)
//
// The variants. Every field not listed comes from mongoose::Config defaults (hidden units, batch
// size, learning rate, K, L, bucket capacity, active-set sizes, rehash period, check period,
// detector bits, tau, hash-learning steps, ...), so tuning the defaults in mongoose.h is what this
// benchmark sees. All variants of a run get the same epochs and threads; seed comes from --seeds.
//   full             output=full
//   lsh-fixed        output=lsh, scheduler=fixed                  (SLIDE: rebuild every rehash_every)
//   lsh-nodrift      as lsh-fixed, with tail_drift=0 (the sampled layer without the full softmax's
//                    drift of inactive rows)
//   lsh-exact        output=lsh, scheduler=fixed, exact_retrieval=true (retrieve the max_active
//                    highest-scoring neurons by brute force instead of querying the tables: what
//                    a perfect hash function would retrieve; the perfect-hashing upper bound)
//   lsh-detect       output=lsh, scheduler=detect                 (rebuild when detector bits flip)
//   lsh-incremental  output=lsh, scheduler=incremental            (re-insert only moved neurons)
//   lsh-learned      output=lsh, scheduler=fixed, learn_hash=true (learn at every rebuild)
//   mongoose         output=lsh, scheduler=detect, learn_hash=true, learn_every=0 (as mongoose-train --output mongoose)
//   mongoose-triplet as mongoose, with hash_loss=triplet (the learner's cosine triplet loss)
//
// What it measures. After every epoch each model is evaluated on the whole test set with
// InferMode::full (P@1, P@5); evaluation is not training time (train seconds come from
// Model::stats().seconds). At the end of training, per run: best and final P@1, P@5, train
// seconds, full rebuilds (TrainStats::rehashes), the seconds spent keeping the index current
// (rehash + detect + reinsert) and their share of training, neurons re-inserted one by one, checks,
// hash-learning rounds and seconds, the mean active-set size, the tables' top-5 retrieval recall
// (Model::retrieval_recall over up to 1000 test rows spread over the file) with the mean number of
// neurons retrieved, and for lsh variants P@1 with InferMode::lsh. lsh-exact still maintains its
// tables (fixed schedule) but trains without them: its recall@5 and lsh_p@1 measure tables it does
// not use. Learned variants also report the mean top-5 recall on the mined queries before/after a
// learning round and the last round's loss before/after. TrainStats::learn_seconds does not include
// the rebuild that ends a learning round (that is in rehash_seconds), so upkeep = rehash + detect +
// reinsert + learn seconds counts nothing twice.
//
// Each (dataset, variant, seed) run happens in its own forked child process, which reads the data,
// trains, evaluates and pipes its numbers back (if fork fails it runs in-process). Runs go seed by
// seed: every variant with the first seed, then every variant with the next.
//
// Output (stdout): one line per epoch as it goes,
//   epoch <dataset> <variant> <epoch> seed=N train_s=... p@1=... p@5=... loss=... rebuilds=... ...
// then per dataset a P@1-per-epoch table and the ablation table (one row per variant with a single
// seed; one row per (variant, seed), named like "mongoose s=1", with several), the scheduler and
// learned-hash detail lines, a "mean over seeds" table (per variant: runs that succeeded, mean and
// min..max of best P@1 over epochs, mean final P@1, mean final P@5, mean train seconds, mean
// rebuilds, mean sched_% = (rebuild + detect + reinsert seconds) / train seconds, mean upkeep_% =
// (rebuild + detect + reinsert + learn seconds) / train seconds, mean recall@5), and one line per
// variant against lsh-fixed, from the means over seeds:
//   ratio <dataset> <variant>/lsh-fixed p@1=+X.XXXX time=X rebuilds=X recall=X best_p@1=+X.XXXX
// (mean final P@1 difference, mean train seconds ratio, mean rebuilds ratio, mean retrieval recall
// ratio, mean best P@1 difference). The last line is machine-readable, from citeulike-t's means
// over seeds:
//   result citeulike_mongoose_p1_gain=X citeulike_rebuild_reduction=X citeulike_schedule_share=X
//          citeulike_recall_gain_learned=X citeulike_mongoose_best_p1_gain=X
//          citeulike_exact_best_p1_gain=X citeulike_mongoose_best_p1=X citeulike_full_best_p1=X
//          citeulike_mongoose_seconds_to_full_best=X citeulike_mongoose_reached_full_best=K/N
// (mongoose mean final P@1 minus lsh-fixed's; lsh-fixed mean rebuilds / mongoose mean rebuilds,
// inf when mongoose never rebuilt; mongoose mean upkeep share, (rehash + detect + reinsert + learn
// seconds) / train seconds; lsh-learned mean recall / lsh-fixed mean recall; mongoose mean best
// P@1 minus lsh-fixed's; lsh-exact mean best P@1 minus lsh-fixed's; mongoose and full mean best
// P@1; the mean over seeds of the train seconds (epoch record train_seconds) at which mongoose's
// P@1 first reached full's mean best P@1, nan when some seed never did; how many of the N seeds
// did). A figure is nan (and K/N is "nan") when a needed run was skipped or failed for some seed.
//
// All timings are wall clock and vary with machine load (other processes, frequency scaling,
// memory bandwidth shared with other jobs): compare runs made on an idle machine, or the ratios
// of variants measured in the same run. Accuracy figures are deterministic for a given seed and
// thread count only up to floating-point summation order.
//
// Exit status: 0 when every requested run that had its data succeeded (missing datasets are
// skipped, not errors), 1 when a run failed, 2 on a usage error.

#include "common.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

using mongoose::Scheduler;

const double kInf = std::numeric_limits<double>::infinity();

//-----------------------------------------------------------------------------------------------
// Variants, options
//-----------------------------------------------------------------------------------------------

struct VariantSpec {
  const char* name;
  OutputMode output;
  Scheduler scheduler;
  bool learn_hash;
  uint32_t learn_every;  // used only when learn_hash
  bool exact_retrieval;  // Config::exact_retrieval (lsh only)
  mongoose::HashLoss hash_loss = mongoose::HashLoss::bce;
  float tail_drift = -1.0f;  // Config::tail_drift; negative = the library default
};

const VariantSpec kVariants[] = {
    {"full", OutputMode::full, Scheduler::fixed, false, 0, false},
    {"lsh-fixed", OutputMode::lsh, Scheduler::fixed, false, 0, false},
    {"lsh-nodrift", OutputMode::lsh, Scheduler::fixed, false, 0, false, mongoose::HashLoss::bce, 0.0f},
    {"lsh-exact", OutputMode::lsh, Scheduler::fixed, false, 0, true},
    {"lsh-detect", OutputMode::lsh, Scheduler::detect, false, 0, false},
    {"lsh-incremental", OutputMode::lsh, Scheduler::incremental, false, 0, false},
    {"lsh-learned", OutputMode::lsh, Scheduler::fixed, true, 0, false},
    {"mongoose", OutputMode::lsh, Scheduler::detect, true, 0, false},
    {"mongoose-triplet", OutputMode::lsh, Scheduler::detect, true, 0, false, mongoose::HashLoss::triplet},
};

struct Options : BenchOptions {
  std::vector<std::string> variants;  // empty = all
  std::vector<uint64_t> seeds{Config().seed};
};

void usage(FILE* out) {
  print_common_usage(out, "bench-ablation");
  std::fprintf(out,
               "  --variants LIST      comma-separated subset of full,lsh-fixed,lsh-nodrift,lsh-exact,\n"
               "                       lsh-detect,lsh-incremental,lsh-learned,mongoose,mongoose-triplet (all);\n"
               "                       lsh-exact retrieves by brute force (Config::exact_retrieval,\n"
               "                       the perfect-hashing bound)\n"
               "  --seeds LIST         comma-separated unsigned integers; every (dataset, variant) is\n"
               "                       trained once per seed, with Config::seed set to it (%llu)\n",
               (unsigned long long)Config().seed);
}

// Sets *out from a --seeds value; returns "" or an error message.
std::string parse_seeds(const std::string& v, std::vector<uint64_t>* out) {
  const std::vector<std::string> items = split_commas(v);  // empty items and repeated strings dropped
  if (items.empty()) return "--seeds needs at least one seed";
  out->clear();
  for (const std::string& item : items) {
    bool digits = true;
    for (char c : item) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = digits ? std::strtoull(item.c_str(), &end, 10) : 0;
    if (!digits || errno || !end || *end != '\0')
      return "bad seed '" + item + "' for --seeds (expected comma-separated unsigned integers, e.g. 1,2,3)";
    if (std::find(out->begin(), out->end(), uint64_t(x)) == out->end()) out->push_back(uint64_t(x));
  }
  return "";
}

// Returns "" or an error message. --seeds is taken out here; the rest goes to parse_bench_args.
std::string parse_args(int argc, char** argv, Options* o) {
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {  // parse_bench_args prints the usage when it gets here
      for (; i < argc; ++i) rest.push_back(argv[i]);
      break;
    }
    if (a == "--seeds") {
      if (i + 1 >= argc) return "missing value after " + a;
      const std::string error = parse_seeds(argv[++i], &o->seeds);
      if (!error.empty()) return error;
      continue;
    }
    rest.push_back(argv[i]);
    if (i + 1 < argc) rest.push_back(argv[++i]);  // the option's value
  }
  std::vector<std::string> names;
  for (const VariantSpec& v : kVariants) names.push_back(v.name);
  return parse_bench_args(int(rest.size()), rest.data(), o, usage,
                          {"--variants", &o->variants, names, "--variants needs at least one variant", "variant",
                           "full, lsh-fixed, lsh-nodrift, lsh-exact, lsh-detect, lsh-incremental, lsh-learned, mongoose or "
                           "mongoose-triplet"});
}

Config config_of(const VariantSpec& v, uint32_t threads, uint64_t seed) {
  Config cfg;  // library defaults; only the fields that define the variant (and the seed) are set here
  cfg.output = v.output;
  cfg.threads = threads;
  cfg.seed = seed;
  if (v.output == OutputMode::lsh) {
    cfg.scheduler = v.scheduler;
    cfg.learn_hash = v.learn_hash;
    if (v.learn_hash) cfg.learn_every = v.learn_every;
    cfg.exact_retrieval = v.exact_retrieval;
    cfg.hash_loss = v.hash_loss;
    if (v.tail_drift >= 0.0f) cfg.tail_drift = v.tail_drift;
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

std::string fmt_u(uint64_t v) { return std::to_string((unsigned long long)v); }

// "1,2,3"
std::string seeds_text(const std::vector<uint64_t>& seeds) {
  std::string out;
  for (uint64_t s : seeds) out += (out.empty() ? "" : ",") + fmt_u(s);
  return out;
}

//-----------------------------------------------------------------------------------------------
// One run: read the data, train, evaluate (run in a child process by run_in_child).
//-----------------------------------------------------------------------------------------------

struct EpochRecord : CommonEpoch {
  uint64_t rehashes = 0;  // cumulative full rebuilds
};

struct RunSummary : CommonSummary {
  bool all_active = false;  // lsh with min_active >= labels: exact softmax, tables never updated
  uint32_t min_active = 0;
  double recall = kNaN, mean_retrieved = kNaN;  // Model::retrieval_recall, k = 5
  size_t recall_rows = 0;
};
using RunResult = RunResultOf<RunSummary, EpochRecord>;

const size_t kRecallRows = 1000;
const size_t kRecallK = 5;

RunResult run_one(const Options& o, const DatasetSpec& spec, const VariantSpec& variant, uint64_t seed) {
  RunResult r;
  RunSummary& s = r.summary;
  Dataset train, test;
  if (!load_dataset(o, spec, &train, &test, &s)) return r;

  const Config cfg = config_of(variant, o.threads, seed);
  const bool is_lsh = variant.output == OutputMode::lsh;
  s.min_active = cfg.min_active;
  s.all_active = is_lsh && size_t(cfg.min_active) >= train.labels;
  Model model;
  if (!init_model(cfg, train, &model, &s)) return r;

  Status st = train_epochs(&model, train, test, o.epochs, &r, [&](EpochRecord* rec, double wall, const Metrics& m) {
    rec->rehashes = model.stats().rehashes;
    std::printf("epoch %-11s %-15s %3d  seed=%llu  train_s=%8.2f  p@1=%.4f  p@5=%.4f  loss=%.4f  rebuilds=%llu  "
                "epoch_wall_s=%.2f  eval_s=%.2f\n",
                spec.name, variant.name, rec->epoch, (unsigned long long)seed, rec->train_seconds, rec->p1, rec->p5,
                rec->loss, (unsigned long long)rec->rehashes, wall, m.seconds);
    std::fflush(stdout);
  });
  s.stats = model.stats();
  if (st.ok() && is_lsh) {
    s.recall_rows = std::min(kRecallRows, test.rows);
    st = model.retrieval_recall(test, kRecallRows, kRecallK, &s.recall, &s.mean_retrieved);
    if (st.ok()) st = evaluate_lsh(model, test, &s);
  }
  finish_run(st, &s);
  return r;
}

// Runs run_one in its own child process.
RunResult run_isolated(const Options& o, const DatasetSpec& spec, const VariantSpec& variant, uint64_t seed) {
  return run_in_child("bench-ablation",
                      std::string(spec.name) + " " + variant.name + " seed " + fmt_u(seed) + " in-process",
                      [&] { return run_one(o, spec, variant, seed); }, nullptr);
}

//-----------------------------------------------------------------------------------------------
// Report
//-----------------------------------------------------------------------------------------------

double ratio(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return kNaN;
  if (b == 0) return a == 0 ? kNaN : kInf;
  return a / b;
}

// One run's figures; nan when the run is missing or failed.
struct Figures {
  bool present = false, lsh = false;
  double p1_final = kNaN, p1_best = kNaN, p5_final = kNaN;
  int best_epoch = 0;
  double train_seconds = kNaN;
  double rebuilds = kNaN;          // lsh only
  double schedule_seconds = kNaN;  // rehash + detect + reinsert (lsh only)
  double learn_seconds = kNaN;     // lsh only; excludes the rebuild ending a round (in rehash_seconds)
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

// One variant's figures averaged over the seeds whose run succeeded (nan fields when none did;
// nan lsh-only fields for full).
struct MeanFigures {
  size_t runs = 0, ok = 0;  // runs made (one per seed), runs that succeeded
  bool lsh = false;
  double p1_best = kNaN, p1_best_min = kNaN, p1_best_max = kNaN, p1_final = kNaN, p5_final = kNaN;
  double train_seconds = kNaN, rebuilds = kNaN;
  double schedule_share = kNaN;  // (rehash + detect + reinsert) / train seconds, mean of the runs' shares
  double upkeep_share = kNaN;    // (rehash + detect + reinsert + learn) / train seconds, likewise
  double recall = kNaN;
  bool complete() const { return runs > 0 && ok == runs; }
};

struct DatasetReport {
  const DatasetSpec* spec = nullptr;
  std::vector<const VariantSpec*> variants;
  std::vector<uint64_t> seeds;
  std::vector<RunResult> results;  // variant-major: results[v * seeds.size() + s]
  const RunResult& result(size_t v, size_t s) const { return results[v * seeds.size() + s]; }
  bool multi_seed() const { return seeds.size() > 1; }
  // A run's row name: the variant, with " s=<seed>" when there are several seeds.
  std::string label(size_t v, size_t s) const {
    return std::string(variants[v]->name) + (multi_seed() ? " s=" + fmt_u(seeds[s]) : "");
  }
  // The variant's index in variants, or -1.
  int index_of(const char* name) const {
    for (size_t i = 0; i < variants.size(); ++i)
      if (std::strcmp(variants[i]->name, name) == 0) return int(i);
    return -1;
  }
};

MeanFigures mean_figures(const DatasetReport& rep, size_t v) {
  MeanFigures m;
  m.runs = rep.seeds.size();
  m.lsh = rep.variants[v]->output == OutputMode::lsh;
  double p1_best = 0, p1_final = 0, p5 = 0, train = 0, rebuilds = 0, sched = 0, upkeep = 0, recall = 0;
  for (size_t s = 0; s < rep.seeds.size(); ++s) {
    const Figures f = figures_of(*rep.variants[v], &rep.result(v, s));
    if (!f.present) continue;
    ++m.ok;
    p1_best += f.p1_best;
    m.p1_best_min = m.ok == 1 ? f.p1_best : std::min(m.p1_best_min, f.p1_best);
    m.p1_best_max = m.ok == 1 ? f.p1_best : std::max(m.p1_best_max, f.p1_best);
    p1_final += f.p1_final;
    p5 += f.p5_final;
    train += f.train_seconds;
    rebuilds += f.rebuilds;
    sched += f.train_seconds > 0 ? f.schedule_seconds / f.train_seconds : kNaN;
    upkeep += f.train_seconds > 0 ? (f.schedule_seconds + f.learn_seconds) / f.train_seconds : kNaN;
    recall += f.recall;
  }
  if (m.ok == 0) return m;
  const double n = double(m.ok);
  m.p1_best = p1_best / n;
  m.p1_final = p1_final / n;
  m.p5_final = p5 / n;
  m.train_seconds = train / n;
  if (m.lsh) {  // full's lsh-only figures stay nan
    m.rebuilds = rebuilds / n;
    m.schedule_share = sched / n;
    m.upkeep_share = upkeep / n;
    m.recall = recall / n;
  }
  return m;
}

// The named variant's means when its run succeeded for every seed; all nan otherwise (not run,
// skipped or failed), as the ratio and result lines need.
MeanFigures complete_means(const DatasetReport& rep, const char* name) {
  const int v = rep.index_of(name);
  if (v < 0) return MeanFigures();
  const MeanFigures m = mean_figures(rep, size_t(v));
  return m.complete() ? m : MeanFigures();
}

// The mean over seeds of the train seconds (epoch record train_seconds) at which the named
// variant's P@1 first reached `target`; nan when some seed never did (or a run is missing).
// *reached gets how many seeds did, *seeds how many there are; *reached is -1 when the figure
// cannot be computed at all (target nan, the variant not run or a run failed).
double seconds_to_reach(const DatasetReport& rep, const char* name, double target, int* reached, int* seeds) {
  *reached = -1;
  *seeds = int(rep.seeds.size());
  const int v = rep.index_of(name);
  if (std::isnan(target) || v < 0 || !mean_figures(rep, size_t(v)).complete()) return kNaN;
  *reached = 0;
  double sum = 0;
  for (size_t s = 0; s < rep.seeds.size(); ++s)
    for (const EpochRecord& e : rep.result(size_t(v), s).epochs)
      if (e.p1 >= target) {
        ++*reached;
        sum += e.train_seconds;
        break;
      }
  return *reached == *seeds ? sum / double(*seeds) : kNaN;
}

void report_dataset(const DatasetReport& rep) {
  const DatasetSpec& spec = *rep.spec;
  const size_t nv = rep.variants.size(), ns = rep.seeds.size();
  print_dataset_heading(spec, rep.results);
  if (rep.multi_seed()) std::printf("  seeds: %s (one run per variant and seed)\n", seeds_text(rep.seeds).c_str());
  const bool has_exact = rep.index_of("lsh-exact") >= 0;

  // P@1 (InferMode::full) after each epoch.
  size_t max_epochs = 0;
  for (const RunResult& r : rep.results) max_epochs = std::max(max_epochs, r.epochs.size());
  {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> head{"p@1 by epoch"};
    for (size_t e = 0; e < max_epochs; ++e) head.push_back("ep" + std::to_string(e + 1));
    head.push_back("train_s");
    rows.push_back(head);
    for (size_t v = 0; v < nv; ++v)
      for (size_t si = 0; si < ns; ++si) {
        const RunResult& r = rep.result(v, si);
        std::vector<std::string> row{rep.label(v, si)};
        for (size_t e = 0; e < max_epochs; ++e)
          row.push_back(e < r.epochs.size() ? fmt("%.4f", r.epochs[e].p1) : "-");
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
  for (size_t v = 0; v < nv; ++v)
    for (size_t si = 0; si < ns; ++si) {
      const RunResult& r = rep.result(v, si);
      const RunSummary& s = r.summary;
      const std::string name = rep.label(v, si);
      if (!s.ok || r.epochs.empty()) {
        rows.push_back({name, "failed"});
        continue;
      }
      const Figures f = figures_of(*rep.variants[v], &r);
      const TrainStats& t = s.stats;
      any_all_active = any_all_active || s.all_active;
      if (!f.lsh) {
        rows.push_back({name, fmt("%.4f", f.p1_best) + "(" + std::to_string(f.best_epoch) + ")",
                        fmt("%.4f", f.p1_final), fmt("%.4f", f.p5_final), fmt("%.2f", f.train_seconds), "-", "-",
                        "-", "-", "-", "-", "-", fmt("%.0f", double(s.labels)), "-", "-", "-"});
        continue;
      }
      const double share = t.seconds > 0 ? 100.0 * f.schedule_seconds / t.seconds : kNaN;
      rows.push_back({name, fmt("%.4f", f.p1_best) + "(" + std::to_string(f.best_epoch) + ")",
                      fmt("%.4f", f.p1_final), fmt("%.4f", f.p5_final), fmt("%.2f", f.train_seconds),
                      fmt_u(t.rehashes), fmt("%.2f", f.schedule_seconds), fmt("%.1f", share), fmt_u(t.reinserted),
                      fmt_u(t.checks), fmt_u(t.learn_rounds), fmt("%.2f", t.learn_seconds),
                      fmt("%.0f", t.active_mean()), fmt("%.4f", s.recall), fmt("%.0f", s.mean_retrieved),
                      fmt("%.4f", s.lsh_p1)});
    }
  print_table(rows);
  for (size_t v = 0; v < nv; ++v)
    for (size_t si = 0; si < ns; ++si)
      if (!rep.result(v, si).summary.ok)
        std::printf("  %s failed: %s\n", rep.label(v, si).c_str(), rep.result(v, si).summary.error);
  std::printf("  (sched_s = rebuild + detect + reinsert seconds, sched_%% of train_s; learn_s = hash-learning "
              "seconds, without the rebuild ending each round (in sched_s); active = mean active-set size, all "
              "labels for full; recall@5 / retrieved = Model::retrieval_recall over up to %zu test rows; lsh_p@1 "
              "= evaluate with InferMode::lsh)\n",
              kRecallRows);
  if (has_exact)
    std::printf("  note: lsh-exact retrieves by brute force; its recall@5/lsh_p@1 measure tables it does not use\n");
  if (any_all_active)
    for (const RunResult& r : rep.results) {
      const RunSummary& s = r.summary;
      if (s.ok && s.all_active) {
        std::printf("  note: %zu labels <= min_active %u: every neuron is always active (exact softmax); the "
                    "tables are built once at init and never updated, so the lsh variants do not differ in "
                    "training and recall@5 / lsh_p@1 measure the initial random tables\n",
                    s.labels, s.min_active);
        break;
      }
    }

  // Detail lines: scheduler time split and hash learning.
  for (size_t v = 0; v < nv; ++v)
    for (size_t si = 0; si < ns; ++si) {
      const VariantSpec& vs = *rep.variants[v];
      const RunSummary& s = rep.result(v, si).summary;
      if (!s.ok || rep.result(v, si).epochs.empty() || vs.output != OutputMode::lsh) continue;
      const std::string name = rep.label(v, si);
      const TrainStats& t = s.stats;
      std::printf("  sched %s %s: rebuild_s=%.2f detect_s=%.2f reinsert_s=%.2f checks=%llu last_flip_fraction=%.4f "
                  "lsh_candidates=%.0f lsh_ms/ex=%.3f full_ms/ex=%.3f\n",
                  spec.name, name.c_str(), t.rehash_seconds, t.detect_seconds, t.reinsert_seconds,
                  (unsigned long long)t.checks, t.last_flip_fraction, s.lsh_candidates, s.lsh_ms_per_example,
                  s.full_ms_per_example);
      if (!vs.learn_hash) continue;
      const double rounds = double(t.learn_rounds);
      std::printf("  learn %s %s: rounds=%llu pairs=%llu recall_before=%.4f recall_after=%.4f (mean over rounds, "
                  "top-5 on mined queries) loss_before=%.4f loss_after=%.4f (last round) learn_s=%.2f (mining, "
                  "projection training and recall measurement; the rebuild ending each round is in rebuild_s)\n",
                  spec.name, name.c_str(), (unsigned long long)t.learn_rounds, (unsigned long long)t.pairs_mined,
                  rounds > 0 ? t.recall_before_sum / rounds : kNaN, rounds > 0 ? t.recall_after_sum / rounds : kNaN,
                  t.learn_loss_before, t.learn_loss_after, t.learn_seconds);
    }
  std::printf("\n");

  // Means over seeds.
  {
    std::vector<std::vector<std::string>> mrows;
    mrows.push_back({"mean over " + std::to_string(ns) + (ns == 1 ? " seed" : " seeds"), "runs", "best_p@1",
                     "min..max", "final_p@1", "p@5", "train_s", "rebuilds", "sched_%", "upkeep_%", "recall@5"});
    for (size_t v = 0; v < nv; ++v) {
      const MeanFigures m = mean_figures(rep, v);
      if (m.ok == 0) {
        mrows.push_back({rep.variants[v]->name, "0/" + std::to_string(m.runs), "failed"});
        continue;
      }
      mrows.push_back({rep.variants[v]->name, std::to_string(m.ok) + "/" + std::to_string(m.runs),
                       fmt("%.4f", m.p1_best), fmt("%.4f", m.p1_best_min) + ".." + fmt("%.4f", m.p1_best_max),
                       fmt("%.4f", m.p1_final), fmt("%.4f", m.p5_final), fmt("%.2f", m.train_seconds),
                       fmt("%.1f", m.rebuilds), fmt("%.1f", 100.0 * m.schedule_share),
                       fmt("%.1f", 100.0 * m.upkeep_share), fmt("%.4f", m.recall)});
    }
    print_table(mrows);
    std::printf("  (means over the runs that succeeded; best_p@1 = best over epochs, min..max over seeds; sched_%% "
                "= (rebuild + detect + reinsert s) / train_s, upkeep_%% = (rebuild + detect + reinsert + learn s) "
                "/ train_s, each averaged over runs)\n");
    if (has_exact)
      std::printf("  note: lsh-exact retrieves by brute force; its recall@5 measures tables it does not use\n");
  }

  // Ratios against lsh-fixed, from the means over seeds.
  const MeanFigures base = complete_means(rep, "lsh-fixed");
  for (size_t v = 0; v < nv; ++v) {
    const char* name = rep.variants[v]->name;
    if (std::strcmp(name, "lsh-fixed") == 0) continue;
    const MeanFigures f = complete_means(rep, name);
    std::printf("ratio %s %s/lsh-fixed p@1=%+.4f time=%.3f rebuilds=%.3f recall=%.3f best_p@1=%+.4f\n", spec.name,
                name, f.p1_final - base.p1_final, ratio(f.train_seconds, base.train_seconds),
                ratio(f.rebuilds, base.rebuilds), ratio(f.recall, base.recall), f.p1_best - base.p1_best);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string err = parse_args(argc, argv, &o);
  if (!err.empty()) return usage_error("bench-ablation", err, usage);
  // Run datasets and variants in a fixed order whatever order they were listed in; seeds in the given order.
  std::vector<const VariantSpec*> variants;
  for (const VariantSpec& v : kVariants)
    if (o.variants.empty() || std::find(o.variants.begin(), o.variants.end(), v.name) != o.variants.end())
      variants.push_back(&v);

  const Config d;
  print_banner("ablation", o, d);
  std::printf("config defaults: hidden=%u batch=%u lr=%g seed=%llu | lsh: hash=%s K=%u L=%u density=%g "
              "bucket_capacity=%u min_active=%u max_active=%u tail_drift=%g rehash_every=%u rehash_decay=%g | scheduler: "
              "check_every=%u detector_bits=%u tau=%g full_rebuild_fraction=%g drift_epsilon=%g | learning: "
              "learn_queries=%u hash_steps=%u hash_lr=%g binarize=%d triplet_margin=%g\n",
              d.hidden, d.batch_size, double(d.learning_rate), (unsigned long long)d.seed,
              d.hash == mongoose::HashFamily::dwta ? "dwta" : "simhash", d.K, d.L, double(d.hash_density),
              d.bucket_capacity, d.min_active, d.max_active, double(d.tail_drift), d.rehash_every, double(d.rehash_decay), d.check_every,
              d.detector_bits, double(d.tau), double(d.full_rebuild_fraction), double(d.drift_epsilon),
              d.learn_queries, d.hash_steps, double(d.hash_lr), int(d.hash_binarize), double(d.triplet_margin));
  std::printf("variants:");
  for (const VariantSpec* v : variants) {
    const Config c = config_of(*v, o.threads, d.seed);
    if (c.output == OutputMode::full)
      std::printf(" %s(output=full)", v->name);
    else
      std::printf(" %s(lsh scheduler=%s learn_hash=%d learn_every=%u%s%s)", v->name, scheduler_name(c.scheduler),
                  int(c.learn_hash), c.learn_every, c.exact_retrieval ? " exact_retrieval=1" : "",
                  c.learn_hash && c.hash_loss == mongoose::HashLoss::triplet ? " hash_loss=triplet" : "");
  }
  std::printf("\nseeds: %s\n(timings are wall clock and vary with machine load)\n", seeds_text(o.seeds).c_str());
  std::fflush(stdout);

  bool any_failed = false;
  std::vector<DatasetReport> reports;
  for (const DatasetSpec& spec : kDatasets) {
    if (!dataset_wanted(o, spec)) continue;
    DatasetReport rep;
    rep.spec = &spec;
    rep.variants = variants;
    rep.seeds = o.seeds;
    rep.results.resize(variants.size() * o.seeds.size());
    for (size_t s = 0; s < o.seeds.size(); ++s)  // seed by seed, so early seeds compare all variants
      for (size_t v = 0; v < variants.size(); ++v) {
        RunResult r = run_isolated(o, spec, *variants[v], o.seeds[s]);
        const std::string what = std::string(variants[v]->name) + " seed " + fmt_u(o.seeds[s]);
        if (report_failure(spec, what.c_str(), r)) any_failed = true;
        rep.results[v * o.seeds.size() + s] = std::move(r);
      }
    reports.push_back(std::move(rep));
  }

  double p1_gain = kNaN, rebuild_reduction = kNaN, schedule_share = kNaN, recall_gain = kNaN;
  double best_p1_gain = kNaN, exact_best_p1_gain = kNaN, mongoose_best_p1 = kNaN, full_best_p1 = kNaN;
  double seconds_to_full_best = kNaN;
  int reached = -1, seed_count = int(o.seeds.size());
  for (const DatasetReport& rep : reports) {
    report_dataset(rep);
    if (std::strcmp(rep.spec->key, "citeulike") != 0) continue;
    const MeanFigures fixed = complete_means(rep, "lsh-fixed");
    const MeanFigures exact = complete_means(rep, "lsh-exact");
    const MeanFigures learned = complete_means(rep, "lsh-learned");
    const MeanFigures mongo = complete_means(rep, "mongoose");
    const MeanFigures full = complete_means(rep, "full");
    p1_gain = mongo.p1_final - fixed.p1_final;
    best_p1_gain = mongo.p1_best - fixed.p1_best;
    exact_best_p1_gain = exact.p1_best - fixed.p1_best;
    mongoose_best_p1 = mongo.p1_best;
    full_best_p1 = full.p1_best;
    rebuild_reduction = ratio(fixed.rebuilds, mongo.rebuilds);
    if (fixed.complete() && mongo.complete() && mongo.rebuilds == 0) rebuild_reduction = kInf;  // never rebuilt
    schedule_share = mongo.upkeep_share;
    recall_gain = ratio(learned.recall, fixed.recall);
    seconds_to_full_best = seconds_to_reach(rep, "mongoose", full.p1_best, &reached, &seed_count);
  }
  const std::string reached_text = reached < 0 ? "nan" : std::to_string(reached) + "/" + std::to_string(seed_count);
  std::printf("result citeulike_mongoose_p1_gain=%.4f citeulike_rebuild_reduction=%.3f citeulike_schedule_share=%.4f "
              "citeulike_recall_gain_learned=%.3f citeulike_mongoose_best_p1_gain=%.4f "
              "citeulike_exact_best_p1_gain=%.4f citeulike_mongoose_best_p1=%.4f citeulike_full_best_p1=%.4f "
              "citeulike_mongoose_seconds_to_full_best=%.2f citeulike_mongoose_reached_full_best=%s\n",
              p1_gain, rebuild_reduction, schedule_share, recall_gain, best_p1_gain, exact_best_p1_gain,
              mongoose_best_p1, full_best_p1, seconds_to_full_best, reached_text.c_str());
  return any_failed ? 1 : 0;
}
