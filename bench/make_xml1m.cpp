// bench/make_xml1m.cpp - a synthetic extreme multi-label data set with 10^6 labels.
//
// Build (from the repository root):
//   c++ -O2 -std=c++17 -pthread bench/make_xml1m.cpp mongoose.cpp -o /tmp/make-xml1m
// Run:
//   /tmp/make-xml1m [--out /work/data-large/xml1m] [--seed 20240601] [--train-rows 500000]
//                   [--test-rows 50000] [--labels 1000000] [--features 200000] [--zipf 0.8]
// About 4 s on one core with the defaults (it prints its own timing); ~102 MB on disk.
//
// Output, in --out (XC text format, written with mongoose::write_xc):
//   xml1m_train.txt, xml1m_test.txt   header "rows features labels"
//   xml1m_test_20k.txt                20,000 test rows, every (n/20000)-th row of xml1m_test.txt
//   xml1m_stats.txt                   the statistics printed on stdout
//
// Why it exists. The small real sets (citeulike-t: 53K labels, ~11 per row) let a batch's own
// labels cover a large share of the output layer and let a shortlist of frequent labels catch
// most test labels. At Amazon-670K's shape (most labels rare, ~5 labels per row) neither holds,
// and the hash tables must supply the hard negatives. This set reproduces that regime with a
// known generative structure:
//
//   * Label popularity is Zipf: the label of frequency rank r is drawn with weight r^-s. With
//     s = 0.8 and 10^6 labels the 1,024 most popular labels carry 21% of the popularity draws
//     (s = 1 would give 52%); since a third of a row's labels are cluster mates (below), mostly
//     tail labels, the 1,024 most frequent training labels cover ~16% of the test labels, so a
//     frequency shortlist cannot do the job. Label ids are a random permutation of ranks, so id
//     order says nothing about frequency. The price of a long tail: with 500K train rows (~1.5M
//     label draws) about half the labels never occur in train and ~19% of the test labels are
//     such labels (the same as pure Zipf sampling gives); a row is unlearnable only when all of
//     its labels are, which the stats report.
//   * Labels come in clusters of 50 (a random grouping). Each cluster owns a pool of 16 "topic"
//     features; each label's prototype is 3 features from its cluster's pool plus 5 features of
//     its own drawn from the whole space. Labels of one cluster therefore share features and
//     have similar weight vectors, so their nearest neighbours (what LSH retrieves) are
//     meaningful, and they are each other's hard negatives; the 5 own features tell them apart.
//   * A row has 1..5 labels (uniform). The first is drawn by popularity; each further one is,
//     with probability 1/2, another member of the first label's cluster, drawn by popularity
//     within the cluster (labels co-occur with related labels, as tags do), otherwise another
//     popularity draw. Labels within a row are distinct.
//   * A row's features: each prototype feature of each of its labels, kept with probability 0.6
//     (at least one per label, so no label is invisible in its row), plus 5 background features
//     drawn from a Zipf(1) over the feature space (like stop words: frequent, uninformative).
//     All values are 1; duplicates are merged.
//
// Determinism: every random choice goes through mongoose::Rng, with separate streams (from
// mongoose::mix_seed) for the label structure, the train rows and the test rows, so the same seed
// gives byte-identical files, and changing --train-rows leaves the structure and the test set
// unchanged. Popularity draws use 53-bit uniforms: a float's 2^-24 steps are coarser than the
// probability of a tail label (~2e-7 per draw), which would distort the tail.
//
// Exit status: 0 on success, 1 on an I/O error, 2 on a usage error.

#include "../mongoose.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string out = "/work/data-large/xml1m";
  uint64_t seed = 20240601;
  size_t train_rows = 500000, test_rows = 50000;
  size_t labels = 1000000, features = 200000;
  double zipf = 0.8;
};

// Shape of the generative model (see the header comment for why these values).
constexpr size_t kClusterSize = 50;        // labels per cluster
constexpr size_t kClusterPool = 16;        // topic features owned by each cluster
constexpr size_t kFromPool = 3;            // prototype features a label takes from its pool
constexpr size_t kOwn = 5;                 // prototype features of the label's own
constexpr size_t kPrototype = kFromPool + kOwn;
constexpr size_t kMaxLabels = 5;           // labels per row: uniform in [1, kMaxLabels]
constexpr double kSameCluster = 0.5;       // chance an extra label comes from the first's cluster
constexpr double kKeep = 0.6;              // chance each prototype feature shows up
constexpr size_t kBackground = 5;          // background features per row
constexpr double kBackgroundZipf = 1.0;
constexpr size_t kQuickTestRows = 20000;   // size of xml1m_test_20k.txt
constexpr size_t kShortlist = 1024;        // the frequency shortlist whose coverage we report

double uniform53(mongoose::Rng& rng) { return double(rng.next() >> 11) * 0x1.0p-53; }

// Samples ranks 0..n-1 with weight (rank+1)^-s, by binary search in the cumulative weights, and
// maps each rank to an id through a random permutation.
class ZipfSampler {
 public:
  ZipfSampler(size_t n, double s, mongoose::Rng& rng) : cdf_(n), id_of_rank_(n) {
    double total = 0;
    for (size_t r = 0; r < n; ++r) cdf_[r] = total += std::pow(double(r + 1), -s);
    std::iota(id_of_rank_.begin(), id_of_rank_.end(), 0u);
    for (size_t i = n; i > 1; --i) std::swap(id_of_rank_[i - 1], id_of_rank_[rng.below(uint32_t(i))]);
  }
  uint32_t operator()(mongoose::Rng& rng) const {
    double u = uniform53(rng) * cdf_.back();
    size_t rank = size_t(std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
    return id_of_rank_[std::min(rank, cdf_.size() - 1)];
  }
  // Share of all draws that fall on the k most popular ids.
  double head_mass(size_t k) const { return cdf_[std::min(k, cdf_.size()) - 1] / cdf_.back(); }
  // Every id's weight, indexed by id.
  std::vector<double> weights() const {
    std::vector<double> w(cdf_.size());
    for (size_t r = 0; r < cdf_.size(); ++r) w[id_of_rank_[r]] = cdf_[r] - (r ? cdf_[r - 1] : 0.0);
    return w;
  }

 private:
  std::vector<double> cdf_;
  std::vector<uint32_t> id_of_rank_;
};

// The fixed part of the model: label popularity, clusters, prototypes, background features.
struct Structure {
  ZipfSampler label_popularity, background;
  std::vector<uint32_t> cluster_members;  // labels grouped by cluster, kClusterSize per block
  std::vector<double> cluster_cdf;        // cumulative popularity within each block
  std::vector<uint32_t> position_of;      // label -> its index in cluster_members
  std::vector<uint32_t> prototype;        // label l's features: [l * kPrototype, +kPrototype)
  size_t labels;

  Structure(const Options& o, mongoose::Rng& rng)
      : label_popularity(o.labels, o.zipf, rng), background(o.features, kBackgroundZipf, rng),
        cluster_members(o.labels), cluster_cdf(o.labels), position_of(o.labels), prototype(o.labels * kPrototype),
        labels(o.labels) {
    std::iota(cluster_members.begin(), cluster_members.end(), 0u);
    for (size_t i = o.labels; i > 1; --i)
      std::swap(cluster_members[i - 1], cluster_members[rng.below(uint32_t(i))]);
    size_t clusters = (o.labels + kClusterSize - 1) / kClusterSize;
    std::vector<uint32_t> pool(clusters * kClusterPool);
    std::vector<double> weight = label_popularity.weights();
    for (auto& f : pool) f = rng.below(uint32_t(o.features));
    for (size_t pos = 0; pos < o.labels; ++pos) {
      uint32_t label = cluster_members[pos];
      uint32_t c = uint32_t(pos / kClusterSize);
      position_of[label] = uint32_t(pos);
      cluster_cdf[pos] = (pos % kClusterSize ? cluster_cdf[pos - 1] : 0.0) + weight[label];
      uint32_t* p = &prototype[size_t(label) * kPrototype];
      for (size_t k = 0; k < kFromPool; ++k) p[k] = pool[c * kClusterPool + rng.below(kClusterPool)];
      for (size_t k = kFromPool; k < kPrototype; ++k) p[k] = rng.below(uint32_t(o.features));
    }
  }

  // Another member of label's cluster, drawn by popularity among the others (label itself
  // is excluded by skipping its stretch of the cumulative weights). Drawing by popularity rather
  // than uniformly keeps each label's overall frequency close to its Zipf weight: a uniform draw
  // would give the cluster mates of popular labels far more occurrences than their rank does,
  // and leave more test labels unseen in train. Returns label itself when it has no mates.
  uint32_t random_cluster_mate(uint32_t label, mongoose::Rng& rng) const {
    size_t self = position_of[label];
    size_t begin = self / kClusterSize * kClusterSize, end = std::min(begin + kClusterSize, labels);
    double before = self > begin ? cluster_cdf[self - 1] : 0.0;
    double own = cluster_cdf[self] - before;
    double others = cluster_cdf[end - 1] - own;
    if (!(others > 0)) return label;
    double u = uniform53(rng) * others;
    if (u >= before) u += own;
    size_t pos = size_t(std::upper_bound(cluster_cdf.begin() + long(begin), cluster_cdf.begin() + long(end), u) -
                        cluster_cdf.begin());
    return cluster_members[std::min(pos, end - 1)];
  }
};

// Dataset::add_row reserves exactly size + nnz on every call, which defeats the vectors'
// geometric growth: appending row by row then copies the whole array each time, quadratic in the
// row count (over 10 minutes without finishing 500K rows). Reserving an upper bound up front
// makes those calls no-ops.
void reserve_rows(mongoose::Dataset* d, size_t rows, size_t max_labels, size_t max_nnz) {
  d->row_offsets.reserve(rows + 1);
  d->label_offsets.reserve(rows + 1);
  d->feature_ids.reserve(rows * max_nnz);
  d->feature_values.reserve(rows * max_nnz);
  d->label_ids.reserve(rows * max_labels);
}

mongoose::Status generate(const Structure& s, const Options& o, size_t rows, mongoose::Rng& rng,
                          mongoose::Dataset* out) {
  mongoose::Dataset d;
  d.features = o.features;
  d.labels = o.labels;
  size_t max_labels = std::min(kMaxLabels, o.labels);
  reserve_rows(&d, rows, max_labels, max_labels * kPrototype + kBackground);
  std::vector<uint32_t> labels, ids;
  std::vector<float> values;
  for (size_t r = 0; r < rows; ++r) {
    size_t want = 1 + rng.below(uint32_t(max_labels));
    labels.assign(1, s.label_popularity(rng));
    while (labels.size() < want) {
      uint32_t l = uniform53(rng) < kSameCluster ? s.random_cluster_mate(labels[0], rng)
                                                 : s.label_popularity(rng);
      if (std::find(labels.begin(), labels.end(), l) == labels.end()) labels.push_back(l);
    }
    ids.clear();
    for (uint32_t l : labels) {
      const uint32_t* p = &s.prototype[size_t(l) * kPrototype];
      size_t before = ids.size();
      for (size_t k = 0; k < kPrototype; ++k)
        if (uniform53(rng) < kKeep) ids.push_back(p[k]);
      if (ids.size() == before) ids.push_back(p[rng.below(uint32_t(kPrototype))]);
    }
    for (size_t k = 0; k < kBackground; ++k) ids.push_back(s.background(rng));
    std::sort(labels.begin(), labels.end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    values.assign(ids.size(), 1.0f);
    mongoose::Status st = d.add_row(ids.data(), values.data(), ids.size(), labels.data(), labels.size());
    if (!st.ok()) return st;
  }
  *out = std::move(d);
  return mongoose::Status();
}

// Rows floor(k * n / m), k = 0..m-1: spread evenly over the whole file.
mongoose::Dataset even_subset(const mongoose::Dataset& d, size_t m) {
  mongoose::Dataset sub;
  sub.features = d.features;
  sub.labels = d.labels;
  m = std::min(m, d.rows);
  size_t max_nnz = 0, max_labels = 0;
  for (size_t r = 0; r < d.rows; ++r) {
    max_nnz = std::max(max_nnz, size_t(d.row_offsets[r + 1] - d.row_offsets[r]));
    max_labels = std::max(max_labels, size_t(d.label_offsets[r + 1] - d.label_offsets[r]));
  }
  reserve_rows(&sub, m, max_labels, max_nnz);
  for (size_t k = 0; k < m; ++k) {
    mongoose::Dataset::Row row = d.row(size_t(uint64_t(k) * d.rows / m));
    (void)sub.add_row(row.ids, row.values, row.nnz, row.labels, row.num_labels);  // ids known valid
  }
  return sub;
}

bool parse_size(const char* s, size_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') return false;
  *out = size_t(v);
  return true;
}

void usage(FILE* f) {
  std::fprintf(f,
               "usage: make-xml1m [--out DIR] [--seed N] [--train-rows N] [--test-rows N]\n"
               "                  [--labels N] [--features N] [--zipf S]\n"
               "defaults: --out /work/data-large/xml1m --seed 20240601 --train-rows 500000\n"
               "          --test-rows 50000 --labels 1000000 --features 200000 --zipf 0.8\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") { usage(stdout); return 0; }
    if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); usage(stderr); return 2; }
    const char* v = argv[++i];
    size_t n = 0;
    bool ok = true;
    if (a == "--out") o.out = v;
    else if (a == "--seed") { ok = parse_size(v, &n); o.seed = n; }
    else if (a == "--train-rows") ok = parse_size(v, &o.train_rows);
    else if (a == "--test-rows") ok = parse_size(v, &o.test_rows);
    else if (a == "--labels") ok = parse_size(v, &o.labels);
    else if (a == "--features") ok = parse_size(v, &o.features);
    else if (a == "--zipf") {
      char* end = nullptr;
      o.zipf = std::strtod(v, &end);
      ok = end != v && !*end && o.zipf >= 0 && o.zipf <= 4;
    } else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); usage(stderr); return 2; }
    if (!ok) { std::fprintf(stderr, "bad value for %s: %s\n", a.c_str(), v); return 2; }
  }
  if (o.labels < 1 || o.labels > 0xFFFFFFFFull || o.features < kPrototype || o.features > 0xFFFFFFFFull ||
      o.test_rows < 1) {
    std::fprintf(stderr, "need labels in [1, 2^32), features in [%zu, 2^32), test-rows >= 1\n", kPrototype);
    return 2;
  }

  auto t0 = std::chrono::steady_clock::now();
  auto since = [&](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  mongoose::Rng structure_rng(mongoose::mix_seed(o.seed, 1)), train_rng(mongoose::mix_seed(o.seed, 2)),
      test_rng(mongoose::mix_seed(o.seed, 3));
  Structure structure(o, structure_rng);
  mongoose::Dataset train, test;
  mongoose::Status st = generate(structure, o, o.train_rows, train_rng, &train);
  if (st.ok()) st = generate(structure, o, o.test_rows, test_rng, &test);
  if (!st.ok()) { std::fprintf(stderr, "generate: %s\n", st.message().c_str()); return 1; }
  mongoose::Dataset quick = even_subset(test, kQuickTestRows);
  double generate_seconds = since(t0);

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) { std::fprintf(stderr, "%s: %s\n", o.out.c_str(), ec.message().c_str()); return 1; }
  auto t1 = std::chrono::steady_clock::now();
  const std::string train_path = o.out + "/xml1m_train.txt", test_path = o.out + "/xml1m_test.txt",
                    quick_path = o.out + "/xml1m_test_20k.txt", stats_path = o.out + "/xml1m_stats.txt";
  st = mongoose::write_xc(train_path, train);
  if (st.ok()) st = mongoose::write_xc(test_path, test);
  if (st.ok()) st = mongoose::write_xc(quick_path, quick);
  if (!st.ok()) { std::fprintf(stderr, "%s\n", st.message().c_str()); return 1; }
  double write_seconds = since(t1);

  // Statistics. The shortlist is the kShortlist labels most frequent in *train* (ties by id):
  // what a frequency shortlist built from training data alone would catch on the test set.
  std::vector<uint32_t> train_count(o.labels, 0);
  for (uint32_t l : train.label_ids) ++train_count[l];
  std::vector<uint32_t> by_count(o.labels);
  std::iota(by_count.begin(), by_count.end(), 0u);
  size_t k = std::min(kShortlist, o.labels);
  std::partial_sort(by_count.begin(), by_count.begin() + k, by_count.end(), [&](uint32_t a, uint32_t b) {
    return train_count[a] != train_count[b] ? train_count[a] > train_count[b] : a < b;
  });
  std::vector<char> in_shortlist(o.labels, 0);
  for (size_t i = 0; i < k; ++i) in_shortlist[by_count[i]] = 1;
  size_t covered = 0, unseen = 0, hopeless_rows = 0;  // hopeless: no label of the row is in train
  for (size_t r = 0; r < test.rows; ++r) {
    size_t seen = 0;
    for (uint64_t j = test.label_offsets[r]; j < test.label_offsets[r + 1]; ++j) {
      uint32_t l = test.label_ids[j];
      covered += in_shortlist[l];
      unseen += train_count[l] == 0;
      seen += train_count[l] != 0;
    }
    hopeless_rows += seen == 0;
  }
  size_t seen_labels = size_t(std::count_if(train_count.begin(), train_count.end(), [](uint32_t c) { return c; }));
  std::vector<char> feature_used(o.features, 0);
  for (uint32_t f : train.feature_ids) feature_used[f] = 1;
  size_t used_features = size_t(std::count(feature_used.begin(), feature_used.end(), 1));
  auto per_row = [](size_t total, size_t rows) { return rows ? double(total) / double(rows) : 0.0; };
  auto mb = [](const std::string& p) {
    std::error_code e;
    return double(std::filesystem::file_size(p, e)) / 1e6;
  };

  char buf[4096];
  std::snprintf(
      buf, sizeof buf,
      "seed                       %" PRIu64 "\n"
      "labels                     %zu (zipf %.2f, clusters of %zu)\n"
      "features                   %zu (%zu used in train)\n"
      "train rows                 %zu (%.3f labels/row, %.2f nnz/row)\n"
      "test rows                  %zu (%.3f labels/row, %.2f nnz/row)\n"
      "test_20k rows              %zu\n"
      "distinct labels in train   %zu (%.1f%% of labels)\n"
      "test labels unseen in train  %.4f (test rows with no label seen in train %.4f)\n"
      "top-%zu train labels cover %.4f of test labels (model head mass %.4f)\n"
      "file sizes (MB)            train %.1f, test %.1f, test_20k %.1f\n"
      "seconds                    %.1f total (generate %.1f, write %.1f)\n",
      o.seed, o.labels, o.zipf, kClusterSize, o.features, used_features, train.rows,
      per_row(train.label_ids.size(), train.rows), per_row(train.feature_ids.size(), train.rows),
      test.rows, per_row(test.label_ids.size(), test.rows), per_row(test.feature_ids.size(), test.rows),
      quick.rows, seen_labels, 100.0 * double(seen_labels) / double(o.labels),
      per_row(unseen, test.label_ids.size()), per_row(hopeless_rows, test.rows), k, per_row(covered, test.label_ids.size()),
      structure.label_popularity.head_mass(k), mb(train_path), mb(test_path), mb(quick_path),
      since(t0), generate_seconds, write_seconds);
  std::fputs(buf, stdout);
  std::FILE* f = std::fopen(stats_path.c_str(), "w");
  if (!f || std::fputs(buf, f) < 0 || std::fclose(f) != 0) {
    std::fprintf(stderr, "%s: cannot write\n", stats_path.c_str());
    return 1;
  }
  return 0;
}
