// mongoose-train: trains a model on XC text files and reports P@k.
//
//   c++ -O2 -std=c++17 -pthread examples/train.cpp mongoose.cpp -o mongoose-train
//   ./mongoose-train --train train.txt --test test.txt --epochs 5 --output lsh
//
// Prints a progress line on stderr when it is a terminal, and exactly one line on stdout:
//   result mode=... epochs=E train_seconds=X examples_per_second=X p@1=X p@3=X p@5=X peak_rss_mb=X ...
// Exit status: 0 on success, 1 on a training or data error, 2 on a usage error.

#include "../mongoose.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
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
               "  --hidden N          hidden units (128)\n"
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
               "  --detector-bits N   change-detector bits per neuron (16)\n"
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
               "  --save FILE         save the trained model (atomically: FILE.tmp, then rename)\n"
               "  --load FILE         start from a saved model (continue training, or --epochs 0 to\n"
               "                      only evaluate); its shape and index settings win\n"
               "  --scalar            force the portable scalar kernels\n",
               d.K, d.L, d.min_active, d.max_active, double(d.triplet_margin), double(d.tail_drift));
}

bool parse_number(const char* s, double* out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno || end == s || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
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
    if (i + 1 >= argc) return "missing value after " + a;
    std::string v = argv[++i];
    double x = 0;
    auto num = [&](double lo, double hi) -> bool {
      return parse_number(v.c_str(), &x) && x >= lo && x <= hi;
    };
    auto bad = [&](const char* range) { return "bad value '" + v + "' for " + a + " (expected " + range + ")"; };
    auto onoff = [&](bool* flag) -> bool {
      if (v == "on") *flag = true;
      else if (v == "off") *flag = false;
      else return false;
      return true;
    };
    if (a == "--train") o->train = v;
    else if (a == "--test") o->test = v;
    else if (a == "--log") o->log = v;
    else if (a == "--save") o->save = v;
    else if (a == "--load") o->load = v;
    else if (a == "--hidden") { if (!num(1, 65536)) return bad("1..65536"); o->cfg.hidden = uint32_t(x); }
    else if (a == "--epochs") { if (!num(0, 1e6)) return bad("0..1000000"); o->epochs = int(x); }
    else if (a == "--batch") { if (!num(1, 65536)) return bad("1..65536"); o->cfg.batch_size = uint32_t(x); }
    else if (a == "--lr") { if (!num(1e-9, 1)) return bad("a number in (0, 1]"); o->cfg.learning_rate = float(x); }
    else if (a == "--threads") { if (!num(0, 1024)) return bad("0..1024"); o->cfg.threads = uint32_t(x); }
    else if (a == "--seed") { if (!num(0, 1e18)) return bad("a non-negative integer"); o->cfg.seed = uint64_t(x); }
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
    } else if (a == "--K") { if (!num(1, 24)) return bad("1..24"); o->cfg.K = uint32_t(x); }
    else if (a == "--L") { if (!num(1, 1024)) return bad("1..1024"); o->cfg.L = uint32_t(x); }
    else if (a == "--bucket-capacity") { if (!num(1, 65535)) return bad("1..65535"); o->cfg.bucket_capacity = uint32_t(x); }
    else if (a == "--min-active") { if (!num(0, 4e9)) return bad("a count"); o->cfg.min_active = uint32_t(x); }
    else if (a == "--max-active") { if (!num(0, 4e9)) return bad("a count"); o->cfg.max_active = uint32_t(x); }
    else if (a == "--rehash-every") { if (!num(0, 4e9)) return bad("a count"); o->cfg.rehash_every = uint32_t(x); }
    else if (a == "--rehash-decay") { if (!num(0, 1)) return bad("0..1"); o->cfg.rehash_decay = float(x); }
    else if (a == "--new-hash-every") { if (!num(0, 4e9)) return bad("a count"); o->cfg.new_hash_every = uint32_t(x); }
    else if (a == "--scheduler") {
      if (v == "fixed") o->cfg.scheduler = mongoose::Scheduler::fixed;
      else if (v == "detect") o->cfg.scheduler = mongoose::Scheduler::detect;
      else if (v == "incremental") o->cfg.scheduler = mongoose::Scheduler::incremental;
      else return bad("fixed, detect or incremental");
    } else if (a == "--tau") { if (!num(1e-9, 1)) return bad("a number in (0, 1]"); o->cfg.tau = float(x); }
    else if (a == "--check-every") { if (!num(1, 4e9)) return bad("a count >= 1"); o->cfg.check_every = uint32_t(x); }
    else if (a == "--detector-bits") { if (!num(1, 32)) return bad("1..32"); o->cfg.detector_bits = uint32_t(x); }
    else if (a == "--learn-hash") { if (!onoff(&o->cfg.learn_hash)) return bad("on or off"); }
    else if (a == "--learn-every") { if (!num(0, 4e9)) return bad("a count"); o->cfg.learn_every = uint32_t(x); }
    else if (a == "--hash-lr") { if (!num(1e-9, 1)) return bad("a number in (0, 1]"); o->cfg.hash_lr = float(x); }
    else if (a == "--hash-steps") { if (!num(1, 10000)) return bad("1..10000"); o->cfg.hash_steps = uint32_t(x); }
    else if (a == "--binarize") { if (!onoff(&o->cfg.hash_binarize)) return bad("on or off"); }
    else if (a == "--hash-loss") {
      if (v == "bce") o->cfg.hash_loss = mongoose::HashLoss::bce;
      else if (v == "triplet") o->cfg.hash_loss = mongoose::HashLoss::triplet;
      else return bad("bce or triplet");
    } else if (a == "--triplet-margin") { if (!num(1e-9, 2)) return bad("a number in (0, 2]"); o->cfg.triplet_margin = float(x); }
    else if (a == "--exact-retrieval") { if (!onoff(&o->cfg.exact_retrieval)) return bad("on or off"); }
    else if (a == "--tail-drift") { if (!num(0, 10)) return bad("a number in [0, 10]"); o->cfg.tail_drift = float(x); }
    else if (a == "--sampling-correction") { if (!onoff(&o->cfg.sampling_correction)) return bad("on or off"); }
    else if (a == "--infer") {
      if (v != "full" && v != "lsh") return bad("full or lsh");
      o->infer = v;
    } else return "unknown option " + a;
  }
  if (o->train.empty()) return "--train FILE is required";
  if (o->test.empty()) return "--test FILE is required";
  if (o->infer == "lsh" && o->cfg.output != mongoose::OutputMode::lsh) return "--infer lsh needs --output lsh";
  return "";
}

double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
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
  mongoose::Dataset train, test;
  mongoose::Status st = mongoose::read_xc(o.train, &train);
  if (st.ok()) st = mongoose::read_xc(o.test, &test);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  if (test.features > train.features || test.labels > train.labels) {
    std::fprintf(stderr, "mongoose-train: %s declares %zu features and %zu labels, more than %s (%zu, %zu)\n",
                 o.test.c_str(), test.features, test.labels, o.train.c_str(), train.features, train.labels);
    return 1;
  }
  if (o.normalize) {
    mongoose::normalize_rows(&train);
    mongoose::normalize_rows(&test);
  }

  const bool tty = isatty(STDERR_FILENO);
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
    }
  }
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  FILE* log = nullptr;
  if (!o.log.empty()) {
    log = std::fopen(o.log.c_str(), "w");
    if (!log) {
      std::fprintf(stderr, "mongoose-train: cannot create %s: %s\n", o.log.c_str(), std::strerror(errno));
      return 1;
    }
    std::fprintf(log, "epoch,seconds,loss,p@1,p@3,p@5\n");
  }
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
      if (log) {
        std::fprintf(log, "%d,%.3f,%.5f,%.5f,%.5f,%.5f\n", e + 1, s.seconds, s.mean_loss_last_epoch, m.p_at_1,
                     m.p_at_3, m.p_at_5);
        std::fflush(log);
      }
    }
  }
  if (st.ok() && !evaluated_last) st = model.evaluate(test, mongoose::InferMode::full, &m);
  if (log) std::fclose(log);
  if (st.ok() && !o.save.empty()) st = mongoose::save_model(model, o.save);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-train: %s\n", st.message().c_str());
    return 1;
  }
  const mongoose::TrainStats& s = model.stats();
  std::string line = "result mode=" + std::string(o.mongoose_mode ? "mongoose" : o.cfg.output == mongoose::OutputMode::lsh ? "lsh" : "full");
  char buf[512];
  std::snprintf(buf, sizeof buf,
                " epochs=%d train_seconds=%.3f examples_per_second=%.1f p@1=%.4f p@3=%.4f p@5=%.4f peak_rss_mb=%.1f",
                epochs_done, s.seconds, s.seconds > 0 ? double(s.examples) / s.seconds : 0.0, m.p_at_1, m.p_at_3,
                m.p_at_5, peak_rss_mb());
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
  return 0;
}
