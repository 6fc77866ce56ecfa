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

#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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
};

const VariantSpec kVariants[] = {
    {"full", OutputMode::full, Scheduler::fixed, false, 0},
    {"lsh-fixed", OutputMode::lsh, Scheduler::fixed, false, 0},
    {"lsh-detect", OutputMode::lsh, Scheduler::detect, false, 0},
    {"lsh-incremental", OutputMode::lsh, Scheduler::incremental, false, 0},
    {"lsh-learned", OutputMode::lsh, Scheduler::fixed, true, 0},
    {"mongoose", OutputMode::lsh, Scheduler::detect, true, 0},
};

struct Options : BenchOptions {
  std::vector<std::string> variants;  // empty = all
};

void usage(FILE* out) {
  print_common_usage(out, "bench-ablation");
  std::fprintf(out,
               "  --variants LIST      comma-separated subset of full,lsh-fixed,lsh-detect,\n"
               "                       lsh-incremental,lsh-learned,mongoose (all)\n");
}

// Returns "" or an error message.
std::string parse_args(int argc, char** argv, Options* o) {
  std::vector<std::string> names;
  for (const VariantSpec& v : kVariants) names.push_back(v.name);
  return parse_bench_args(argc, argv, o, usage,
                          {"--variants", &o->variants, names, "--variants needs at least one variant", "variant",
                           "full, lsh-fixed, lsh-detect, lsh-incremental, lsh-learned or mongoose"});
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

RunResult run_one(const Options& o, const DatasetSpec& spec, const VariantSpec& variant) {
  RunResult r;
  RunSummary& s = r.summary;
  Dataset train, test;
  if (!load_dataset(o, spec, &train, &test, &s)) return r;

  const Config cfg = config_of(variant, o.threads);
  const bool is_lsh = variant.output == OutputMode::lsh;
  s.min_active = cfg.min_active;
  s.all_active = is_lsh && size_t(cfg.min_active) >= train.labels;
  Model model;
  if (!init_model(cfg, train, &model, &s)) return r;

  Status st = train_epochs(&model, train, test, o.epochs, &r, [&](EpochRecord* rec, double wall, const Metrics& m) {
    rec->rehashes = model.stats().rehashes;
    std::printf("epoch %-11s %-15s %3d  train_s=%8.2f  p@1=%.4f  p@5=%.4f  loss=%.4f  rebuilds=%llu  "
                "epoch_wall_s=%.2f  eval_s=%.2f\n",
                spec.name, variant.name, rec->epoch, rec->train_seconds, rec->p1, rec->p5, rec->loss,
                (unsigned long long)rec->rehashes, wall, m.seconds);
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
RunResult run_isolated(const Options& o, const DatasetSpec& spec, const VariantSpec& variant) {
  return run_in_child("bench-ablation", std::string(spec.name) + " " + variant.name + " in-process",
                      [&] { return run_one(o, spec, variant); }, nullptr);
}

//-----------------------------------------------------------------------------------------------
// Report
//-----------------------------------------------------------------------------------------------

std::string fmt_u(uint64_t v) { return std::to_string((unsigned long long)v); }

double ratio(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return kNaN;
  if (b == 0) return a == 0 ? kNaN : kInf;
  return a / b;
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
  print_dataset_heading(spec, rep.results);

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

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string err = parse_args(argc, argv, &o);
  if (!err.empty()) return usage_error("bench-ablation", err, usage);
  // Run datasets and variants in a fixed order whatever order they were listed in.
  std::vector<const VariantSpec*> variants;
  for (const VariantSpec& v : kVariants)
    if (o.variants.empty() || std::find(o.variants.begin(), o.variants.end(), v.name) != o.variants.end())
      variants.push_back(&v);

  const Config d;
  print_banner("ablation", o, d);
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
    if (!dataset_wanted(o, spec)) continue;
    DatasetReport rep;
    rep.spec = &spec;
    for (const VariantSpec* v : variants) {
      RunResult r = run_isolated(o, spec, *v);
      if (report_failure(spec, v->name, r)) any_failed = true;
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
