// mongoose.h - LSH-sampled extreme classification with a rebuild scheduler (MONGOOSE, ICLR 2021).
//
// Two files, mongoose.h + mongoose.cpp, C++17 standard library only. Compile with
//   c++ -O2 -std=c++17 -pthread your_program.cpp mongoose.cpp
// AVX2/FMA kernels are compiled with target attributes and chosen at run time, so no -m flags are
// needed; ARM builds with NEON (every AArch64 build; 32-bit with -mfpu=neon) use NEON kernels; a
// portable scalar path runs everywhere else. Models trained on x86 and on ARM are bit-identical
// only with Simd::scalar, the same libm and -ffp-contract=off on ARM (compilers there fuse
// a * b + c by default); the AVX2 and NEON paths differ from scalar in the last bits (fused
// multiply-adds, summation order).
//
// The network: sparse input x (D features) -> hidden h = ReLU(W1^T x + b1) (H units) -> output over
// N labels. The output layer is either the full softmax, or a softmax over the few neurons an LSH
// index retrieves for h (SLIDE), optionally kept current by a change-detecting scheduler and
// learned hash functions (MONGOOSE).
//
// Errors are returned as Status, never thrown across the API: every entry point catches what the
// standard library (std::bad_alloc, ...) or a callback throws and returns it as a Status. The
// library never prints and never exits; it reports progress through a callback if you give it one.
// Everything sized by a caller or a file is checked against a memory budget before it is allocated
// (default_max_bytes; Config::max_bytes, ReadOptions::max_bytes, LoadOptions::max_bytes).
// The checks for NaN and infinity read bit patterns, so they hold under -ffast-math too.
//
// Index of this file (mongoose.cpp follows the same order):
// [SECTION] Status          (also the memory budget and the exception guard's promise)
// [SECTION] Files           (atomic replacement of a file, writability checks)
// [SECTION] Dense math
// [SECTION] Random numbers
// [SECTION] Threads         (internal to mongoose.cpp: a deterministic pool; nothing public)
// [SECTION] Data
// [SECTION] Hashing
// [SECTION] Hash tables
// [SECTION] Configuration   (Config and the enums it uses, TrainStats, Metrics)
// [SECTION] Input layers    (internal: sparse embedding bag, dense matrix)
// [SECTION] Hidden layers   (internal: the dense ReLU stack)
// [SECTION] Hash learning
// [SECTION] Table upkeep and scheduler
// [SECTION] Output layer    (OutputLayer: the sampled or full softmax, usable on its own)
// [SECTION] Model           (the network and its training loop)
// [SECTION] Model I/O
// [SECTION] C API           (C99: opaque handles, status codes and messages; all a C compiler sees)
//
// Quick start:
//   mongoose::Dataset train, test;
//   mongoose::Status st = mongoose::read_xc("train.txt", &train);
//   if (st.ok()) st = mongoose::read_xc("test.txt", &test);
//   mongoose::Config cfg;                 // documented defaults below
//   cfg.output = mongoose::OutputMode::lsh;
//   mongoose::Model model;
//   if (st.ok()) st = model.init(cfg, train.features, train.labels);
//   for (int epoch = 0; st.ok() && epoch < 5; ++epoch) st = model.train_epoch(train);
//   mongoose::Metrics m;
//   if (st.ok()) st = model.evaluate(test, mongoose::InferMode::full, &m);   // m.p_at_1 ...

#ifndef MONGOOSE_H
#define MONGOOSE_H

#define MONGOOSE_VERSION_MAJOR 0
#define MONGOOSE_VERSION_MINOR 1

// Marks the public API (C++ and C). A shared build is compiled with hidden visibility (Meson:
// gnu_symbol_visibility 'inlineshidden'), so it exports what carries this mark and nothing else.
// Windows: define MONGOOSE_BUILD_DLL while building a DLL and MONGOOSE_DLL in code that uses one
// (Meson and mongoose.pc do both); static and vendored builds define neither.
#ifndef MONGOOSE_API
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(MONGOOSE_BUILD_DLL)
#define MONGOOSE_API __declspec(dllexport)
#elif defined(MONGOOSE_DLL)
#define MONGOOSE_API __declspec(dllimport)
#else
#define MONGOOSE_API
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define MONGOOSE_API __attribute__((visibility("default")))
#else
#define MONGOOSE_API
#endif
#endif

// A C compiler sees only [SECTION] C API, at the end of this file.
#ifdef __cplusplus

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mongoose {

//-----------------------------------------------------------------------------------------------
// [SECTION] Status
//-----------------------------------------------------------------------------------------------

// Result of every fallible call: ok, or an error with a message naming the problem and where.
class MONGOOSE_API Status {
 public:
  Status() = default;                                  // ok
  static Status error(std::string message);            // an empty message becomes "error"
  bool ok() const { return message_.empty(); }
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// Default memory budget, in bytes, for what a caller-controlled size or a file's header can make
// the library allocate: 8 GiB where size_t has 64 bits, 1 GiB on 32-bit targets (inside their
// address space). Refusals name the bytes needed and the budget; raise the budget to go beyond.
constexpr size_t default_max_bytes = size_t(1) << (sizeof(size_t) >= 8 ? 33 : 30);

//-----------------------------------------------------------------------------------------------
// [SECTION] Files
//-----------------------------------------------------------------------------------------------
// Every file the library writes (save_model, write_xc, write_file_atomic) is written the same way:
// into a new temporary file next to the target, created exclusively (O_CREAT|O_EXCL: an existing
// name, a symlink included, is never followed or reused), flushed and synced to disk, then renamed
// over the target, and the directory synced. A crash, a full disk or a concurrent writer never
// leaves a half-written file at the target: it holds the old contents or one complete new file.
// A target that exists but is not a regular file (a directory, a device, a FIFO) is refused.
// On Windows the replacement is MoveFileEx(MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH). On
// targets with neither POSIX nor Windows files (bare metal with newlib) only the C library is used:
// exclusive fopen "wbx" and rename (which may not replace an existing file there), without syncing
// to disk (a crash may lose the new contents), and files are sized with ftell (a long: up to 2 GiB
// where long has 32 bits). Elsewhere sizes are 64-bit (fstat with _FILE_OFFSET_BITS=64, _fstat64).

// Writes size bytes to path atomically as above. On error path is untouched and no temporary file
// is left behind; the message names the path and the failing step.
MONGOOSE_API Status write_file_atomic(const std::string& path, const void* data, size_t size);
// Checks now, before long work, that write_file_atomic(path, ...) could succeed: the directory
// exists and accepts a new file (one is created and removed), and path is not a directory or
// device. It cannot promise the disk will still have room later.
MONGOOSE_API Status check_writable(const std::string& path);

//-----------------------------------------------------------------------------------------------
// [SECTION] Dense math
//-----------------------------------------------------------------------------------------------
// Every kernel is written once over a small SIMD vocabulary and instantiated for AVX2+FMA (x86,
// compiled with target attributes), NEON (ARM builds with NEON) and portable scalar. Pointers need
// no alignment; lengths may be 0. Matrices are row-major with an explicit leading dimension
// (floats between row starts). Define MONGOOSE_NO_AVX2 or MONGOOSE_NO_NEON to leave one out.

enum class Simd {
  automatic,  // AVX2+FMA when this CPU has them, NEON on ARM builds with NEON, else scalar
  scalar,     // portable path, forced (tests, comparisons, other targets)
  avx2,       // AVX2+FMA; falls back to scalar when the CPU lacks them (and on non-x86 builds)
  neon,       // NEON; only on ARM builds with NEON, else falls back to scalar
};

// True when the CPU supports AVX2 and FMA (checked once; false on non-x86 builds).
MONGOOSE_API bool cpu_has_avx2();
// True when this build has the NEON kernels: decided at compile time (__ARM_NEON, i.e. every
// AArch64 build and 32-bit ARM with -mfpu=neon; false elsewhere and with MONGOOSE_NO_NEON).
MONGOOSE_API bool cpu_has_neon();

// Adam hyper-parameters for one optimizer step t >= 1, with bias corrections precomputed:
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; w -= lr * (m * c1) / (sqrt(v * c2) + eps),
// c1 = 1 / (1 - b1^t), c2 = 1 / (1 - b2^t).
struct MONGOOSE_API AdamStep {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float c1 = 1.0f, c2 = 1.0f;
  static AdamStep at(float lr, float beta1, float beta2, float eps, uint64_t t);
};

// The kernel table for one instruction set. All functions are pure apart from their outputs.
struct Kernels {
  Simd level;        // Simd::scalar, Simd::avx2 or Simd::neon: what actually runs
  const char* name;  // "scalar", "avx2" or "neon"
  // sum_i a[i] * b[i]
  float (*dot)(const float* a, const float* b, size_t n);
  // y[i] += alpha * x[i]
  void (*axpy)(float alpha, const float* x, float* y, size_t n);
  // x[i] *= alpha
  void (*scale)(float alpha, float* x, size_t n);
  // y[i] += x[i]
  void (*add)(const float* x, float* y, size_t n);
  // out[i] = W[row_i] . x (+ bias[row_i] when bias != nullptr), row_i = rows[i], or i when rows is
  // nullptr; W rows are ld floats apart and x has n floats. The sampled layer's forward.
  void (*row_scores)(const float* W, size_t ld, const uint32_t* rows, size_t count, const float* x,
                     size_t n, const float* bias, float* out);
  // out[0..n) += sum_i coef[i] * W[rows[i]][0..n): the sampled layer's backward to its input.
  void (*rows_axpy)(const float* W, size_t ld, const uint32_t* rows, size_t count, const float* coef,
                    size_t n, float* out);
  // out[0..n) += sum_k values[k] * W[ids[k]][0..n): sparse vector times dense matrix (input layer).
  void (*sparse_matvec)(const uint32_t* ids, const float* values, size_t nnz, const float* W,
                        size_t ld, size_t n, float* out);
  // x[i] = max(x[i], 0)
  void (*relu)(float* x, size_t n);
  // grad[i] = act[i] > 0 ? grad[i] : 0   (act is the ReLU output)
  void (*relu_backward)(const float* act, float* grad, size_t n);
  // log(sum_i exp(x[i])), stable for any finite input; -inf when n == 0.
  float (*logsumexp)(const float* x, size_t n);
  // x[i] = exp(x[i] - logsumexp(x)) in place; returns that log-sum-exp.
  float (*softmax)(float* x, size_t n);
  // Adam on one row of n parameters (see AdamStep); g is the row's gradient.
  void (*adam)(float* w, const float* g, float* m, float* v, size_t n, const AdamStep& step);
  // C[i][j] = A[i] . B[j] for i < M, j < N over K floats (C = A B^T): batched logits.
  void (*gemm_nt)(size_t M, size_t N, size_t K, const float* A, size_t lda, const float* B,
                  size_t ldb, float* C, size_t ldc);
  // C[i][0..N) += sum_k A[i][k] * B[k][0..N) for i < M (C += A B): batched back-propagation.
  void (*gemm_nn_acc)(size_t M, size_t N, size_t K, const float* A, size_t lda, const float* B,
                      size_t ldb, float* C, size_t ldc);
  // C[i][0..N) += sum_k A[k][i] * B[k][0..N) for i < M (C += A^T B; A is K x M, row-major):
  // weight gradients without transposing the upstream gradient.
  void (*gemm_tn_acc)(size_t M, size_t N, size_t K, const float* A, size_t lda, const float* B,
                      size_t ldb, float* C, size_t ldc);
};

// The kernels for the requested level (see Simd). The table is static and lives forever.
MONGOOSE_API const Kernels& kernels(Simd want = Simd::automatic);

//-----------------------------------------------------------------------------------------------
// [SECTION] Random numbers
//-----------------------------------------------------------------------------------------------

// Small, fast, seedable generator (SplitMix64 seeding a xoshiro256** state). Same seed, same
// sequence on every platform. Every random choice in the library goes through one of these.
class MONGOOSE_API Rng {
 public:
  explicit Rng(uint64_t seed = 1);
  uint64_t next();                 // uniform 64 bits
  uint32_t below(uint32_t n);      // uniform in [0, n), n > 0 (unbiased)
  float uniform();                 // uniform in [0, 1)
  float gaussian();                // standard normal

 private:
  uint64_t s_[4];
};

// Mixes several values into one seed (for per-table, per-epoch, per-example streams).
MONGOOSE_API uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

//-----------------------------------------------------------------------------------------------
// [SECTION] Threads
//-----------------------------------------------------------------------------------------------
// Nothing public: training and evaluation run on a fixed pool of Config::threads workers with a
// static partition of the work, so results depend on the seed and the thread count only.
// MONGOOSE_NO_THREADS (define it when compiling mongoose.cpp) builds without <thread>, <mutex> and
// <condition_variable>: everything runs on the calling thread, and any Config::threads (0 included)
// runs as 1, with the results of threads = 1 in a threaded build. It is defined automatically where
// libstdc++ has no threads (mingw-w64's win32 thread model with GCC 12, bare-metal newlib). In such
// a build the const calls documented as thread-safe must not run concurrently.

//-----------------------------------------------------------------------------------------------
// [SECTION] Data
//-----------------------------------------------------------------------------------------------
// The extreme-classification text format: a header line "rows features labels", then one line per
// row: "l1,l2,... f:v f:v ..." with 0-based label ids, then 0-based feature ids with values. A row
// may have no label (the line then starts with a space).

// Largest magnitude of a feature value anywhere (reading, training, evaluation, prediction):
// squared gradients then stay finite in float. Larger values are refused; scale the inputs.
constexpr float max_feature_value = 1e18f;

// A multi-label sparse dataset in CSR form: row r's features are
// feature_ids/values[row_offsets[r] .. row_offsets[r+1]), its labels
// label_ids[label_offsets[r] .. label_offsets[r+1]).
// The invariants (checked by validate(const Dataset&), which every call taking a Dataset runs on
// the rows it uses): features and labels in [1, 2^32); both offset arrays have rows + 1 entries,
// start at 0, never decrease and end at their arrays' sizes; feature ids < features, label ids
// < labels, no id twice in one row (a duplicate is refused, never summed); values finite with
// magnitude <= max_feature_value.
struct MONGOOSE_API Dataset {
  size_t rows = 0, features = 0, labels = 0;
  std::vector<uint64_t> row_offsets{0};
  std::vector<uint32_t> feature_ids;
  std::vector<float> feature_values;
  std::vector<uint64_t> label_offsets{0};
  std::vector<uint32_t> label_ids;
  // Where the rows came from: read_xc sets the file's path. When not empty, errors about row r
  // name "source:line" (line r + 2 of the XC text: the header is line 1).
  std::string source;

  struct Row {
    const uint32_t* ids;
    const float* values;
    size_t nnz;
    const uint32_t* labels;
    size_t num_labels;
  };
  Row row(size_t r) const;  // no checks: r < rows and a valid dataset are the caller's promise
  // Appends one row after checking it (ids < features, labels < labels, no duplicates, values
  // finite and within max_feature_value; null pointers only with a zero count). The error names
  // the row; on error nothing is appended.
  Status add_row(const uint32_t* ids, const float* values, size_t nnz, const uint32_t* labels,
                 size_t num_labels);
  size_t bytes() const;  // memory held by the vectors
};

// Checks every invariant above in O(nnz); the error names the row (and source:line) and the fault.
MONGOOSE_API Status validate(const Dataset& data);

struct ReadOptions {
  // Refuse inputs whose header or contents need more memory than this (bytes), before allocating.
  size_t max_bytes = default_max_bytes;
  // Refuse a line longer than this (bytes), with its line number: a file without newlines (or
  // /dev/zero) cannot grow the reader's buffer without bound. At least 1 KiB.
  size_t max_line_bytes = size_t(64) << 20;
};

// Reads an XC text file: a regular file, or a stream that cannot seek (a pipe, /dev/stdin).
// Streaming, validating: the row count must match the header, ids be in range and not repeated
// within a row, numbers finite, well-formed and within max_feature_value, no NUL bytes, nothing
// trailing. Errors read "path:line:col: what", e.g.
// "data/train.txt:1234:17: feature id 20001 out of range [0, 20000)". On error *out is untouched.
MONGOOSE_API Status read_xc(const std::string& path, Dataset* out, const ReadOptions& options = {});
// The same parser over a memory buffer; `name` is used in error messages and as out->source.
MONGOOSE_API Status parse_xc(const char* text, size_t size, const std::string& name, Dataset* out,
                const ReadOptions& options = {});
// Writes an XC text file atomically (see [SECTION] Files), after validate(data); values with up
// to 9 significant digits, so they read back exactly.
MONGOOSE_API Status write_xc(const std::string& path, const Dataset& data);

// A compact binary copy of a Dataset, for data read many times: a file of checksummed sections
// ("MONGODAT", format version u32, section count u32; then SHAP: rows, features, labels as u64;
// ROWO, FIDS, FVAL, LABO, LIDS: the five arrays, little-endian; END). Converting once with
// save_dataset makes later reads I/O-bound (no parsing); load_dataset checks every checksum,
// every size against the file and ReadOptions::max_bytes before allocating, then validate().
// The file is written atomically (see [SECTION] Files). Errors name the path and byte offset.
MONGOOSE_API Status save_dataset(const std::string& path, const Dataset& data);
MONGOOSE_API Status load_dataset(const std::string& path, Dataset* out, const ReadOptions& options = {});
// Reads either kind: a binary dataset (by its magic) or XC text (read_xc).
MONGOOSE_API Status read_dataset(const std::string& path, Dataset* out, const ReadOptions& options = {});

// Scales each row's feature values to unit L2 norm (rows with no features, or all zeros, are left
// alone). Errors only for a null pointer.
MONGOOSE_API Status normalize_rows(Dataset* data);

// Learnable synthetic multi-label data: each label owns a few "prototype" features; an example
// draws 1..max_labels labels with power-law frequencies and emits a noisy subset of their
// prototypes plus random noise features. Same config, same data.
struct SyntheticConfig {
  size_t train_rows = 20000, test_rows = 5000;
  size_t features = 5000, labels = 2000;
  size_t max_labels = 3;              // labels per example: uniform in [1, max_labels]
  size_t prototype_features = 8;      // features owned by each label
  float keep_probability = 0.6f;      // each prototype feature appears with this probability
  size_t noise_features = 4;          // random features added to every example
  float zipf_exponent = 1.0f;         // label frequency ~ 1 / rank^exponent
  uint64_t seed = 7;
  size_t max_bytes = default_max_bytes;  // refuse configs whose data would need more (bytes)
};
MONGOOSE_API Status make_synthetic(const SyntheticConfig& config, Dataset* train, Dataset* test);

//-----------------------------------------------------------------------------------------------
// [SECTION] Hashing
//-----------------------------------------------------------------------------------------------
// L hash functions, each giving a K-bit bucket id in [0, 2^K).

enum class HashFamily {
  simhash,  // signed random projections: bit b of table t = sign(P[:, t*K+b] . v) > 0
  dwta,     // densified winner-take-all: per bin of 2^bin_bits permuted coordinates, the position
            // of the largest non-zero value (bin_bits bits); empty bins borrow from others
};

struct HashConfig {
  HashFamily family = HashFamily::simhash;
  uint32_t dim = 0;       // input dimension, > 0
  uint32_t K = 6;         // bits per table, 1..24
  uint32_t L = 50;        // tables, 1..1024
  // SimHash projections: 1 = dense Gaussian; in (0, 1) = sparse with entries in {-1, 0, +1},
  // each non-zero with this probability (SLIDE uses 1/3).
  float density = 1.0f;
  uint32_t bin_bits = 3;  // DWTA: bits per bin (bin size 2^bin_bits), 1..8
  uint64_t seed = 1;
};

// Checks a HashConfig; the error names the bad field and its allowed range.
MONGOOSE_API Status validate(const HashConfig& config);

class MONGOOSE_API Hasher {
 public:
  Status init(const HashConfig& config, Simd simd = Simd::automatic);
  const HashConfig& config() const { return config_; }

  // The three hash calls need init first; they fail only for a null pointer or out of memory.
  // codes[0..L) for one dense vector of dim floats.
  Status hash(const float* v, uint32_t* codes) const;
  // codes[0..L) for one sparse vector (ids < dim, checked; DWTA reads only the listed coordinates).
  Status hash_sparse(const uint32_t* ids, const float* values, size_t nnz, uint32_t* codes) const;
  // codes[i*L .. i*L+L) for n dense vectors (row i at vs + i*ld, ld >= dim). SimHash: one matrix
  // product (gemm) then sign packing. `scratch` avoids allocation when reused (grows as needed).
  Status hash_batch(const float* vs, size_t n, size_t ld, uint32_t* codes,
                    std::vector<float>* scratch = nullptr) const;
  // SimHash only: the K*L projections P^T v of n dense vectors into scores (row i at
  // scores + i*K*L; the codes are their signs), for multi-probe queries.
  Status project(const float* vs, size_t n, size_t ld, float* scores) const;

  // SimHash projection matrix: dim rows x (K*L) columns, row-major; column t*K+b is bit b of
  // table t. Any real values work (learned projections, +-1, ...).
  const std::vector<float>& projection() const { return projection_; }
  // Replaces it; the size must be dim * K * L and every value finite.
  Status set_projection(const std::vector<float>& projection);

 private:
  HashConfig config_;
  const Kernels* kernels_ = nullptr;
  std::vector<float> projection_;        // simhash
  std::vector<uint32_t> dwta_positions_; // dwta: coordinate of each slot, bins x 2^bin_bits
  std::vector<int32_t> dwta_slot_of_;    // dwta: per coordinate, first slot index or -1
  std::vector<uint32_t> dwta_next_slot_; // dwta: chain of further slots of the same coordinate
  uint32_t bins_per_table_ = 0;
  void dwta_codes(const float* bin_max_values, const uint32_t* bin_winner, uint32_t* codes) const;
  // The hash calls after their checks (they may throw std::bad_alloc; the callers guard).
  void hash_dense(const float* v, uint32_t* codes) const;
  void hash_sparse_checked(const uint32_t* ids, const float* values, size_t nnz, uint32_t* codes) const;
  void hash_rows(const float* vs, size_t n, size_t ld, uint32_t* codes, std::vector<float>* scratch) const;
};


//-----------------------------------------------------------------------------------------------
// [SECTION] Hash tables
//-----------------------------------------------------------------------------------------------
// L tables of 2^K buckets of 32-bit item ids, each bucket holding at most `bucket_capacity` ids.
// Buckets are allocated when first used, so memory follows what is stored. The tables do not
// remember items' codes: remove/update take them from the caller (the sampled layer keeps them).
// Codes are used modulo 2^K. Item ids index the query's scratch (QueryResult::slot), so they
// should be dense, 0..n-1.

enum class BucketPolicy {
  fifo,       // a full bucket drops its oldest id
  reservoir,  // a full bucket keeps a uniform sample of all ids offered to it (Vitter's R)
};

struct TableConfig {
  uint32_t K = 6, L = 50;           // as in HashConfig
  uint32_t bucket_capacity = 128;   // 1..65535
  BucketPolicy policy = BucketPolicy::reservoir;
  uint64_t seed = 1;                // reservoir choices
};
MONGOOSE_API Status validate(const TableConfig& config);

// Reusable result of a query: the union of the probed buckets with a hit count per item.
// Holds its own buffers, so repeated queries do not allocate once they have grown.
struct MONGOOSE_API QueryResult {
  std::vector<uint32_t> ids;    // distinct items, in first-seen order
  std::vector<uint16_t> hits;   // hits[i]: in how many of the L buckets ids[i] was found
  std::vector<uint32_t> slot;   // internal: per item id, 1 + index into ids, or 0
  void clear();                 // empties ids/hits (cost proportional to ids.size())
};

class MONGOOSE_API HashTables {
 public:
  Status init(const TableConfig& config);
  const TableConfig& config() const { return config_; }

  // The calls below need init first and fail only for null pointers or out of memory (then the
  // tables may hold part of the operation; clear() or build() starts afresh).
  // Adds `id` to bucket codes[t] of each table t (codes has L entries in [0, 2^K)).
  Status insert(uint32_t id, const uint32_t* codes);
  // Removes `id` from the buckets named by codes (where it was inserted); absent ids are ignored.
  Status remove(uint32_t id, const uint32_t* codes);
  // remove(id, old_codes) then insert(id, new_codes), skipping tables whose code did not change.
  Status update(uint32_t id, const uint32_t* old_codes, const uint32_t* new_codes);
  void clear();  // drops every id and frees the buckets
  // Clears, then inserts items 0..n-1 (codes row-major n x L), tables in parallel on `threads`
  // threads. Deterministic for a fixed seed whatever the thread count.
  Status build(const uint32_t* codes, size_t n, uint32_t threads = 1);

  // Union of the buckets codes[t] over all tables, with hit counts, into *out (cleared first).
  // With per_table > 1 (multi-probe), codes holds per_table codes for each table, table by table
  // (table t's at codes[t * per_table ..]); every bucket found counts one hit.
  Status query(const uint32_t* codes, QueryResult* out, size_t per_table = 1) const;
  // Keeps only the m items with the most hits (ties: first seen), in descending hit order.
  static Status keep_top_hits(QueryResult* result, size_t m);
  // The ids in bucket `bucket` of table `table` (empty if never used).
  const std::vector<uint32_t>& bucket(uint32_t table, uint32_t bucket) const;

  size_t stored_ids() const;  // ids held over all buckets
  size_t bytes_used() const;  // heap bytes held by the tables (ids, buckets, directories)

 private:
  struct Bucket {
    std::vector<uint32_t> ids;
    uint32_t offered = 0;  // ids offered since the bucket was cleared (reservoir sampling)
    uint32_t code = 0;
  };
  // One table: the buckets in use, found by code through an open-addressing index, so memory
  // follows the buckets used whatever K is.
  struct Table {
    std::vector<Bucket> buckets;
    std::vector<uint32_t> index;  // power-of-two size; 0 = empty, else 1 + position in buckets
    uint64_t rng_state = 0;
  };
  TableConfig config_;
  std::vector<Table> tables_;
  Bucket* bucket_for_insert(uint32_t table, uint32_t code);
  const Bucket* find_bucket(uint32_t table, uint32_t code) const;
  void insert_into(uint32_t table, uint32_t id, uint32_t code);
  void remove_from(uint32_t table, uint32_t id, uint32_t code);
  Status check_ready(const char* where, bool pointers_given) const;
  // The calls after their checks (they may throw std::bad_alloc; the callers guard).
  void build_tables(const uint32_t* codes, size_t n, uint32_t threads);
  void query_into(const uint32_t* codes, QueryResult* out, size_t per_table) const;
  static void keep_top_hits_into(QueryResult* result, size_t m);
};

//-----------------------------------------------------------------------------------------------
// [SECTION] Configuration
//-----------------------------------------------------------------------------------------------
// One Config describes a network and how it trains: the input layer, the hidden stack, the output
// layer (full or LSH-sampled softmax), its table upkeep and hash learning. Model reads all of it;
// OutputLayer reads the output-layer fields (output mode onwards, plus the optimizer, threads,
// seed, simd and max_bytes) and ignores the network shape.

enum class OutputMode {
  full,  // exact softmax over all N labels (the dense baseline)
  lsh,   // softmax over a few neurons per example: the batch's shared set and the neurons the LSH
         // tables retrieve for it (SLIDE-style; see Config::min_active)
};

enum class InferMode {
  full,  // score every label exactly
  lsh,   // score only the retrieved neurons and the frequent-label shortlist (needs an lsh model)
};

// The input layer's kind (see [SECTION] Input layers).
enum class InputKind {
  sparse,  // embedding bag over sparse features, lazy row-sparse Adam (10^3 to 10^7 features)
  dense,   // dense D x hidden matrix, one GEMM per batch, dense Adam (up to ~10^4 features)
};

// What the hash learner minimises per table t, with u = tanh(P_t^T q), v = tanh(P_t^T w).
enum class HashLoss {
  bce,      // mined pairs: BCE(sigmoid(u . v), label), label 1 for missed top neurons, 0 for
            // retrieved below-median ones
  triplet,  // mined triplets (query, missed top neuron w+, retrieved below-median neuron w- of the
            // same query): max(0, triplet_margin - cos(u, v+) + cos(u, v-))
};

// When the sampled layer's tables are brought up to date (see Config).
enum class Scheduler {
  fixed,        // re-insert every neuron every rehash_every batches (SLIDE)
  detect,       // every check_every batches, measure how many change-detector bits flipped since
                // the last build; rebuild everything when the fraction exceeds tau
  incremental,  // every check_every batches, re-insert only the neurons whose detector code
                // changed (or that drifted more than drift_epsilon); rebuild all when more than
                // full_rebuild_fraction of them did
};

// Training progress, passed to Config::on_progress after every batch.
struct Progress {
  uint64_t epoch = 0;             // 0-based epoch being trained
  uint64_t batch = 0;             // batches done in this epoch
  uint64_t batches_in_epoch = 0;
  double seconds = 0;             // training seconds so far (all epochs)
  double mean_loss = 0;           // mean loss over this epoch's batches so far
};

// Config::on_progress: any callable as bool(const Progress&) (a lambda, a function, a
// std::function), copied in as std::function would be, or empty (default, nullptr). Its own small
// type so that this header needs no <functional>: it halves the lines a user's file compiles.
class ProgressCallback {
 public:
  ProgressCallback() = default;
  ProgressCallback(std::nullptr_t) {}  // NOLINT: empty, as `on_progress = nullptr` reads
  template <class F, class D = std::decay_t<F>,
            class = std::enable_if_t<!std::is_same<D, ProgressCallback>::value &&
                                     std::is_invocable_r<bool, D&, const Progress&>::value>>
  ProgressCallback(F&& f) {  // NOLINT: implicit, as std::function's
    D callable(std::forward<F>(f));
    // A null function pointer or an empty std::function (a class with an explicit operator bool)
    // leaves the callback empty.
    if constexpr (std::is_pointer<D>::value ||
                  (std::is_class<D>::value && !std::is_convertible<D, bool>::value &&
                   std::is_constructible<bool, const D&>::value))
      if (!static_cast<bool>(callable)) return;
    callable_ = std::make_unique<Holder<D>>(std::move(callable));
  }
  ProgressCallback(const ProgressCallback& other) : callable_(other.callable_ ? other.callable_->clone() : nullptr) {}
  ProgressCallback(ProgressCallback&&) noexcept = default;
  ProgressCallback& operator=(const ProgressCallback& other) { return *this = ProgressCallback(other); }
  ProgressCallback& operator=(ProgressCallback&&) noexcept = default;
  explicit operator bool() const { return callable_ != nullptr; }
  bool operator()(const Progress& progress) const { return callable_->call(progress); }  // not empty

 private:
  struct Callable {
    virtual ~Callable() = default;
    virtual bool call(const Progress& progress) = 0;
    virtual std::unique_ptr<Callable> clone() const = 0;
  };
  template <class F>
  struct Holder final : Callable {
    template <class G>
    explicit Holder(G&& g) : f(std::forward<G>(g)) {}
    bool call(const Progress& progress) override { return static_cast<bool>(f(progress)); }
    std::unique_ptr<Callable> clone() const override { return std::make_unique<Holder>(f); }
    F f;
  };
  std::unique_ptr<Callable> callable_;
};

// All options, with their defaults. Checked by Model::init; errors name the field and range.
//
// Optimizer semantics: Adam is lazy (row-sparse) where a layer's gradient is sparse. A row's
// moments and weights change only in batches that give it a gradient: input rows of the features
// present in the batch (sparse input), output rows that are active (every output row in full
// mode); dense layers (dense input, the hidden stack) update every weight every batch. The bias
// corrections use the global step (batches trained). Batches run their examples in parallel;
// gradients are merged per row in a fixed order, so results depend only on the seed and the
// thread count, bit for bit.
struct Config {
  // Network and optimizer.
  InputKind input = InputKind::sparse;
  uint32_t hidden = 128;          // the input layer's width (its ReLU outputs), 1..65536
  // Widths of further dense ReLU layers between the input layer and the output layer, each
  // 1..65536, at most 16 of them; empty (the default) = one hidden layer. E.g. hidden = 256,
  // hidden_layers = {128}: input -> 256 -> 128 -> output.
  std::vector<uint32_t> hidden_layers;
  OutputMode output = OutputMode::full;
  float learning_rate = 1e-3f;    // Adam step size, (0, 1]
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  uint32_t batch_size = 128;      // examples per batch, 1..65536
  uint32_t threads = 0;           // worker threads; 0 = all cores
  uint64_t seed = 42;             // weights, shuffling, sampling, hash functions
  Simd simd = Simd::automatic;
  // init refuses a network (or layer) whose weights, optimizer state, index and scratch would
  // need more than this many bytes (the message gives both figures). Not stored in model files.
  size_t max_bytes = default_max_bytes;

  // LSH output layer (output == lsh).
  HashFamily hash = HashFamily::simhash;
  uint32_t K = 8, L = 20;         // bits per table, tables (measured on citeulike-t; README)
  float hash_density = 1.0f;      // SimHash projection density (see HashConfig)
  uint32_t bucket_capacity = 128;
  BucketPolicy bucket_policy = BucketPolicy::reservoir;
  // An example's active set is the batch's shared set (every label of the batch's examples, plus
  // random neurons drawn once per batch until it has min_active) and the neurons its LSH query
  // retrieves. The shared set is scored with dense GEMMs, the retrieved ones by gathering rows.
  // With min_active >= labels every neuron is always active: exact softmax; the tables are then
  // rebuilt once per epoch only (for InferMode::lsh), not maintained during training.
  uint32_t min_active = 256;
  uint32_t max_active = 64;       // 0 = no cap; else keep the max_active most-hit retrieved neurons
  // Measurement aid: retrieve, by brute force over all N neurons, the max_active (> 0) highest-
  // scoring neurons outside S instead of querying the tables: what a perfect hash function would
  // retrieve. Costs a full softmax's forward pass per batch.
  bool exact_retrieval = false;
  // Subtract log(inclusion probability) from the shared set's logits (the sampled-softmax
  // correction), except for each example's own labels, which are in its active set for sure:
  // frequent labels are sampled as negatives more often than rare ones, which otherwise biases
  // the model against them and makes it over-fit sooner.
  bool sampling_correction = true;
  // The full softmax's Adam moves every output row at every step: a row with only small positive
  // gradients (a label absent from the batch) drifts down by about learning_rate per coordinate
  // along the hidden units that are active. The sampled layer updates active rows only and would
  // miss that drift. With tail_drift > 0, each batch's shared rows move up by
  // tail_drift * learning_rate on each hidden unit active in the batch and on the bias. Up to a
  // per-query constant in every logit, that is the same as moving every other row down.
  // Measured on citeulike-t: 0.3 gives +1.5 points of P@1 (0.534 -> 0.549, 3 seeds), above the
  // full softmax (0.545). 0 = off; range [0, 10]. No effect when every neuron is active.
  float tail_drift = 0.3f;
  // InferMode::lsh scores the retrieved neurons and this many of the most frequent training labels
  // (counted during training, kept in model files); 0 = retrieved neurons only.
  uint32_t infer_shortlist = 1024;
  // Each example's active set includes the neurons its query retrieves from the tables. false =
  // the shared set alone (a sampled softmax with in-batch and random negatives): the tables are
  // then rebuilt once per epoch, for InferMode::lsh, and not maintained during training.
  bool retrieval = true;
  // Store the output layer's rows and Adam moments as bfloat16 (the top half of each fp32,
  // rounded to nearest even; the arithmetic stays fp32): half the memory and memory traffic of
  // the widest layer, in model files too. Model::weights().W2 and OutputLayer::weights() are then
  // null.
  bool bf16 = false;
  // Hash neurons through the MIPS-to-cosine reduction, [w, b, sqrt(M^2 - |[w, b]|^2)] with M the
  // largest row norm at the last full build (true), or by the angle of [w, b] alone (false).
  // With 10^6 rows M is an outlier's norm and the reduction pushes every angle towards 90
  // degrees; the angle alone then finds a query's best rows more often (bench-scale measures it).
  bool mips = true;
  // Multi-probe queries (SimHash): besides its own bucket, every table is also looked up in the
  // buckets whose code differs in one of the query's `probes` least certain bits (the smallest
  // |projections|), in training; infer_probes the same for InferMode::lsh. 0..K.
  uint32_t probes = 0, infer_probes = 0;
  uint32_t rehash_every = 50;     // re-insert all neurons every this many batches (0 = never)
  float rehash_decay = 0.0f;      // > 0: the period grows by exp(decay * rehashes) (SLIDE paper)
  uint32_t new_hash_every = 0;    // draw new hash functions every this many batches (0 = never)

  // MONGOOSE scheduler: when to bring the tables up to date with the weights. Checks look at the
  // neurons that training updated since the last build (detect) or the last check (incremental):
  // only those can have moved, and at 10^6 labels most neurons of a check's window never do.
  Scheduler scheduler = Scheduler::fixed;
  uint32_t check_every = 50;      // detect/incremental: batches between checks, >= 1
  uint32_t detector_bits = 16;    // bits of the change detector's SimHash per neuron, 1..24
  uint32_t detector_sample = 4096; // detect: updated neurons sampled per check (0 = all of them);
                                   // incremental always checks every updated neuron
  float tau = 0.05f;              // detect: full rebuild when this fraction of the sampled neurons'
                                  // detector bits flipped
  float full_rebuild_fraction = 0.3f;  // incremental: full rebuild when more neurons changed
  // incremental: also re-insert neurons whose [w, b] moved by more than this fraction of its
  // norm at insertion (relative L2 change); 0 = off. Keeps a copy of the output weights.
  float drift_epsilon = 0.1f;

  // Learned hash functions (SimHash only): trained on what the tables get wrong, then swapped in.
  bool learn_hash = false;
  uint32_t learn_every = 0;       // batches between learning rounds; 0 = at every full rebuild
  uint32_t learn_queries = 16;    // queries of the current batch mined per round, >= 1
  uint32_t hash_steps = 20;       // Adam steps on the projection per round, 1..10000
  float hash_lr = 0.01f;          // Adam step size for the projection, (0, 1]
  bool hash_binarize = false;     // use sign(P) (+-1 projections) instead of the learned values
  HashLoss hash_loss = HashLoss::bce;
  float triplet_margin = 0.5f;    // HashLoss::triplet: hinge margin between the cosines, (0, 2]

  // Called after every batch; return false to stop training (train_epoch then returns ok). If it
  // throws, train_epoch returns the exception's message as an error; the batch it reported on is
  // trained, nothing after it. It may read the model (stats, evaluate); init, train_batch,
  // train_epoch and load_model into the model are refused while it runs, and it must not move
  // or destroy the model.
  ProgressCallback on_progress;
};
MONGOOSE_API Status validate(const Config& config);

// Precision at 1, 3 and 5 over a dataset: the fraction of the top-k predictions that are true
// labels, averaged over all rows (rows without labels count as 0).
struct Metrics {
  double p_at_1 = 0, p_at_3 = 0, p_at_5 = 0;
  size_t rows = 0;
  double seconds = 0;            // wall time of the evaluation
  double ms_per_example = 0;     // wall time x threads / rows: the cost of one example on one core
  double mean_candidates = 0;    // InferMode::lsh: neurons scored per example
};

// Cumulative training counters and the time split of training (seconds, wall clock). An
// OutputLayer fills the output-layer fields and counts its own batches, examples and seconds.
struct TrainStats {
  uint64_t batches = 0, examples = 0, epochs = 0;
  double seconds = 0;            // total training wall time
  double mean_loss_last_epoch = 0;
  // Time split.
  double hidden_seconds = 0;     // input layer and hidden stack forward (Model)
  double hash_seconds = 0;       // hashing the queries (lsh)
  double query_seconds = 0;      // table look-ups and active-set assembly (lsh)
  double forward_backward_seconds = 0;  // output layer
  double update_seconds = 0;     // gradient merge and Adam (every layer)
  double rehash_seconds = 0;     // re-inserting neurons into the tables (lsh)
  uint64_t rehashes = 0;         // full table rebuilds (including those ending a learning round)
  uint64_t new_hash_functions = 0;
  // Scheduler.
  uint64_t checks = 0;           // change-detector checks
  uint64_t reinserted = 0;       // neurons re-inserted one by one (incremental)
  double detect_seconds = 0;     // computing detector codes
  double reinsert_seconds = 0;   // incremental re-insertions
  double last_flip_fraction = 0; // detector bits flipped at the last check
  // Hash learning.
  uint64_t learn_rounds = 0;
  uint64_t pairs_mined = 0;      // positive + negative pairs, all rounds (a triplet counts 2)
  double learn_seconds = 0;      // mining pairs and training the projection; the rebuild that
                                 // ends each round is counted in rehash_seconds
  double learn_loss_before = 0, learn_loss_after = 0;      // last round: the hash_loss summed
                                                           // over the L tables, mean over pairs
                                                           // (BCE) or triplets
  double recall_before_sum = 0, recall_after_sum = 0;      // top-5 retrieval recall, summed over rounds
  double active_sum = 0;         // sum over examples of the active-set size (lsh)
  double active_mean() const { return examples ? active_sum / double(examples) : 0.0; }
  // Memory traffic of training, counted from what each batch touches: every weight row read for
  // the forward pass, and read and written with both Adam moments by the update (7 passes over
  // a row's floats; scratch and batch buffers, which stay in cache, are not counted). Divided by
  // the training seconds it is the achieved bandwidth that bench-scale sets against a STREAM
  // triad measured in the same run.
  double bytes_moved = 0;
};

// One scored label.
struct Scored {
  uint32_t label;
  float score;  // logit
};

//-----------------------------------------------------------------------------------------------
// [SECTION] Input layers
//-----------------------------------------------------------------------------------------------
// A Model's first layer maps a Dataset row x (D features) to act = ReLU(W^T x + b), W D x hidden
// (row f = feature f's weights), initialised U(-1/sqrt(D), 1/sqrt(D)) as PyTorch's Linear.
// InputKind::sparse sums the rows of the features present (an embedding bag) and updates only
// those rows (lazy Adam): the cost follows the non-zeros, whatever D is. InputKind::dense treats
// the row as a dense vector (absent features are 0): one GEMM per batch and a dense Adam step on
// all of W, for inputs of up to ~10^4 dense features. Internal to Model; Model::weights shows W.

//-----------------------------------------------------------------------------------------------
// [SECTION] Hidden layers
//-----------------------------------------------------------------------------------------------
// Config::hidden_layers adds dense ReLU layers y = ReLU(x W + b) (W inputs x outputs, both
// initialised U(-1/sqrt(inputs), 1/sqrt(inputs))) between the input layer and the output layer,
// trained with dense Adam. Internal to Model; Model::weights shows them.

//-----------------------------------------------------------------------------------------------
// [SECTION] Hash learning
//-----------------------------------------------------------------------------------------------
// MONGOOSE's learned hash functions (Config::learn_hash): a round takes a few of the batch's
// queries, scores every neuron exactly, mines the top neurons the tables missed (positives) and
// the below-median ones they returned (negatives), trains the SimHash projection on them for
// hash_steps Adam steps (Config::hash_loss), and swaps it in for the next rebuild.

// The hash learner's triplet loss for one table (HashLoss::triplet), exposed so it can be checked.
// a, bp, bn are the K pre-tanh projections P_t^T q, P_t^T w+, P_t^T w-; returns
// max(0, margin - cos(tanh a, tanh bp) + cos(tanh a, tanh bn)) (a zero vector's cosine is 0).
// When da, dbp, dbn are not null they receive the gradient with respect to a, bp and bn.
// K in 1..24 (the table bits) and non-null inputs; otherwise NaN is returned.
MONGOOSE_API float triplet_hinge_loss(const float* a, const float* bp, const float* bn, size_t K, float margin,
                         float* da = nullptr, float* dbp = nullptr, float* dbn = nullptr);

//-----------------------------------------------------------------------------------------------
// [SECTION] Table upkeep and scheduler
//-----------------------------------------------------------------------------------------------
// The LSH index of an lsh output layer: every output neuron j is hashed as the MIPS item
// [w_j, b_j, sqrt(M^2 - |[w_j, b_j]|^2)] (M the largest row norm at the last full build) into L
// tables of K-bit codes; a query is [h, 1, 0], so the angle SimHash measures orders neurons by
// inner product. As the weights move the tables go stale: Config::scheduler says when they are
// rebuilt (fixed period, change detector, incremental re-insertion), Config::new_hash_every when
// new hash functions are drawn, and learning rounds (Config::learn_hash) run at full rebuilds or
// every learn_every batches. TrainStats counts checks, rebuilds, re-insertions and their time.

//-----------------------------------------------------------------------------------------------
// [SECTION] Output layer
//-----------------------------------------------------------------------------------------------
// The softmax output layer over N labels, as a component of its own: the sampled (LSH) or the
// full softmax, with its weights, optimizer state, hash tables, scheduler, hash learner and label
// frequencies. Model uses it; so can any network that computes its own d-dimensional inputs (the
// "hidden vectors" h): give it a batch of h and the rows' labels, get back the loss and dL/dh,
// and it applies its own update (lazy Adam, the sampling correction, tail drift, table upkeep).
// Neuron j's row is [w_j (d), b_j, zeros] of stride round_up(d + 2, 8) floats, initialised
// U(-1/sqrt(d), 1/sqrt(d)). Inputs must be finite with magnitude <= max_feature_value.
//
// Thread safety: const calls (topk, retrieval_recall, stats, weights) may run from several threads
// at once; train, refresh and load need the layer to themselves.

// A batch for OutputLayer::train: `rows` inputs of input_dim floats (row i at inputs + i*stride),
// and their labels in CSR form, as in Dataset (a row may have none: it is skipped).
struct LayerBatch {
  const float* inputs = nullptr;
  size_t rows = 0;
  size_t stride = 0;                         // floats between rows; 0 = input_dim
  const uint32_t* labels = nullptr;          // label ids < labels(), no id twice in a row
  const uint64_t* label_offsets = nullptr;   // rows + 1 entries, from 0, non-decreasing
};

class MONGOOSE_API OutputLayer {
 public:
  OutputLayer();
  ~OutputLayer();
  OutputLayer(OutputLayer&&) noexcept;
  OutputLayer& operator=(OutputLayer&&) noexcept;
  OutputLayer(const OutputLayer&) = delete;
  OutputLayer& operator=(const OutputLayer&) = delete;

  // Creates the layer for input_dim-dimensional inputs (1..65536) and `labels` outputs, reading
  // the output-layer fields of config (see [SECTION] Configuration); random weights from its seed.
  Status init(const Config& config, size_t input_dim, size_t labels);
  bool initialized() const;
  const Config& config() const;
  size_t input_dim() const;
  size_t labels() const;

  // One training step on the batch: the loss (mean cross-entropy over rows with labels) goes to
  // *loss (optional), dL/dinputs to grad (rows x input_dim, row i at grad + i * grad_stride;
  // optional: null skips it; grad_stride 0 = input_dim), then the layer updates itself. Refuses
  // (changing nothing) bad inputs, and a batch whose loss is not finite.
  Status train(const LayerBatch& batch, float* loss = nullptr, float* grad = nullptr, size_t grad_stride = 0);
  // The k best labels of each of n inputs (row i at inputs + i * stride; stride 0 = input_dim),
  // best first, into (*out)[i]: every label scored (full) or the retrieved ones and the shortlist
  // (lsh; the layer must be lsh). *mean_candidates (optional) gets the labels scored per input.
  Status topk(const float* inputs, size_t n, size_t stride, size_t k, InferMode mode,
              std::vector<std::vector<Scored>>* out, double* mean_candidates = nullptr) const;
  // Top-k retrieval recall of the tables (lsh) for n inputs, as Model::retrieval_recall.
  Status retrieval_recall(const float* inputs, size_t n, size_t stride, size_t k, double* recall,
                          double* mean_retrieved) const;
  // Brings the inference shortlist of frequent labels up to date (and, when every neuron is
  // active during training, the tables). Model calls it after every epoch; call it after training
  // before InferMode::lsh inference.
  Status refresh();
  // Replaces the LSH index (lsh layers): new hash functions and tables, built from the current
  // weights, with index's hash, K, L, hash_density, bucket_capacity, bucket_policy, mips, probes
  // and infer_probes (a learned projection is dropped). An index for inference can differ from the
  // one that served training: e.g. more tables and probes once training is done.
  Status rebuild_index(const Config& index);

  const TrainStats& stats() const;
  size_t parameter_bytes() const;   // weights + optimizer state + index
  // Row-major neuron rows [w_j, b_j, zeros] (labels() rows of row_stride() floats), valid until
  // the next call that trains or loads.
  const float* weights() const;
  size_t row_stride() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend Status save_layer(const OutputLayer&, const std::string&, const struct SaveOptions&);
  friend Status load_layer(const std::string&, OutputLayer*, const struct LoadOptions&);
};

//-----------------------------------------------------------------------------------------------
// [SECTION] Model
//-----------------------------------------------------------------------------------------------
// The network and its training loop: an input layer, the hidden stack and an OutputLayer, trained
// together with Adam (the convenience API: ten lines train a model; see README).
//
// Thread safety: const calls (evaluate, predict, retrieval_recall, weights, stats) may run from
// several threads at once; calls that train or load need the model to themselves.
// Every call taking a Dataset validates the rows it uses (validate(const Dataset&); train_batch
// only the given rows) and refuses a dataset with more features or labels than the model.
// A refused call leaves the model as it was. If memory runs out inside a training batch after its
// update began, the call says so: that batch may then be partly applied.
class MONGOOSE_API Model {
 public:
  Model();
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Creates the network for `features` inputs and `labels` outputs (random weights from
  // config.seed). Must be called before anything else.
  Status init(const Config& config, size_t features, size_t labels);
  bool initialized() const;
  const Config& config() const;
  size_t features() const;
  size_t labels() const;

  // One Adam step on rows[0..n) of `data` (n <= batch_size is not required; any n >= 1).
  // *loss (optional) receives the batch's mean cross-entropy.
  Status train_batch(const Dataset& data, const uint32_t* rows, size_t n, float* loss = nullptr);
  // One pass over `data` in a shuffled order (seeded by config.seed and the epoch number), in
  // batches of config.batch_size. Calls config.on_progress after each batch.
  Status train_epoch(const Dataset& data);

  // P@1/3/5 over every row of `data`, scoring all labels (full) or the retrieved ones (lsh).
  Status evaluate(const Dataset& data, InferMode mode, Metrics* out) const;
  // The k best labels for one sparse input, best first.
  Status predict(const uint32_t* ids, const float* values, size_t nnz, size_t k, InferMode mode,
                 std::vector<Scored>* out) const;

  const TrainStats& stats() const;

  // Top-k retrieval recall of the tables (lsh models): over up to max_rows rows of `data` spread
  // evenly over the file, the fraction of each row's k best-scoring neurons (exact scores) that
  // its LSH query retrieves (after the max_active cap, as in training), and the mean number kept.
  Status retrieval_recall(const Dataset& data, size_t max_rows, size_t k, double* recall,
                          double* mean_retrieved) const;
  size_t parameter_bytes() const;  // weights + optimizer state + index
  // The output layer's LSH index replaced, as OutputLayer::rebuild_index (lsh models).
  Status rebuild_index(const Config& index);

  // Read-only view of the weights, valid until the next call that trains or loads. W1 is
  // features x hidden (row f = feature f's input weights), b1 has hidden entries; output neuron j
  // is the row W2 + j * output_stride = [w_j (inputs of the output layer), b_j, zeros up to
  // output_stride]; hidden_layers[l].W is inputs x outputs, row-major.
  struct Weights {
    const float* W1 = nullptr;
    const float* b1 = nullptr;
    const float* W2 = nullptr;
    size_t features = 0, hidden = 0, labels = 0, output_stride = 0;
    struct Dense {
      const float* W = nullptr;
      const float* b = nullptr;
      size_t inputs = 0, outputs = 0;
    };
    std::vector<Dense> hidden_layers;
  };
  Weights weights() const;

  struct Impl;

 private:
  // The calls' bodies, run inside the exception guard after the argument checks.
  Status init_checked(const Config& config, size_t features, size_t labels);
  Status train_epoch_checked(const Dataset& data);
  Status evaluate_checked(const Dataset& data, InferMode mode, Metrics* out) const;
  Status retrieval_recall_checked(const Dataset& data, size_t max_rows, size_t k, double* recall,
                                  double* mean_retrieved) const;
  Status predict_checked(const uint32_t* ids, const float* values, size_t nnz, size_t k, InferMode mode,
                         std::vector<Scored>* out) const;
  std::unique_ptr<Impl> impl_;
  bool busy_ = false;  // an epoch is running: init, training and loading into it are refused
  friend Status save_model(const Model&, const std::string&, const struct SaveOptions&);
  friend Status load_model(const std::string&, Model*, const struct LoadOptions&);
};

//-----------------------------------------------------------------------------------------------
// [SECTION] Model I/O
//-----------------------------------------------------------------------------------------------
// File format (all integers and floats little-endian):
//   "MONGOOSE" (8 bytes), format version (u32, currently 4), section count (u32), then sections:
//   tag (4 ASCII bytes), payload length (u64), payload, CRC-32C (u32) of tag + length + payload.
// Version 4 stores the components. A model file: "NETW" (input kind, shapes, training settings,
// step counters, flags), "OUTC" (the output layer's settings and shapes), "INPW" (the input
// layer's W then b), "INPA" (its Adam moments, when saved), per hidden layer "HIDW" and "HIDA",
// then the output layer: "OUTW" (its rows), "OUTA" (Adam moments, when saved), and for lsh layers
// "HASH" (MIPS norm, SimHash projection, learned or not), "CODE" (each neuron's table codes, from
// which the tables are rebuilt), "FREQ" (examples counted u64, shortlist length u32, each
// label's training count u32, the shortlist's labels u32); "END " (empty). A layer file
// (save_layer) holds the output layer's sections alone, from "OUTC" on.
// Versions 1 to 3 (one network shape: sections "CONF", "W1  ", "B1  ", "W2  ", "HASH", "CODE",
// "FREQ", "ADAM") still load, with tail_drift 0 (how they were trained); version 2 lacks
// Config::tail_drift (CONF 4 bytes shorter), version 1 also hash_loss and triplet_margin (12
// bytes shorter; defaults). Unknown versions, tags, sizes or checksums are refused with a message
// naming the file, the section and the byte offset.
//
// After load, full-mode predictions are bit-identical to the saved model's. The tables are rebuilt
// from the saved codes: identical to the saved ones unless the incremental scheduler had updated
// them in place since their last full build.

// Continuing training after a load is exact for the full softmax. For lsh models the weights,
// optimizer, hash functions and tables are restored, but the table-maintenance schedule (rehash
// period, scheduler baselines, TrainStats counters) starts afresh.
struct SaveOptions {
  bool optimizer_state = true;  // include Adam moments (needed to continue training exactly)
};

struct LoadOptions {
  // Refuse files whose contents would need more memory than this (bytes), before allocating.
  // It is also the loaded model's Config::max_bytes.
  size_t max_bytes = default_max_bytes;
  // When not 0, the file's feature / label counts must equal these (load_layer: input_dim and
  // labels).
  size_t expect_features = 0, expect_labels = 0;
  // Training settings (threads, learning rate, callbacks, ...) to use instead of the saved ones;
  // the shape and index settings (hidden, output, hash, K, L, ...) always come from the file.
  // Without it, a saved thread count above this machine's cores becomes 0 (all cores).
  const Config* override_training = nullptr;
};

// Saves `model` to `path` atomically (see [SECTION] Files): a crash, a full disk or a concurrent
// save never leaves a half-written model where the old one was. Refuses, writing nothing, a model
// holding non-finite values.
MONGOOSE_API Status save_model(const Model& model, const std::string& path, const SaveOptions& options = {});
// Loads a model saved by save_model into *out. On any error *out is left exactly as it was.
MONGOOSE_API Status load_model(const std::string& path, Model* out, const LoadOptions& options = {});
// The same for an OutputLayer on its own (its sections only; a model file is refused).
MONGOOSE_API Status save_layer(const OutputLayer& layer, const std::string& path, const SaveOptions& options = {});
MONGOOSE_API Status load_layer(const std::string& path, OutputLayer* out, const LoadOptions& options = {});

// CRC-32C (Castagnoli) of size bytes, continuing from crc (0 to start).
MONGOOSE_API uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace mongoose

#endif  // __cplusplus

//-----------------------------------------------------------------------------------------------
// [SECTION] C API
//-----------------------------------------------------------------------------------------------
// The library for C (and for ctypes, cffi and other foreign-function interfaces): opaque handles,
// plain structs and arrays, no exceptions. A C99 compiler sees only this section of the file.
//
// Errors: every function that can fail returns an int status, MG_OK (0) or one of the MG_ERROR_*
// codes, and, when its last argument `err` is not NULL, fills *err with the same code and a
// message naming the call and the problem (err->message is "" on success). Nothing is thrown and
// nothing printed; every pointer and handle is checked (NULL is an error, never a crash), and
// arrays are read only within the sizes the caller states. On error, output handles are set to
// NULL and other outputs are left unspecified.
// Threads: a handle may be used by one thread at a time while it trains or loads; the calls taking
// a const handle (evaluate, predict, getters) may run from several threads at once.
// Results depend only on the configuration (seed, thread count) and the data, as in C++: the C
// API trains bit-identically to mongoose::Model (and mongoose-train) with the same settings.

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
#else
#include <stddef.h>
#include <stdint.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Status codes.
#define MG_OK 0
#define MG_ERROR_ARGUMENT 1  // refused before any work: a NULL handle or pointer, a size, a CSR array
                             // or a configuration field out of range (the message names which)
#define MG_ERROR_FILE 2      // a file could not be read, parsed or written (the message says where)
#define MG_ERROR_FAILED 3    // the library refused or failed the call (data the model cannot take,
                             // a non-finite loss, out of memory, ...); the message says why

// A status with its message; messages longer than the buffer are cut (still NUL-terminated).
typedef struct mg_error {
  int code;
  char message[1024];
} mg_error;

// Values of mg_config::output.
#define MG_OUTPUT_FULL 0      // exact softmax over every label
#define MG_OUTPUT_LSH 1       // LSH-sampled softmax, tables rebuilt on a fixed period (SLIDE)
#define MG_OUTPUT_MONGOOSE 2  // lsh with the change-detecting scheduler and learned hash functions
                              // (as mongoose-train --output mongoose)
// Values of mg_config::hash.
#define MG_HASH_SIMHASH 0
#define MG_HASH_DWTA 1
// Inference modes (evaluate, predict).
#define MG_INFER_FULL 0  // score every label exactly
#define MG_INFER_LSH 1   // score the retrieved labels and the frequent-label shortlist (lsh models)

// The main fields of mongoose::Config; mg_config_init sets the library's defaults. Ranges are
// those of Config (checked by mg_model_create, with the field named in the message).
typedef struct mg_config {
  int32_t output;           // MG_OUTPUT_FULL (default), MG_OUTPUT_LSH or MG_OUTPUT_MONGOOSE
  uint32_t hidden;          // hidden units, 1..65536 (128)
  float learning_rate;      // Adam step size, (0, 1] (0.001)
  uint32_t batch_size;      // examples per batch, 1..65536 (128)
  uint32_t threads;         // worker threads, 0 = all cores; results depend on it (0)
  uint64_t seed;            // weights, shuffling, sampling, hash functions (42)
  int32_t scalar;           // non-zero: portable scalar kernels instead of AVX2/NEON (0)
  int32_t hash;             // MG_HASH_SIMHASH (default) or MG_HASH_DWTA
  uint32_t K, L;            // bits per table 1..24 (8), tables 1..1024 (20)
  uint32_t min_active;      // shared active set per batch (256)
  uint32_t max_active;      // retrieved neurons kept per example, 0 = all (64)
  float tail_drift;         // [0, 10] (0.3)
  uint32_t rehash_every;    // fixed scheduler: batches between rebuilds, 0 = never (50)
  uint32_t infer_shortlist; // frequent labels scored by MG_INFER_LSH (1024)
  uint64_t max_bytes;       // memory budget of the network in bytes (8 GiB; 1 GiB on 32-bit)
} mg_config;

// Precision at 1, 3 and 5 over a dataset's rows (rows without labels count as 0).
typedef struct mg_metrics {
  double p_at_1, p_at_3, p_at_5;
  uint64_t rows;
  double seconds;           // wall time of the evaluation
} mg_metrics;

typedef struct mg_dataset mg_dataset;  // a validated multi-label sparse dataset
typedef struct mg_model mg_model;      // a network with its optimizer state and index

// Fills *config with the defaults above (nothing happens when config is NULL).
MONGOOSE_API void mg_config_init(mg_config* config);

// Reads an XC text file or a binary dataset (mongoose::read_dataset) into a new *out.
MONGOOSE_API int mg_dataset_read(const char* path, mg_dataset** out, mg_error* err);
// A new *out from CSR arrays (scipy's layout): row r's features are feature_indices and
// feature_values [feature_indptr[r], feature_indptr[r+1]) (rows + 1 offsets, from 0 to
// feature_nnz; feature_values NULL = every value 1), its labels label_indices [label_indptr[r],
// label_indptr[r+1]) (label_indptr NULL = no row has labels). The arrays are copied and checked:
// ids < features / labels, no id twice in a row, finite values of magnitude <= 1e18.
MONGOOSE_API int mg_dataset_from_csr(size_t rows, size_t features, size_t labels,
                                     const uint64_t* feature_indptr, const uint32_t* feature_indices,
                                     const float* feature_values, size_t feature_nnz,
                                     const uint64_t* label_indptr, const uint32_t* label_indices,
                                     size_t label_nnz, mg_dataset** out, mg_error* err);
// Scales each row's feature values to unit L2 norm (mongoose-train --normalize on).
MONGOOSE_API int mg_dataset_normalize(mg_dataset* data, mg_error* err);
// The dataset's rows, features and labels (0 for NULL).
MONGOOSE_API size_t mg_dataset_rows(const mg_dataset* data);
MONGOOSE_API size_t mg_dataset_features(const mg_dataset* data);
MONGOOSE_API size_t mg_dataset_labels(const mg_dataset* data);
// Frees a dataset (NULL is fine).
MONGOOSE_API void mg_dataset_free(mg_dataset* data);

// A new network for `features` inputs and `labels` outputs, random weights from config->seed.
MONGOOSE_API int mg_model_create(const mg_config* config, size_t features, size_t labels, mg_model** out,
                                 mg_error* err);
// One pass over `data` in a shuffled order (seeded by seed and epoch). *mean_loss (optional) gets
// the epoch's mean cross-entropy.
MONGOOSE_API int mg_model_train_epoch(mg_model* model, const mg_dataset* data, double* mean_loss, mg_error* err);
// One Adam step on rows [begin, end) of `data` (begin < end <= rows, any size). *loss optional.
MONGOOSE_API int mg_model_train_batch(mg_model* model, const mg_dataset* data, size_t begin, size_t end,
                                      float* loss, mg_error* err);
// P@1/3/5 over every row of `data`; infer is MG_INFER_FULL or MG_INFER_LSH.
MONGOOSE_API int mg_model_evaluate(const mg_model* model, const mg_dataset* data, int32_t infer,
                                   mg_metrics* out, mg_error* err);
// The k (>= 1) best labels of one sparse input (ids < features, distinct; values finite; values
// NULL = every value 1), best first, into labels[0..k) and scores[0..k) (logits; scores may be
// NULL); *count (optional) gets how many were written, min(k, labels).
MONGOOSE_API int mg_model_predict(const mg_model* model, const uint32_t* ids, const float* values, size_t nnz,
                                  size_t k, int32_t infer, uint32_t* labels, float* scores, size_t* count,
                                  mg_error* err);
// The k best labels of every row of `data`: row r's at labels[r*k .. r*k+k) and scores (may be
// NULL) likewise, rows x k entries; when k > labels the rest of a row is label UINT32_MAX, score
// -infinity.
MONGOOSE_API int mg_model_predict_dataset(const mg_model* model, const mg_dataset* data, size_t k, int32_t infer,
                                          uint32_t* labels, float* scores, mg_error* err);
// Saves the model (with its optimizer state) atomically, as mongoose::save_model.
MONGOOSE_API int mg_model_save(const mg_model* model, const char* path, mg_error* err);
// Loads a model saved by mg_model_save or mongoose::save_model into a new *out.
MONGOOSE_API int mg_model_load(const char* path, mg_model** out, mg_error* err);
// The model's inputs and outputs (0 for NULL).
MONGOOSE_API size_t mg_model_features(const mg_model* model);
MONGOOSE_API size_t mg_model_labels(const mg_model* model);
// Frees a model (NULL is fine).
MONGOOSE_API void mg_model_free(mg_model* model);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // MONGOOSE_H
