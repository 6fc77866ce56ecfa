// mongoose.cpp - implementation of mongoose.h. Sections follow the header's order:
// [SECTION] Status            (also the exception guard every entry point goes through)
// [SECTION] Files             (platform calls, atomic replacement, model files' section framing)
// [SECTION] Dense math        (SIMD vocabulary, kernels written once, AVX2, NEON + scalar instances)
// [SECTION] Random numbers
// [SECTION] Threads           (internal: a small pool with static, deterministic partitioning)
// [SECTION] Data
// [SECTION] Hashing
// [SECTION] Hash tables
// [SECTION] Configuration     (validate(Config))
// [SECTION] Input layers      (SparseInput, DenseInput behind InputLayer; shared layer internals)
// [SECTION] Hidden layers     (DenseStack)
// [SECTION] Hash learning     (HashLearner; the MIPS items)
// [SECTION] Table upkeep and scheduler (TableUpkeep)
// [SECTION] Output layer      (OutputCore, the public OutputLayer)
// [SECTION] Model             (the network and its training loop)
// [SECTION] Model I/O         (format 4, and versions 1 to 3)
// [SECTION] C API             (extern "C" wrappers over the C++ API: codes and messages)

// 64-bit file offsets on 32-bit POSIX targets (fstat of files over 2 GiB).
#if !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64
#endif

#include "mongoose.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <numeric>
#include <new>
#include <stdexcept>
#include <utility>

// Threads are left out when asked (MONGOOSE_NO_THREADS) or when the standard library has none:
// libstdc++ built without gthreads (mingw-w64's win32 thread model before GCC 13, bare-metal
// newlib) declares no std::thread or std::mutex.
#if !defined(MONGOOSE_NO_THREADS) && defined(__GLIBCXX__) && !defined(_GLIBCXX_HAS_GTHREADS)
#define MONGOOSE_NO_THREADS 1
#endif
#if defined(MONGOOSE_NO_THREADS)
#define MONGOOSE_HAVE_THREADS 0
#else
#define MONGOOSE_HAVE_THREADS 1
#include <condition_variable>
#include <mutex>
#include <thread>
#endif

#if defined(_WIN32)
#include <fcntl.h>
#include <io.h>
#include <process.h>
#include <sys/stat.h>
#include <windows.h>
#define MONGOOSE_POSIX_FILES 0
#elif defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define MONGOOSE_POSIX_FILES 1
#else
#define MONGOOSE_POSIX_FILES 0
#endif

#if (defined(__x86_64__) || defined(__i386__)) && !defined(MONGOOSE_NO_AVX2) && \
    (defined(__GNUC__) || defined(__clang__))
#define MONGOOSE_HAVE_AVX2 1
#include <immintrin.h>
#else
#define MONGOOSE_HAVE_AVX2 0
#endif

// NEON is part of the ARM target itself (always on AArch64; on 32-bit ARM when compiled with
// -mfpu=neon), so it is chosen at compile time: there is no run-time check and no target attribute.
#if defined(__ARM_NEON) && !defined(MONGOOSE_NO_NEON)
#define MONGOOSE_HAVE_NEON 1
#include <arm_neon.h>
#else
#define MONGOOSE_HAVE_NEON 0
#endif

// The private Impl classes nested in the exported Model and OutputLayer would inherit their
// visibility: keep them out of a shared library's exports.
#if defined(__GNUC__) && !defined(_WIN32) && !defined(__CYGWIN__)
#define MONGOOSE_INTERNAL __attribute__((visibility("hidden")))
#else
#define MONGOOSE_INTERNAL
#endif

// Register tiles are small fixed-size loops that must be fully unrolled to stay in registers.
#if defined(__clang__)
#define MONGOOSE_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define MONGOOSE_UNROLL _Pragma("GCC unroll 16")
#else
#define MONGOOSE_UNROLL
#endif

namespace mongoose {

//-----------------------------------------------------------------------------------------------
// [SECTION] Status
//-----------------------------------------------------------------------------------------------

Status Status::error(std::string message) {
  Status s;
  s.message_ = message.empty() ? std::string("error") : std::move(message);
  return s;
}

namespace {

// Checks the calls of a printf-like function: argument fmt is the format, the variadic ones start
// at first. mingw-w64: with libstdc++, vsnprintf is mingw's own C99 one (__USE_MINGW_ANSI_STDIO),
// which knows %zu and %llu, so calls are checked as that printf (gnu_printf), not as msvcrt's. Not
// checked with newlib (arm-none-eabi): its uint32_t is an unsigned long as wide as unsigned, which
// %u reads right, but GCC flags every such argument; the other targets check the same calls.
#if defined(__MINGW_PRINTF_FORMAT)
#define MONGOOSE_PRINTF_LIKE(fmt, first) __attribute__((format(__MINGW_PRINTF_FORMAT, fmt, first)))
#elif defined(__GNUC__) && !defined(_NEWLIB_VERSION)
#define MONGOOSE_PRINTF_LIKE(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define MONGOOSE_PRINTF_LIKE(fmt, first)
#endif

// Formats like printf into a std::string (messages only; never on a hot path).
MONGOOSE_PRINTF_LIKE(1, 2)
std::string strf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return std::string("(format error)");
  if (size_t(n) < sizeof buf) return std::string(buf, size_t(n));
  std::string out(size_t(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(&out[0], out.size(), fmt, ap);
  va_end(ap);
  out.resize(size_t(n));
  return out;
}


double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Carries a Status out of deep internal code (a worker thread, a helper that returns void) to the
// entry point's guard, which returns it. Never leaves the library.
struct StatusError {
  Status status;
};

// Internal calls that return Status but cannot fail in context unless memory runs out: a failure
// becomes a StatusError for the entry point's guard.
void must(Status st) {
  if (!st.ok()) throw StatusError{std::move(st)};
}

// Runs an entry point's body: whatever it throws (std::bad_alloc, another standard exception, a
// callback's exception, a StatusError) comes back as a Status naming `where`.
template <class F>
Status guard(const std::string& where, F&& body) noexcept {
  try {
    return body();
  } catch (StatusError& e) {
    return std::move(e.status);
  } catch (const std::bad_alloc&) {
    return Status::error(where + ": out of memory");
  } catch (const std::exception& e) {
    return Status::error(where + ": " + e.what());
  } catch (...) {
    return Status::error(where + ": an unknown exception was thrown");
  }
}

// Overflow-free byte counts for budgets: saturates instead of wrapping.
uint64_t mul_sat(uint64_t a, uint64_t b) {
  if (a && b > ~uint64_t(0) / a) return ~uint64_t(0);
  return a * b;
}
uint64_t add_sat(uint64_t a, uint64_t b) { return a > ~uint64_t(0) - b ? ~uint64_t(0) : a + b; }

// Finiteness read from the bit pattern (exponent all ones: infinity or NaN). Not std::isfinite,
// nor a comparison: under -ffast-math (-ffinite-math-only) compilers assume no value is NaN or
// infinite and fold those to constants, which would let NaN and infinity from user data, files
// or a diverging model through every check. Every check of values from outside or of the
// model's state goes through these.
bool is_finite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7F800000u) != 0x7F800000u;
}
bool is_finite(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7FF0000000000000ull) != 0x7FF0000000000000ull;
}

// Feature and label ids are 32-bit. A function, not an inline comparison: where size_t has 32 bits
// the test is always false, and compilers warn about that comparison (-Wtype-limits).
bool exceeds_u32(uint64_t count) { return count > 0xFFFFFFFFull; }

}  // namespace

//-----------------------------------------------------------------------------------------------
// [SECTION] Files
//-----------------------------------------------------------------------------------------------
// The only platform-specific code of the library. POSIX and Windows have exclusive creation,
// flush-to-disk and atomic rename; other targets (bare metal with a C library) fall back to the
// C standard library: exclusive "wx" creation and rename, without the disk sync.

namespace {

// What is at a path now.
enum class PathKind { missing, regular, directory, other, unknown };

PathKind path_kind(const std::string& path) {
#if MONGOOSE_POSIX_FILES
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return errno == ENOENT ? PathKind::missing : PathKind::unknown;
  return S_ISREG(st.st_mode) ? PathKind::regular : S_ISDIR(st.st_mode) ? PathKind::directory : PathKind::other;
#elif defined(_WIN32)
  struct _stat64 st;
  if (::_stat64(path.c_str(), &st) != 0) return errno == ENOENT ? PathKind::missing : PathKind::unknown;
  return (st.st_mode & _S_IFREG) ? PathKind::regular : (st.st_mode & _S_IFDIR) ? PathKind::directory : PathKind::other;
#else
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return PathKind::missing;
  std::fclose(f);
  return PathKind::regular;
#endif
}

// Size in bytes of the open file when it is a regular file; -1 for a stream (pipe, terminal,
// character device) whose size is unknown; *is_directory tells a directory apart.
int64_t open_file_size(std::FILE* f, bool* is_directory) {
  *is_directory = false;
#if MONGOOSE_POSIX_FILES
  struct stat st;
  if (::fstat(fileno(f), &st) != 0) return -1;
  *is_directory = S_ISDIR(st.st_mode);
  return S_ISREG(st.st_mode) ? int64_t(st.st_size) : -1;
#elif defined(_WIN32)
  struct _stat64 st;
  if (::_fstat64(_fileno(f), &st) != 0) return -1;
  *is_directory = (st.st_mode & _S_IFDIR) != 0;
  return (st.st_mode & _S_IFREG) ? int64_t(st.st_size) : -1;
#else
  if (std::fseek(f, 0, SEEK_END) != 0) return -1;
  long n = std::ftell(f);
  if (std::fseek(f, 0, SEEK_SET) != 0) return -1;
  return n < 0 ? -1 : int64_t(n);
#endif
}

std::string directory_of(const std::string& path) {
#if defined(_WIN32)
  size_t slash = path.find_last_of("/\\");
#else
  size_t slash = path.find_last_of('/');
#endif
  if (slash == std::string::npos) return ".";
  return slash == 0 ? path.substr(0, 1) : path.substr(0, slash);
}

uint64_t process_id() {
#if MONGOOSE_POSIX_FILES
  return uint64_t(::getpid());
#elif defined(_WIN32)
  return uint64_t(::_getpid());
#else
  return 0;
#endif
}

// A new file next to `target`, created exclusively, written through a FILE*, then committed by
// an atomic rename over the target. Destroyed uncommitted, it removes the temporary.
class AtomicFile {
 public:
  AtomicFile() = default;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { abandon(); }

  Status open(const std::string& target) {
    target_ = target;
    if (target.empty()) return Status::error("cannot write a file with an empty path");
    PathKind kind = path_kind(target);
    if (kind == PathKind::directory) return Status::error(target + ": is a directory; nothing was written");
    if (kind == PathKind::other)
      return Status::error(target + ": exists and is not a regular file (a device, FIFO or socket); nothing was written");
    // A short name no one else uses, in the target's directory (so the rename stays on one file
    // system, and a target name near NAME_MAX still leaves room): the process id, a clock reading
    // and an attempt counter. Exclusive creation makes a collision (or a planted symlink) fail
    // instead of being followed.
    const uint64_t stamp = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    const std::string dir = directory_of(target);
    for (uint32_t attempt = 0; attempt < 64; ++attempt) {
      temp_ = (dir == "/" ? std::string() : dir) + strf("/.mongoose-%llx-%08llx.tmp", (unsigned long long)process_id(),
                                                       (unsigned long long)mix_seed(stamp, attempt, uint64_t(uintptr_t(this))) & 0xFFFFFFFFull);
      int err = create_exclusive();
      if (err == 0) return Status();
      if (err != EEXIST) {
        std::string temp = temp_;
        temp_.clear();
        return Status::error(strf("%s: cannot create a temporary file in %s: %s; nothing was written", target.c_str(),
                                  directory_of(target).c_str(), std::strerror(err)));
      }
    }
    temp_.clear();
    return Status::error(target + ": cannot find an unused temporary file name next to it; nothing was written");
  }

  std::FILE* file() const { return file_; }

  // Flushes, syncs, closes and renames the temporary over the target, then syncs the directory.
  Status commit(bool write_ok) {
    int err = 0;
    bool ok = write_ok && file_ && std::ferror(file_) == 0;
    if (!ok) err = errno ? errno : EIO;
    if (ok && std::fflush(file_) != 0) ok = false, err = errno;
    if (ok && !sync_file()) ok = false, err = errno;
    if (file_ && std::fclose(file_) != 0 && ok) ok = false, err = errno;
    file_ = nullptr;
    if (ok && !rename_over()) ok = false, err = errno;
    if (!ok) {
      std::remove(temp_.c_str());
      temp_.clear();
      return Status::error(strf("%s: write failed: %s; the file was left as it was", target_.c_str(),
                                std::strerror(err ? err : EIO)));
    }
    temp_.clear();
    sync_directory();
    return Status();
  }

 private:
  // 0 or an errno value.
  int create_exclusive() {
#if MONGOOSE_POSIX_FILES
    int flags = O_WRONLY | O_CREAT | O_EXCL;
#if defined(O_CLOEXEC)
    flags |= O_CLOEXEC;
#endif
#if defined(O_NOFOLLOW)
    flags |= O_NOFOLLOW;
#endif
    int fd = ::open(temp_.c_str(), flags, 0666);
    if (fd < 0) return errno;
    // A file replaced keeps its permissions: a private model stays private.
    struct stat old;
    if (::stat(target_.c_str(), &old) == 0 && S_ISREG(old.st_mode)) (void)::fchmod(fd, old.st_mode & 07777);
    file_ = ::fdopen(fd, "wb");
    if (!file_) {
      int err = errno;
      ::close(fd);
      std::remove(temp_.c_str());
      return err;
    }
    return 0;
#elif defined(_WIN32)
    int fd = ::_open(temp_.c_str(), _O_WRONLY | _O_CREAT | _O_EXCL | _O_BINARY, _S_IREAD | _S_IWRITE);
    if (fd < 0) return errno;
    file_ = ::_fdopen(fd, "wb");
    if (!file_) {
      int err = errno;
      ::_close(fd);
      std::remove(temp_.c_str());
      return err;
    }
    return 0;
#else
    file_ = std::fopen(temp_.c_str(), "wbx");  // C11 exclusive mode
    return file_ ? 0 : (errno ? errno : EEXIST);
#endif
  }

  bool sync_file() {
#if MONGOOSE_POSIX_FILES
    return ::fsync(fileno(file_)) == 0;
#elif defined(_WIN32)
    return ::_commit(_fileno(file_)) == 0;
#else
    return true;
#endif
  }

  bool rename_over() {
#if defined(_WIN32)
    // rename() does not replace an existing file on Windows; MoveFileEx does, atomically.
    if (::MoveFileExA(temp_.c_str(), target_.c_str(), MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) return true;
    errno = EACCES;
    return false;
#else
    return std::rename(temp_.c_str(), target_.c_str()) == 0;
#endif
  }

  // Makes the rename itself durable; best effort (some file systems refuse to sync a directory).
  void sync_directory() {
#if MONGOOSE_POSIX_FILES
    int flags = O_RDONLY;
#if defined(O_DIRECTORY)
    flags |= O_DIRECTORY;
#endif
    int fd = ::open(directory_of(target_).c_str(), flags);
    if (fd >= 0) {
      (void)::fsync(fd);
      ::close(fd);
    }
#endif
  }

  void abandon() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!temp_.empty()) std::remove(temp_.c_str());
    temp_.clear();
  }

  std::string target_, temp_;
  std::FILE* file_ = nullptr;
};

}  // namespace

Status write_file_atomic(const std::string& path, const void* data, size_t size) {
  return guard("write_file_atomic", [&] {
    if (!data && size) return Status::error("write_file_atomic: data is null");
    AtomicFile f;
    Status st = f.open(path);
    if (!st.ok()) return st;
    bool ok = size == 0 || std::fwrite(data, 1, size, f.file()) == size;
    return f.commit(ok);
  });
}

Status check_writable(const std::string& path) {
  return guard("check_writable", [&] {
    AtomicFile f;
    return f.open(path);  // the temporary is removed again when f goes out of scope
  });
}

// ---- The section framing of model files (see [SECTION] Model I/O for what they hold). ----

namespace {

// Slicing-by-8 tables: t[k][b] is the CRC of byte b followed by k zero bytes, so eight bytes are
// folded per step with eight lookups (the portable path, several times the bytewise speed).
struct Crc32cTable {
  uint32_t t[8][256];
  constexpr Crc32cTable() : t() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
  }
};
constexpr Crc32cTable kCrc32c{};

bool host_is_little_endian() {
  const uint32_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

uint32_t byte_swap32(uint32_t x) {
  return (x >> 24) | ((x >> 8) & 0xFF00u) | ((x << 8) & 0xFF0000u) | (x << 24);
}

// Little-endian encoding of scalars into a byte string (configuration sections).
struct Bytes {
  std::string b;
  void u32(uint32_t v) { for (int i = 0; i < 4; ++i) b += char((v >> (8 * i)) & 0xFF); }
  void u64(uint64_t v) { for (int i = 0; i < 8; ++i) b += char((v >> (8 * i)) & 0xFF); }
  void f32(float f) { uint32_t v; std::memcpy(&v, &f, 4); u32(v); }
};

// Reads what Bytes wrote; the caller checks the size first (past the end reads zeros).
struct BytesReader {
  const unsigned char* p;
  size_t n, pos = 0;
  uint32_t u32() { uint32_t v = 0; for (int i = 0; i < 4 && pos + i < n; ++i) v |= uint32_t(p[pos + i]) << (8 * i); pos += 4; return v; }
  uint64_t u64() { uint64_t v = 0; for (int i = 0; i < 8 && pos + i < n; ++i) v |= uint64_t(p[pos + i]) << (8 * i); pos += 8; return v; }
  float f32() { uint32_t v = u32(); float f; std::memcpy(&f, &v, 4); return f; }
};

// Writes sections to a FILE, each with its CRC-32C, and counts them.
class SectionWriter {
 public:
  explicit SectionWriter(std::FILE* f) : f_(f) {}
  bool ok() const { return ok_; }
  uint32_t sections() const { return sections_; }
  void raw(const void* p, size_t n) {
    if (n) ok_ = ok_ && std::fwrite(p, 1, n, f_) == n;
  }
  void begin(const char tag[4], uint64_t length) {
    unsigned char head[12];
    std::memcpy(head, tag, 4);
    for (int i = 0; i < 8; ++i) head[4 + i] = (unsigned char)((length >> (8 * i)) & 0xFF);
    crc_ = crc32c(head, sizeof head);
    raw(head, sizeof head);
    ++sections_;
  }
  void payload(const void* p, size_t n) {
    if (n == 0) return;
    crc_ = crc32c(p, n, crc_);
    raw(p, n);
  }
  void floats(const float* v, size_t n) {
    if (host_is_little_endian()) return payload(v, n * sizeof(float));
    Bytes b;
    for (size_t i = 0; i < n; ++i) b.f32(v[i]);
    payload(b.b.data(), b.b.size());
  }
  void u32s(const uint32_t* v, size_t n) {
    if (host_is_little_endian()) return payload(v, n * sizeof(uint32_t));
    Bytes b;
    for (size_t i = 0; i < n; ++i) b.u32(v[i]);
    payload(b.b.data(), b.b.size());
  }
  void u16s(const uint16_t* v, size_t n) {
    if (host_is_little_endian()) return payload(v, n * sizeof(uint16_t));
    std::string b;
    for (size_t i = 0; i < n; ++i) b += char(v[i] & 0xFF), b += char(v[i] >> 8);
    payload(b.data(), b.size());
  }
  void end() {
    Bytes b;
    b.u32(crc_);
    raw(b.b.data(), 4);
  }
  // A whole section of float arrays, one after the other.
  void float_section(const char tag[4], std::initializer_list<const std::vector<float>*> arrays) {
    uint64_t n = 0;
    for (const std::vector<float>* a : arrays) n += a->size();
    begin(tag, n * 4);
    for (const std::vector<float>* a : arrays) floats(a->data(), a->size());
    end();
  }

 private:
  std::FILE* f_;
  bool ok_ = true;
  uint32_t crc_ = 0;
  uint32_t sections_ = 0;
};

// Reads and checks sections; every size is checked against what is left of the file and the
// memory budget before anything is allocated for it. Errors name the file and the byte offset.
class SectionReader {
 public:
  // `offset`: bytes of the file already read (the file header) when the reader takes over.
  SectionReader(std::FILE* f, std::string name, uint64_t file_size, uint64_t budget, uint64_t offset = 0)
      : f_(f), name_(std::move(name)), file_size_(file_size), offset_(offset), budget_(budget), limit_(budget) {}

  // The tag of the next section without consuming it ("" when fewer than 4 bytes are left).
  std::string peek_tag() {
    unsigned char t[4];
    if (file_size_ - offset_ < 4 || std::fread(t, 1, 4, f_) != 4) return std::string();
    std::fseek(f_, -4, SEEK_CUR);
    return std::string(reinterpret_cast<const char*>(t), 4);
  }

  uint64_t offset() const { return offset_; }
  uint32_t sections_read() const { return sections_read_; }
  const std::string& name() const { return name_; }
  Status fail(const std::string& what) const {
    return Status::error(strf("%s: byte %llu: ", name_.c_str(), (unsigned long long)offset_) + what);
  }

  Status read_exact(void* p, size_t n, const char* what) {
    if (uint64_t(n) > file_size_ - offset_)
      return fail(strf("file truncated in %s (needs %zu more bytes, %llu left)", what, n, (unsigned long long)(file_size_ - offset_)));
    if (std::fread(p, 1, n, f_) != n) return fail(strf("read error in %s", what));
    offset_ += n;
    return Status();
  }

  // Reads the next section header; *length is checked against the file and the budget.
  Status next(char tag[5], uint64_t* length) {
    unsigned char head[12];
    Status st = read_exact(head, sizeof head, "a section header");
    if (!st.ok()) return st;
    ++sections_read_;
    std::memcpy(tag, head, 4);
    tag[4] = '\0';
    for (int i = 0; i < 4; ++i)
      if (tag[i] < 32 || tag[i] > 126) return fail("section tag is not ASCII (corrupted file?)");
    uint64_t len = 0;
    for (int i = 0; i < 8; ++i) len |= uint64_t(head[4 + i]) << (8 * i);
    if (len > file_size_ - offset_)
      return fail(strf("section %s claims %llu bytes but only %llu remain (truncated or corrupted)", tag,
                       (unsigned long long)len, (unsigned long long)(file_size_ - offset_)));
    if (file_size_ - offset_ - len < 4)
      return fail(strf("file truncated in section %s: its %llu bytes and 4-byte checksum need %llu, %llu remain", tag,
                       (unsigned long long)len, (unsigned long long)(len + 4), (unsigned long long)(file_size_ - offset_)));
    if (len > budget_)
      return fail(strf("section %s needs %llu bytes, which with the sections before it exceeds the memory limit of %llu",
                       tag, (unsigned long long)len, (unsigned long long)limit_));
    budget_ -= len;
    crc_ = crc32c(head, sizeof head);
    *length = len;
    std::memcpy(tag_, tag, 5);
    return Status();
  }

  // The next section must be `want`, of want_len bytes (~0: any; its length then goes to *got).
  Status expect(const char* want, uint64_t want_len, uint64_t* got = nullptr, const char* why = "for the shapes") {
    char tag[5];
    uint64_t len;
    Status st = next(tag, &len);
    if (!st.ok()) return st;
    if (std::strcmp(tag, want) != 0) return fail(strf("expected section '%s', found '%s'", want, tag));
    if (want_len != ~uint64_t(0) && len != want_len)
      return fail(strf("section %s has %llu bytes, expected %llu %s", want, (unsigned long long)len,
                       (unsigned long long)want_len, why));
    if (got) *got = len;
    return Status();
  }

  Status payload(void* p, size_t n) {
    if (n == 0) return Status();
    Status st = read_exact(p, n, tag_);
    if (st.ok()) crc_ = crc32c(p, n, crc_);
    return st;
  }
  // n floats into *v (resized), every one finite.
  Status floats(std::vector<float>* v, size_t n) {
    v->resize(n);
    Status st = payload(v->data(), n * sizeof(float));
    if (!st.ok()) return st;
    if (!host_is_little_endian())
      for (float& x : *v) { uint32_t u; std::memcpy(&u, &x, 4); u = byte_swap32(u); std::memcpy(&x, &u, 4); }
    for (size_t i = 0; i < n; ++i)
      if (!is_finite((*v)[i])) return fail(strf("section %s: value %zu is not finite", tag_, i));
    return Status();
  }
  Status u32s(std::vector<uint32_t>* v, size_t n) {
    v->resize(n);
    Status st = payload(v->data(), n * sizeof(uint32_t));
    if (!st.ok()) return st;
    if (!host_is_little_endian())
      for (uint32_t& x : *v) x = byte_swap32(x);
    return Status();
  }
  // n bfloat16 values into *v (resized), every one finite.
  Status bf16s(std::vector<uint16_t>* v, size_t n) {
    v->resize(n);
    Status st = payload(v->data(), n * sizeof(uint16_t));
    if (!st.ok()) return st;
    if (!host_is_little_endian())
      for (uint16_t& x : *v) x = uint16_t((x >> 8) | (x << 8));
    for (size_t i = 0; i < n; ++i)
      if (((*v)[i] & 0x7F80u) == 0x7F80u) return fail(strf("section %s: value %zu is not finite", tag_, i));
    return Status();
  }
  Status check_crc() {
    unsigned char b[4];
    Status st = read_exact(b, 4, "a checksum");
    if (!st.ok()) return st;
    uint32_t stored = uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
    if (stored != crc_)
      return fail(strf("section %s: checksum mismatch (stored %08x, computed %08x): the file is corrupted", tag_, stored, crc_));
    return Status();
  }
  // A whole section of float arrays of the given sizes (already sized by the caller's shapes).
  Status float_section(const char* tag, std::initializer_list<std::vector<float>*> arrays) {
    uint64_t n = 0;
    for (std::vector<float>* a : arrays) n += a->size();
    Status st = expect(tag, n * 4);
    for (std::vector<float>* a : arrays) {
      if (!st.ok()) return st;
      st = floats(a, a->size());
    }
    if (st.ok()) st = check_crc();
    return st;
  }

 private:
  std::FILE* f_;
  std::string name_;
  uint64_t file_size_, offset_ = 0, budget_, limit_;
  uint32_t crc_ = 0, sections_read_ = 0;
  char tag_[5] = {0};
};

}  // namespace

namespace {

// CRC-32C of size bytes from the raw (inverted) state crc, portable.
uint32_t crc32c_portable(const unsigned char* p, size_t size, uint32_t crc) {
  for (; size >= 8; p += 8, size -= 8) {
    const uint32_t lo = crc ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    crc = kCrc32c.t[7][lo & 0xFF] ^ kCrc32c.t[6][(lo >> 8) & 0xFF] ^ kCrc32c.t[5][(lo >> 16) & 0xFF] ^
          kCrc32c.t[4][lo >> 24] ^ kCrc32c.t[3][p[4]] ^ kCrc32c.t[2][p[5]] ^ kCrc32c.t[1][p[6]] ^ kCrc32c.t[0][p[7]];
  }
  for (; size; ++p, --size) crc = kCrc32c.t[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
  return crc;
}

// The same with the CPU's CRC-32C instruction (SSE4.2 on x86, the CRC extension on ARMv8),
// about ten times faster again: model and dataset files are checked at I/O speed.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define MONGOOSE_HAVE_CRC_HW 1
__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(const unsigned char* p, size_t size, uint32_t crc) {
#if defined(__x86_64__)
  uint64_t c = crc;
  for (; size >= 8; p += 8, size -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  crc = uint32_t(c);
#endif
  for (; size; ++p, --size) crc = __builtin_ia32_crc32qi(crc, *p);
  return crc;
}
bool cpu_has_crc32c() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#elif defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define MONGOOSE_HAVE_CRC_HW 1
uint32_t crc32c_hardware(const unsigned char* p, size_t size, uint32_t crc) {
  for (; size >= 4; p += 4, size -= 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    crc = __crc32cw(crc, v);
  }
  for (; size; ++p, --size) crc = __crc32cb(crc, *p);
  return crc;
}
bool cpu_has_crc32c() { return true; }
#else
#define MONGOOSE_HAVE_CRC_HW 0
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
#if MONGOOSE_HAVE_CRC_HW
  // The instruction's byte order is the little-endian one the tables assume (x86, ARM).
  if (cpu_has_crc32c() && host_is_little_endian()) return ~crc32c_hardware(p, size, ~crc);
#endif
  return ~crc32c_portable(p, size, ~crc);
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Dense math
//-----------------------------------------------------------------------------------------------
// The vocabulary: V is one SIMD register of W floats. Operations take outputs by reference so that
// no vector type crosses a function boundary compiled without AVX (which would change the ABI);
// the AVX2 entry points are `flatten`, so every vocabulary call is inlined into AVX2 code. The
// NEON entry points are `flatten` too, so the vocabulary is inlined whatever the inliner's limits.

namespace {

struct ScalarOps {
  using V = float;
  static constexpr size_t W = 1;
  static void zero(V& r) { r = 0.0f; }
  static void set1(V& r, float x) { r = x; }
  static void load(V& r, const float* p) { r = *p; }
  static void store(float* p, const V& v) { *p = v; }
  static void fma(V& acc, const V& a, const V& b) { acc += a * b; }
  static void add(V& r, const V& a, const V& b) { r = a + b; }
  static void sub(V& r, const V& a, const V& b) { r = a - b; }
  static void mul(V& r, const V& a, const V& b) { r = a * b; }
  static void div(V& r, const V& a, const V& b) { r = a / b; }
  static void max(V& r, const V& a, const V& b) { r = a > b ? a : b; }
  static void sqrt(V& r, const V& a) { r = std::sqrt(a); }
  static void exp(V& r, const V& a) { r = std::exp(a); }
  static void keep_where_positive(V& r, const V& key, const V& x) { r = key > 0.0f ? x : 0.0f; }
  static float hsum(const V& v) { return v; }
  static float hmax(const V& v) { return v; }
};

#if MONGOOSE_HAVE_AVX2
#define MONGOOSE_AVX2_FN __attribute__((target("avx2,fma"))) inline
struct Avx2Ops {
  using V = __m256;
  static constexpr size_t W = 8;
  MONGOOSE_AVX2_FN static void zero(V& r) { r = _mm256_setzero_ps(); }
  MONGOOSE_AVX2_FN static void set1(V& r, float x) { r = _mm256_set1_ps(x); }
  MONGOOSE_AVX2_FN static void load(V& r, const float* p) { r = _mm256_loadu_ps(p); }
  MONGOOSE_AVX2_FN static void store(float* p, const V& v) { _mm256_storeu_ps(p, v); }
  MONGOOSE_AVX2_FN static void fma(V& acc, const V& a, const V& b) { acc = _mm256_fmadd_ps(a, b, acc); }
  MONGOOSE_AVX2_FN static void add(V& r, const V& a, const V& b) { r = _mm256_add_ps(a, b); }
  MONGOOSE_AVX2_FN static void sub(V& r, const V& a, const V& b) { r = _mm256_sub_ps(a, b); }
  MONGOOSE_AVX2_FN static void mul(V& r, const V& a, const V& b) { r = _mm256_mul_ps(a, b); }
  MONGOOSE_AVX2_FN static void div(V& r, const V& a, const V& b) { r = _mm256_div_ps(a, b); }
  MONGOOSE_AVX2_FN static void max(V& r, const V& a, const V& b) { r = _mm256_max_ps(a, b); }
  MONGOOSE_AVX2_FN static void sqrt(V& r, const V& a) { r = _mm256_sqrt_ps(a); }
  MONGOOSE_AVX2_FN static void keep_where_positive(V& r, const V& key, const V& x) {
    r = _mm256_and_ps(_mm256_cmp_ps(key, _mm256_setzero_ps(), _CMP_GT_OQ), x);
  }
  // exp(a) = 2^n e^r with n = round(a / ln 2), |r| <= ln2 / 2; e^r by a degree-6 Taylor
  // polynomial (relative error ~1.2e-7). Inputs are clamped to the range where 2^n is normal.
  MONGOOSE_AVX2_FN static void exp(V& r, const V& a) {
    __m256 x = _mm256_min_ps(_mm256_max_ps(a, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // r = x - n ln2, with ln2 split in two so that n * ln2_hi is exact.
    __m256 rr = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    rr = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), rr);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, rr, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    r = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  MONGOOSE_AVX2_FN static float hsum(const V& v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  MONGOOSE_AVX2_FN static float hmax(const V& v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
#endif

#if MONGOOSE_HAVE_NEON
// AArch64 has every operation as one instruction. 32-bit ARMv7 NEON lacks fused multiply-add
// (unless __ARM_FEATURE_FMA, VFPv4), division, square root, rounding and across-lane reductions:
// there fma is a multiply then an add (two roundings, like the scalar path), and div and sqrt run
// on the four lanes with the scalar VFP instructions so that Adam rounds exactly like the scalar
// path (a reciprocal estimate with Newton steps would be faster but off by an ulp or two).
// ARMv7 NEON also flushes denormal inputs and results to zero (an exp below ~1.2e-38 comes out
// as 0), which is within every kernel's tolerance.
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
#define MONGOOSE_NEON_FMA 1
#else
#define MONGOOSE_NEON_FMA 0
#endif
struct NeonOps {
  using V = float32x4_t;
  static constexpr size_t W = 4;
  static void zero(V& r) { r = vdupq_n_f32(0.0f); }
  static void set1(V& r, float x) { r = vdupq_n_f32(x); }
  static void load(V& r, const float* p) { r = vld1q_f32(p); }
  static void store(float* p, const V& v) { vst1q_f32(p, v); }
#if MONGOOSE_NEON_FMA
  static void fma(V& acc, const V& a, const V& b) { acc = vfmaq_f32(acc, a, b); }
  static void fms(V& acc, const V& a, const V& b) { acc = vfmsq_f32(acc, a, b); }  // acc -= a b (exp)
#else
  static void fma(V& acc, const V& a, const V& b) { acc = vmlaq_f32(acc, a, b); }
  static void fms(V& acc, const V& a, const V& b) { acc = vmlsq_f32(acc, a, b); }
#endif
  static void add(V& r, const V& a, const V& b) { r = vaddq_f32(a, b); }
  static void sub(V& r, const V& a, const V& b) { r = vsubq_f32(a, b); }
  static void mul(V& r, const V& a, const V& b) { r = vmulq_f32(a, b); }
#if defined(__aarch64__)
  static void div(V& r, const V& a, const V& b) { r = vdivq_f32(a, b); }
  static void sqrt(V& r, const V& a) { r = vsqrtq_f32(a); }
#else
  // Lane by lane: the VFP registers s0..s31 are the lanes of q0..q7, so no memory round trip.
  static void div(V& r, const V& a, const V& b) {
    float32x4_t q = a;
    q = vsetq_lane_f32(vgetq_lane_f32(a, 0) / vgetq_lane_f32(b, 0), q, 0);
    q = vsetq_lane_f32(vgetq_lane_f32(a, 1) / vgetq_lane_f32(b, 1), q, 1);
    q = vsetq_lane_f32(vgetq_lane_f32(a, 2) / vgetq_lane_f32(b, 2), q, 2);
    q = vsetq_lane_f32(vgetq_lane_f32(a, 3) / vgetq_lane_f32(b, 3), q, 3);
    r = q;
  }
  static void sqrt(V& r, const V& a) {
    float32x4_t q = a;
    q = vsetq_lane_f32(std::sqrt(vgetq_lane_f32(a, 0)), q, 0);
    q = vsetq_lane_f32(std::sqrt(vgetq_lane_f32(a, 1)), q, 1);
    q = vsetq_lane_f32(std::sqrt(vgetq_lane_f32(a, 2)), q, 2);
    q = vsetq_lane_f32(std::sqrt(vgetq_lane_f32(a, 3)), q, 3);
    r = q;
  }
#endif
  // a > b ? a : b, exactly like the scalar and AVX2 max (vmaxq_f32 would give NaN where only a
  // is NaN, and +0 for max(+0, -0)); the compiler turns max(x, 0) into a compare and an and.
  static void max(V& r, const V& a, const V& b) { r = vbslq_f32(vcgtq_f32(a, b), a, b); }
  static void keep_where_positive(V& r, const V& key, const V& x) {
    r = vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(key, vdupq_n_f32(0.0f)), vreinterpretq_u32_f32(x)));
  }
  // The AVX2 exp, step for step: exp(a) = 2^n e^r, n = round(a / ln 2), r = a - n ln2 with ln2
  // in two parts, e^r by the degree-6 Taylor polynomial, 2^n built in the exponent bits.
  static void exp(V& r, const V& a) {
    float32x4_t x = vminq_f32(vmaxq_f32(a, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
    float32x4_t t = vmulq_f32(x, vdupq_n_f32(1.44269504088896341f));
#if defined(__aarch64__)
    float32x4_t n = vrndnq_f32(t);  // to nearest, ties to even, like _mm256_round_ps
    int32x4_t ni = vcvtq_s32_f32(n);
#else
    // Round half away from zero by adding +-0.5 and truncating: differs from ties-to-even only
    // at (or within an ulp of) halves, where |r| stays about ln2 / 2 either way.
    uint32x4_t sign = vandq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(0x80000000u));
    float32x4_t half = vreinterpretq_f32_u32(vorrq_u32(sign, vreinterpretq_u32_f32(vdupq_n_f32(0.5f))));
    int32x4_t ni = vcvtq_s32_f32(vaddq_f32(t, half));
    float32x4_t n = vcvtq_f32_s32(ni);
#endif
    float32x4_t rr = x;
    fms(rr, n, vdupq_n_f32(0.693359375f));  // exact product: ln2_hi has few bits, |n| <= 127
    fms(rr, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
    p = horner_step(p, rr, 1.0f / 120.0f);
    p = horner_step(p, rr, 1.0f / 24.0f);
    p = horner_step(p, rr, 1.0f / 6.0f);
    p = horner_step(p, rr, 0.5f);
    p = horner_step(p, rr, 1.0f);
    p = horner_step(p, rr, 1.0f);
    int32x4_t e = vshlq_n_s32(vaddq_s32(ni, vdupq_n_s32(127)), 23);
    r = vmulq_f32(p, vreinterpretq_f32_s32(e));
  }
  // c + p x (NEON is the base instruction set, so vectors may cross function boundaries freely).
  static float32x4_t horner_step(float32x4_t p, float32x4_t x, float c) {
    float32x4_t q = vdupq_n_f32(c);
    fma(q, p, x);
    return q;
  }
  static float hsum(const V& v) {
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
  }
  // Same comparison as max above, so a NaN lane behaves as in the scalar and AVX2 paths.
  static float hmax(const V& v) {
    float32x2_t lo = vget_low_f32(v), hi = vget_high_f32(v);
    float32x2_t m = vbsl_f32(vcgt_f32(lo, hi), lo, hi);
    float a = vget_lane_f32(m, 0), b = vget_lane_f32(m, 1);
    return a > b ? a : b;
  }
};
#undef MONGOOSE_NEON_FMA
#endif

// ---- The kernels, each written once over the vocabulary O. ----

template <class O>
inline float dot_k(const float* a, const float* b, size_t n) {
  constexpr size_t W = O::W;
  typename O::V s0, s1, s2, s3, x, y;
  O::zero(s0); O::zero(s1); O::zero(s2); O::zero(s3);
  size_t i = 0;
  // Four independent accumulators hide the FMA latency.
  for (; i + 4 * W <= n; i += 4 * W) {
    O::load(x, a + i);         O::load(y, b + i);         O::fma(s0, x, y);
    O::load(x, a + i + W);     O::load(y, b + i + W);     O::fma(s1, x, y);
    O::load(x, a + i + 2 * W); O::load(y, b + i + 2 * W); O::fma(s2, x, y);
    O::load(x, a + i + 3 * W); O::load(y, b + i + 3 * W); O::fma(s3, x, y);
  }
  for (; i + W <= n; i += W) { O::load(x, a + i); O::load(y, b + i); O::fma(s0, x, y); }
  O::add(s0, s0, s1); O::add(s2, s2, s3); O::add(s0, s0, s2);
  float s = O::hsum(s0);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <class O>
inline void axpy_k(float alpha, const float* x, float* y, size_t n) {
  constexpr size_t W = O::W;
  typename O::V a, xv, yv;
  O::set1(a, alpha);
  size_t i = 0;
  for (; i + W <= n; i += W) { O::load(xv, x + i); O::load(yv, y + i); O::fma(yv, a, xv); O::store(y + i, yv); }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

template <class O>
inline void scale_k(float alpha, float* x, size_t n) {
  constexpr size_t W = O::W;
  typename O::V a, xv;
  O::set1(a, alpha);
  size_t i = 0;
  for (; i + W <= n; i += W) { O::load(xv, x + i); O::mul(xv, xv, a); O::store(x + i, xv); }
  for (; i < n; ++i) x[i] *= alpha;
}

template <class O>
inline void add_k(const float* x, float* y, size_t n) {
  constexpr size_t W = O::W;
  typename O::V xv, yv;
  size_t i = 0;
  for (; i + W <= n; i += W) { O::load(xv, x + i); O::load(yv, y + i); O::add(yv, yv, xv); O::store(y + i, yv); }
  for (; i < n; ++i) y[i] += x[i];
}

// Gathered rows are usually not in cache: ask for the row a few positions ahead.
inline void prefetch_row(const float* row, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
  for (size_t i = 0; i < n; i += 16) __builtin_prefetch(row + i);
#else
  (void)row;
  (void)n;
#endif
}
constexpr size_t kPrefetchAhead = 4;

template <class O>
inline void row_scores_k(const float* W, size_t ld, const uint32_t* rows, size_t count,
                         const float* x, size_t n, const float* bias, float* out) {
  for (size_t i = 0; i < count; ++i) {
    size_t r = rows ? rows[i] : i;
    if (rows && i + kPrefetchAhead < count) prefetch_row(W + size_t(rows[i + kPrefetchAhead]) * ld, n);
    float s = dot_k<O>(W + r * ld, x, n);
    out[i] = bias ? s + bias[r] : s;
  }
}

template <class O>
inline void rows_axpy_k(const float* W, size_t ld, const uint32_t* rows, size_t count, const float* coef,
                        size_t n, float* out) {
  for (size_t i = 0; i < count; ++i) {
    if (i + kPrefetchAhead < count) prefetch_row(W + size_t(rows[i + kPrefetchAhead]) * ld, n);
    axpy_k<O>(coef[i], W + size_t(rows[i]) * ld, out, n);
  }
}

template <class O>
inline void sparse_matvec_k(const uint32_t* ids, const float* values, size_t nnz, const float* W,
                            size_t ld, size_t n, float* out) {
  for (size_t k = 0; k < nnz; ++k) axpy_k<O>(values[k], W + size_t(ids[k]) * ld, out, n);
}

template <class O>
inline void relu_k(float* x, size_t n) {
  constexpr size_t W = O::W;
  typename O::V z, xv;
  O::zero(z);
  size_t i = 0;
  for (; i + W <= n; i += W) { O::load(xv, x + i); O::max(xv, xv, z); O::store(x + i, xv); }
  for (; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

template <class O>
inline void relu_backward_k(const float* act, float* grad, size_t n) {
  constexpr size_t W = O::W;
  typename O::V a, g;
  size_t i = 0;
  for (; i + W <= n; i += W) { O::load(a, act + i); O::load(g, grad + i); O::keep_where_positive(g, a, g); O::store(grad + i, g); }
  for (; i < n; ++i) grad[i] = act[i] > 0.0f ? grad[i] : 0.0f;
}

template <class O>
inline float max_k(const float* x, size_t n) {
  constexpr size_t W = O::W;
  float m = -std::numeric_limits<float>::infinity();
  size_t i = 0;
  if (n >= W) {
    typename O::V mv, xv;
    O::load(mv, x);
    for (i = W; i + W <= n; i += W) { O::load(xv, x + i); O::max(mv, mv, xv); }
    m = O::hmax(mv);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Sum of exp(x[i] - shift); when `out` is not null, also stores each exp there.
template <class O>
inline float sum_exp_k(const float* x, size_t n, float shift, float* out) {
  constexpr size_t W = O::W;
  typename O::V s, sh, xv;
  O::zero(s);
  O::set1(sh, shift);
  size_t i = 0;
  for (; i + W <= n; i += W) {
    O::load(xv, x + i); O::sub(xv, xv, sh); O::exp(xv, xv);
    if (out) O::store(out + i, xv);
    O::add(s, s, xv);
  }
  float total = O::hsum(s);
  for (; i < n; ++i) {
    float e = std::exp(x[i] - shift);
    if (out) out[i] = e;
    total += e;
  }
  return total;
}

template <class O>
inline float logsumexp_k(const float* x, size_t n) {
  if (n == 0) return -std::numeric_limits<float>::infinity();
  float m = max_k<O>(x, n);
  if (!is_finite(m)) return m;
  return m + std::log(sum_exp_k<O>(x, n, m, nullptr));
}

template <class O>
inline float softmax_k(float* x, size_t n) {
  if (n == 0) return -std::numeric_limits<float>::infinity();
  float m = max_k<O>(x, n);
  float total = sum_exp_k<O>(x, n, m, x);
  scale_k<O>(1.0f / total, x, n);
  return m + std::log(total);
}

template <class O>
inline void adam_k(float* w, const float* g, float* m, float* v, size_t n, const AdamStep& st) {
  constexpr size_t W = O::W;
  typename O::V b1, b2, omb1, omb2, lr, eps, c1, c2, wv, gv, mv, vv, t;
  O::set1(b1, st.beta1); O::set1(b2, st.beta2);
  O::set1(omb1, 1.0f - st.beta1); O::set1(omb2, 1.0f - st.beta2);
  O::set1(lr, st.lr); O::set1(eps, st.eps); O::set1(c1, st.c1); O::set1(c2, st.c2);
  size_t i = 0;
  for (; i + W <= n; i += W) {
    O::load(gv, g + i); O::load(mv, m + i); O::load(vv, v + i); O::load(wv, w + i);
    O::mul(mv, mv, b1); O::fma(mv, omb1, gv);           // m = b1 m + (1-b1) g
    O::mul(t, gv, gv); O::mul(vv, vv, b2); O::fma(vv, omb2, t);  // v = b2 v + (1-b2) g^2
    O::mul(t, vv, c2); O::sqrt(t, t); O::add(t, t, eps);  // sqrt(v c2) + eps
    typename O::V step;
    O::mul(step, mv, c1); O::mul(step, step, lr); O::div(step, step, t);
    O::sub(wv, wv, step);
    O::store(m + i, mv); O::store(v + i, vv); O::store(w + i, wv);
  }
  for (; i < n; ++i) {
    m[i] = st.beta1 * m[i] + (1.0f - st.beta1) * g[i];
    v[i] = st.beta2 * v[i] + (1.0f - st.beta2) * (g[i] * g[i]);
    w[i] -= st.lr * (m[i] * st.c1) / (std::sqrt(v[i] * st.c2) + st.eps);
  }
}

// C = A B^T in panels of NP = 3W columns: the panel's rows of B are packed transposed (K x NP),
// so the inner loop broadcasts A[i][k] against contiguous vectors of the panel (no horizontal
// sums). MR rows of C per step: MR*3 accumulators.
template <class O, size_t MR>
inline void gemm_nt_panel(size_t K, const float* A, size_t lda, const float* packed, float* C,
                          size_t ldc, size_t columns) {
  constexpr size_t W = O::W, NV = 3, NP = NV * W;
  typename O::V acc[MR][NV], a, b[NV];
  MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r)
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::zero(acc[r][v]);
  for (size_t k = 0; k < K; ++k) {
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::load(b[v], packed + k * NP + v * W);
    MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r) {
      O::set1(a, A[r * lda + k]);
      MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::fma(acc[r][v], a, b[v]);
    }
  }
  if (columns == NP) {
    MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r)
      MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::store(C + r * ldc + v * W, acc[r][v]);
    return;
  }
  float tmp[NP];
  MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r) {
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::store(tmp + v * W, acc[r][v]);
    for (size_t c = 0; c < columns; ++c) C[r * ldc + c] = tmp[c];
  }
}

template <class O>
inline void gemm_nt_k(size_t M, size_t N, size_t K, const float* A, size_t lda, const float* B,
                      size_t ldb, float* C, size_t ldc) {
  constexpr size_t NP = 3 * O::W;
  if (M == 0 || N == 0) return;
  // Kernels never throw: without memory for the packed panel, plain dot products give the same
  // products (in another summation order).
  std::vector<float> packed;
  try {
    packed.resize(K * NP);
  } catch (const std::bad_alloc&) {
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j) C[i * ldc + j] = dot_k<O>(A + i * lda, B + j * ldb, K);
    return;
  }
  for (size_t j0 = 0; j0 < N; j0 += NP) {
    size_t columns = std::min(NP, N - j0);
    for (size_t c = 0; c < NP; ++c)
      for (size_t k = 0; k < K; ++k) packed[k * NP + c] = c < columns ? B[(j0 + c) * ldb + k] : 0.0f;
    size_t i = 0;
    for (; i + 4 <= M; i += 4) gemm_nt_panel<O, 4>(K, A + i * lda, lda, packed.data(), C + i * ldc + j0, ldc, columns);
    for (; i < M; ++i) gemm_nt_panel<O, 1>(K, A + i * lda, lda, packed.data(), C + i * ldc + j0, ldc, columns);
  }
}

// C[i][j..j+NV*W) += sum_k a(i, k) B[k][j..] for MR rows, NV vectors of C per row in registers;
// a(i, k) = A[i][k], or A[k][i] when TransA.
template <class O, bool TransA, size_t MR, size_t NV>
inline void gemm_nn_block(size_t K, const float* A, size_t lda, const float* B, size_t ldb,
                          float* C, size_t ldc) {
  constexpr size_t W = O::W;
  typename O::V acc[MR][NV], a, b[NV];
  MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r)
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::load(acc[r][v], C + r * ldc + v * W);
  for (size_t k = 0; k < K; ++k) {
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::load(b[v], B + k * ldb + v * W);
    MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r) {
      O::set1(a, TransA ? A[k * lda + r] : A[r * lda + k]);
      MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::fma(acc[r][v], a, b[v]);
    }
  }
  MONGOOSE_UNROLL for (size_t r = 0; r < MR; ++r)
    MONGOOSE_UNROLL for (size_t v = 0; v < NV; ++v) O::store(C + r * ldc + v * W, acc[r][v]);
}

template <class O, bool TransA>
inline void gemm_acc_k(size_t M, size_t N, size_t K, const float* A, size_t lda, const float* B,
                       size_t ldb, float* C, size_t ldc) {
  constexpr size_t W = O::W;
  // Row i of C reads A at row i (A[i][k]) or at column i (A[k][i]).
  auto a_at = [&](size_t i) { return TransA ? A + i : A + i * lda; };
  auto scalar_column = [&](size_t i, size_t rows, size_t j) {
    for (size_t r = 0; r < rows; ++r) {
      float s = C[(i + r) * ldc + j];
      for (size_t k = 0; k < K; ++k) s += (TransA ? A[k * lda + i + r] : A[(i + r) * lda + k]) * B[k * ldb + j];
      C[(i + r) * ldc + j] = s;
    }
  };
  size_t i = 0;
  for (; i + 4 <= M; i += 4) {
    size_t j = 0;
    for (; j + 3 * W <= N; j += 3 * W) gemm_nn_block<O, TransA, 4, 3>(K, a_at(i), lda, B + j, ldb, C + i * ldc + j, ldc);
    for (; j + W <= N; j += W) gemm_nn_block<O, TransA, 4, 1>(K, a_at(i), lda, B + j, ldb, C + i * ldc + j, ldc);
    for (; j < N; ++j) scalar_column(i, 4, j);
  }
  for (; i < M; ++i) {
    size_t j = 0;
    for (; j + 3 * W <= N; j += 3 * W) gemm_nn_block<O, TransA, 1, 3>(K, a_at(i), lda, B + j, ldb, C + i * ldc + j, ldc);
    for (; j + W <= N; j += W) gemm_nn_block<O, TransA, 1, 1>(K, a_at(i), lda, B + j, ldb, C + i * ldc + j, ldc);
    for (; j < N; ++j) scalar_column(i, 1, j);
  }
}

// ---- Instances: every entry point of one kernel table, for one vocabulary. ----

#define MONGOOSE_KERNEL_ENTRY_POINTS(ATTR, OPS, SUFFIX)                                             \
  ATTR float dot_##SUFFIX(const float* a, const float* b, size_t n) { return dot_k<OPS>(a, b, n); } \
  ATTR void axpy_##SUFFIX(float al, const float* x, float* y, size_t n) { axpy_k<OPS>(al, x, y, n); } \
  ATTR void scale_##SUFFIX(float al, float* x, size_t n) { scale_k<OPS>(al, x, n); }                \
  ATTR void add_##SUFFIX(const float* x, float* y, size_t n) { add_k<OPS>(x, y, n); }               \
  ATTR void row_scores_##SUFFIX(const float* W, size_t ld, const uint32_t* rows, size_t count,      \
                                const float* x, size_t n, const float* bias, float* out) {          \
    row_scores_k<OPS>(W, ld, rows, count, x, n, bias, out);                                         \
  }                                                                                                 \
  ATTR void rows_axpy_##SUFFIX(const float* W, size_t ld, const uint32_t* rows, size_t count,       \
                               const float* coef, size_t n, float* out) {                           \
    rows_axpy_k<OPS>(W, ld, rows, count, coef, n, out);                                             \
  }                                                                                                 \
  ATTR void sparse_matvec_##SUFFIX(const uint32_t* ids, const float* values, size_t nnz,            \
                                   const float* W, size_t ld, size_t n, float* out) {               \
    sparse_matvec_k<OPS>(ids, values, nnz, W, ld, n, out);                                          \
  }                                                                                                 \
  ATTR void relu_##SUFFIX(float* x, size_t n) { relu_k<OPS>(x, n); }                                \
  ATTR void relu_backward_##SUFFIX(const float* a, float* g, size_t n) { relu_backward_k<OPS>(a, g, n); } \
  ATTR float logsumexp_##SUFFIX(const float* x, size_t n) { return logsumexp_k<OPS>(x, n); }        \
  ATTR float softmax_##SUFFIX(float* x, size_t n) { return softmax_k<OPS>(x, n); }                  \
  ATTR void adam_##SUFFIX(float* w, const float* g, float* m, float* v, size_t n, const AdamStep& s) { \
    adam_k<OPS>(w, g, m, v, n, s);                                                                  \
  }                                                                                                 \
  ATTR void gemm_nt_##SUFFIX(size_t M, size_t N, size_t K, const float* A, size_t lda,              \
                             const float* B, size_t ldb, float* C, size_t ldc) {                    \
    gemm_nt_k<OPS>(M, N, K, A, lda, B, ldb, C, ldc);                                                \
  }                                                                                                 \
  ATTR void gemm_nn_acc_##SUFFIX(size_t M, size_t N, size_t K, const float* A, size_t lda,          \
                                 const float* B, size_t ldb, float* C, size_t ldc) {                \
    gemm_acc_k<OPS, false>(M, N, K, A, lda, B, ldb, C, ldc);                                        \
  }                                                                                                 \
  ATTR void gemm_tn_acc_##SUFFIX(size_t M, size_t N, size_t K, const float* A, size_t lda,          \
                                 const float* B, size_t ldb, float* C, size_t ldc) {                \
    gemm_acc_k<OPS, true>(M, N, K, A, lda, B, ldb, C, ldc);                                         \
  }                                                                                                 \
  const Kernels kernels_##SUFFIX = {                                                                \
      Simd::SUFFIX,       #SUFFIX,          dot_##SUFFIX,     axpy_##SUFFIX,                        \
      scale_##SUFFIX,     add_##SUFFIX,     row_scores_##SUFFIX, rows_axpy_##SUFFIX,                \
      sparse_matvec_##SUFFIX,                                                                       \
      relu_##SUFFIX,      relu_backward_##SUFFIX, logsumexp_##SUFFIX, softmax_##SUFFIX,             \
      adam_##SUFFIX,      gemm_nt_##SUFFIX, gemm_nn_acc_##SUFFIX, gemm_tn_acc_##SUFFIX};

MONGOOSE_KERNEL_ENTRY_POINTS(, ScalarOps, scalar)
#if MONGOOSE_HAVE_AVX2
MONGOOSE_KERNEL_ENTRY_POINTS(__attribute__((target("avx2,fma"), flatten)), Avx2Ops, avx2)
#endif
#if MONGOOSE_HAVE_NEON && (defined(__GNUC__) || defined(__clang__))
MONGOOSE_KERNEL_ENTRY_POINTS(__attribute__((flatten)), NeonOps, neon)
#elif MONGOOSE_HAVE_NEON
MONGOOSE_KERNEL_ENTRY_POINTS(, NeonOps, neon)
#endif
#undef MONGOOSE_KERNEL_ENTRY_POINTS

}  // namespace

bool cpu_has_avx2() {
#if MONGOOSE_HAVE_AVX2
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool cpu_has_neon() { return MONGOOSE_HAVE_NEON != 0; }

// A build has at most one vector table (x86: AVX2, ARM: NEON); asking for the other one, or for
// one this CPU lacks, gives the scalar table.
const Kernels& kernels(Simd want) {
#if MONGOOSE_HAVE_AVX2
  if ((want == Simd::automatic || want == Simd::avx2) && cpu_has_avx2()) return kernels_avx2;
#endif
#if MONGOOSE_HAVE_NEON
  if (want == Simd::automatic || want == Simd::neon) return kernels_neon;
#endif
  (void)want;
  return kernels_scalar;
}

AdamStep AdamStep::at(float lr, float beta1, float beta2, float eps, uint64_t t) {
  AdamStep s;
  s.lr = lr;
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.eps = eps;
  double tt = double(t < 1 ? 1 : t);
  s.c1 = float(1.0 / (1.0 - std::pow(double(beta1), tt)));
  s.c2 = float(1.0 / (1.0 - std::pow(double(beta2), tt)));
  return s;
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Random numbers
//-----------------------------------------------------------------------------------------------

namespace {
inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint32_t Rng::below(uint32_t n) {
  // Lemire's multiply-shift with rejection: unbiased.
  uint64_t m = uint64_t(uint32_t(next() >> 32)) * n;
  uint32_t low = uint32_t(m);
  if (low < n) {
    uint32_t threshold = uint32_t(-n) % n;
    while (low < threshold) {
      m = uint64_t(uint32_t(next() >> 32)) * n;
      low = uint32_t(m);
    }
  }
  return uint32_t(m >> 32);
}

float Rng::uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }

float Rng::gaussian() {
  // Box-Muller; uses one pair per call (simple, and speed does not matter here).
  double u1 = (double(next() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
  double u2 = double(next() >> 11) * (1.0 / 9007199254740992.0);
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a;
  uint64_t h = splitmix64(x);
  x = h ^ b;
  h = splitmix64(x);
  x = h ^ c;
  return splitmix64(x);
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Threads
//-----------------------------------------------------------------------------------------------
// A fixed pool. run(n, fn) calls fn(task, worker) for task in [0, n): task i always runs on
// worker i % threads, so every partition of work (and every floating-point reduction order) is a
// function of the thread count only, never of timing.

namespace {

#if MONGOOSE_HAVE_THREADS
using Mutex = std::mutex;
using MutexLock = std::lock_guard<std::mutex>;
#else
// Single-threaded builds: nothing runs concurrently, so there is nothing to lock.
struct Mutex {};
struct MutexLock {
  explicit MutexLock(Mutex&) {}
};
#endif

#if MONGOOSE_HAVE_THREADS
class ThreadPool {
 public:
  // Throws (std::system_error, std::bad_alloc) when the threads cannot be started; then the ones
  // already started are stopped first.
  explicit ThreadPool(uint32_t threads) : threads_(threads < 1 ? 1 : threads) {
    try {
      workers_.reserve(threads_);
      for (uint32_t w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { loop(w); });
    } catch (const std::exception& e) {
      shut_down();
      throw StatusError{Status::error(strf("could not start %u worker threads (Config::threads): %s", unsigned(threads_), e.what()))};
    }
  }
  ~ThreadPool() { shut_down(); }
  uint32_t size() const { return threads_; }

  void shut_down() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  template <class F>
  void run(size_t tasks, F&& fn) {
    if (threads_ == 1 || tasks <= 1) {
      for (size_t t = 0; t < tasks; ++t) fn(t, 0u);
      return;
    }
    // A task that throws stops its worker's share; the first exception is rethrown here once
    // every worker is done (so no worker still uses `job`).
    std::exception_ptr failure;
    std::function<void(size_t, uint32_t)> job = [&](size_t t, uint32_t w) {
      try {
        fn(t, w);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex_);
        if (!failure) failure = std::current_exception();
        throw Stop{};
      }
    };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      tasks_ = tasks;
      pending_ = threads_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    try {
      for (size_t t = 0; t < tasks; t += threads_) job(t, 0u);
    } catch (const Stop&) {
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_ == 0; });
      job_ = nullptr;
    }
    if (failure) std::rethrow_exception(failure);
  }

 private:
  void loop(uint32_t w) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(size_t, uint32_t)>* job;
      size_t tasks;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
        job = job_;
        tasks = tasks_;
      }
      try {
        for (size_t t = w; t < tasks; t += threads_) (*job)(t, w);
      } catch (const Stop&) {
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  struct Stop {};  // unwinds a worker's loop after its task failed
  uint32_t threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_, failure_mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t, uint32_t)>* job_ = nullptr;
  size_t tasks_ = 0;
  uint32_t pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

uint32_t resolve_threads(uint32_t requested) {
  if (requested) return requested;
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? hw : 1;
}
#else
// MONGOOSE_NO_THREADS: every run is the one-thread pool's, on the calling thread.
class ThreadPool {
 public:
  explicit ThreadPool(uint32_t) {}
  uint32_t size() const { return 1; }
  template <class F>
  void run(size_t tasks, F&& fn) {
    for (size_t t = 0; t < tasks; ++t) fn(t, 0u);
  }
};

// Any request runs with one thread: the results are those of threads = 1 in a threaded build.
uint32_t resolve_threads(uint32_t) { return 1; }
#endif

// What a layer's batch work runs on: the pool and the kernel table.
struct Exec {
  ThreadPool* pool = nullptr;
  const Kernels* k = nullptr;
  uint32_t threads() const { return pool->size(); }
  // fn(begin, end, worker) over [0, n) in chunks of `chunk`, spread over the workers.
  template <class F>
  void chunks(size_t n, size_t chunk, F&& fn) const {
    size_t tasks = (n + chunk - 1) / chunk;
    pool->run(tasks, [&](size_t t, uint32_t w) { fn(t * chunk, std::min(n, (t + 1) * chunk), w); });
  }
};

// out (n x rows, row stride `rows`) = Q R^T for n queries Q and `rows` rows R (both of ld
// floats): every row's score, in parallel over blocks of 128 rows. The full softmax's forward,
// exact retrieval and hash-learning mining all go through here.
void score_all_rows(const Exec& x, const float* Q, size_t n, const float* R, size_t rows, size_t ld, float* out) {
  x.pool->run((rows + 127) / 128, [&](size_t b, uint32_t) {
    size_t j0 = b * 128, j1 = std::min(rows, j0 + 128);
    x.k->gemm_nt(n, j1 - j0, ld, Q, ld, R + j0 * ld, ld, out + j0, rows);
  });
}

}  // namespace

//-----------------------------------------------------------------------------------------------
// [SECTION] Data
//-----------------------------------------------------------------------------------------------

Dataset::Row Dataset::row(size_t r) const {
  Row out;
  size_t f0 = size_t(row_offsets[r]), f1 = size_t(row_offsets[r + 1]);
  size_t l0 = size_t(label_offsets[r]), l1 = size_t(label_offsets[r + 1]);
  out.ids = feature_ids.data() + f0;
  out.values = feature_values.data() + f0;
  out.nnz = f1 - f0;
  out.labels = label_ids.data() + l0;
  out.num_labels = l1 - l0;
  return out;
}

namespace {

// The first id that occurs twice in ids[0..n) (by the position of its second occurrence), or -1.
// O(n) when the ids ascend (what files and generators produce); otherwise sorts a copy.
int64_t first_duplicate(const uint32_t* ids, size_t n, std::vector<uint64_t>* scratch) {
  bool ascending = true;
  for (size_t i = 1; i < n && ascending; ++i) ascending = ids[i - 1] < ids[i];
  if (ascending) return -1;
  // (id, position) pairs sorted: equal ids become neighbours, in position order.
  scratch->resize(n);
  for (size_t i = 0; i < n; ++i) (*scratch)[i] = uint64_t(ids[i]) << 32 | uint64_t(i);
  std::sort(scratch->begin(), scratch->end());
  int64_t best_id = -1;
  uint64_t best_pos = ~uint64_t(0);
  for (size_t i = 1; i < n; ++i) {
    const uint64_t a = (*scratch)[i - 1], b = (*scratch)[i];
    if ((a >> 32) == (b >> 32) && (b & 0xFFFFFFFFu) < best_pos) {
      best_pos = b & 0xFFFFFFFFu;
      best_id = int64_t(b >> 32);
    }
  }
  return best_id;
}

// What is wrong with one row's contents, or "" (ids and labels in range, values finite and
// within max_feature_value, no duplicates).
std::string row_fault(const uint32_t* ids, const float* values, size_t nnz, const uint32_t* labels,
                      size_t num_labels, size_t features, size_t label_space, std::vector<uint64_t>* scratch) {
  for (size_t k = 0; k < nnz; ++k) {
    if (ids[k] >= features) return strf("feature id %u out of range [0, %zu)", ids[k], features);
    if (!is_finite(values[k]) || !(std::fabs(values[k]) <= max_feature_value))
      return strf("feature %u has value %g; values must be finite with magnitude <= 1e18 (scale the inputs)", ids[k],
                  double(values[k]));
  }
  for (size_t k = 0; k < num_labels; ++k)
    if (labels[k] >= label_space) return strf("label id %u out of range [0, %zu)", labels[k], label_space);
  int64_t dup = first_duplicate(ids, nnz, scratch);
  if (dup >= 0) return strf("feature id %lld appears twice (duplicates are refused, not summed)", (long long)dup);
  dup = first_duplicate(labels, num_labels, scratch);
  if (dup >= 0) return strf("label id %lld appears twice", (long long)dup);
  return std::string();
}

// "path:line (row r)" for rows read from a file, "row r" otherwise.
std::string row_location(const Dataset& d, size_t r) {
  if (d.source.empty()) return strf("row %zu", r);
  return strf("%s:%zu (row %zu)", d.source.c_str(), r + 2, r);
}

std::string dataset_name(const Dataset& d) { return d.source.empty() ? std::string("Dataset") : d.source; }

// The O(1) structural invariants: counts in range and the arrays' sizes consistent.
Status check_dataset_shape(const Dataset& d) {
  const std::string name = dataset_name(d);
  if (d.features == 0 || exceeds_u32(d.features))
    return Status::error(strf("%s: features = %zu out of range [1, 2^32)", name.c_str(), d.features));
  if (d.labels == 0 || exceeds_u32(d.labels))
    return Status::error(strf("%s: labels = %zu out of range [1, 2^32)", name.c_str(), d.labels));
  // (size() - 1 != rows, not size() != rows + 1: rows may be SIZE_MAX, and rows + 1 would wrap.)
  if (d.row_offsets.empty() || d.label_offsets.empty() || d.row_offsets.size() - 1 != d.rows ||
      d.label_offsets.size() - 1 != d.rows)
    return Status::error(strf("%s: row_offsets and label_offsets need rows + 1 entries (rows = %zu), they have %zu and %zu",
                              name.c_str(), d.rows, d.row_offsets.size(), d.label_offsets.size()));
  if (d.row_offsets[0] != 0 || d.label_offsets[0] != 0)
    return Status::error(name + ": row_offsets and label_offsets must start at 0");
  if (d.feature_values.size() != d.feature_ids.size())
    return Status::error(strf("%s: %zu feature ids but %zu feature values", name.c_str(), d.feature_ids.size(),
                              d.feature_values.size()));
  if (d.row_offsets.back() != d.feature_ids.size() || d.label_offsets.back() != d.label_ids.size())
    return Status::error(strf("%s: the offsets end at %llu features and %llu labels, the arrays hold %zu and %zu",
                              name.c_str(), (unsigned long long)d.row_offsets.back(),
                              (unsigned long long)d.label_offsets.back(), d.feature_ids.size(), d.label_ids.size()));
  return Status();
}

// Row r's offsets and contents; the shape must have been checked.
Status check_dataset_row(const Dataset& d, size_t r, std::vector<uint64_t>* scratch) {
  const uint64_t f0 = d.row_offsets[r], f1 = d.row_offsets[r + 1], l0 = d.label_offsets[r], l1 = d.label_offsets[r + 1];
  if (f0 > f1 || f1 > d.feature_ids.size() || l0 > l1 || l1 > d.label_ids.size())
    return Status::error(strf("%s: %s: offsets [%llu, %llu) / [%llu, %llu) decrease or pass the end of the arrays",
                              dataset_name(d).c_str(), row_location(d, r).c_str(), (unsigned long long)f0,
                              (unsigned long long)f1, (unsigned long long)l0, (unsigned long long)l1));
  const Dataset::Row row = d.row(r);
  std::string fault = row_fault(row.ids, row.values, row.nnz, row.labels, row.num_labels, d.features, d.labels, scratch);
  if (fault.empty()) return Status();
  return Status::error(d.source.empty() ? "Dataset " + row_location(d, r) + ": " + fault : row_location(d, r) + ": " + fault);
}

}  // namespace

Status validate(const Dataset& d) {
  return guard("validate(Dataset)", [&] {
    Status st = check_dataset_shape(d);
    std::vector<uint64_t> scratch;
    for (size_t r = 0; st.ok() && r < d.rows; ++r) st = check_dataset_row(d, r, &scratch);
    return st;
  });
}

Status Dataset::add_row(const uint32_t* ids, const float* values, size_t nnz, const uint32_t* row_labels,
                        size_t num_labels) {
  return guard("Dataset::add_row", [&] {
    if (nnz && (!ids || !values)) return Status::error(strf("Dataset::add_row: row %zu: ids or values is null", rows));
    if (num_labels && !row_labels) return Status::error(strf("Dataset::add_row: row %zu: labels is null", rows));
    if (row_offsets.empty() || label_offsets.empty() || row_offsets.size() - 1 != rows ||
        label_offsets.size() - 1 != rows || feature_ids.size() != feature_values.size())
      return Status::error(strf("Dataset::add_row: row %zu: the dataset's arrays are inconsistent (see validate)", rows));
    std::vector<uint64_t> scratch;
    std::string fault = row_fault(ids, values, nnz, row_labels, num_labels, features, labels, &scratch);
    if (!fault.empty()) return Status::error(strf("Dataset::add_row: row %zu: ", rows) + fault);
    // Running out of memory half-way appends nothing: the arrays are cut back to their old sizes.
    // (An exact reserve per row would do the same but defeat the vectors' geometric growth.)
    const size_t had_features = feature_ids.size(), had_labels = label_ids.size(), had_rows = rows;
    try {
      feature_ids.insert(feature_ids.end(), ids, ids + nnz);
      feature_values.insert(feature_values.end(), values, values + nnz);
      label_ids.insert(label_ids.end(), row_labels, row_labels + num_labels);
      row_offsets.push_back(feature_ids.size());
      label_offsets.push_back(label_ids.size());
    } catch (...) {
      feature_ids.resize(had_features);
      feature_values.resize(had_features);
      label_ids.resize(had_labels);
      row_offsets.resize(had_rows + 1);
      label_offsets.resize(had_rows + 1);
      throw;
    }
    ++rows;
    return Status();
  });
}

size_t Dataset::bytes() const {
  return row_offsets.capacity() * 8 + label_offsets.capacity() * 8 + feature_ids.capacity() * 4 +
         feature_values.capacity() * 4 + label_ids.capacity() * 4 + source.capacity();
}

namespace {

// Decimal text to the nearest float (ties to even), the same float std::from_chars gives. Used where
// the standard library has no floating-point from_chars (libc++ up to at least 14, some embedded
// libraries) and, everywhere, to tell overflow from underflow when from_chars reports either as
// out of range. strtof is not used: it follows the C locale's decimal point, which the program
// may have changed with setlocale.
#if defined(__cpp_lib_to_chars) && !defined(MONGOOSE_NO_FROM_CHARS_FLOAT)
#define MONGOOSE_HAVE_FROM_CHARS_FLOAT 1
#else
#define MONGOOSE_HAVE_FROM_CHARS_FLOAT 0
#endif

// An unsigned integer of any size (little-endian 32-bit limbs, no leading zero limbs): just the
// operations an exact decimal-to-binary conversion needs.
class BigUint {
 public:
  bool is_zero() const { return limbs_.empty(); }
  void multiply_add(uint32_t factor, uint32_t addend) {
    uint64_t carry = addend;
    for (uint32_t& limb : limbs_) {
      const uint64_t t = uint64_t(limb) * factor + carry;
      limb = uint32_t(t);
      carry = t >> 32;
    }
    if (carry) limbs_.push_back(uint32_t(carry));
  }
  void shift_left(size_t bits) {
    if (is_zero() || bits == 0) return;
    const size_t words = bits / 32, rest = bits % 32;
    if (rest) {
      uint32_t carry = 0;
      for (uint32_t& limb : limbs_) {
        const uint32_t next = limb >> (32 - rest);
        limb = (limb << rest) | carry;
        carry = next;
      }
      if (carry) limbs_.push_back(carry);
    }
    limbs_.insert(limbs_.begin(), words, 0u);
  }
  size_t bit_length() const {
    if (is_zero()) return 0;
    size_t bits = 32 * (limbs_.size() - 1);
    for (uint32_t top = limbs_.back(); top; top >>= 1) ++bits;
    return bits;
  }
  static int compare(const BigUint& a, const BigUint& b) {
    if (a.limbs_.size() != b.limbs_.size()) return a.limbs_.size() < b.limbs_.size() ? -1 : 1;
    for (size_t i = a.limbs_.size(); i-- > 0;)
      if (a.limbs_[i] != b.limbs_[i]) return a.limbs_[i] < b.limbs_[i] ? -1 : 1;
    return 0;
  }
  // *this -= b; needs *this >= b.
  void subtract(const BigUint& b) {
    int64_t borrow = 0;
    for (size_t i = 0; i < limbs_.size(); ++i) {
      int64_t t = int64_t(limbs_[i]) - (i < b.limbs_.size() ? int64_t(b.limbs_[i]) : 0) - borrow;
      borrow = t < 0;
      limbs_[i] = uint32_t(t + (borrow << 32));
    }
    while (!limbs_.empty() && limbs_.back() == 0) limbs_.pop_back();
  }

 private:
  std::vector<uint32_t> limbs_;
};

bool ascii_iequal(const char* first, const char* last, const char* lower_word) {
  for (; *lower_word; ++first, ++lower_word)
    if (first == last || (*first | 0x20) != *lower_word) return false;
  return true;
}

// Where parsing stopped and why, as std::from_chars_result; ec is result_out_of_range for a value
// too large for a float (*overflow set) or one that rounds to zero (*overflow clear), and *out is
// then left as it was.
std::from_chars_result decimal_to_float(const char* first, const char* last, float* out, bool* overflow) {
  const char* p = first;
  const bool negative = p < last && *p == '-';
  if (negative) ++p;
  // inf, infinity, nan and nan(letters digits _), any case, as from_chars accepts them.
  if (ascii_iequal(p, last, "inf")) {
    const char* end = ascii_iequal(p, last, "infinity") ? p + 8 : p + 3;
    *out = negative ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
    return {end, std::errc()};
  }
  if (ascii_iequal(p, last, "nan")) {
    const char* end = p + 3;
    if (end < last && *end == '(') {
      const char* q = end + 1;
      while (q < last && ((*q >= '0' && *q <= '9') || ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z') || *q == '_')) ++q;
      if (q < last && *q == ')') end = q + 1;
    }
    *out = std::numeric_limits<float>::quiet_NaN();
    return {end, std::errc()};
  }
  // The significant digits (at most kept_digits of them, then a sticky 1 standing for any nonzero
  // digit beyond: a halfway point between two floats has at most 112 significant digits, so the
  // rounding cannot change) and the power of ten they are scaled by.
  constexpr size_t kept_digits = 200;
  std::string digits;
  int64_t exponent10 = 0;
  bool sticky = false, any_digit = false;
  for (; p < last && *p >= '0' && *p <= '9'; ++p) {
    any_digit = true;
    if (digits.empty() && *p == '0') continue;
    if (digits.size() < kept_digits) {
      digits.push_back(*p);
    } else {
      ++exponent10;
      sticky |= *p != '0';
    }
  }
  if (p < last && *p == '.') {
    const char* after_point = p + 1;
    for (p = after_point; p < last && *p >= '0' && *p <= '9'; ++p) {
      any_digit = true;
      if (digits.empty() && *p == '0') {
        --exponent10;
      } else if (digits.size() < kept_digits) {
        digits.push_back(*p);
        --exponent10;
      } else {
        sticky |= *p != '0';
      }
    }
  }
  if (!any_digit) return {first, std::errc::invalid_argument};
  if (p < last && (*p == 'e' || *p == 'E')) {
    const char* q = p + 1;
    const bool exponent_negative = q < last && *q == '-';
    if (q < last && (*q == '-' || *q == '+')) ++q;
    if (q < last && *q >= '0' && *q <= '9') {
      int64_t written = 0;  // saturates: far beyond any float either way
      for (; q < last && *q >= '0' && *q <= '9'; ++q) written = std::min<int64_t>(written * 10 + (*q - '0'), 1000000000);
      exponent10 += exponent_negative ? -written : written;
      p = q;
    }
  }
  const std::from_chars_result parsed{p, std::errc()};
  if (digits.empty()) {
    *out = negative ? -0.0f : 0.0f;
    return parsed;
  }
  if (sticky) {
    digits.push_back('1');
    --exponent10;
  }
  // The value is digits * 10^exponent10, in [10^(n-1+exponent10), 10^(n+exponent10)).
  const int64_t n = int64_t(digits.size());
  if (n - 1 + exponent10 >= 39) {  // >= 1e39: beyond FLT_MAX
    *overflow = true;
    return {p, std::errc::result_out_of_range};
  }
  if (n + exponent10 <= -46) {  // < 1e-46: below half the smallest denormal, rounds to zero
    *overflow = false;
    return {p, std::errc::result_out_of_range};
  }
  // Fast path: up to 7 digits (exact in a float) times or over a power of ten up to 10^10 (exact in
  // a float too): one rounding of the exact double product or quotient, which is exact for the
  // product and, as double has more than 2 * 24 + 2 bits, rounds the quotient to the right float.
  if (n <= 7 && exponent10 >= -10 && exponent10 <= 10) {
    static constexpr double powers[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10};
    uint32_t integer = 0;
    for (char c : digits) integer = integer * 10 + uint32_t(c - '0');
    const double mantissa = double(integer);
    const double v = exponent10 < 0 ? mantissa / powers[-exponent10] : mantissa * powers[exponent10];
    *out = negative ? -float(v) : float(v);
    return parsed;
  }
  // Exact path: numerator / denominator = digits * 10^exponent10; a quotient of 26 or 27 bits and
  // whether a remainder is left decide the rounding.
  BigUint numerator, denominator;
  for (char c : digits) numerator.multiply_add(10, uint32_t(c - '0'));
  denominator.multiply_add(0, 1);
  for (int64_t i = 0; i < exponent10; ++i) numerator.multiply_add(10, 0);
  for (int64_t i = 0; i < -exponent10; ++i) denominator.multiply_add(10, 0);
  // value = (numerator * 2^shift / denominator) * 2^-shift, the quotient in [2^25, 2^27).
  const int64_t shift = 26 - int64_t(numerator.bit_length()) + int64_t(denominator.bit_length());
  if (shift > 0) numerator.shift_left(size_t(shift));
  if (shift < 0) denominator.shift_left(size_t(-shift));
  uint64_t quotient = 0;
  for (int bit = 27; bit >= 0; --bit) {
    BigUint part = denominator;
    part.shift_left(size_t(bit));
    if (BigUint::compare(numerator, part) >= 0) {
      numerator.subtract(part);
      quotient |= uint64_t(1) << bit;
    }
  }
  const bool remainder = !numerator.is_zero();
  int quotient_bits = 0;
  for (uint64_t q = quotient; q; q >>= 1) ++quotient_bits;
  // Bits to drop: down to 24 significant bits, or to the denormals' last bit (2^-149).
  const int64_t drop = std::max<int64_t>(quotient_bits - 24, shift - 149);
  uint64_t mantissa = 0;
  if (drop <= 40) {
    mantissa = quotient >> drop;
    const bool half = (quotient >> (drop - 1)) & 1;
    const bool below_half = (quotient & ((uint64_t(1) << (drop - 1)) - 1)) != 0 || remainder;
    if (half && (below_half || (mantissa & 1))) ++mantissa;
  }
  if (mantissa == 0) {
    *overflow = false;
    return {p, std::errc::result_out_of_range};
  }
  const double magnitude = std::ldexp(double(mantissa), int(drop - shift));  // exact
  if (magnitude >= 0x1p128) {
    *overflow = true;
    return {p, std::errc::result_out_of_range};
  }
  *out = negative ? -float(magnitude) : float(magnitude);
  return parsed;
}

// Parses XC text a chunk of complete lines at a time, keeping line numbers across chunks.
class XcParser {
 public:
  // total_bytes < 0: the input's size is unknown (a stream).
  XcParser(const std::string& name, int64_t total_bytes, const ReadOptions& options)
      : name_(name), total_bytes_(total_bytes), options_(options) {
    data_.source = name;
  }

  // Parses [p, end): complete lines only (the last may lack its '\n' when `final`).
  Status feed(const char* p, const char* end, bool final) {
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', size_t(end - p)));
      const char* line_end = nl ? nl : end;
      if (!nl && !final) break;  // caller guarantees complete lines; defensive
      ++line_;
      line_start_ = p;
      if (size_t(line_end - p) > options_.max_line_bytes) return line_too_long(line_);
      // Binary data is refused at its first NUL byte, before any of it is interpreted.
      if (const void* nul = std::memchr(p, '\0', size_t(line_end - p)))
        return fail(static_cast<const char*>(nul), "NUL byte (\\x00): binary data, not XC text");
      const char* content_end = line_end;
      if (content_end > p && content_end[-1] == '\r') --content_end;  // accept CRLF
      Status st = header_done_ ? parse_row(p, content_end) : parse_header(p, content_end);
      if (!st.ok()) return st;
      last_line_terminated_ = nl != nullptr;
      last_line_length_ = size_t(line_end - p);
      p = nl ? nl + 1 : end;
    }
    return Status();
  }

  // Checks the start of the line after the complete ones fed so far, which has no newline yet:
  // `n` bytes at p. Refuses a NUL byte or a line longer than the limit at once, before a reader
  // buffers more of it.
  Status check_pending(const char* p, size_t n) const {
    if (const void* nul = std::memchr(p, '\0', n))
      return Status::error(strf("%s:%zu:%zu: NUL byte (\\x00): binary data, not XC text", name_.c_str(), line_ + 1,
                                size_t(static_cast<const char*>(nul) - p) + 1));
    if (n > options_.max_line_bytes) return line_too_long(line_ + 1);
    return Status();
  }

  Status finish(Dataset* out) {
    if (!header_done_) return Status::error(name_ + ":1:1: empty file: expected a header line \"rows features labels\"");
    if (data_.rows != declared_rows_) {
      // Point just past the last character: the start of the missing line, or the end of an
      // unterminated last line.
      size_t line = last_line_terminated_ ? line_ + 1 : line_;
      size_t col = last_line_terminated_ ? 1 : last_line_length_ + 1;
      return Status::error(strf("%s:%zu:%zu: file ends after %zu row%s but the header declares %zu",
                                name_.c_str(), line, col, data_.rows, data_.rows == 1 ? "" : "s", declared_rows_));
    }
    *out = std::move(data_);
    return Status();
  }

 private:
  Status fail(const char* at, const std::string& what) const {
    return Status::error(strf("%s:%zu:%zu: ", name_.c_str(), line_, size_t(at - line_start_) + 1) + what);
  }
  Status line_too_long(size_t line) const {
    return Status::error(strf("%s:%zu:1: line longer than %zu bytes (ReadOptions::max_line_bytes)", name_.c_str(), line,
                              options_.max_line_bytes));
  }

  // Reads an unsigned decimal integer at p (no sign), at most `limit`.
  bool read_uint(const char*& p, const char* end, uint64_t limit, uint64_t* value, bool* overflow) {
    const char* start = p;
    uint64_t v = 0;
    *overflow = false;
    while (p < end && *p >= '0' && *p <= '9') {
      uint64_t d = uint64_t(*p - '0');
      if (v > (limit - d) / 10) *overflow = true;
      else v = v * 10 + d;
      ++p;
    }
    *value = v;
    return p > start;
  }

  Status parse_header(const char* p, const char* end) {
    if (end - p >= 3 && std::memcmp(p, "\xEF\xBB\xBF", 3) == 0)
      return fail(p, "the file starts with a UTF-8 byte-order mark (\\xef\\xbb\\xbf); save it without one");
    uint64_t vals[3];
    const char* field_start[3];
    const char* names[3] = {"row count", "feature count", "label count"};
    const char* q = p;
    for (int i = 0; i < 3; ++i) {
      while (q < end && (*q == ' ' || *q == '\t')) ++q;
      if (q == end) return fail(q, strf("header has %d field%s; expected \"rows features labels\"", i, i == 1 ? "" : "s"));
      bool overflow;
      const char* tok = field_start[i] = q;
      if (!read_uint(q, end, uint64_t(1) << 40, &vals[i], &overflow))
        return fail(tok, strf("header %s is not a non-negative integer", names[i]));
      if (overflow) return fail(tok, strf("header %s is too large", names[i]));
      if (q < end && *q != ' ' && *q != '\t') return fail(q, strf("unexpected character '%s' in header %s", printable(*q).c_str(), names[i]));
    }
    while (q < end && (*q == ' ' || *q == '\t')) ++q;
    if (q != end) return fail(q, "header has more than 3 fields; expected \"rows features labels\"");
    if (vals[1] == 0 || vals[1] > 0xFFFFFFFFull) return fail(field_start[1], strf("header feature count %llu must be in [1, 2^32)", (unsigned long long)vals[1]));
    if (vals[2] == 0 || vals[2] > 0xFFFFFFFFull) return fail(field_start[2], strf("header label count %llu must be in [1, 2^32)", (unsigned long long)vals[2]));
    // Every row takes at least 2 bytes (" \n"), so the file size bounds the row count; checked
    // before anything is sized from the header. A stream's size is unknown: only the budget then.
    if (total_bytes_ >= 0 && vals[0] > uint64_t(total_bytes_) / 2 + 1)
      return fail(p, strf("header declares %llu rows but the input has only %lld bytes",
                          (unsigned long long)vals[0], (long long)total_bytes_));
    if (mul_sat(vals[0], 16) > options_.max_bytes)
      return fail(p, strf("header declares %llu rows, more than the memory limit of %zu bytes allows",
                          (unsigned long long)vals[0], options_.max_bytes));
    declared_rows_ = size_t(vals[0]);
    data_.features = size_t(vals[1]);
    data_.labels = size_t(vals[2]);
    // At most a million rows are reserved up front, whatever the header says: the rows that
    // really follow grow the arrays, so memory follows the data, not the claim.
    const size_t reserve = std::min<size_t>(declared_rows_, size_t(1) << 20);
    data_.row_offsets.reserve(reserve + 1);
    data_.label_offsets.reserve(reserve + 1);
    header_done_ = true;
    return Status();
  }

  // A character or a token as it can be shown in a message: non-printable bytes as \xNN,
  // long tokens cut at 40 characters.
  static std::string printable(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 32 && u < 127) return std::string(1, c);
    return strf("\\x%02x", u);
  }
  static std::string printable(const char* b, const char* e) {
    std::string out;
    for (const char* c = b; c < e && c < b + 40; ++c) out += printable(*c);
    if (e - b > 40) out += "...";
    return out;
  }

  // The row just parsed (line text [p, end)) holds ids[first..): a repeated id is refused at its
  // second occurrence. Its column is found by re-reading the line, which only an error needs.
  Status refuse_duplicates(const std::vector<uint32_t>& ids, size_t first, const char* what, const char* p,
                           const char* end, bool labels) {
    const size_t n = ids.size() - first;
    int64_t dup = first_duplicate(ids.data() + first, n, &dup_scratch_);
    if (dup < 0) return Status();
    // Token i starts at the i-th label (comma-separated, up to the first blank) or the i-th
    // blank-separated feature after the labels; the line parsed, so it is well-formed.
    std::vector<size_t> cols;
    const char* q = p;
    if (labels) {
      cols.push_back(1);
      for (; q < end && *q != ' ' && *q != '\t'; ++q)
        if (*q == ',') cols.push_back(size_t(q - p) + 2);
    } else {
      while (q < end && *q != ' ' && *q != '\t') ++q;  // past the labels
      for (;;) {
        while (q < end && (*q == ' ' || *q == '\t')) ++q;
        if (q == end) break;
        cols.push_back(size_t(q - p) + 1);
        while (q < end && *q != ' ' && *q != '\t') ++q;
      }
    }
    size_t seen = 0, col = 0;
    for (size_t i = 0; i < n && i < cols.size() && seen < 2; ++i)
      if (ids[first + i] == uint32_t(dup) && ++seen == 2) col = cols[i];
    return Status::error(strf("%s:%zu:%zu: %s id %lld appears twice in this row (duplicates are refused, not summed)",
                              name_.c_str(), line_, col, what, (long long)dup));
  }

  Status parse_row(const char* p, const char* end) {
    if (p == end) return fail(p, "empty line; a row without labels or features is a single space");
    if (data_.rows == declared_rows_)
      return fail(p, strf("more rows than the %zu the header declares", declared_rows_));
    const char* q = p;
    const size_t first_label = data_.label_ids.size(), first_feature = data_.feature_ids.size();
    // Labels: comma-separated ids up to the first blank.
    if (*q != ' ' && *q != '\t') {
      for (;;) {
        const char* tok = q;
        uint64_t v;
        bool overflow;
        if (!read_uint(q, end, uint64_t(1) << 40, &v, &overflow)) {
          if (q < end && *q == '-') return fail(q, "negative label id");
          if (q == end) return fail(q, "expected a label id after ','");
          return fail(q, strf("unexpected character '%s' in label list", printable(*q).c_str()));
        }
        if (overflow || v >= data_.labels)
          return fail(tok, strf("label id %s out of range [0, %zu)", printable(tok, q).c_str(), data_.labels));
        if (q < end && *q == ':') return fail(tok, "a feature 'id:value' where a label id was expected (a row without labels starts with a space)");
        data_.label_ids.push_back(uint32_t(v));
        if (q == end || *q == ' ' || *q == '\t') break;
        if (*q != ',') return fail(q, strf("unexpected character '%s' in label list", printable(*q).c_str()));
        ++q;
      }
      Status st = refuse_duplicates(data_.label_ids, first_label, "label", p, end, true);
      if (!st.ok()) return st;
    }
    // Features: blank-separated "id:value".
    for (;;) {
      while (q < end && (*q == ' ' || *q == '\t')) ++q;
      if (q == end) break;
      const char* tok = q;
      uint64_t id;
      bool overflow;
      if (!read_uint(q, end, uint64_t(1) << 40, &id, &overflow)) {
        if (*q == '-') return fail(q, "negative feature id");
        return fail(q, strf("unexpected character '%s'; expected a feature 'id:value'", printable(*q).c_str()));
      }
      if (overflow || id >= data_.features)
        return fail(tok, strf("feature id %s out of range [0, %zu)", printable(tok, q).c_str(), data_.features));
      if (q == end || *q != ':') return fail(q, strf("expected ':' after feature id %llu", (unsigned long long)id));
      ++q;
      const char* vstart = q;
      const char* vend = q;
      while (vend < end && *vend != ' ' && *vend != '\t') ++vend;
      if (vstart == vend) return fail(vstart, strf("missing value after feature id %llu", (unsigned long long)id));
      float value = 0.0f;  // (set by parse_value; initialised for -Wmaybe-uninitialized under -fsanitize=thread)
      Status st = parse_value(vstart, vend, id, &value);
      if (!st.ok()) return st;
      data_.feature_ids.push_back(uint32_t(id));
      data_.feature_values.push_back(value);
      q = vend;
    }
    Status st = refuse_duplicates(data_.feature_ids, first_feature, "feature", p, end, false);
    if (!st.ok()) return st;
    data_.row_offsets.push_back(data_.feature_ids.size());
    data_.label_offsets.push_back(data_.label_ids.size());
    ++data_.rows;
    // What the rows read so far hold (ids and values, offsets), against the budget.
    const uint64_t held = add_sat(mul_sat(data_.feature_ids.size(), 8),
                                  add_sat(mul_sat(data_.label_ids.size(), 4), mul_sat(data_.rows + 1, 16)));
    if (held > options_.max_bytes)
      return fail(p, strf("the rows read so far need %llu bytes, more than the memory limit of %zu (ReadOptions::max_bytes)",
                          (unsigned long long)held, options_.max_bytes));
    return Status();
  }

  // The value token [vstart, vend) of feature `id`: a finite decimal float within
  // max_feature_value (underflow to 0 or a denormal is fine).
  Status parse_value(const char* vstart, const char* vend, uint64_t id, float* out) {
    // Plain integers of up to 7 digits (counts, binary features: most XC values) are exact in a
    // float: converted directly, without the general decimal conversion.
    if (vend - vstart <= 7) {
      uint32_t v = 0;
      const char* c = vstart;
      while (c < vend && *c >= '0' && *c <= '9') v = v * 10 + uint32_t(*c++ - '0');
      if (c == vend) {
        *out = float(v);
        return Status();
      }
    }
    const char* num = vstart;
    if (*num == '+') ++num;  // from_chars rejects a leading '+'
    if (num < vend && (*num == '+' || *num == '-') && num != vstart)
      return fail(vstart, strf("malformed value '%s' for feature %llu", printable(vstart, vend).c_str(), (unsigned long long)id));
    float value = 0;
    bool overflow = false;
#if MONGOOSE_HAVE_FROM_CHARS_FLOAT
    auto res = std::from_chars(num, vend, value);
    if (res.ec == std::errc::result_out_of_range) res = decimal_to_float(num, vend, &value, &overflow);
#else
    auto res = decimal_to_float(num, vend, &value, &overflow);
#endif
    if (res.ec == std::errc::result_out_of_range) {
      // Too small for a float is fine (it becomes 0); too large is an error.
      if (overflow)
        return fail(vstart, strf("value '%s' of feature %llu is out of float range", printable(vstart, vend).c_str(), (unsigned long long)id));
      value = *num == '-' ? -0.0f : 0.0f;
      res.ec = std::errc();
    }
    if (res.ec != std::errc() || res.ptr != vend) {
      const char* bad = res.ec != std::errc() ? vstart : res.ptr;
      return fail(bad, strf("malformed value '%s' for feature %llu", printable(vstart, vend).c_str(), (unsigned long long)id));
    }
    if (!is_finite(value))
      return fail(vstart, strf("value '%s' of feature %llu is not finite", printable(vstart, vend).c_str(), (unsigned long long)id));
    if (!is_finite(value) || !(std::fabs(value) <= max_feature_value))
      return fail(vstart, strf("value '%s' of feature %llu is above the largest magnitude accepted, 1e18 (scale the inputs)",
                               printable(vstart, vend).c_str(), (unsigned long long)id));
    *out = value;
    return Status();
  }

  std::string name_;
  int64_t total_bytes_;
  ReadOptions options_;
  Dataset data_;
  size_t declared_rows_ = 0;
  size_t line_ = 0;
  const char* line_start_ = nullptr;
  bool header_done_ = false;
  bool last_line_terminated_ = true;
  size_t last_line_length_ = 0;
  std::vector<uint64_t> dup_scratch_;
};

Status check_read_options(const char* where, const ReadOptions& o) {
  if (o.max_line_bytes < 1024)
    return Status::error(strf("%s: ReadOptions::max_line_bytes = %zu out of range [1024, 2^64)", where, o.max_line_bytes));
  return Status();
}

}  // namespace

Status parse_xc(const char* text, size_t size, const std::string& name, Dataset* out,
                const ReadOptions& options) {
  return guard("parse_xc", [&] {
    if (!out) return Status::error("parse_xc: out is null");
    if (!text && size) return Status::error("parse_xc: text is null");
    Status st = check_read_options("parse_xc", options);
    if (!st.ok()) return st;
    XcParser parser(name, int64_t(size), options);
    st = parser.feed(text, text + size, true);
    if (!st.ok()) return st;
    return parser.finish(out);
  });
}

Status read_xc(const std::string& path, Dataset* out, const ReadOptions& options) {
  return guard("read_xc: " + path, [&] {
    if (!out) return Status::error("read_xc: out is null");
    Status st = check_read_options("read_xc", options);
    if (!st.ok()) return st;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return Status::error(strf("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    struct Closer {
      std::FILE* f;
      ~Closer() { std::fclose(f); }
    } closer{f};
    bool is_directory = false;
    const int64_t size = open_file_size(f, &is_directory);
    if (is_directory) return Status::error(path + ": is a directory, not an XC file");
    XcParser parser(path, size, options);
    // Stream in chunks of complete lines; a line split across chunks is carried over to the next.
    // The buffer grows only for a line longer than it, up to max_line_bytes.
    // The buffer holds a line of up to max_line_bytes plus its newline and one byte more, which
    // check_pending needs to see that the line is too long (computed without wrapping).
    const size_t largest = options.max_line_bytes < SIZE_MAX - 2 ? options.max_line_bytes + 2 : SIZE_MAX;
    std::vector<char> buf(std::min(size_t(4) << 20, largest));
    size_t carried = 0;
    for (;;) {
      if (carried == buf.size()) {
        if (buf.size() == largest) return parser.check_pending(buf.data(), buf.size());  // cannot happen: too long
        buf.resize(buf.size() > largest / 2 ? largest : buf.size() * 2);
      }
      size_t got = std::fread(buf.data() + carried, 1, buf.size() - carried, f);
      size_t have = carried + got;
      bool eof = got == 0;
      if (eof && std::ferror(f)) return Status::error(strf("%s: read error: %s", path.c_str(), std::strerror(errno)));
      const char* begin = buf.data();
      const char* end = begin + have;
      const char* cut = end;
      if (!eof) {
        const void* last_nl = nullptr;
        for (const char* s = end; s > begin;)
          if (*--s == '\n') { last_nl = s; break; }
        cut = last_nl ? static_cast<const char*>(last_nl) + 1 : begin;
      }
      st = parser.feed(begin, cut, eof);
      if (!st.ok() || eof) break;
      carried = size_t(end - cut);
      st = parser.check_pending(cut, carried);
      if (!st.ok()) break;
      std::memmove(buf.data(), cut, carried);
    }
    if (!st.ok()) return st;
    return parser.finish(out);
  });
}

Status write_xc(const std::string& path, const Dataset& data) {
  return guard("write_xc", [&] {
    Status st = validate(data);
    if (!st.ok()) return Status::error("write_xc: " + path + ": " + st.message() + "; nothing was written");
    AtomicFile file;
    st = file.open(path);
    if (!st.ok()) return st;
    std::FILE* f = file.file();
    std::string line;
    line.reserve(1 << 16);
    bool ok = std::fprintf(f, "%llu %llu %llu\n", (unsigned long long)data.rows, (unsigned long long)data.features,
                           (unsigned long long)data.labels) > 0;
    char num[64];
    for (size_t r = 0; ok && r < data.rows; ++r) {
      Dataset::Row row = data.row(r);
      line.clear();
      for (size_t k = 0; k < row.num_labels; ++k) {
        if (k) line += ',';
        line += std::to_string(row.labels[k]);
      }
      if (row.num_labels == 0) line += ' ';
      for (size_t k = 0; k < row.nnz; ++k) {
        if (k || row.num_labels) line += ' ';
        auto res = std::to_chars(num, num + sizeof num, row.values[k]);  // shortest exact form
        line += std::to_string(row.ids[k]);
        line += ':';
        line.append(num, res.ptr);
      }
      line += '\n';
      ok = std::fwrite(line.data(), 1, line.size(), f) == line.size();
    }
    return file.commit(ok);
  });
}

namespace {
constexpr char kDatasetMagic[8] = {'M', 'O', 'N', 'G', 'O', 'D', 'A', 'T'};
constexpr uint32_t kDatasetVersion = 1;
}  // namespace

Status save_dataset(const std::string& path, const Dataset& data) {
  return guard("save_dataset: " + path, [&] {
    Status st = validate(data);
    if (!st.ok()) return Status::error("save_dataset: " + path + ": " + st.message() + "; nothing was written");
    AtomicFile file;
    if (!(st = file.open(path)).ok()) return st;
    SectionWriter w(file.file());
    Bytes head;
    head.b.assign(kDatasetMagic, 8);
    head.u32(kDatasetVersion);
    head.u32(7);
    w.raw(head.b.data(), head.b.size());
    Bytes shape;
    shape.u64(data.rows);
    shape.u64(data.features);
    shape.u64(data.labels);
    w.begin("SHAP", shape.b.size());
    w.payload(shape.b.data(), shape.b.size());
    w.end();
    auto u64s = [&](const char* tag, const std::vector<uint64_t>& v) {
      w.begin(tag, v.size() * 8);
      if (host_is_little_endian()) {
        w.payload(v.data(), v.size() * 8);
      } else {
        Bytes b;
        for (uint64_t x : v) b.u64(x);
        w.payload(b.b.data(), b.b.size());
      }
      w.end();
    };
    u64s("ROWO", data.row_offsets);
    w.begin("FIDS", data.feature_ids.size() * 4);
    w.u32s(data.feature_ids.data(), data.feature_ids.size());
    w.end();
    w.begin("FVAL", data.feature_values.size() * 4);
    w.floats(data.feature_values.data(), data.feature_values.size());
    w.end();
    u64s("LABO", data.label_offsets);
    w.begin("LIDS", data.label_ids.size() * 4);
    w.u32s(data.label_ids.data(), data.label_ids.size());
    w.end();
    w.begin("END ", 0);
    w.end();
    return file.commit(w.ok());
  });
}

Status load_dataset(const std::string& path, Dataset* out, const ReadOptions& options) {
  if (!out) return Status::error("load_dataset: out is null");
  return guard("load_dataset: " + path, [&]() -> Status {
    if (path_kind(path) == PathKind::directory) return Status::error(path + ": is a directory, not a dataset file");
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return Status::error(strf("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    struct Closer {
      std::FILE* f;
      ~Closer() { std::fclose(f); }
    } closer{f};
    bool is_directory = false;
    const int64_t size = open_file_size(f, &is_directory);
    if (size < 16) return Status::error(path + ": not a binary dataset (too short, or not a regular file)");
    unsigned char head[16];
    if (std::fread(head, 1, 16, f) != 16) return Status::error(path + ": read error in the file header");
    if (std::memcmp(head, kDatasetMagic, 8) != 0) return Status::error(path + ": not a mongoose binary dataset (wrong magic)");
    BytesReader hr{head + 8, 8};
    const uint32_t version = hr.u32(), sections = hr.u32();
    if (version != kDatasetVersion)
      return Status::error(strf("%s: unknown dataset format version %u (this library reads %u)", path.c_str(), version, kDatasetVersion));
    if (sections != 7) return Status::error(strf("%s: implausible section count %u", path.c_str(), sections));
    SectionReader r(f, path, uint64_t(size), options.max_bytes, 16);
    Status st = r.expect("SHAP", 24, nullptr, "(a corrupted file?)");
    unsigned char sb[24];
    if (st.ok()) st = r.payload(sb, 24);
    if (st.ok()) st = r.check_crc();
    if (!st.ok()) return st;
    BytesReader shape{sb, 24};
    Dataset d;
    const uint64_t rows = shape.u64(), features = shape.u64(), labels = shape.u64();
    // Every array's length follows from the offsets; the file's size bounds them all.
    if (rows >= uint64_t(size) / 16) return r.fail(strf("SHAP: %llu rows cannot fit in a file of %lld bytes", (unsigned long long)rows, (long long)size));
    d.rows = size_t(rows);
    d.features = size_t(features);
    d.labels = size_t(labels);
    auto u64s = [&](const char* tag, std::vector<uint64_t>* v) {
      Status s2 = r.expect(tag, (rows + 1) * 8);
      if (!s2.ok()) return s2;
      v->resize(size_t(rows + 1));
      if (!(s2 = r.payload(v->data(), v->size() * 8)).ok()) return s2;
      if (!host_is_little_endian())
        for (uint64_t& x : *v) {
          unsigned char b[8];
          std::memcpy(b, &x, 8);
          BytesReader br{b, 8};
          x = br.u64();
        }
      return r.check_crc();
    };
    if (!(st = u64s("ROWO", &d.row_offsets)).ok()) return st;
    const uint64_t nnz = d.row_offsets.back();
    if (nnz > uint64_t(size) / 8) return r.fail("ROWO: the offsets claim more features than the file holds");
    if (!(st = r.expect("FIDS", nnz * 4)).ok() || !(st = r.u32s(&d.feature_ids, size_t(nnz))).ok() || !(st = r.check_crc()).ok()) return st;
    if (!(st = r.expect("FVAL", nnz * 4)).ok() || !(st = r.floats(&d.feature_values, size_t(nnz))).ok() || !(st = r.check_crc()).ok()) return st;
    if (!(st = u64s("LABO", &d.label_offsets)).ok()) return st;
    const uint64_t nl = d.label_offsets.back();
    if (nl > uint64_t(size) / 4) return r.fail("LABO: the offsets claim more labels than the file holds");
    if (!(st = r.expect("LIDS", nl * 4)).ok() || !(st = r.u32s(&d.label_ids, size_t(nl))).ok() || !(st = r.check_crc()).ok()) return st;
    if (!(st = r.expect("END ", 0)).ok() || !(st = r.check_crc()).ok()) return st;
    if (r.offset() != uint64_t(size)) return r.fail("trailing bytes after the END section");
    d.source = path;
    st = validate(d);
    if (!st.ok()) return Status::error(st.message());
    *out = std::move(d);
    return Status();
  });
}

Status read_dataset(const std::string& path, Dataset* out, const ReadOptions& options) {
  if (!out) return Status::error("read_dataset: out is null");
  // The magic decides; a pipe or anything shorter than it is read as text.
  if (path_kind(path) == PathKind::regular) {
    if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
      char magic[8] = {0};
      const bool binary = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, kDatasetMagic, 8) == 0;
      std::fclose(f);
      if (binary) return load_dataset(path, out, options);
    }
  }
  return read_xc(path, out, options);
}

Status normalize_rows(Dataset* data) {
  if (!data) return Status::error("normalize_rows: data is null");
  return guard("normalize_rows", [&] {
    Status st = check_dataset_shape(*data);
    if (!st.ok()) return Status::error("normalize_rows: " + st.message());
    for (size_t r = 0; r < data->rows; ++r) {
      uint64_t f0 = data->row_offsets[r], f1 = data->row_offsets[r + 1];
      if (f0 > f1 || f1 > data->feature_values.size())
        return Status::error(strf("normalize_rows: row %zu: offsets decrease or pass the end of the arrays", r));
      double s = 0;
      for (uint64_t k = f0; k < f1; ++k) s += double(data->feature_values[k]) * data->feature_values[k];
      if (!(s > 0) || !is_finite(s)) continue;
      float inv = float(1.0 / std::sqrt(s));
      for (uint64_t k = f0; k < f1; ++k) data->feature_values[k] *= inv;
    }
    return Status();
  });
}

Status make_synthetic(const SyntheticConfig& c, Dataset* train, Dataset* test) {
  return guard("make_synthetic", [&] {
    if (!train || !test) return Status::error("make_synthetic: train and test must not be null");
    if (c.features == 0 || exceeds_u32(c.features)) return Status::error("make_synthetic: features must be in [1, 2^32)");
    if (c.labels == 0 || exceeds_u32(c.labels)) return Status::error("make_synthetic: labels must be in [1, 2^32)");
    if (c.max_labels == 0 || c.max_labels > c.labels) return Status::error("make_synthetic: max_labels must be in [1, labels]");
    if (c.prototype_features == 0 || c.prototype_features > c.features) return Status::error("make_synthetic: prototype_features must be in [1, features]");
    if (!is_finite(c.keep_probability) || !(c.keep_probability > 0.0f && c.keep_probability <= 1.0f)) return Status::error("make_synthetic: keep_probability must be in (0, 1]");
    if (!is_finite(c.zipf_exponent) || !(c.zipf_exponent >= 0.0f && c.zipf_exponent <= 4.0f)) return Status::error("make_synthetic: zipf_exponent must be in [0, 4]");
    // The prototypes, the label distribution and the rows at their largest, against the budget.
    const uint64_t per_row = add_sat(mul_sat(add_sat(mul_sat(c.max_labels, c.prototype_features), c.noise_features), 8),
                                     add_sat(mul_sat(c.max_labels, 4), 16));
    const uint64_t need = add_sat(mul_sat(c.labels, add_sat(mul_sat(c.prototype_features, 4), 16)),
                                  mul_sat(add_sat(c.train_rows, c.test_rows), per_row));
    if (need > c.max_bytes)
      return Status::error(strf("make_synthetic: this configuration needs up to %llu bytes, over the memory limit of %zu "
                                "(SyntheticConfig::max_bytes)", (unsigned long long)need, c.max_bytes));
    Rng rng(c.seed);
    // Prototypes: each label owns a few random features.
    std::vector<uint32_t> proto(c.labels * c.prototype_features);
    for (auto& f : proto) f = rng.below(uint32_t(c.features));
    // Power-law label frequencies: cumulative weights, sampled by binary search.
    std::vector<double> cdf(c.labels);
    double total = 0;
    for (size_t i = 0; i < c.labels; ++i) cdf[i] = total += 1.0 / std::pow(double(i + 1), double(c.zipf_exponent));
    // A random permutation so that label id and frequency are unrelated.
    std::vector<uint32_t> perm(c.labels);
    std::iota(perm.begin(), perm.end(), 0u);
    for (size_t i = c.labels; i > 1; --i) std::swap(perm[i - 1], perm[rng.below(uint32_t(i))]);

    Dataset parts[2];
    std::vector<uint32_t> labels, ids;
    std::vector<float> vals;
    for (int part = 0; part < 2; ++part) {
      Dataset& d = parts[part];
      d.features = c.features;
      d.labels = c.labels;
      size_t rows = part == 0 ? c.train_rows : c.test_rows;
      for (size_t r = 0; r < rows; ++r) {
        size_t nl = 1 + rng.below(uint32_t(c.max_labels));
        labels.clear();
        while (labels.size() < nl) {
          double u = double(rng.uniform()) * total;
          size_t rank = size_t(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
          uint32_t l = perm[std::min(rank, c.labels - 1)];
          if (std::find(labels.begin(), labels.end(), l) == labels.end()) labels.push_back(l);
        }
        std::sort(labels.begin(), labels.end());
        ids.clear();
        for (uint32_t l : labels)
          for (size_t k = 0; k < c.prototype_features; ++k)
            if (rng.uniform() < c.keep_probability) ids.push_back(proto[l * c.prototype_features + k]);
        for (size_t k = 0; k < c.noise_features; ++k) ids.push_back(rng.below(uint32_t(c.features)));
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        vals.assign(ids.size(), 1.0f);
        Status st = d.add_row(ids.data(), vals.data(), ids.size(), labels.data(), labels.size());
        if (!st.ok()) return st;
      }
    }
    *train = std::move(parts[0]);
    *test = std::move(parts[1]);
    return Status();
  });
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Hashing
//-----------------------------------------------------------------------------------------------

Status validate(const HashConfig& c) {
  if (c.dim == 0) return Status::error("HashConfig.dim must be > 0");
  if (c.K < 1 || c.K > 24) return Status::error(strf("HashConfig.K = %u out of range [1, 24]", c.K));
  if (c.L < 1 || c.L > 1024) return Status::error(strf("HashConfig.L = %u out of range [1, 1024]", c.L));
  if (c.family == HashFamily::simhash && (!is_finite(c.density) || !(c.density > 0.0f && c.density <= 1.0f)))
    return Status::error(strf("HashConfig.density = %g out of range (0, 1]", double(c.density)));
  if (c.family == HashFamily::dwta && (c.bin_bits < 1 || c.bin_bits > 8))
    return Status::error(strf("HashConfig.bin_bits = %u out of range [1, 8]", c.bin_bits));
  if (c.family != HashFamily::simhash && c.family != HashFamily::dwta)
    return Status::error("HashConfig.family is not a known hash family");
  return Status();
}

Status Hasher::init(const HashConfig& config, Simd simd) {
  return guard("Hasher::init", [&] {
    Status st = validate(config);
    if (!st.ok()) return st;
    // The projection (SimHash) or the slot tables (DWTA), against the default budget.
    const uint64_t need = config.family == HashFamily::simhash
                              ? mul_sat(mul_sat(config.dim, uint64_t(config.K) * config.L), 4)
                              : add_sat(mul_sat(config.dim, 4), mul_sat(uint64_t(config.K + 8) * config.L << config.bin_bits, 8));
    if (need > default_max_bytes)
      return Status::error(strf("Hasher::init: dim = %u with K = %u and L = %u needs %llu bytes, over the memory limit of %zu",
                                config.dim, config.K, config.L, (unsigned long long)need, default_max_bytes));
    // Uninitialized until the end: running out of memory below leaves a hasher that says so.
    kernels_ = nullptr;
    config_ = config;
    Rng rng(mix_seed(config.seed, 0x5148u));
    projection_.clear();
    dwta_positions_.clear();
    dwta_slot_of_.clear();
    dwta_next_slot_.clear();
    if (config.family == HashFamily::simhash) {
      size_t bits = size_t(config.K) * config.L;
      projection_.resize(size_t(config.dim) * bits);
      if (config.density >= 1.0f) {
        for (auto& p : projection_) p = rng.gaussian();
      } else {
        for (auto& p : projection_) p = rng.uniform() < config.density ? (rng.next() & 1 ? 1.0f : -1.0f) : 0.0f;
      }
    } else {
      bins_per_table_ = (config.K + config.bin_bits - 1) / config.bin_bits;
      size_t slots = size_t(bins_per_table_) * config.L << config.bin_bits;
      // Slots are filled from concatenated random permutations of the coordinates.
      std::vector<uint32_t> perm(config.dim);
      dwta_positions_.reserve(slots);
      while (dwta_positions_.size() < slots) {
        std::iota(perm.begin(), perm.end(), 0u);
        for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(uint32_t(i))]);
        size_t take = std::min(perm.size(), slots - dwta_positions_.size());
        dwta_positions_.insert(dwta_positions_.end(), perm.begin(), perm.begin() + take);
      }
      // Inverse map for sparse inputs: the slots of each coordinate, as a linked list.
      dwta_slot_of_.assign(config.dim, -1);
      dwta_next_slot_.assign(slots, 0xFFFFFFFFu);
      for (size_t s = slots; s-- > 0;) {
        uint32_t d = dwta_positions_[s];
        dwta_next_slot_[s] = dwta_slot_of_[d] < 0 ? 0xFFFFFFFFu : uint32_t(dwta_slot_of_[d]);
        dwta_slot_of_[d] = int32_t(s);
      }
    }
    kernels_ = &kernels(simd);
    return Status();
  });
}

Status Hasher::set_projection(const std::vector<float>& projection) {
  if (!kernels_) return Status::error("set_projection: the hasher is not initialized (call init)");
  if (config_.family != HashFamily::simhash) return Status::error("set_projection: only SimHash has a projection matrix");
  size_t want = size_t(config_.dim) * config_.K * config_.L;
  if (projection.size() != want)
    return Status::error(strf("set_projection: size %zu, expected dim*K*L = %u*%u*%u = %zu", projection.size(),
                              config_.dim, config_.K, config_.L, want));
  for (size_t i = 0; i < projection.size(); ++i)
    if (!is_finite(projection[i]))
      return Status::error(strf("set_projection: value %zu (row %zu, column %zu) is not finite", i,
                                i / (size_t(config_.K) * config_.L), i % (size_t(config_.K) * config_.L)));
  return guard("set_projection", [&] {
    projection_ = projection;
    return Status();
  });
}

namespace {
// Packs K sign bits per table: bit b of table t is scores[t*K+b] > 0.
void pack_signs(const float* scores, uint32_t K, uint32_t L, uint32_t* codes) {
  for (uint32_t t = 0; t < L; ++t) {
    uint32_t code = 0;
    const float* s = scores + size_t(t) * K;
    for (uint32_t b = 0; b < K; ++b) code |= uint32_t(s[b] > 0.0f) << b;
    codes[t] = code;
  }
}
}  // namespace

// Densification: an empty bin borrows the winner of the first non-empty bin on its own
// pseudo-random probe sequence (at most 32 probes, then the next non-empty bin), so the cost is
// O(bins) and every code is in range; an all-empty input gives code 0 everywhere.
void Hasher::dwta_codes(const float* bin_max, const uint32_t* bin_winner, uint32_t* codes) const {
  const uint32_t bins = bins_per_table_ * config_.L;
  const float empty = -std::numeric_limits<float>::infinity();
  // next_filled[i]: the first non-empty bin at or after i, circularly (bins when none is).
  std::vector<uint32_t> next_filled(bins);
  uint32_t next = bins;
  for (uint32_t pass = 0; pass < 2; ++pass)
    for (uint32_t i = bins; i-- > 0;) {
      if (bin_max[i] != empty) next = i;
      next_filled[i] = next;
    }
  const uint32_t mask = (1u << config_.K) - 1u;
  const uint32_t bin_mask = (1u << config_.bin_bits) - 1u;
  for (uint32_t t = 0; t < config_.L; ++t) {
    uint32_t code = 0;
    for (uint32_t j = 0; j < bins_per_table_; ++j) {
      uint32_t bin = t * bins_per_table_ + j;
      uint32_t w = 0;
      if (bin_max[bin] != empty) {
        w = bin_winner[bin];
      } else if (next != bins) {
        // A fixed pseudo-random probe sequence per bin, so similar inputs borrow from the same
        // donors; after 32 misses, the next non-empty bin after the last probe.
        uint32_t donor = bins, probe = bin;
        for (uint32_t attempt = 1; attempt <= 32 && donor == bins; ++attempt) {
          probe = uint32_t(mix_seed(config_.seed, bin, attempt) % bins);
          if (bin_max[probe] != empty) donor = probe;
        }
        if (donor == bins) donor = next_filled[probe];
        // Mixing in the bin index keeps borrowed codes table-specific.
        w = (bin_winner[donor] + bin) & bin_mask;
      }
      code |= w << (j * config_.bin_bits);
    }
    codes[t] = code & mask;
  }
}

Status Hasher::hash(const float* v, uint32_t* codes) const {
  if (!kernels_) return Status::error("Hasher::hash: the hasher is not initialized (call init)");
  if (!v || !codes) return Status::error("Hasher::hash: a pointer is null");
  return guard("Hasher::hash", [&] {
    hash_dense(v, codes);
    return Status();
  });
}

void Hasher::hash_dense(const float* v, uint32_t* codes) const {
  if (config_.family == HashFamily::simhash) {
    std::vector<float> scratch;
    hash_rows(v, 1, config_.dim, codes, &scratch);
    return;
  }
  const uint32_t bins = bins_per_table_ * config_.L;
  const uint32_t bin_size = 1u << config_.bin_bits;
  std::vector<float> bin_max(bins, -std::numeric_limits<float>::infinity());
  std::vector<uint32_t> winner(bins, 0);
  for (uint32_t b = 0; b < bins; ++b) {
    const uint32_t* pos = dwta_positions_.data() + size_t(b) * bin_size;
    for (uint32_t s = 0; s < bin_size; ++s) {
      float x = v[pos[s]];
      if (x != 0.0f && x > bin_max[b]) { bin_max[b] = x; winner[b] = s; }
    }
  }
  dwta_codes(bin_max.data(), winner.data(), codes);
}

Status Hasher::hash_sparse(const uint32_t* ids, const float* values, size_t nnz, uint32_t* codes) const {
  if (!kernels_) return Status::error("Hasher::hash_sparse: the hasher is not initialized (call init)");
  if (!codes || (nnz && (!ids || !values))) return Status::error("Hasher::hash_sparse: a pointer is null");
  for (size_t k = 0; k < nnz; ++k)
    if (ids[k] >= config_.dim)
      return Status::error(strf("Hasher::hash_sparse: id %u (position %zu) out of range [0, %u)", ids[k], k, config_.dim));
  return guard("Hasher::hash_sparse", [&] {
    hash_sparse_checked(ids, values, nnz, codes);
    return Status();
  });
}

void Hasher::hash_sparse_checked(const uint32_t* ids, const float* values, size_t nnz, uint32_t* codes) const {
  if (config_.family == HashFamily::simhash) {
    const size_t bits = size_t(config_.K) * config_.L;
    std::vector<float> scores(bits, 0.0f);
    for (size_t k = 0; k < nnz; ++k)
      if (values[k] != 0.0f) kernels_->axpy(values[k], projection_.data() + size_t(ids[k]) * bits, scores.data(), bits);
    pack_signs(scores.data(), config_.K, config_.L, codes);
    return;
  }
  const uint32_t bins = bins_per_table_ * config_.L;
  const uint32_t bin_mask = (1u << config_.bin_bits) - 1u;
  std::vector<float> bin_max(bins, -std::numeric_limits<float>::infinity());
  std::vector<uint32_t> winner(bins, 0);
  for (size_t k = 0; k < nnz; ++k) {
    float x = values[k];
    if (x == 0.0f || dwta_slot_of_[ids[k]] < 0) continue;
    for (uint32_t s = uint32_t(dwta_slot_of_[ids[k]]); s != 0xFFFFFFFFu; s = dwta_next_slot_[s]) {
      uint32_t b = s >> config_.bin_bits, pos = s & bin_mask;
      // Ties go to the earlier slot, as in the dense path.
      if (x > bin_max[b] || (x == bin_max[b] && pos < winner[b])) { bin_max[b] = x; winner[b] = pos; }
    }
  }
  dwta_codes(bin_max.data(), winner.data(), codes);
}

Status Hasher::hash_batch(const float* vs, size_t n, size_t ld, uint32_t* codes,
                          std::vector<float>* scratch) const {
  if (!kernels_) return Status::error("Hasher::hash_batch: the hasher is not initialized (call init)");
  if (n && (!vs || !codes)) return Status::error("Hasher::hash_batch: a pointer is null");
  if (n > 1 && ld < config_.dim) return Status::error(strf("Hasher::hash_batch: ld = %zu is below dim = %u", ld, config_.dim));
  return guard("Hasher::hash_batch", [&] {
    hash_rows(vs, n, ld, codes, scratch);
    return Status();
  });
}

Status Hasher::project(const float* vs, size_t n, size_t ld, float* scores) const {
  if (!kernels_) return Status::error("Hasher::project: the hasher is not initialized (call init)");
  if (config_.family != HashFamily::simhash) return Status::error("Hasher::project: only SimHash has projections");
  if (n && (!vs || !scores)) return Status::error("Hasher::project: a pointer is null");
  if (n > 1 && ld < config_.dim) return Status::error(strf("Hasher::project: ld = %zu is below dim = %u", ld, config_.dim));
  const size_t bits = size_t(config_.K) * config_.L;
  std::fill(scores, scores + n * bits, 0.0f);
  kernels_->gemm_nn_acc(n, bits, config_.dim, vs, ld, projection_.data(), bits, scores, bits);
  return Status();
}

void Hasher::hash_rows(const float* vs, size_t n, size_t ld, uint32_t* codes, std::vector<float>* scratch) const {
  if (config_.family == HashFamily::dwta) {
    for (size_t i = 0; i < n; ++i) hash_dense(vs + i * ld, codes + i * config_.L);
    return;
  }
  const size_t bits = size_t(config_.K) * config_.L;
  std::vector<float> local;
  std::vector<float>& s = scratch ? *scratch : local;
  // Rows of up to 64 vectors at a time keep the score block small.
  const size_t block = 64;
  if (s.size() < std::min(n, block) * bits) s.resize(std::min(n, block) * bits);
  for (size_t i0 = 0; i0 < n; i0 += block) {
    size_t m = std::min(block, n - i0);
    std::fill(s.begin(), s.begin() + ptrdiff_t(m * bits), 0.0f);
    kernels_->gemm_nn_acc(m, bits, config_.dim, vs + i0 * ld, ld, projection_.data(), bits, s.data(), bits);
    for (size_t i = 0; i < m; ++i) pack_signs(s.data() + i * bits, config_.K, config_.L, codes + (i0 + i) * config_.L);
  }
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Hash tables
//-----------------------------------------------------------------------------------------------

Status validate(const TableConfig& c) {
  if (c.K < 1 || c.K > 24) return Status::error(strf("TableConfig.K = %u out of range [1, 24]", c.K));
  if (c.L < 1 || c.L > 1024) return Status::error(strf("TableConfig.L = %u out of range [1, 1024]", c.L));
  if (c.bucket_capacity < 1 || c.bucket_capacity > 65535)
    return Status::error(strf("TableConfig.bucket_capacity = %u out of range [1, 65535]", c.bucket_capacity));
  if (c.policy != BucketPolicy::fifo && c.policy != BucketPolicy::reservoir)
    return Status::error("TableConfig.policy is not a known bucket policy");
  return Status();
}

void QueryResult::clear() {
  for (uint32_t id : ids) slot[id] = 0;
  ids.clear();
  hits.clear();
}

Status HashTables::init(const TableConfig& config) {
  return guard("HashTables::init", [&] {
    Status st = validate(config);
    if (!st.ok()) return st;
    std::vector<Table> fresh(config.L);
    config_ = config;
    tables_.swap(fresh);
    clear();
    return Status();
  });
}

Status HashTables::check_ready(const char* where, bool pointers_given) const {
  if (tables_.empty() || tables_.size() != config_.L)
    return Status::error(std::string(where) + ": the tables are not initialized (call init)");
  if (!pointers_given) return Status::error(std::string(where) + ": a pointer is null");
  return Status();
}

void HashTables::clear() {
  for (uint32_t t = 0; t < tables_.size(); ++t) {
    Table& tb = tables_[t];
    std::vector<Bucket>().swap(tb.buckets);
    std::vector<uint32_t>().swap(tb.index);
    tb.rng_state = mix_seed(config_.seed, t, 0x7AB1Eu);
  }
}

namespace {
inline size_t index_home(uint32_t code, size_t mask) { return size_t((code * 0x9E3779B1u) >> 7) & mask; }
}  // namespace

const HashTables::Bucket* HashTables::find_bucket(uint32_t table, uint32_t code) const {
  const Table& tb = tables_[table];
  if (tb.index.empty()) return nullptr;
  const size_t mask = tb.index.size() - 1;
  for (size_t h = index_home(code, mask);; h = (h + 1) & mask) {
    uint32_t s = tb.index[h];
    if (s == 0) return nullptr;
    if (tb.buckets[s - 1].code == code) return &tb.buckets[s - 1];
  }
}

HashTables::Bucket* HashTables::bucket_for_insert(uint32_t table, uint32_t code) {
  if (const Bucket* b = find_bucket(table, code)) return const_cast<Bucket*>(b);
  Table& tb = tables_[table];
  // Keep the index at most half full; re-index on growth.
  if ((tb.buckets.size() + 1) * 2 > tb.index.size()) {
    std::vector<uint32_t> grown(std::max<size_t>(16, tb.index.size() * 2), 0);
    const size_t mask = grown.size() - 1;
    for (size_t i = 0; i < tb.buckets.size(); ++i) {
      size_t h = index_home(tb.buckets[i].code, mask);
      while (grown[h]) h = (h + 1) & mask;
      grown[h] = uint32_t(i + 1);
    }
    tb.index.swap(grown);
  }
  const size_t mask = tb.index.size() - 1;
  size_t h = index_home(code, mask);
  while (tb.index[h]) h = (h + 1) & mask;
  tb.buckets.emplace_back();
  tb.buckets.back().code = code;
  tb.index[h] = uint32_t(tb.buckets.size());
  return &tb.buckets.back();
}

void HashTables::insert_into(uint32_t table, uint32_t id, uint32_t code) {
  Bucket* b = bucket_for_insert(table, code);
  uint32_t offered = b->offered++;
  if (b->ids.size() < config_.bucket_capacity) {
    b->ids.push_back(id);
  } else if (config_.policy == BucketPolicy::fifo) {
    b->ids.erase(b->ids.begin());
    b->ids.push_back(id);
  } else {
    // Algorithm R: the (offered+1)-th id replaces a random one with probability C/(offered+1).
    uint64_t& st = tables_[table].rng_state;
    uint64_t r = splitmix64(st);
    uint64_t j = (r >> 32) * (uint64_t(offered) + 1) >> 32;
    if (j < b->ids.size()) b->ids[size_t(j)] = id;
  }
}

void HashTables::remove_from(uint32_t table, uint32_t id, uint32_t code) {
  Bucket* b = const_cast<Bucket*>(find_bucket(table, code));
  if (!b) return;
  auto it = std::find(b->ids.begin(), b->ids.end(), id);
  if (it == b->ids.end()) return;
  if (config_.policy == BucketPolicy::fifo) {
    b->ids.erase(it);  // keep the age order
  } else {
    *it = b->ids.back();
    b->ids.pop_back();
  }
  // The removed id no longer counts as offered (so repeated updates do not freeze a bucket).
  b->offered = std::max<uint32_t>(b->offered - 1, uint32_t(b->ids.size()));
}

Status HashTables::insert(uint32_t id, const uint32_t* codes) {
  Status st = check_ready("HashTables::insert", codes);
  if (!st.ok()) return st;
  return guard("HashTables::insert", [&] {
    const uint32_t mask = (1u << config_.K) - 1u;
    for (uint32_t t = 0; t < config_.L; ++t) insert_into(t, id, codes[t] & mask);
    return Status();
  });
}

Status HashTables::remove(uint32_t id, const uint32_t* codes) {
  Status st = check_ready("HashTables::remove", codes);
  if (!st.ok()) return st;
  const uint32_t mask = (1u << config_.K) - 1u;
  for (uint32_t t = 0; t < config_.L; ++t) remove_from(t, id, codes[t] & mask);
  return Status();
}

Status HashTables::update(uint32_t id, const uint32_t* old_codes, const uint32_t* new_codes) {
  Status st = check_ready("HashTables::update", old_codes && new_codes);
  if (!st.ok()) return st;
  return guard("HashTables::update", [&] {
    const uint32_t mask = (1u << config_.K) - 1u;
    for (uint32_t t = 0; t < config_.L; ++t) {
      uint32_t a = old_codes[t] & mask, b = new_codes[t] & mask;
      if (a == b) continue;
      remove_from(t, id, a);
      insert_into(t, id, b);
    }
    return Status();
  });
}

Status HashTables::build(const uint32_t* codes, size_t n, uint32_t threads) {
  Status st = check_ready("HashTables::build", codes || n == 0);
  if (!st.ok()) return st;
  if (exceeds_u32(n)) return Status::error(strf("HashTables::build: %zu items; ids are 32-bit", n));
  return guard("HashTables::build", [&] {
    build_tables(codes, n, threads);
    return Status();
  });
}

void HashTables::build_tables(const uint32_t* codes, size_t n, uint32_t threads) {
  clear();
  const uint32_t L = config_.L;
  const uint32_t mask = (1u << config_.K) - 1u;
  auto build_table = [&](uint32_t t) {
    // Count first (in `offered`), so each bucket is allocated once at its final size.
    for (size_t i = 0; i < n; ++i) ++bucket_for_insert(t, codes[i * L + t] & mask)->offered;
    for (Bucket& b : tables_[t].buckets) {
      b.ids.reserve(std::min<uint32_t>(b.offered, config_.bucket_capacity));
      b.offered = 0;
    }
    for (size_t i = 0; i < n; ++i) insert_into(t, uint32_t(i), codes[i * L + t] & mask);
  };
  uint32_t workers = std::max<uint32_t>(1, std::min<uint32_t>(threads ? threads : 1, L));
  if (workers == 1) {
    for (uint32_t t = 0; t < L; ++t) build_table(t);
    return;
  }
  ThreadPool pool(workers);
  pool.run(L, [&](size_t t, uint32_t) { build_table(uint32_t(t)); });
}

Status HashTables::query(const uint32_t* codes, QueryResult* out, size_t per_table) const {
  Status st = check_ready("HashTables::query", codes && out);
  if (!st.ok()) return st;
  if (per_table < 1 || per_table > 25) return Status::error(strf("HashTables::query: per_table = %zu out of range [1, 25]", per_table));
  return guard("HashTables::query", [&] {
    query_into(codes, out, per_table);
    return Status();
  });
}

void HashTables::query_into(const uint32_t* codes, QueryResult* out, size_t per_table) const {
  out->clear();
  const uint32_t mask = (1u << config_.K) - 1u;
  for (size_t probe = 0; probe < config_.L * per_table; ++probe) {
    const Bucket* b = find_bucket(uint32_t(probe / per_table), codes[probe] & mask);
    if (!b) continue;
    for (uint32_t id : b->ids) {
      if (id >= out->slot.size()) {
        // The scratch has one entry per possible id (ids should be dense, 0..n-1).
        if (uint64_t(id) + 1 > default_max_bytes / sizeof(uint32_t))
          throw StatusError{Status::error(strf("HashTables::query: item id %u needs a %llu-byte query scratch, over the "
                                               "memory limit of %zu (item ids should be dense, 0..n-1)", id,
                                               (unsigned long long)(uint64_t(id) + 1) * 4, default_max_bytes))};
        out->slot.resize(std::min<size_t>(std::max<size_t>(size_t(id) + 1, out->slot.size() * 2), default_max_bytes / 4), 0);
      }
      uint32_t s = out->slot[id];
      if (s == 0) {
        out->ids.push_back(id);
        out->hits.push_back(1);
        out->slot[id] = uint32_t(out->ids.size());
      } else {
        ++out->hits[s - 1];
      }
    }
  }
}

Status HashTables::keep_top_hits(QueryResult* r, size_t m) {
  if (!r) return Status::error("HashTables::keep_top_hits: result is null");
  if (r->hits.size() != r->ids.size()) return Status::error("HashTables::keep_top_hits: ids and hits differ in size");
  for (uint32_t id : r->ids)
    if (id >= r->slot.size()) return Status::error("HashTables::keep_top_hits: the result was not filled by query (slot too short)");
  return guard("HashTables::keep_top_hits", [&] {
    keep_top_hits_into(r, m);
    return Status();
  });
}

void HashTables::keep_top_hits_into(QueryResult* r, size_t m) {
  size_t n = r->ids.size();
  uint16_t max_hits = 0;
  for (uint16_t h : r->hits) max_hits = std::max(max_hits, h);
  // Counting sort by hits, descending, stable (first seen first among equals).
  std::vector<size_t> start(size_t(max_hits) + 2, 0);
  for (uint16_t h : r->hits) ++start[size_t(max_hits - h) + 1];
  for (size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
  std::vector<uint32_t> ids(n);
  std::vector<uint16_t> hits(n);
  for (size_t i = 0; i < n; ++i) {
    size_t pos = start[size_t(max_hits - r->hits[i])]++;
    ids[pos] = r->ids[i];
    hits[pos] = r->hits[i];
  }
  size_t keep = std::min(m, n);
  for (size_t i = keep; i < n; ++i) r->slot[ids[i]] = 0;
  ids.resize(keep);
  hits.resize(keep);
  for (size_t i = 0; i < keep; ++i) r->slot[ids[i]] = uint32_t(i + 1);
  r->ids.swap(ids);
  r->hits.swap(hits);
}

const std::vector<uint32_t>& HashTables::bucket(uint32_t table, uint32_t code) const {
  static const std::vector<uint32_t> empty;
  if (table >= tables_.size() || code > (1u << config_.K) - 1u) return empty;
  const Bucket* b = find_bucket(table, code);
  return b ? b->ids : empty;
}

size_t HashTables::stored_ids() const {
  size_t total = 0;
  for (const Table& tb : tables_)
    for (const Bucket& b : tb.buckets) total += b.ids.size();
  return total;
}

size_t HashTables::bytes_used() const {
  size_t total = tables_.capacity() * sizeof(Table);
  for (const Table& tb : tables_) {
    total += tb.buckets.capacity() * sizeof(Bucket) + tb.index.capacity() * sizeof(uint32_t);
    for (const Bucket& b : tb.buckets) total += b.ids.capacity() * sizeof(uint32_t);
  }
  return total;
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Configuration
//-----------------------------------------------------------------------------------------------

namespace {

constexpr size_t kMaxHiddenLayers = 16;

// The output layer's own fields, for inputs of `dim` floats (Model: the last hidden width).
Status validate_output_fields(const Config& c, size_t dim) {
  if (c.output != OutputMode::full && c.output != OutputMode::lsh) return Status::error("Config.output is not a known output mode");
  // The LSH fields are checked in every mode: a model file carries them all, and a full model
  // must not hold values that would misbehave if used.
  HashConfig hc;
  hc.family = c.hash;
  hc.dim = uint32_t(std::min<size_t>(dim + 2, 0xFFFFFFFFu));
  hc.K = c.K;
  hc.L = c.L;
  hc.density = c.hash_density;
  Status st = validate(hc);
  if (!st.ok()) return Status::error("Config: " + st.message().substr(st.message().find('.') + 1).insert(0, "hash "));
  TableConfig tc;
  tc.K = c.K;
  tc.L = c.L;
  tc.bucket_capacity = c.bucket_capacity;
  tc.policy = c.bucket_policy;
  st = validate(tc);
  if (!st.ok()) return Status::error("Config." + st.message().substr(st.message().find('.') + 1));
  if (!is_finite(c.rehash_decay) || !(c.rehash_decay >= 0.0f && c.rehash_decay <= 1.0f)) return Status::error(strf("Config.rehash_decay = %g out of range [0, 1]", double(c.rehash_decay)));
  if (c.scheduler != Scheduler::fixed && c.scheduler != Scheduler::detect && c.scheduler != Scheduler::incremental)
    return Status::error("Config.scheduler is not a known scheduler");
  if (c.check_every < 1) return Status::error("Config.check_every = 0 out of range [1, 2^32)");
  if (c.detector_bits < 1 || c.detector_bits > 24) return Status::error(strf("Config.detector_bits = %u out of range [1, 24]", c.detector_bits));
  if (!is_finite(c.tau) || !(c.tau > 0.0f && c.tau <= 1.0f)) return Status::error(strf("Config.tau = %g out of range (0, 1]", double(c.tau)));
  if (!is_finite(c.full_rebuild_fraction) || !(c.full_rebuild_fraction > 0.0f && c.full_rebuild_fraction <= 1.0f))
    return Status::error(strf("Config.full_rebuild_fraction = %g out of range (0, 1]", double(c.full_rebuild_fraction)));
  if (!is_finite(c.drift_epsilon) || !(c.drift_epsilon >= 0.0f)) return Status::error(strf("Config.drift_epsilon = %g must be finite and >= 0", double(c.drift_epsilon)));
  if (c.exact_retrieval && c.max_active == 0) return Status::error("Config.exact_retrieval needs max_active > 0 (how many neurons to retrieve)");
  if (c.exact_retrieval && !c.retrieval) return Status::error("Config.exact_retrieval needs retrieval = true");
  if (c.probes > c.K) return Status::error(strf("Config.probes = %u out of range [0, K = %u]", c.probes, c.K));
  if (c.infer_probes > c.K) return Status::error(strf("Config.infer_probes = %u out of range [0, K = %u]", c.infer_probes, c.K));
  if ((c.probes || c.infer_probes) && c.hash != HashFamily::simhash)
    return Status::error("Config.probes and infer_probes need hash = simhash (DWTA codes have no margins to probe by)");
  if (c.learn_hash && c.hash != HashFamily::simhash) return Status::error("Config.learn_hash needs hash = simhash (DWTA has no projection to learn)");
  if (c.learn_queries < 1) return Status::error("Config.learn_queries = 0 out of range [1, 2^32)");
  if (uint32_t(c.hash_loss) > uint32_t(HashLoss::triplet)) return Status::error(strf("Config.hash_loss = %u is not a HashLoss", unsigned(c.hash_loss)));
  if (!is_finite(c.tail_drift) || !(c.tail_drift >= 0.0f && c.tail_drift <= 10.0f)) return Status::error(strf("Config.tail_drift = %g out of range [0, 10]", double(c.tail_drift)));
  if (!is_finite(c.triplet_margin) || !(c.triplet_margin > 0.0f && c.triplet_margin <= 2.0f)) return Status::error(strf("Config.triplet_margin = %g out of range (0, 2]", double(c.triplet_margin)));
  if (c.hash_steps < 1 || c.hash_steps > 10000) return Status::error(strf("Config.hash_steps = %u out of range [1, 10000]", c.hash_steps));
  if (!is_finite(c.hash_lr) || !(c.hash_lr > 0.0f && c.hash_lr <= 1.0f)) return Status::error(strf("Config.hash_lr = %g out of range (0, 1]", double(c.hash_lr)));
  return Status();
}

// The optimizer and execution fields every component reads.
Status validate_training_fields(const Config& c) {
  if (!is_finite(c.learning_rate) || !(c.learning_rate > 0.0f && c.learning_rate <= 1.0f)) return Status::error(strf("Config.learning_rate = %g out of range (0, 1]", double(c.learning_rate)));
  if (!is_finite(c.beta1) || !(c.beta1 >= 0.0f && c.beta1 < 1.0f)) return Status::error(strf("Config.beta1 = %g out of range [0, 1)", double(c.beta1)));
  if (!is_finite(c.beta2) || !(c.beta2 >= 0.0f && c.beta2 < 1.0f)) return Status::error(strf("Config.beta2 = %g out of range [0, 1)", double(c.beta2)));
  if (!is_finite(c.adam_eps) || !(c.adam_eps > 0.0f && c.adam_eps < 1.0f)) return Status::error(strf("Config.adam_eps = %g out of range (0, 1)", double(c.adam_eps)));
  if (c.batch_size < 1 || c.batch_size > 65536) return Status::error(strf("Config.batch_size = %u out of range [1, 65536]", c.batch_size));
  if (c.threads > 1024) return Status::error(strf("Config.threads = %u out of range [0, 1024]", c.threads));
  if (uint32_t(c.simd) > uint32_t(Simd::neon)) return Status::error(strf("Config.simd = %u is not a Simd", unsigned(c.simd)));
  return Status();
}

// The width the output layer sees: the last hidden layer's.
size_t network_output_width(const Config& c) { return c.hidden_layers.empty() ? c.hidden : c.hidden_layers.back(); }

}  // namespace

Status validate(const Config& c) {
  return guard("validate(Config)", [&] {
    if (c.hidden < 1 || c.hidden > 65536) return Status::error(strf("Config.hidden = %u out of range [1, 65536]", c.hidden));
    if (c.input != InputKind::sparse && c.input != InputKind::dense) return Status::error("Config.input is not a known InputKind");
    if (c.hidden_layers.size() > kMaxHiddenLayers)
      return Status::error(strf("Config.hidden_layers has %zu layers, at most %zu", c.hidden_layers.size(), kMaxHiddenLayers));
    for (size_t l = 0; l < c.hidden_layers.size(); ++l)
      if (c.hidden_layers[l] < 1 || c.hidden_layers[l] > 65536)
        return Status::error(strf("Config.hidden_layers[%zu] = %u out of range [1, 65536]", l, c.hidden_layers[l]));
    Status st = validate_training_fields(c);
    if (!st.ok()) return st;
    return validate_output_fields(c, network_output_width(c));
  });
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Input layers
//-----------------------------------------------------------------------------------------------
// Both kinds keep W (D x H, row f = feature f) and b (H) with their Adam moments and share one
// interface; the network sees act = ReLU(W^T x + b). Parallel updates never race: the sparse
// layer's per-example gradients are grouped by row in example order and each row is summed and
// updated by one worker; the dense layer's rows are split between the workers.

namespace {

size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

// Largest hidden activation training accepts: gradients stay below ~1e18, so their squares
// (Adam's second moment) stay finite in float.
constexpr float kMaxMagnitude = max_feature_value;

// A parameter array and its two Adam moments.
struct Param {
  std::vector<float> w, m, v;
  void assign(size_t n) {
    w.assign(n, 0.0f);
    m.assign(n, 0.0f);
    v.assign(n, 0.0f);
  }
  size_t size() const { return w.size(); }
  uint64_t bytes() const { return 3 * uint64_t(w.size()) * sizeof(float); }
  void adam(const Kernels& k, size_t offset, const float* g, size_t n, const AdamStep& st) {
    k.adam(&w[offset], g, &m[offset], &v[offset], n, st);
  }
};

// One array of a component's state as model files hold it, with the name errors use.
struct StateArray {
  const char* name;
  std::vector<float>* values;        // fp32 state, or
  bool moment;                       // an Adam moment: saved only with SaveOptions::optimizer_state
  std::vector<uint16_t>* halves = nullptr;  // bf16 state (values then null)
  size_t size() const { return values ? values->size() : halves->size(); }
};

// bfloat16: the top half of an fp32 (8 exponent bits, 7 mantissa bits). The conversion to fp32
// is exact; the way back rounds to nearest, ties to even (values here are finite).
inline float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Keeps the k best (score, label) pairs seen, best first; ties keep the smaller label.
// k may exceed the number of offers (max_active up to 2^32 - 1 means "all"): the reserve is
// capped so a large k costs nothing until items arrive.
struct TopK {
  size_t k;
  std::vector<Scored> items;
  explicit TopK(size_t k_) : k(k_) { items.reserve(std::min<size_t>(k_, 4096) + 1); }
  void offer(uint32_t label, float score) {
    if (items.size() == k && !(score > items.back().score)) return;
    size_t i = items.size() < k ? items.size() : k - 1;
    if (items.size() < k) items.push_back({label, score});
    while (i > 0 && items[i - 1].score < score) {
      items[i] = items[i - 1];
      --i;
    }
    items[i] = {label, score};
  }
};

// U(-bound, bound) for every weight, in order (as PyTorch's Linear initialises).
void fill_uniform(std::vector<float>& w, float bound, Rng& rng) {
  for (float& x : w) x = (2.0f * rng.uniform() - 1.0f) * bound;
}

// Gradients of many rows, each a weighted sum of per-example vectors, grouped by row in example
// order: row keys[i] gets sum over entries [offsets[i], offsets[i+1]) of weight * vector(example).
struct GroupedGradient {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> examples;
  std::vector<float> weights;
  std::vector<int32_t> slot;  // per key: index into keys, or -1 (kept all -1 between uses)
  std::vector<uint32_t> counts;

  // `emit(e, add)` calls add(key, weight) for each entry of example e.
  template <class Emit>
  void collect(size_t key_space, size_t n_examples, Emit&& emit) {
    if (slot.size() < key_space) slot.assign(key_space, -1);
    keys.clear();
    counts.clear();
    for (size_t e = 0; e < n_examples; ++e)
      emit(e, [&](uint32_t key, float) {
        int32_t s = slot[key];
        if (s < 0) {
          slot[key] = s = int32_t(keys.size());
          keys.push_back(key);
          counts.push_back(0);
        }
        ++counts[size_t(s)];
      });
    offsets.assign(keys.size() + 1, 0);
    for (size_t i = 0; i < keys.size(); ++i) offsets[i + 1] = offsets[i] + counts[i];
    examples.resize(offsets.back());
    weights.resize(offsets.back());
    for (size_t i = 0; i < keys.size(); ++i) counts[i] = offsets[i];
    for (size_t e = 0; e < n_examples; ++e)
      emit(e, [&](uint32_t key, float w) {
        uint32_t pos = counts[size_t(slot[key])]++;
        examples[pos] = uint32_t(e);
        weights[pos] = w;
      });
    for (uint32_t k : keys) slot[k] = -1;
  }
};

// Sums and applies one GroupedGradient: row key gets sum weight * vecs[example * vec_ld ..]
// (len floats), then update(key, gradient, worker) applies it (one Adam step). grads: one
// scratch per worker.
template <class Update>
void apply_grouped(const Exec& x, const GroupedGradient& g, const float* vecs, size_t vec_ld, size_t len,
                   std::vector<std::vector<float>>& grads, Update&& update) {
  x.chunks(g.keys.size(), 64, [&](size_t i0, size_t i1, uint32_t w) {
    std::vector<float>& grad = grads[w];
    if (grad.size() < len) grad.resize(len);
    for (size_t i = i0; i < i1; ++i) {
      std::fill(grad.begin(), grad.begin() + ptrdiff_t(len), 0.0f);
      for (uint32_t p = g.offsets[i]; p < g.offsets[i + 1]; ++p)
        x.k->axpy(g.weights[p], vecs + size_t(g.examples[p]) * vec_ld, grad.data(), len);
      update(g.keys[i], grad.data(), w);
    }
  });
}

// One Adam step on a bias from the sum of the rows of g (B x n).
void update_bias(const Kernels& k, Param& b, const float* g, size_t B, size_t n, const AdamStep& st,
                 std::vector<float>& scratch) {
  scratch.assign(n, 0.0f);
  for (size_t e = 0; e < B; ++e) k.add(g + e * n, scratch.data(), n);
  b.adam(k, 0, scratch.data(), n, st);
}

class InputLayer {
 public:
  virtual ~InputLayer() = default;
  virtual InputKind kind() const = 0;

  // W (D x H) then b (H), drawn from rng: U(-1/sqrt(D), 1/sqrt(D)).
  void init(size_t D, size_t H, Rng& rng, uint32_t threads) {
    D_ = D;
    H_ = H;
    W_.assign(D * H);
    b_.assign(H);
    const float bound = 1.0f / std::sqrt(float(D));
    fill_uniform(W_.w, bound, rng);
    fill_uniform(b_.w, bound, rng);
    grads_.assign(threads, {});
  }
  size_t inputs() const { return D_; }
  size_t width() const { return H_; }

  // act (B x H) = ReLU(W^T x + b) for the rows of a training batch.
  virtual void forward(const Dataset::Row* rows, size_t B, float* act, const Exec& x) = 0;
  // dact (B x H) holds dL/d(act): masked by the ReLU in place, then one Adam step on W and b.
  virtual void backward_update(const Dataset::Row* rows, size_t B, const float* act, float* dact, const AdamStep& st,
                               const Exec& x) = 0;
  // act (n x H) for n rows, on the caller's thread and scratch (inference may run concurrently).
  virtual void infer(const Dataset::Row* rows, size_t n, float* act, std::vector<float>* scratch,
                     const Kernels& k) const = 0;

  std::vector<StateArray> state() {
    return {{"W1", &W_.w, false}, {"b1", &b_.w, false}, {"W1 Adam m", &W_.m, true}, {"W1 Adam v", &W_.v, true},
            {"b1 Adam m", &b_.m, true}, {"b1 Adam v", &b_.v, true}};
  }
  const float* weights() const { return W_.w.data(); }
  const float* bias() const { return b_.w.data(); }
  uint64_t bytes() const { return W_.bytes() + b_.bytes(); }
  double bytes_moved() const { return bytes_moved_; }  // see TrainStats::bytes_moved

 protected:
  size_t D_ = 0, H_ = 0;
  double bytes_moved_ = 0;
  Param W_, b_;
  std::vector<std::vector<float>> grads_;  // per worker
};

// The embedding bag: act = ReLU(b + sum_k value_k W[id_k]); lazy Adam on the rows present.
class SparseInput final : public InputLayer {
 public:
  InputKind kind() const override { return InputKind::sparse; }

  void forward(const Dataset::Row* rows, size_t B, float* act, const Exec& x) override {
    x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t) {
      for (size_t e = e0; e < e1; ++e) one(rows[e], act + e * H_, *x.k);
    });
  }

  void backward_update(const Dataset::Row* rows, size_t B, const float* act, float* dact, const AdamStep& st,
                       const Exec& x) override {
    x.chunks(B, 32, [&](size_t e0, size_t e1, uint32_t) {
      for (size_t e = e0; e < e1; ++e) x.k->relu_backward(act + e * H_, dact + e * H_, H_);
    });
    grouped_.collect(D_, B, [&](size_t e, auto&& add) {
      for (size_t i = 0; i < rows[e].nnz; ++i) add(rows[e].ids[i], rows[e].values[i]);
    });
    apply_grouped(x, grouped_, dact, H_, H_, grads_, [&](uint32_t key, const float* g, uint32_t) {
      W_.adam(*x.k, size_t(key) * H_, g, H_, st);
    });
    update_bias(*x.k, b_, dact, B, H_, st, grads_[0]);
    bytes_moved_ += 7.0 * double(grouped_.keys.size()) * double(H_) * sizeof(float);
  }

  void infer(const Dataset::Row* rows, size_t n, float* act, std::vector<float>*, const Kernels& k) const override {
    for (size_t i = 0; i < n; ++i) one(rows[i], act + i * H_, k);
  }

 private:
  void one(const Dataset::Row& row, float* h, const Kernels& k) const {
    std::memcpy(h, b_.w.data(), H_ * sizeof(float));
    k.sparse_matvec(row.ids, row.values, row.nnz, W_.w.data(), H_, H_, h);
    k.relu(h, H_);
  }
  GroupedGradient grouped_;
};

// The dense layer: the batch as a dense B x D matrix X (absent features 0), act = ReLU(X W + b)
// by GEMM, and a dense Adam step on every row of W.
class DenseInput final : public InputLayer {
 public:
  InputKind kind() const override { return InputKind::dense; }

  void forward(const Dataset::Row* rows, size_t B, float* act, const Exec& x) override {
    scatter(rows, B, &X_);
    x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t) { affine_relu(X_.data() + e0 * D_, e1 - e0, act + e0 * H_, *x.k); });
  }

  void backward_update(const Dataset::Row*, size_t B, const float* act, float* dact, const AdamStep& st,
                       const Exec& x) override {
    x.chunks(B, 32, [&](size_t e0, size_t e1, uint32_t) {
      for (size_t e = e0; e < e1; ++e) x.k->relu_backward(act + e * H_, dact + e * H_, H_);
    });
    // G = X^T dact, 64 rows of W at a time, each block updated while its gradient is in cache.
    const size_t block = 64;
    x.chunks(D_, block, [&](size_t d0, size_t d1, uint32_t w) {
      std::vector<float>& g = grads_[w];
      g.assign((d1 - d0) * H_, 0.0f);
      x.k->gemm_tn_acc(d1 - d0, H_, B, X_.data() + d0, D_, dact, H_, g.data(), H_);
      for (size_t d = d0; d < d1; ++d) W_.adam(*x.k, d * H_, g.data() + (d - d0) * H_, H_, st);
    });
    update_bias(*x.k, b_, dact, B, H_, st, grads_[0]);
    bytes_moved_ += 7.0 * double(D_) * double(H_) * sizeof(float);
  }

  void infer(const Dataset::Row* rows, size_t n, float* act, std::vector<float>* scratch, const Kernels& k) const override {
    scatter(rows, n, scratch);
    affine_relu(scratch->data(), n, act, k);
  }

 private:
  void scatter(const Dataset::Row* rows, size_t n, std::vector<float>* X) const {
    X->assign(n * D_, 0.0f);
    for (size_t e = 0; e < n; ++e)
      for (size_t i = 0; i < rows[e].nnz; ++i) (*X)[e * D_ + rows[e].ids[i]] = rows[e].values[i];
  }
  void affine_relu(const float* X, size_t n, float* act, const Kernels& k) const {
    for (size_t e = 0; e < n; ++e) std::memcpy(act + e * H_, b_.w.data(), H_ * sizeof(float));
    k.gemm_nn_acc(n, H_, D_, X, D_, W_.w.data(), H_, act, H_);
    for (size_t e = 0; e < n; ++e) k.relu(act + e * H_, H_);
  }
  std::vector<float> X_;  // the batch, dense
};

std::unique_ptr<InputLayer> make_input_layer(InputKind kind) {
  if (kind == InputKind::dense) return std::make_unique<DenseInput>();
  return std::make_unique<SparseInput>();
}

}  // namespace

//-----------------------------------------------------------------------------------------------
// [SECTION] Hidden layers
//-----------------------------------------------------------------------------------------------
// y = ReLU(x W + b) per layer, W inputs x outputs. Backward computes dL/dx with W before its
// update, then one dense Adam step on W (rows split between the workers) and b.

namespace {

class DenseStack {
 public:
  // Layers of the given widths after an input of `in` floats, weights drawn from rng in order.
  void init(size_t in, const std::vector<uint32_t>& widths, Rng& rng, uint32_t threads) {
    layers_.clear();
    for (uint32_t width : widths) {
      Layer l;
      l.in = in;
      l.out = width;
      l.W.assign(l.in * l.out);
      l.b.assign(l.out);
      const float bound = 1.0f / std::sqrt(float(l.in));
      fill_uniform(l.W.w, bound, rng);
      fill_uniform(l.b.w, bound, rng);
      layers_.push_back(std::move(l));
      in = width;
    }
    grads_.assign(threads, {});
  }
  bool empty() const { return layers_.empty(); }
  size_t size() const { return layers_.size(); }

  // Each layer's activations for the batch; returns the last (B x its width), or in if none.
  const float* forward(const float* in, size_t B, const Exec& x) {
    const float* a = in;
    for (Layer& l : layers_) {
      l.act.resize(B * l.out);
      x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t) { affine_relu(l, a + e0 * l.in, e1 - e0, l.act.data() + e0 * l.out, *x.k); });
      a = l.act.data();
    }
    return a;
  }

  // dout (B x last width) holds dL/d(the last activations) and is used as scratch; din (B x the
  // input's width) receives dL/d(in). One Adam step on every layer.
  void backward_update(const float* in, size_t B, float* dout, float* din, const AdamStep& st, const Exec& x) {
    float* d = dout;
    for (size_t li = layers_.size(); li-- > 0;) {
      Layer& l = layers_[li];
      const float* X = li == 0 ? in : layers_[li - 1].act.data();
      x.chunks(B, 32, [&](size_t e0, size_t e1, uint32_t) {
        for (size_t e = e0; e < e1; ++e) x.k->relu_backward(l.act.data() + e * l.out, d + e * l.out, l.out);
      });
      // dX = d W^T, before W changes.
      std::vector<float>& next = li % 2 ? delta_a_ : delta_b_;
      float* dX = li == 0 ? din : (next.resize(B * l.in), next.data());
      x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t) {
        x.k->gemm_nt(e1 - e0, l.in, l.out, d + e0 * l.out, l.out, l.W.w.data(), l.out, dX + e0 * l.in, l.in);
      });
      // G = X^T d, 64 rows of W at a time.
      x.chunks(l.in, 64, [&](size_t r0, size_t r1, uint32_t w) {
        std::vector<float>& g = grads_[w];
        g.assign((r1 - r0) * l.out, 0.0f);
        x.k->gemm_tn_acc(r1 - r0, l.out, B, X + r0, l.in, d, l.out, g.data(), l.out);
        for (size_t r = r0; r < r1; ++r) l.W.adam(*x.k, r * l.out, g.data() + (r - r0) * l.out, l.out, st);
      });
      update_bias(*x.k, l.b, d, B, l.out, st, grads_[0]);
      d = dX;
    }
  }

  // out (n x last width) for n inputs, on the caller's scratch (layers alternate between its
  // two halves; the last writes out). Needs at least one layer.
  void infer(const float* in, size_t n, float* out, std::vector<float>* scratch, const Kernels& k) const {
    size_t widest = 0;
    for (const Layer& l : layers_) widest = std::max(widest, l.out);
    scratch->resize(2 * n * widest);
    const float* a = in;
    for (size_t li = 0; li < layers_.size(); ++li) {
      float* y = li + 1 == layers_.size() ? out : scratch->data() + (li % 2) * n * widest;
      affine_relu(layers_[li], a, n, y, k);
      a = y;
    }
  }
  size_t out_width(size_t in) const { return layers_.empty() ? in : layers_.back().out; }

  std::vector<StateArray> state() {
    std::vector<StateArray> out;
    for (Layer& l : layers_) {
      out.push_back({"hidden W", &l.W.w, false});
      out.push_back({"hidden b", &l.b.w, false});
      out.push_back({"hidden W Adam m", &l.W.m, true});
      out.push_back({"hidden W Adam v", &l.W.v, true});
      out.push_back({"hidden b Adam m", &l.b.m, true});
      out.push_back({"hidden b Adam v", &l.b.v, true});
    }
    return out;
  }
  Model::Weights::Dense view(size_t li) const {
    const Layer& l = layers_[li];
    return {l.W.w.data(), l.b.w.data(), l.in, l.out};
  }
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const Layer& l : layers_) n += l.W.bytes() + l.b.bytes();
    return n;
  }

 private:
  struct Layer {
    size_t in = 0, out = 0;
    Param W, b;
    std::vector<float> act;  // the batch's activations, B x out
  };
  static void affine_relu(const Layer& l, const float* X, size_t n, float* y, const Kernels& k) {
    for (size_t e = 0; e < n; ++e) std::memcpy(y + e * l.out, l.b.w.data(), l.out * sizeof(float));
    k.gemm_nn_acc(n, l.out, l.in, X, l.in, l.W.w.data(), l.out, y, l.out);
    for (size_t e = 0; e < n; ++e) k.relu(y + e * l.out, l.out);
  }
  std::vector<Layer> layers_;
  std::vector<float> delta_a_, delta_b_;      // dL/d(activations) between layers
  std::vector<std::vector<float>> grads_;     // per worker
};

}  // namespace

//-----------------------------------------------------------------------------------------------
// [SECTION] Hash learning
//-----------------------------------------------------------------------------------------------

namespace {

// The output layer's neuron rows, `count` rows [w_j (H), b_j, zeros] of ld floats, with their two
// Adam moments: fp32, or bfloat16 (Config::bf16) for half the memory and memory traffic. Every
// computation runs in fp32: bf16 rows are converted into the caller's scratch on the way in, and
// rounded to nearest even on the way out. The fp32 paths touch the storage directly.
class NeuronRows {
 public:
  size_t count = 0, ld = 0, H = 0;

  void init(size_t n, size_t row_ld, size_t h, bool bf16) {
    count = n;
    ld = row_ld;
    H = h;
    bf16_ = bf16;
    if (bf16) {
      hw_.assign(n * ld, 0);
      hm_.assign(n * ld, 0);
      hv_.assign(n * ld, 0);
    } else {
      w_.assign(n * ld, 0.0f);
      m_.assign(n * ld, 0.0f);
      v_.assign(n * ld, 0.0f);
    }
  }
  bool bf16() const { return bf16_; }
  // The fp32 rows themselves; null when they are stored as bf16.
  const float* data() const { return bf16_ ? nullptr : w_.data(); }
  float* data() { return bf16_ ? nullptr : w_.data(); }

  // Rows j0..j0+n as fp32: a pointer into the storage, or into `scratch` (converted).
  const float* block(size_t j0, size_t n, std::vector<float>& scratch) const {
    if (!bf16_) return w_.data() + j0 * ld;
    scratch.resize(n * ld);
    const uint16_t* h = hw_.data() + j0 * ld;
    for (size_t i = 0; i < n * ld; ++i) scratch[i] = from_bf16(h[i]);
    return scratch.data();
  }
  // The first n floats of row j into out.
  void copy_row(size_t j, float* out, size_t n) const {
    if (!bf16_) {
      std::memcpy(out, w_.data() + j * ld, n * sizeof(float));
      return;
    }
    const uint16_t* h = hw_.data() + j * ld;
    for (size_t i = 0; i < n; ++i) out[i] = from_bf16(h[i]);
  }
  // Rows ids[0..n) into out (n x ld).
  void gather(const uint32_t* ids, size_t n, float* out) const {
    for (size_t i = 0; i < n; ++i) copy_row(ids[i], out + i * ld, ld);
  }
  void set(size_t j, size_t i, float value) {
    if (bf16_) hw_[j * ld + i] = to_bf16(value);
    else w_[j * ld + i] = value;
  }
  // One Adam step on row j with gradient g (ld floats).
  void adam(const Kernels& k, size_t j, const float* g, const AdamStep& st, std::vector<float>& scratch) {
    if (!bf16_) {
      k.adam(&w_[j * ld], g, &m_[j * ld], &v_[j * ld], ld, st);
      return;
    }
    scratch.resize(3 * ld);
    float *w = scratch.data(), *m = w + ld, *v = m + ld;
    for (size_t i = 0; i < ld; ++i) {
      w[i] = from_bf16(hw_[j * ld + i]);
      m[i] = from_bf16(hm_[j * ld + i]);
      v[i] = from_bf16(hv_[j * ld + i]);
    }
    k.adam(w, g, m, v, ld, st);
    for (size_t i = 0; i < ld; ++i) {
      hw_[j * ld + i] = to_bf16(w[i]);
      hm_[j * ld + i] = to_bf16(m[i]);
      hv_[j * ld + i] = to_bf16(v[i]);
    }
  }
  // Row j's first n floats += delta.
  void add(const Kernels& k, size_t j, const float* delta, size_t n) {
    if (!bf16_) {
      k.add(delta, &w_[j * ld], n);
      return;
    }
    for (size_t i = 0; i < n; ++i) hw_[j * ld + i] = to_bf16(from_bf16(hw_[j * ld + i]) + delta[i]);
  }
  // out (n x count) = Q R^T for n queries (rows of ld floats), in parallel over blocks of rows.
  void score_all(const Exec& x, const float* Q, size_t n, float* out) const {
    if (!bf16_) return score_all_rows(x, Q, n, w_.data(), count, ld, out);
    x.pool->run((count + 127) / 128, [&](size_t b, uint32_t) {
      const size_t j0 = b * 128, j1 = std::min(count, j0 + 128);
      std::vector<float> rows;
      x.k->gemm_nt(n, j1 - j0, ld, Q, ld, block(j0, j1 - j0, rows), ld, out + j0, count);
    });
  }
  // The same on the caller's thread: out (n x count), one GEMM per block of rows.
  void score_all_serial(const float* Q, size_t n, float* out, std::vector<float>& scratch, const Kernels& k) const {
    if (!bf16_) return k.gemm_nt(n, count, ld, Q, ld, w_.data(), ld, out, count);
    for (size_t j0 = 0; j0 < count; j0 += 128) {
      const size_t m = std::min<size_t>(128, count - j0);
      k.gemm_nt(n, m, ld, Q, ld, block(j0, m, scratch), ld, out + j0, count);
    }
  }

  std::vector<StateArray> state() {
    if (bf16_)
      return {{"W2", nullptr, false, &hw_}, {"W2 Adam m", nullptr, true, &hm_}, {"W2 Adam v", nullptr, true, &hv_}};
    return {{"W2", &w_, false}, {"W2 Adam m", &m_, true}, {"W2 Adam v", &v_, true}};
  }
  uint64_t bytes() const { return bf16_ ? 3 * uint64_t(hw_.size()) * 2 : 3 * uint64_t(w_.size()) * 4; }

 private:
  bool bf16_ = false;
  std::vector<float> w_, m_, v_;
  std::vector<uint16_t> hw_, hm_, hv_;
};

// The MIPS items of neurons ids[0..n) (or i0..i0+n when ids is null) into out (n x (H+2)):
// [w_j, b_j, sqrt(M^2 - |[w_j, b_j]|^2)] with max_norm2 = M^2, so every item has norm M and the
// angle to a query [h, 1, 0] orders items by inner product (Neyshabur & Srebro's reduction).
// max_norm2 = 0 gives [w_j, b_j, 0]: the angle alone (Config::mips = false).
void mips_items(const NeuronRows& rows, const uint32_t* ids, size_t i0, size_t n, float max_norm2, const Kernels& k,
                std::vector<float>& out) {
  const size_t dim = rows.H + 2;
  out.resize(n * dim);
  for (size_t i = 0; i < n; ++i) {
    float* o = &out[i * dim];
    rows.copy_row(ids ? ids[i] : i0 + i, o, rows.H + 1);
    float n2 = k.dot(o, o, rows.H + 1);
    o[rows.H + 1] = std::sqrt(std::max(0.0f, max_norm2 - n2));
  }
}

// tanh through one expf: 1 - 2 / (e^{2x} + 1), absolute error ~1e-7, saturating cleanly.
float tanh_fast(float x) {
  float a = std::fabs(x);
  float t = a > 9.0f ? 1.0f : 1.0f - 2.0f / (std::exp(2.0f * a) + 1.0f);
  return std::copysign(t, x);
}

// Triplet loss of one table for u = tanh(P_t^T q) and v+, v- (K values each): the hinge
// max(0, margin - cos(u, v+) + cos(u, v-)). With `scale` != 0 it also writes scale times the
// gradient with respect to the pre-tanh values into du, dvp, dvn.
float triplet_hinge(const float* u, const float* vp, const float* vn, size_t K, float margin, float scale,
                    float* du, float* dvp, float* dvn) {
  float uu = 0, pp = 0, nn = 0, up = 0, un = 0;
  for (size_t b = 0; b < K; ++b) {
    uu += u[b] * u[b]; pp += vp[b] * vp[b]; nn += vn[b] * vn[b];
    up += u[b] * vp[b]; un += u[b] * vn[b];
  }
  // A zero vector has no direction: its norm is floored so the cosine is 0, not NaN.
  const float nu = std::sqrt(std::max(uu, 1e-12f)), np = std::sqrt(std::max(pp, 1e-12f)), nv = std::sqrt(std::max(nn, 1e-12f));
  const float cp = up / (nu * np), cn = un / (nu * nv);
  const float hinge = margin - cp + cn;
  if (scale == 0.0f) return std::max(hinge, 0.0f);
  for (size_t b = 0; b < K; ++b) {
    float gu = 0, gp = 0, gn = 0;
    if (hinge > 0) {
      // d cos(a, c) / da = c / (|a||c|) - cos(a, c) a / |a|^2
      gu = -(vp[b] / (nu * np) - cp * u[b] / (nu * nu)) + (vn[b] / (nu * nv) - cn * u[b] / (nu * nu));
      gp = -(u[b] / (nu * np) - cp * vp[b] / (np * np));
      gn = u[b] / (nu * nv) - cn * vn[b] / (nv * nv);
    }
    du[b] = scale * gu * (1.0f - u[b] * u[b]);
    dvp[b] = scale * gp * (1.0f - vp[b] * vp[b]);
    dvn[b] = scale * gn * (1.0f - vn[b] * vn[b]);
  }
  return std::max(hinge, 0.0f);
}

// Mines a round's pairs and trains a copy of the projection on them. Holds no state between
// rounds but its settings and scratch.
class HashLearner {
 public:
  void init(const Config& cfg, size_t H, size_t ld, uint32_t threads) {
    cfg_ = cfg;
    cfg_.on_progress = nullptr;
    H_ = H;
    ld_ = ld;
    qr_.assign(threads, QueryResult());
    hash_scratch_.assign(threads, {});
  }

  // For the nq queries qs (rows of ld floats) with their exact scores (nq x N): positives are the
  // top-0.1% (and > 0) neurons the tables missed, negatives the below-median ones they returned;
  // at most 256 of each (or 256 triplets), seeded by `round`. Trains hasher's projection on them
  // into *projection. False when nothing was mined or the result is not finite (then the caller
  // keeps the old projection).
  bool learn(const float* qs, size_t nq, const float* scores, const NeuronRows& rows, float mips_norm2,
             const Hasher& hasher, const HashTables& tables, uint64_t round, const Exec& x, TrainStats* stats,
             std::vector<float>* projection) {
    const size_t N = rows.count;
    std::vector<std::vector<Pair>> pos_of(nq), neg_of(nq);  // per query, joined in query order
    x.chunks(nq, 1, [&](size_t i, size_t, uint32_t wi) {
      QueryResult& qr = qr_[wi];
      const float* s = &scores[i * N];
      std::vector<float> sorted(s, s + N);
      size_t top_n = std::max<size_t>(1, N / 1000);
      std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(top_n - 1), sorted.end(), std::greater<float>());
      float top_threshold = sorted[top_n - 1];
      std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(N / 2), sorted.end());
      float median = sorted[N / 2];
      std::vector<uint32_t> c(cfg_.L);
      must(hasher.hash_batch(&qs[i * ld_], 1, ld_, c.data(), &hash_scratch_[wi]));
      must(tables.query(c.data(), &qr));
      for (size_t j = 0; j < N; ++j) {
        bool retrieved = j < qr.slot.size() && qr.slot[j];
        if (!retrieved && s[j] >= top_threshold && s[j] > 0) pos_of[i].push_back({uint32_t(i), uint32_t(j), 1.0f});
        if (retrieved && s[j] < median) neg_of[i].push_back({uint32_t(i), uint32_t(j), 0.0f});
      }
      qr.clear();
    });
    Rng rng(mix_seed(cfg_.seed, 0x1EA7u, round));
    // Keeps n random groups of `group` consecutive pairs (a seeded partial shuffle), all if fewer.
    auto downsample = [&](std::vector<Pair>& v, size_t n, size_t group) {
      const size_t groups = v.size() / group;
      for (size_t i = 0; i < n && i < groups; ++i) {
        size_t j = i + rng.below(uint32_t(groups - i));
        for (size_t g = 0; g < group; ++g) std::swap(v[i * group + g], v[j * group + g]);
      }
      if (groups > n) v.resize(n * group);
    };
    // At most 256 positives and 256 negatives (or 256 triplets) keep a round cheap: the loss is a
    // mean over them.
    std::vector<Pair> pos, neg;
    if (cfg_.hash_loss == HashLoss::triplet) {
      // Each positive meets a random negative of its own query: pairs 2t and 2t+1 form triplet t.
      for (size_t i = 0; i < nq; ++i)
        for (const Pair& p : pos_of[i])
          if (!neg_of[i].empty()) {
            pos.push_back(p);
            pos.push_back(neg_of[i][rng.below(uint32_t(neg_of[i].size()))]);
          }
      downsample(pos, 256, 2);
    } else {
      for (size_t i = 0; i < nq; ++i) {
        pos.insert(pos.end(), pos_of[i].begin(), pos_of[i].end());
        neg.insert(neg.end(), neg_of[i].begin(), neg_of[i].end());
      }
      // Balance by down-sampling the larger set (seeded).
      size_t n = std::min<size_t>(256, std::min(pos.size(), neg.size()));
      downsample(pos, n, 1);
      downsample(neg, n, 1);
      pos.insert(pos.end(), neg.begin(), neg.end());
    }
    if (pos.empty()) return false;
    stats->pairs_mined += pos.size();
    return train_projection(pos.data(), pos.size(), qs, nq, rows, mips_norm2, hasher, x, stats, projection);
  }

 private:
  struct Pair {
    uint32_t query, item;
    float label;
  };

  // A few Adam steps on the projection P (dim x K*L) for the per-table hash_loss, summed over
  // tables: BCE(sigmoid(tanh(P_t^T q) . tanh(P_t^T w)), label), mean over pairs; or the triplet
  // hinge (pairs 2t and 2t+1 are triplet t's positive and negative), mean over triplets.
  bool train_projection(const Pair* pairs, size_t n, const float* qs, size_t nq, const NeuronRows& rows, float mips_norm2,
                        const Hasher& hasher, const Exec& x, TrainStats* stats, std::vector<float>* out) {
    const Kernels& k = *x.k;
    const size_t dim = H_ + 2, bits = size_t(cfg_.K) * cfg_.L;
    const size_t np = size_t(dim) * bits;
    std::vector<float> P(hasher.projection().begin(), hasher.projection().end());
    std::vector<float> M(np, 0.0f), V(np, 0.0f), G(np, 0.0f);
    // The pairs share a few queries: Xq (nq x dim) holds them once, [h, 1, 0]; Xw (n x dim) the
    // pairs' MIPS items. The query side is computed, and its gradient summed, per query.
    std::vector<float> Xq(nq * dim), Xw;
    for (size_t i = 0; i < nq; ++i) std::memcpy(&Xq[i * dim], &qs[i * ld_], dim * sizeof(float));
    std::vector<uint32_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = pairs[i].item;
    mips_items(rows, ids.data(), 0, n, mips_norm2, k, Xw);
    std::vector<float> U(nq * bits), Wv(n * bits), DU(n * bits), DUq(nq * bits), DV(n * bits);
    // Pairs are split over the workers for the forward pass, input dimensions for the gradient.
    const size_t chunk = 64;
    std::vector<double> chunk_loss((n + chunk - 1) / chunk);
    const bool triplet = cfg_.hash_loss == HashLoss::triplet;
    const size_t K = cfg_.K, L = cfg_.L;
    // backward: fill DUq, DV. Returns the mean loss; BCE computes it only when want_loss (else 0).
    auto forward = [&](bool backward, bool want_loss) {
      std::fill(U.begin(), U.end(), 0.0f);
      k.gemm_nn_acc(nq, bits, dim, Xq.data(), dim, P.data(), bits, U.data(), bits);
      for (float& u : U) u = tanh_fast(u);
      x.chunks(n, chunk, [&](size_t i0, size_t i1, uint32_t) {
        float* v0 = &Wv[i0 * bits];
        std::fill(v0, v0 + (i1 - i0) * bits, 0.0f);
        k.gemm_nn_acc(i1 - i0, bits, dim, &Xw[i0 * dim], dim, P.data(), bits, v0, bits);
        double loss = 0;
        for (size_t i = i0; i < i1; ++i) {
          float y = pairs[i].label;
          for (size_t t = 0; t < L; ++t) {
            const float* u = &U[size_t(pairs[i].query) * bits + t * K];
            float* v = &Wv[i * bits + t * K];
            for (size_t b = 0; b < K; ++b) v[b] = tanh_fast(v[b]);
            if (triplet) continue;  // the triplet loss needs both items' codes: below
            float st = 0;
            for (size_t b = 0; b < K; ++b) st += u[b] * v[b];
            // BCE with logits, stable: log(1 + e^s) - y s.
            if (want_loss) loss += double(std::max(st, 0.0f) + std::log1p(std::exp(-std::fabs(st))) - y * st);
            if (!backward) continue;
            float g = (1.0f / (1.0f + std::exp(-st)) - y) / float(n);
            for (size_t b = 0; b < K; ++b) {
              DU[i * bits + t * K + b] = g * v[b] * (1.0f - u[b] * u[b]);
              DV[i * bits + t * K + b] = g * u[b] * (1.0f - v[b] * v[b]);
            }
          }
        }
        chunk_loss[i0 / chunk] = loss;
      });
      double mean_loss = 0;
      if (triplet) {  // a few hundred triplets of L x K values: serial is cheap and deterministic
        const size_t nt = n / 2;
        double loss = 0;
        for (size_t t = 0; t < nt; ++t) {
          const size_t ip = 2 * t, in = 2 * t + 1;
          for (size_t tb = 0; tb < L; ++tb) {
            const size_t o = tb * K;
            loss += double(triplet_hinge(&U[size_t(pairs[ip].query) * bits + o], &Wv[ip * bits + o], &Wv[in * bits + o], K,
                                         cfg_.triplet_margin, backward ? 1.0f / float(nt) : 0.0f,
                                         &DU[ip * bits + o], &DV[ip * bits + o], &DV[in * bits + o]));
            if (backward) std::fill(&DU[in * bits + o], &DU[in * bits + o] + K, 0.0f);
          }
        }
        mean_loss = loss / double(nt);
      } else {
        for (double l : chunk_loss) mean_loss += l;  // in chunk order: deterministic
        mean_loss /= double(n);
      }
      if (backward) {  // per-query sums, in pair order (deterministic)
        std::fill(DUq.begin(), DUq.end(), 0.0f);
        for (size_t i = 0; i < n; ++i) k.add(&DU[i * bits], &DUq[size_t(pairs[i].query) * bits], bits);
      }
      return mean_loss;
    };
    for (uint32_t step = 1; step <= cfg_.hash_steps; ++step) {
      double loss = forward(true, step == 1);
      if (step == 1) stats->learn_loss_before = loss;
      AdamStep st = AdamStep::at(cfg_.hash_lr, 0.9f, 0.999f, 1e-8f, step);
      x.chunks(dim, 16, [&](size_t d0, size_t d1, uint32_t) {
        float* g = &G[d0 * bits];
        std::fill(g, g + (d1 - d0) * bits, 0.0f);
        k.gemm_tn_acc(d1 - d0, bits, nq, &Xq[d0], dim, DUq.data(), bits, g, bits);
        k.gemm_tn_acc(d1 - d0, bits, n, &Xw[d0], dim, DV.data(), bits, g, bits);
        for (size_t d = d0; d < d1; ++d) k.adam(&P[d * bits], &G[d * bits], &M[d * bits], &V[d * bits], bits, st);
      });
    }
    stats->learn_loss_after = forward(false, true);
    if (cfg_.hash_binarize)
      for (float& p : P) p = p >= 0.0f ? 1.0f : -1.0f;
    for (float p : P)
      if (!is_finite(p)) return false;  // a non-finite projection is dropped, never swapped in
    out->swap(P);
    return true;
  }

  Config cfg_;
  size_t H_ = 0, ld_ = 0;
  std::vector<QueryResult> qr_;                   // per worker
  std::vector<std::vector<float>> hash_scratch_;  // per worker
};

}  // namespace

float triplet_hinge_loss(const float* a, const float* bp, const float* bn, size_t K, float margin, float* da,
                         float* dbp, float* dbn) {
  if (!a || !bp || !bn || K < 1 || K > 24) return std::numeric_limits<float>::quiet_NaN();
  float t[3 * 24], g[3 * 24];
  for (size_t b = 0; b < K; ++b) {
    t[b] = std::tanh(a[b]);
    t[K + b] = std::tanh(bp[b]);
    t[2 * K + b] = std::tanh(bn[b]);
  }
  const bool grad = da && dbp && dbn;
  float loss = triplet_hinge(t, t + K, t + 2 * K, K, margin, grad ? 1.0f : 0.0f, g, g + K, g + 2 * K);
  if (grad) {
    std::copy(g, g + K, da);
    std::copy(g + K, g + 2 * K, dbp);
    std::copy(g + 2 * K, g + 3 * K, dbn);
  }
  return loss;
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Table upkeep and scheduler
//-----------------------------------------------------------------------------------------------

namespace {

int popcount32(uint32_t x) {
  int c = 0;
  for (; x; x &= x - 1) ++c;
  return c;
}

// The neurons training updated since the upkeep last looked, in the order first updated.
struct MovedNeurons {
  std::vector<uint8_t> flag;  // per neuron
  std::vector<uint32_t> list;
  void reset(size_t N) {
    flag.assign(N, 0);
    list.clear();
  }
  void mark(uint32_t j) {
    if (flag[j]) return;
    flag[j] = 1;
    list.push_back(j);
  }
  void clear() {
    for (uint32_t j : list) flag[j] = 0;
    list.clear();
  }
};

// The LSH index of an output layer's neurons and its upkeep: hash functions (drawn or learned),
// tables, each neuron's codes, the change detector and the schedule that decides when the tables
// are brought up to date. Counts what it does into the owner's TrainStats.
class TableUpkeep {
 public:
  // The hash functions of generation 0, empty tables, and the schedule's first deadlines.
  Status init(const Config& cfg, size_t H, size_t ld, size_t N, uint32_t threads) {
    cfg_ = cfg;
    cfg_.on_progress = nullptr;
    H_ = H;
    ld_ = ld;
    N_ = N;
    threads_ = threads;
    hash_scratch_.assign(threads, {});
    items_.assign(threads, {});
    learner_.init(cfg, H, ld, threads);
    next_new_hash_ = cfg.new_hash_every;
    next_check_ = cfg.check_every;
    next_learn_ = cfg.learn_every;
    return init_hashing(0);
  }

  // The first build, from the initial weights: not counted as a rehash.
  void first_build(const NeuronRows& rows, const Exec& x, TrainStats* stats) {
    rebuild(rows, x, stats);
    stats->rehashes = 0;
    stats->rehash_seconds = 0;
    schedule_next_rehash(*stats);
  }

  // Re-hashes every neuron from its current weights and rebuilds the tables.
  void rebuild(const NeuronRows& rows, const Exec& x, TrainStats* stats) {
    double t0 = now_seconds();
    codes_.resize(N_ * cfg_.L);
    mips_norm2_ = cfg_.mips ? max_row_norm2(rows, x) : 0.0f;
    x.chunks(N_, 1024, [&](size_t i0, size_t i1, uint32_t w) { item_codes(rows, nullptr, i0, i1 - i0, codes_.data() + i0 * cfg_.L, w, *x.k); });
    must(tables_.build(codes_.data(), N_, threads_));
    if (cfg_.scheduler != Scheduler::fixed) remember_detector_state(rows, x);
    stats->rehash_seconds += now_seconds() - t0;
    ++stats->rehashes;
  }

  // After training batch number `batches`: whatever the schedule asks for (new hash functions, a
  // learning round on the last batch's queries, a rebuild, a check of the detector).
  // `moved`: the neurons updated since the last build (the last check, for incremental); the
  // upkeep clears what it has brought up to date.
  void after_batch(uint64_t batches, const NeuronRows& rows, const float* last_queries, size_t last_batch,
                   MovedNeurons& moved, const Exec& x, TrainStats* stats) {
    if (cfg_.new_hash_every && batches >= next_new_hash_) {
      init_hashing(generation_ + 1);  // cannot fail: the config was validated at init
      ++stats->new_hash_functions;
      next_new_hash_ = batches + cfg_.new_hash_every;
      rebuild(rows, x, stats);
      moved.clear();
      schedule_next_rehash(*stats);
      return;
    }
    if (cfg_.learn_hash && cfg_.learn_every && batches >= next_learn_) {
      learn_round(rows, last_queries, last_batch, x, stats);
      moved.clear();
      next_learn_ = batches + cfg_.learn_every;
      schedule_next_rehash(*stats);
      return;
    }
    if (cfg_.scheduler == Scheduler::fixed) {
      if (cfg_.rehash_every && batches >= next_rehash_) {
        full_rebuild(rows, last_queries, last_batch, x, stats);
        moved.clear();
        schedule_next_rehash(*stats);
      }
      return;
    }
    if (batches >= next_check_) {
      check(rows, last_queries, last_batch, moved, x, stats);
      next_check_ = batches + cfg_.check_every;
    }
  }

  // Codes of n queries (rows of ld floats) into codes: n x L, or with probes > 0 (multi-probe)
  // n x L x (1 + probes): per table the query's own code, then its code with each of its
  // `probes` least certain bits (smallest |projection|) flipped in turn.
  void hash_queries(const float* qs, size_t n, uint32_t* codes, std::vector<float>* scratch, uint32_t probes = 0) const {
    if (probes == 0) {
      must(hasher_.hash_batch(qs, n, ld_, codes, scratch));
      return;
    }
    const size_t K = cfg_.K, L = cfg_.L, per = 1 + probes;
    scratch->resize(n * K * L);
    must(hasher_.project(qs, n, ld_, scratch->data()));
    uint32_t order[32];
    for (size_t i = 0; i < n; ++i)
      for (size_t t = 0; t < L; ++t) {
        const float* s = scratch->data() + i * K * L + t * K;
        uint32_t code = 0;
        for (uint32_t b = 0; b < K; ++b) {
          code |= uint32_t(s[b] > 0.0f) << b;
          order[b] = b;
        }
        std::partial_sort(order, order + probes, order + K, [&](uint32_t a, uint32_t b) {
          return std::fabs(s[a]) != std::fabs(s[b]) ? std::fabs(s[a]) < std::fabs(s[b]) : a < b;
        });
        uint32_t* out = codes + (i * L + t) * per;
        out[0] = code;
        for (uint32_t p = 0; p < probes; ++p) out[1 + p] = code ^ (1u << order[p]);
      }
  }
  // The neurons in the query's buckets (codes from hash_queries with the same probes), with hit
  // counts; with `cap`, only the max_active most hit.
  void query(const uint32_t* codes, bool cap, QueryResult* out, uint32_t probes = 0) const {
    must(tables_.query(codes, out, 1 + probes));
    if (cap && cfg_.max_active && out->ids.size() > cfg_.max_active) must(HashTables::keep_top_hits(out, cfg_.max_active));
  }

  // How many of the topk best neurons by `scores` (all N) the tables retrieve for query q, after
  // the max_active cap as in training; *kept gets the number of neurons retrieved.
  size_t top_k_retrieved(const float* q, const float* scores, size_t topk, QueryResult& qr, std::vector<float>& scratch,
                         size_t* kept) const;

  // What model files keep, and its restoration: hash functions of `generation` with the saved
  // projection, each neuron's codes, the tables rebuilt from them (and the detector's baseline
  // from the current weights).
  uint64_t generation() const { return generation_; }
  float mips_norm2() const { return mips_norm2_; }
  const std::vector<float>& projection() const { return hasher_.projection(); }
  const std::vector<uint32_t>& codes() const { return codes_; }
  Status restore(uint64_t generation, float mips_norm2, const std::vector<float>& projection, std::vector<uint32_t> codes,
                 const NeuronRows& rows, const Exec& x, TrainStats* stats);

  uint64_t bytes() const { return tables_.bytes_used() + codes_.size() * sizeof(uint32_t); }

 private:
  Status init_hashing(uint64_t generation) {
    generation_ = generation;
    HashConfig hc;
    hc.family = cfg_.hash;
    hc.dim = uint32_t(H_ + 2);
    hc.K = cfg_.K;
    hc.L = cfg_.L;
    hc.density = cfg_.hash_density;
    hc.seed = mix_seed(cfg_.seed, 0x4A54u, generation);
    Status st = hasher_.init(hc, cfg_.simd);
    if (!st.ok()) return st;
    TableConfig tc;
    tc.K = cfg_.K;
    tc.L = cfg_.L;
    tc.bucket_capacity = cfg_.bucket_capacity;
    tc.policy = cfg_.bucket_policy;
    tc.seed = mix_seed(cfg_.seed, 0x7AB7u, generation);
    st = tables_.init(tc);
    if (!st.ok() || cfg_.scheduler == Scheduler::fixed) return st;
    HashConfig dc;
    dc.dim = uint32_t(H_ + 1);
    dc.K = cfg_.detector_bits;
    dc.L = 1;
    dc.seed = mix_seed(cfg_.seed, 0xDE7Eu);
    return detector_.init(dc, cfg_.simd);
  }

  float max_row_norm2(const NeuronRows& rows, const Exec& x) {
    std::vector<float> per_task((N_ + 4095) / 4096, 0.0f);
    x.chunks(N_, 4096, [&](size_t i0, size_t i1, uint32_t w) {
      const float* b = rows.block(i0, i1 - i0, items_[w]);
      float m = 0;
      for (size_t i = i0; i < i1; ++i) m = std::max(m, x.k->dot(b + (i - i0) * ld_, b + (i - i0) * ld_, H_ + 1));
      per_task[i0 / 4096] = m;
    });
    return *std::max_element(per_task.begin(), per_task.end());
  }

  // Table codes of items ids[0..n) (or the range i0..i0+n) into out (n x L), on worker w's scratch.
  void item_codes(const NeuronRows& rows, const uint32_t* ids, size_t i0, size_t n, uint32_t* out, uint32_t w,
                  const Kernels& k) {
    mips_items(rows, ids, i0, n, mips_norm2_, k, items_[w]);
    must(hasher_.hash_batch(items_[w].data(), n, H_ + 2, out, &hash_scratch_[w]));
  }

  // The detector's codes of every neuron (and a copy of the weights for the drift test) as they
  // are when the tables are built: the baseline later checks compare against.
  void remember_detector_state(const NeuronRows& rows, const Exec& x) {
    detector_codes_of_all(rows, x, detector_codes_);
    if (keeps_inserted_rows()) {
      inserted_rows_.resize(N_ * (H_ + 1));
      for (size_t j = 0; j < N_; ++j) rows.copy_row(j, &inserted_rows_[j * (H_ + 1)], H_ + 1);
    }
  }
  void detector_codes_of_all(const NeuronRows& rows, const Exec& x, std::vector<uint32_t>& out) {
    out.resize(N_);
    x.chunks(N_, 2048, [&](size_t i0, size_t i1, uint32_t w) {
      must(detector_.hash_batch(rows.block(i0, i1 - i0, items_[w]), i1 - i0, ld_, &out[i0], &hash_scratch_[w]));
    });
  }
  // Only the incremental scheduler's drift test needs a copy of the weights as inserted.
  bool keeps_inserted_rows() const { return cfg_.scheduler == Scheduler::incremental && cfg_.drift_epsilon > 0; }

  void full_rebuild(const NeuronRows& rows, const float* last_queries, size_t last_batch, const Exec& x, TrainStats* stats) {
    if (cfg_.learn_hash && cfg_.learn_every == 0) {
      learn_round(rows, last_queries, last_batch, x, stats);  // ends with a rebuild under the learned projection
      return;
    }
    rebuild(rows, x, stats);
  }

  void schedule_next_rehash(const TrainStats& stats) {
    if (!cfg_.rehash_every) return;
    double period = double(cfg_.rehash_every) * std::exp(double(cfg_.rehash_decay) * double(stats.rehashes));
    if (!(period < 1e15)) period = 1e15;  // also catches NaN
    next_rehash_ = stats.batches + uint64_t(period);
  }

  void check(const NeuronRows& rows, const float* last_queries, size_t last_batch, MovedNeurons& moved, const Exec& x,
             TrainStats* stats);
  void learn_round(const NeuronRows& rows, const float* last_queries, size_t last_batch, const Exec& x, TrainStats* stats);
  double top_recall(const float* qs, size_t nq, size_t topk, const std::vector<float>& scores) const;

  Config cfg_;
  size_t H_ = 0, ld_ = 0, N_ = 0;
  uint32_t threads_ = 1;
  Hasher hasher_;
  HashTables tables_;
  std::vector<uint32_t> codes_;            // N x L: codes under which each neuron was inserted
  float mips_norm2_ = 0;                   // M^2 of the MIPS reduction at the last full build
  Hasher detector_;                        // small SimHash over [w_j, b_j]
  std::vector<uint32_t> detector_codes_;   // N: detector code at each neuron's last insertion
  std::vector<uint32_t> detector_new_;     // N: scratch for a check
  std::vector<float> inserted_rows_;       // N x (H+1): weights at insertion (keeps_inserted_rows())
  uint64_t generation_ = 0;                // hash functions drawn so far (seeds the next ones)
  uint64_t next_check_ = 0, next_learn_ = 0, next_rehash_ = 0, next_new_hash_ = 0;
  HashLearner learner_;
  std::vector<std::vector<float>> hash_scratch_, items_;  // per worker
  mutable QueryResult recall_qr_;                          // top_recall (training thread only)
  mutable std::vector<float> recall_scratch_;
};

size_t TableUpkeep::top_k_retrieved(const float* q, const float* scores, size_t topk, QueryResult& qr,
                                    std::vector<float>& scratch, size_t* kept) const {
  TopK top(topk);
  for (size_t j = 0; j < N_; ++j) top.offer(uint32_t(j), scores[j]);
  std::vector<uint32_t> c(size_t(cfg_.L) * (1 + cfg_.probes));
  hash_queries(q, 1, c.data(), &scratch, cfg_.probes);
  query(c.data(), true, &qr, cfg_.probes);
  size_t found = 0;
  for (const Scored& t : top.items) found += (t.label < qr.slot.size() && qr.slot[t.label]) ? 1 : 0;
  *kept = qr.ids.size();
  qr.clear();
  return found;
}

// Fraction of the k best neurons (exact scores) of each query retrieved by the tables.
double TableUpkeep::top_recall(const float* qs, size_t nq, size_t topk, const std::vector<float>& scores) const {
  double found = 0;
  size_t kept;
  for (size_t i = 0; i < nq; ++i)
    found += double(top_k_retrieved(qs + i * ld_, &scores[i * N_], topk, recall_qr_, recall_scratch_, &kept));
  return nq ? found / double(nq * topk) : 0.0;
}

// Every check_every batches: how far have the weights moved since the tables were built? Only
// the neurons training updated can have: detect samples them, incremental checks them all.
void TableUpkeep::check(const NeuronRows& rows, const float* last_queries, size_t last_batch, MovedNeurons& moved,
                        const Exec& x, TrainStats* stats) {
  double t0 = now_seconds();
  ++stats->checks;
  // The neurons to look at: for detect a seeded sample of the updated ones (or all of them).
  std::vector<uint32_t> look = moved.list;
  if (cfg_.scheduler == Scheduler::detect && cfg_.detector_sample && cfg_.detector_sample < look.size()) {
    Rng rng(mix_seed(cfg_.seed, 0xC4EC4u, stats->checks));
    std::vector<uint32_t> sample(cfg_.detector_sample);
    for (uint32_t& j : sample) j = look[rng.below(uint32_t(look.size()))];
    look.swap(sample);
  }
  // Their detector codes now, from a gathered copy of their rows.
  std::vector<float> rows_buf(look.size() * (H_ + 1));
  for (size_t i = 0; i < look.size(); ++i) rows.copy_row(look[i], &rows_buf[i * (H_ + 1)], H_ + 1);
  detector_new_.resize(look.size());
  x.chunks(look.size(), 2048, [&](size_t i0, size_t i1, uint32_t w) {
    must(detector_.hash_batch(&rows_buf[i0 * (H_ + 1)], i1 - i0, H_ + 1, &detector_new_[i0], &hash_scratch_[w]));
  });
  uint64_t flipped = 0;
  std::vector<uint32_t> changed;
  for (size_t i = 0; i < look.size(); ++i) {
    const uint32_t j = look[i];
    uint32_t diff = detector_codes_[j] ^ detector_new_[i];
    flipped += uint64_t(popcount32(diff));
    bool drifted = diff != 0;
    if (!drifted && keeps_inserted_rows()) {
      const float* now = &rows_buf[i * (H_ + 1)];
      const float* then = &inserted_rows_[size_t(j) * (H_ + 1)];
      float d2 = 0, n2 = 0;
      for (size_t k = 0; k <= H_; ++k) {
        d2 += (now[k] - then[k]) * (now[k] - then[k]);
        n2 += then[k] * then[k];
      }
      drifted = d2 > cfg_.drift_epsilon * cfg_.drift_epsilon * n2;
    }
    if (drifted) changed.push_back(uint32_t(i));
  }
  stats->last_flip_fraction = look.empty() ? 0.0 : double(flipped) / (double(look.size()) * cfg_.detector_bits);
  stats->detect_seconds += now_seconds() - t0;
  if (cfg_.scheduler == Scheduler::detect) {
    if (stats->last_flip_fraction > cfg_.tau) {
      full_rebuild(rows, last_queries, last_batch, x, stats);
      moved.clear();
    }
    return;
  }
  if (double(changed.size()) > cfg_.full_rebuild_fraction * double(N_)) {
    full_rebuild(rows, last_queries, last_batch, x, stats);
    moved.clear();
    return;
  }
  // Incremental: re-insert only the neurons that moved, under codes from their new weights.
  t0 = now_seconds();
  std::vector<uint32_t> ids(changed.size());
  for (size_t i = 0; i < changed.size(); ++i) ids[i] = look[changed[i]];
  std::vector<uint32_t> fresh(ids.size() * cfg_.L);
  x.chunks(ids.size(), 256, [&](size_t i0, size_t i1, uint32_t w) {
    item_codes(rows, ids.data() + i0, 0, i1 - i0, fresh.data() + i0 * cfg_.L, w, *x.k);
  });
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t j = ids[i];
    uint32_t* old_codes = &codes_[size_t(j) * cfg_.L];
    must(tables_.update(j, old_codes, &fresh[i * cfg_.L]));
    std::memcpy(old_codes, &fresh[i * cfg_.L], cfg_.L * sizeof(uint32_t));
    detector_codes_[j] = detector_new_[changed[i]];
    if (keeps_inserted_rows()) rows.copy_row(j, &inserted_rows_[size_t(j) * (H_ + 1)], H_ + 1);
  }
  moved.clear();  // every updated neuron was looked at: the next check starts afresh
  stats->reinserted += ids.size();
  stats->reinsert_seconds += now_seconds() - t0;
}

// One round: mine pairs from the last batch's queries, train the projection, swap it in, rebuild.
void TableUpkeep::learn_round(const NeuronRows& rows, const float* last_queries, size_t last_batch, const Exec& x,
                              TrainStats* stats) {
  double t0 = now_seconds();
  // Sample queries spread over the batch.
  const size_t B = last_batch;
  const size_t nq = std::min<size_t>(cfg_.learn_queries, B);
  std::vector<float> qs(nq * ld_);
  for (size_t i = 0; i < nq; ++i) std::memcpy(&qs[i * ld_], &last_queries[(i * B / nq) * ld_], ld_ * sizeof(float));
  std::vector<float> scores(nq * N_);
  rows.score_all(x, qs.data(), nq, scores.data());
  stats->recall_before_sum += top_recall(qs.data(), nq, 5, scores);
  std::vector<float> learned;
  const bool trained = learner_.learn(qs.data(), nq, scores.data(), rows, mips_norm2_, hasher_, tables_, stats->learn_rounds, x,
                                      stats, &learned);
  ++stats->learn_rounds;
  if (trained) must(hasher_.set_projection(learned));
  double t_rebuild = now_seconds();
  rebuild(rows, x, stats);  // counted in rehash_seconds, not here
  t0 += now_seconds() - t_rebuild;
  stats->recall_after_sum += top_recall(qs.data(), nq, 5, scores);
  stats->learn_seconds += now_seconds() - t0;
}

Status TableUpkeep::restore(uint64_t generation, float mips_norm2, const std::vector<float>& projection,
                            std::vector<uint32_t> codes, const NeuronRows& rows, const Exec& x, TrainStats* stats) {
  Status st = init_hashing(generation);
  if (!st.ok()) return st;
  if (cfg_.hash == HashFamily::simhash) {
    st = hasher_.set_projection(projection);
    if (!st.ok()) return st;
  }
  codes_ = std::move(codes);
  mips_norm2_ = mips_norm2;
  must(tables_.build(codes_.data(), N_, threads_));
  if (cfg_.scheduler != Scheduler::fixed) remember_detector_state(rows, x);
  next_rehash_ = 0;
  schedule_next_rehash(*stats);
  return Status();
}

}  // namespace

//-----------------------------------------------------------------------------------------------
// [SECTION] Output layer
//-----------------------------------------------------------------------------------------------
// Each example's softmax runs over all N neurons (full) or over its active set (lsh): the batch's
// shared set S (every label of the batch, plus random neurons up to min_active) and its own
// retrieved set R_e (table hits, capped by max_active, outside S). S is scored and updated with
// dense GEMMs on a gathered copy of its rows; R_e by gathered dot products. S and the R_e are
// disjoint, so every row has one update path. Retrieved rows' gradients are grouped by row in
// example order (as the sparse input layer's), so results depend on the seed and threads only.

namespace {

// The labels of one example of a batch.
struct LabelList {
  const uint32_t* ids;
  size_t count;
};

class OutputCore {
 public:
  // Per-caller scratch of inference calls (so several may run at once).
  struct InferScratch {
    QueryResult qr;
    std::vector<float> q, scores, hash_scratch, rows;  // rows: bf16 rows converted
    std::vector<uint32_t> codes;
  };

  // Rows drawn from rng: U(-1/sqrt(d), 1/sqrt(d)) for [w_j, b_j], zero padding.
  Status init(const Config& cfg, size_t d, size_t N, Rng& rng, const Exec& x) {
    cfg_ = cfg;
    cfg_.on_progress = nullptr;
    d_ = d;
    N_ = N;
    ld_ = round_up(d + 2, 8);  // room for the MIPS coordinate (always 0 in queries and rows)
    W_.init(N, ld_, d, cfg.bf16);
    const float bound = 1.0f / std::sqrt(float(d));
    for (size_t j = 0; j < N; ++j)
      for (size_t i = 0; i <= d; ++i) W_.set(j, i, (2.0f * rng.uniform() - 1.0f) * bound);
    workers_.assign(x.threads(), Worker());
    row_grads_.assign(x.threads(), {});
    // Sized once here, so that the first batch allocates nothing proportional to N.
    label_count_.assign(N, 0);
    shared_pos_.assign(N, 0);
    if (lsh()) {
      Status st = index_.init(cfg_, d, ld_, N, x.threads());
      if (!st.ok()) return st;
      index_.first_build(rows(), x, &stats_);
      moved_.reset(N);
    }
    return Status();
  }

  bool lsh() const { return cfg_.output == OutputMode::lsh; }
  size_t input_dim() const { return d_; }
  size_t labels() const { return N_; }
  size_t stride() const { return ld_; }
  const Config& config() const { return cfg_; }
  // `network` with this layer's index fields (after rebuild_index).
  Config config_with_network(Config network) const {
    network.hash = cfg_.hash;
    network.K = cfg_.K;
    network.L = cfg_.L;
    network.hash_density = cfg_.hash_density;
    network.bucket_capacity = cfg_.bucket_capacity;
    network.bucket_policy = cfg_.bucket_policy;
    network.probes = cfg_.probes;
    network.infer_probes = cfg_.infer_probes;
    network.mips = cfg_.mips;
    network.learn_hash = cfg_.learn_hash;
    return network;
  }
  const float* weights() const { return W_.data(); }  // null for bf16 rows
  const TrainStats& stats() const { return stats_; }
  uint64_t step() const { return step_; }
  bool interrupted_update() const { return update_started_; }
  uint64_t bytes() const { return W_.bytes() + (lsh() ? index_.bytes() : 0); }  // rows and moments, index

  // One step on B inputs h (row e at h + e * h_stride) with their labels: loss into *loss,
  // dL/dh into grad (row e at grad + e * grad_stride), then the update and the table upkeep.
  // A non-finite loss is refused before anything changes; so is a failure before the update.
  Status train(const float* h, size_t h_stride, size_t B, const LabelList* labels, float* grad, size_t grad_stride,
               double* loss_out, const Exec& x) {
    update_started_ = labels_counted_ = false;
    const uint64_t step_before = step_, counted_before = examples_counted_;
    try {
      return train_step(h, h_stride, B, labels, grad, grad_stride, loss_out, x);
    } catch (...) {
      if (!update_started_) undo_batch(labels, B, step_before, counted_before);
      throw;
    }
  }

  // The k best labels of n inputs into tops[0..n) (each TopK of capacity k), every label scored
  // (full) or the retrieved ones and the shortlist (lsh). Adds the labels scored to *candidates.
  void infer(const float* h, size_t h_stride, size_t n, InferMode mode, InferScratch& s, TopK* tops, double* candidates,
             const Kernels& k) const {
    s.q.resize(n * ld_);
    for (size_t i = 0; i < n; ++i) make_query(h + i * h_stride, &s.q[i * ld_]);
    if (mode == InferMode::full) {
      // One GEMM streams the rows once for all n inputs.
      if (s.scores.size() < n * N_) s.scores.resize(n * N_);
      W_.score_all_serial(s.q.data(), n, s.scores.data(), s.rows, k);
      for (size_t i = 0; i < n; ++i) {
        tops[i].items.clear();
        const float* sc = s.scores.data() + i * N_;
        for (size_t j = 0; j < N_; ++j) tops[i].offer(uint32_t(j), sc[j]);
      }
      *candidates += double(n * N_);
      return;
    }
    for (size_t i = 0; i < n; ++i) *candidates += double(infer_lsh(&s.q[i * ld_], s, tops[i], k));
  }

  // How many of the topk best neurons of input h the tables retrieve (after the cap); *kept: how
  // many they retrieve.
  size_t recall_one(const float* h, size_t topk, InferScratch& s, size_t* kept, const Kernels& k) const {
    s.q.resize(ld_);
    make_query(h, s.q.data());
    if (s.scores.size() < N_) s.scores.resize(N_);
    W_.score_all_serial(s.q.data(), 1, s.scores.data(), s.rows, k);
    return index_.top_k_retrieved(s.q.data(), s.scores.data(), topk, s.qr, s.hash_scratch, kept);
  }

  // After an epoch: the tables (when every neuron is active, training does not keep them) and the
  // inference shortlist brought up to date.
  void refresh(const Exec& x) {
    if (!lsh()) return;
    if (!tables_in_training()) {
      index_.rebuild(rows(), x, &stats_);
      moved_.clear();
    }
    refresh_shortlist();
  }

  // A new index with the index fields of `index` (validated by the caller), built from the
  // current weights; the schedule restarts.
  Status rebuild_index(const Config& index, const Exec& x) {
    if (!lsh()) return Status::error("rebuild_index: needs an lsh output layer");
    Config c = cfg_;
    c.hash = index.hash;
    c.K = index.K;
    c.L = index.L;
    c.hash_density = index.hash_density;
    c.bucket_capacity = index.bucket_capacity;
    c.bucket_policy = index.bucket_policy;
    c.probes = index.probes;
    c.infer_probes = index.infer_probes;
    c.mips = index.mips;
    if (c.hash != HashFamily::simhash) c.learn_hash = false;
    Status st = validate_output_fields(c, d_);
    if (!st.ok()) return Status::error("rebuild_index: " + st.message());
    TableUpkeep fresh;
    if (!(st = fresh.init(c, d_, ld_, N_, x.threads())).ok()) return st;
    cfg_ = c;
    index_ = std::move(fresh);
    index_.rebuild(rows(), x, &stats_);
    moved_.clear();
    codes_.clear();
    queries_.clear();  // batch buffers are sized for the old L and probes: ensure_batch regrows them
    return Status();
  }

  // ---- What model files hold, and its restoration. ----
  std::vector<StateArray> state() { return W_.state(); }
  struct IndexState {
    uint64_t generation = 0;
    float mips_norm2 = 0;
    std::vector<float> projection;
    std::vector<uint32_t> codes, label_count, shortlist;
    uint64_t examples_counted = 0;
  };
  IndexState index_state() const {
    IndexState s;
    s.generation = index_.generation();
    s.mips_norm2 = index_.mips_norm2();
    s.projection = index_.projection();
    s.codes = index_.codes();
    s.label_count = label_count_;
    s.shortlist = shortlist_;
    s.examples_counted = examples_counted_;
    return s;
  }
  // After the rows were read into state(): checks them, then restores the step counter and (lsh)
  // the index, whose tables are rebuilt from the saved codes. Statistics start afresh.
  Status restore(uint64_t step, IndexState* index, const Exec& x) {
    std::vector<float> row(ld_);
    for (size_t j = 0; j < N_; ++j) {
      W_.copy_row(j, row.data(), ld_);
      for (size_t i = d_ + 1; i < ld_; ++i)
        if (row[i] != 0.0f) return Status::error("padding after a bias is not zero (corrupted file?)");
    }
    step_ = step;
    stats_ = TrainStats();
    if (!lsh()) return Status();
    label_count_ = std::move(index->label_count);
    shortlist_ = std::move(index->shortlist);
    examples_counted_ = index->examples_counted;
    moved_.reset(N_);
    return index_.restore(index->generation, index->mips_norm2, index->projection, std::move(index->codes), rows(), x,
                          &stats_);
  }

 private:
  struct Worker {
    QueryResult qr;
    std::vector<float> hash_scratch, z, dq, block_g, rows, adam;  // rows, adam: bf16 conversions
    std::vector<uint32_t> identity;                              // 0, 1, 2, ...: gathered rows' ids
  };

  const NeuronRows& rows() const { return W_; }
  // min_active >= N: every neuron is in the shared set, the tables are never needed.
  bool all_active() const { return cfg_.min_active >= N_; }
  // Training queries (and keeps up) the tables; otherwise they are rebuilt once per epoch for
  // InferMode::lsh.
  bool tables_in_training() const { return !all_active() && cfg_.retrieval; }
  AdamStep adam_step() const { return AdamStep::at(cfg_.learning_rate, cfg_.beta1, cfg_.beta2, cfg_.adam_eps, step_); }
  // [h, 1, 0...]: the bias takes part in every score (and in retrieval).
  void make_query(const float* h, float* q) const {
    std::memcpy(q, h, d_ * sizeof(float));
    q[d_] = 1.0f;
    for (size_t i = d_ + 1; i < ld_; ++i) q[i] = 0.0f;
  }

  void ensure_batch(size_t B) {
    if (queries_.size() < B * ld_) {
      queries_.resize(B * ld_);
      losses_.resize(B);
      has_labels_.resize(B);
      active_.resize(B);
      dlogits_.resize(B);
      if (lsh()) codes_.resize(B * cfg_.L * (1 + cfg_.probes));
    }
  }

  // A refused or failed batch leaves no trace: the step counter and the label counts as before.
  void undo_batch(const LabelList* labels, size_t B, uint64_t step_before, uint64_t counted_before) {
    step_ = step_before;
    if (!labels_counted_) return;
    for (size_t e = 0; e < B; ++e)
      for (size_t i = 0; i < labels[e].count; ++i) --label_count_[labels[e].ids[i]];
    examples_counted_ = counted_before;
    labels_counted_ = false;
  }

  Status train_step(const float* h, size_t h_stride, size_t B, const LabelList* labels, float* grad, size_t grad_stride,
                    double* loss_out, const Exec& x);

  // Loss and dL/dz for one example from its logits z[0..n); z becomes dL/dz times `scale`.
  // Label l's logit is z[l], or z[position[l] - 1] when a position map is given (the labels are
  // always among the scored neurons). Multi-label target: 1/|y| on each label.
  float softmax_loss(float* z, size_t n, const LabelList& y, float scale, const std::vector<uint32_t>* position,
                     const Kernels& k) const {
    const float t = 1.0f / float(y.count);
    auto at = [&](uint32_t label) -> size_t { return position ? size_t((*position)[label]) - 1 : label; };
    double label_logit_sum = 0;
    for (size_t i = 0; i < y.count; ++i) label_logit_sum += z[at(y.ids[i])];
    float lse = k.softmax(z, n);
    float loss = float(double(lse) - label_logit_sum * t);
    for (size_t i = 0; i < y.count; ++i) z[at(y.ids[i])] -= t;
    k.scale(scale, z, n);
    return loss;
  }

  // ---- Full softmax: blocked GEMMs; each block of output rows is updated while in cache. ----
  void full_forward(const LabelList* labels, size_t B, size_t labelled, const Exec& x);
  void full_backward_update(size_t B, float* grad, size_t grad_stride, const AdamStep& st, const Exec& x);

  // ---- LSH-sampled softmax. ----

  // Builds S: the batch's distinct labels, then random neurons until |S| >= min(min_active, N).
  void build_shared_set(const LabelList* labels, size_t B);

  void lsh_forward_backward(const LabelList* labels, size_t B, size_t labelled, float* grad, size_t grad_stride,
                            const Exec& x);
  void lsh_update(size_t B, const AdamStep& st, const Exec& x);

  // Top-k over the retrieved neurons and the shortlist for query q; returns how many were scored.
  size_t infer_lsh(const float* q, InferScratch& s, TopK& top, const Kernels& k) const;

  void refresh_shortlist();

  Config cfg_;
  size_t d_ = 0, N_ = 0, ld_ = 0;
  NeuronRows W_;                              // N x ld rows [w, b, 0...] and their moments
  uint64_t step_ = 0;                         // batches trained (Adam's bias correction, seeds)
  TrainStats stats_;
  TableUpkeep index_;                         // lsh
  std::vector<uint32_t> label_count_;         // N: training examples seen with each label
  uint64_t examples_counted_ = 0;
  std::vector<uint32_t> shortlist_;           // the infer_shortlist most frequent labels
  bool update_started_ = false, labels_counted_ = false;
  // Per batch.
  std::vector<float> queries_;                // B x ld: [h, 1, 0...]
  std::vector<float> logits_;                 // full: B x N; exact retrieval: every score
  std::vector<uint32_t> codes_;               // lsh: B x L
  std::vector<float> losses_;                 // B
  std::vector<uint8_t> has_labels_;           // B
  std::vector<std::vector<uint32_t>> active_; // lsh: each example's retrieved neurons
  std::vector<std::vector<float>> dlogits_;   // lsh: dL/dz for them
  std::vector<uint32_t> shared_ids_;          // the batch's shared active set S
  std::vector<uint32_t> shared_pos_;          // per neuron: 1 + position in S, or 0
  std::vector<float> drift_step_;             // tail drift: what each shared row gains this batch (ld)
  std::vector<float> shared_rows_;            // S x ld: gathered rows of S
  std::vector<float> shared_logits_;          // B x |S|: logits, then dL/dz
  std::vector<float> shared_logq_;            // |S|: log of each shared neuron's inclusion probability
  GroupedGradient grouped_;
  MovedNeurons moved_;                        // lsh: rows updated since the upkeep last looked
  std::vector<Worker> workers_;
  std::vector<std::vector<float>> row_grads_;  // per worker: apply_grouped's scratch
};

Status OutputCore::train_step(const float* h, size_t h_stride, size_t B, const LabelList* labels, float* grad,
                              size_t grad_stride, double* loss_out, const Exec& x) {
  double start = now_seconds();
  ensure_batch(B);
  size_t labelled = 0;
  for (size_t e = 0; e < B; ++e) {
    has_labels_[e] = labels[e].count > 0;
    labelled += has_labels_[e];
  }
  if (labelled == 0) {  // nothing to learn from; not an error
    *loss_out = 0;
    return Status();
  }
  const uint64_t step_before = step_, counted_before = examples_counted_;
  ++step_;
  const AdamStep st = adam_step();
  for (size_t e = 0; e < B; ++e) make_query(h + e * h_stride, &queries_[e * ld_]);
  double loss = 0;
  if (lsh()) {
    lsh_forward_backward(labels, B, labelled, grad, grad_stride, x);
  } else {
    full_forward(labels, B, labelled, x);
  }
  for (size_t e = 0; e < B; ++e) loss += losses_[e];
  loss /= double(labelled);
  if (!is_finite(loss)) {
    undo_batch(labels, B, step_before, counted_before);
    return Status::error(strf("training diverged at batch %llu: the loss is not finite (weights before this batch are kept%s)",
                              (unsigned long long)(stats_.batches + 1),
                              lsh() ? "" : "; the output layer is kept as it was before the batch"));
  }
  update_started_ = true;
  if (lsh()) {
    lsh_update(B, st, x);
  } else {
    full_backward_update(B, grad, grad_stride, st, x);
  }
  ++stats_.batches;
  stats_.examples += labelled;
  if (lsh() && tables_in_training()) index_.after_batch(stats_.batches, rows(), queries_.data(), B, moved_, x, &stats_);
  stats_.seconds += now_seconds() - start;
  *loss_out = loss;
  return Status();
}

void OutputCore::full_forward(const LabelList* labels, size_t B, size_t labelled, const Exec& x) {
  if (logits_.size() < B * N_) logits_.resize(B * N_);
  double t0 = now_seconds();
  W_.score_all(x, queries_.data(), B, logits_.data());
  const float scale = 1.0f / float(labelled);
  x.chunks(B, 4, [&](size_t e0, size_t e1, uint32_t) {
    for (size_t e = e0; e < e1; ++e) {
      float* z = logits_.data() + e * N_;
      if (!has_labels_[e]) {
        std::fill(z, z + N_, 0.0f);
        losses_[e] = 0;
        continue;
      }
      losses_[e] = softmax_loss(z, N_, labels[e], scale, nullptr, *x.k);
    }
  });
  stats_.forward_backward_seconds += now_seconds() - t0;
}

void OutputCore::full_backward_update(size_t B, float* grad, size_t grad_stride, const AdamStep& st, const Exec& x) {
  const double t0 = now_seconds();
  const size_t nb = 128;
  const size_t blocks = (N_ + nb - 1) / nb;
  for (Worker& w : workers_) w.dq.assign(B * ld_, 0.0f);
  x.pool->run(blocks, [&](size_t b, uint32_t wi) {
    Worker& w = workers_[wi];
    size_t j0 = b * nb, j1 = std::min(N_, j0 + nb), m = j1 - j0;
    // dQ += dZ[:, block] W[block] (before the block's rows are updated).
    x.k->gemm_nn_acc(B, ld_, m, logits_.data() + j0, N_, W_.block(j0, m, w.rows), ld_, w.dq.data(), ld_);
    // gW[block] = dZ[:, block]^T Q.
    w.block_g.assign(m * ld_, 0.0f);
    x.k->gemm_tn_acc(m, ld_, B, logits_.data() + j0, N_, queries_.data(), ld_, w.block_g.data(), ld_);
    for (size_t j = 0; j < m; ++j) W_.adam(*x.k, j0 + j, w.block_g.data() + j * ld_, st, w.adam);
  });
  stats_.bytes_moved += 7.0 * double(N_) * double(ld_) * sizeof(float);  // every row read, then updated
  // dL/dh = sum of the workers' partial dQ, in worker order (deterministic).
  for (size_t e = 0; e < B; ++e) {
    float* d = grad + e * grad_stride;
    std::memcpy(d, workers_[0].dq.data() + e * ld_, d_ * sizeof(float));
    for (size_t w = 1; w < workers_.size(); ++w) x.k->add(workers_[w].dq.data() + e * ld_, d, d_);
  }
  stats_.update_seconds += now_seconds() - t0;
}

void OutputCore::build_shared_set(const LabelList* labels, size_t B) {
  for (uint32_t j : shared_ids_) shared_pos_[j] = 0;
  shared_ids_.clear();
  auto add = [&](uint32_t j) {
    if (shared_pos_[j]) return;
    shared_ids_.push_back(j);
    shared_pos_[j] = uint32_t(shared_ids_.size());
  };
  // The batch's labels join S and are counted: label frequencies so far (this batch included)
  // feed the sampling correction and the inference shortlist.
  labels_counted_ = true;
  for (size_t e = 0; e < B; ++e)
    for (size_t i = 0; i < labels[e].count; ++i) {
      add(labels[e].ids[i]);
      ++label_count_[labels[e].ids[i]];
    }
  examples_counted_ += B;
  size_t want = std::min<size_t>(cfg_.min_active, N_);
  size_t from_labels = shared_ids_.size();
  if (want == N_) {
    for (uint32_t j = 0; j < N_; ++j) add(j);
  } else {
    Rng rng(mix_seed(cfg_.seed, 0x9AD5u, step_));
    while (shared_ids_.size() < want) add(rng.below(uint32_t(N_)));
  }
  if (!cfg_.sampling_correction) return;
  // Inclusion probability of each shared neuron in a batch: via some example's label or via the
  // random padding.
  const double pad = double(shared_ids_.size() - from_labels) / double(N_ - from_labels > 0 ? N_ - from_labels : 1);
  shared_logq_.resize(shared_ids_.size());
  for (size_t i = 0; i < shared_ids_.size(); ++i) {
    double f = double(label_count_[shared_ids_[i]]) / double(examples_counted_);
    double via_label = 1.0 - std::pow(1.0 - std::min(f, 1.0), double(B));
    double q = 1.0 - (1.0 - via_label) * (1.0 - pad);
    shared_logq_[i] = float(std::log(std::max(q, 1e-12)));
  }
}

size_t OutputCore::infer_lsh(const float* q, InferScratch& s, TopK& top, const Kernels& k) const {
  top.items.clear();
  s.codes.resize(size_t(cfg_.L) * (1 + cfg_.infer_probes));
  index_.hash_queries(q, 1, s.codes.data(), &s.hash_scratch, cfg_.infer_probes);
  index_.query(s.codes.data(), false, &s.qr, cfg_.infer_probes);
  for (uint32_t j : shortlist_) {
    if (j >= s.qr.slot.size()) s.qr.slot.resize(size_t(j) + 1, 0);
    if (s.qr.slot[j]) continue;
    s.qr.ids.push_back(j);
    s.qr.hits.push_back(0);
    s.qr.slot[j] = uint32_t(s.qr.ids.size());
  }
  if (s.scores.size() < s.qr.ids.size()) s.scores.resize(s.qr.ids.size());
  if (W_.bf16()) {
    s.rows.resize(s.qr.ids.size() * ld_);
    W_.gather(s.qr.ids.data(), s.qr.ids.size(), s.rows.data());
    k.row_scores(s.rows.data(), ld_, nullptr, s.qr.ids.size(), q, ld_, nullptr, s.scores.data());
  } else {
    k.row_scores(W_.data(), ld_, s.qr.ids.data(), s.qr.ids.size(), q, ld_, nullptr, s.scores.data());
  }
  for (size_t i = 0; i < s.qr.ids.size(); ++i) top.offer(s.qr.ids[i], s.scores[i]);
  const size_t scored = s.qr.ids.size();
  s.qr.clear();
  return scored;
}

void OutputCore::refresh_shortlist() {
  shortlist_.clear();
  if (label_count_.size() < N_ || cfg_.infer_shortlist == 0) return;
  std::vector<uint32_t> order(N_);
  std::iota(order.begin(), order.end(), 0u);
  size_t m = std::min<size_t>(cfg_.infer_shortlist, N_);
  std::partial_sort(order.begin(), order.begin() + ptrdiff_t(m), order.end(), [&](uint32_t a, uint32_t b) {
    return label_count_[a] != label_count_[b] ? label_count_[a] > label_count_[b] : a < b;
  });
  for (size_t i = 0; i < m && label_count_[order[i]] > 0; ++i) shortlist_.push_back(order[i]);
}

void OutputCore::lsh_forward_backward(const LabelList* labels, size_t B, size_t labelled, float* grad,
                                      size_t grad_stride, const Exec& x) {
  const Kernels& k = *x.k;
  double t0 = now_seconds();
  build_shared_set(labels, B);
  const size_t S = shared_ids_.size();
  const size_t code_stride = size_t(cfg_.L) * (1 + cfg_.probes);
  if (tables_in_training() && !cfg_.exact_retrieval) x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t w) {
    index_.hash_queries(queries_.data() + e0 * ld_, e1 - e0, codes_.data() + e0 * code_stride, &workers_[w].hash_scratch,
                        cfg_.probes);
  });
  double t1 = now_seconds();
  stats_.hash_seconds += t1 - t0;
  // Shared logits: Z_S = Q W_S^T on a gathered copy of S's rows.
  if (shared_rows_.size() < S * ld_) shared_rows_.resize(S * ld_);
  if (shared_logits_.size() < B * S) shared_logits_.resize(B * S);
  x.chunks(S, 256, [&](size_t i0, size_t i1, uint32_t) { W_.gather(shared_ids_.data() + i0, i1 - i0, &shared_rows_[i0 * ld_]); });
  const size_t nb = 96;
  x.pool->run((S + nb - 1) / nb, [&](size_t b, uint32_t) {
    size_t j0 = b * nb, j1 = std::min(S, j0 + nb);
    k.gemm_nt(B, j1 - j0, ld_, queries_.data(), ld_, shared_rows_.data() + j0 * ld_, ld_, shared_logits_.data() + j0, S);
  });
  if (cfg_.exact_retrieval && tables_in_training()) {
    // Every neuron's score, to retrieve the best ones by brute force (counted as query time).
    double q0 = now_seconds();
    if (logits_.size() < B * N_) logits_.resize(B * N_);
    W_.score_all(x, queries_.data(), B, logits_.data());
    stats_.query_seconds += now_seconds() - q0;
    t1 += now_seconds() - q0;  // not forward/backward time
  }
  const float scale = 1.0f / float(labelled);
  std::vector<double> query_time(workers_.size(), 0.0), active_total(workers_.size(), 0.0);
  x.chunks(B, 2, [&](size_t e0, size_t e1, uint32_t wi) {
    Worker& w = workers_[wi];
    for (size_t e = e0; e < e1; ++e) {
      double q0 = now_seconds();
      std::vector<uint32_t>& retrieved = active_[e];
      std::vector<float>& dz = dlogits_[e];
      retrieved.clear();
      dz.clear();
      float* dq = grad + e * grad_stride;
      std::fill(dq, dq + d_, 0.0f);
      float* zs = shared_logits_.data() + e * S;
      if (!has_labels_[e]) {
        std::fill(zs, zs + S, 0.0f);
        losses_[e] = 0;
        continue;
      }
      if (!tables_in_training()) {
        // S already holds every neuron, or retrieval is off: nothing is retrieved.
      } else if (cfg_.exact_retrieval) {
        TopK top(cfg_.max_active);
        const float* all = logits_.data() + e * N_;
        for (uint32_t j = 0; j < N_; ++j)
          if (!shared_pos_[j]) top.offer(j, all[j]);
        for (const Scored& t : top.items) retrieved.push_back(t.label);
      } else {
        index_.query(codes_.data() + e * code_stride, true, &w.qr, cfg_.probes);
        for (uint32_t j : w.qr.ids)
          if (!shared_pos_[j]) retrieved.push_back(j);
      }
      w.qr.clear();
      double q1 = now_seconds();
      query_time[wi] += q1 - q0;
      const size_t n = S + retrieved.size();
      active_total[wi] += double(n);
      // One softmax over [Z_S[e], z_R].
      std::vector<float>& z = w.z;
      if (z.size() < n) z.resize(n);
      std::memcpy(z.data(), zs, S * sizeof(float));
      // Sampled-softmax correction: z_j - log Q_j (a constant shift per neuron: dL/dz is unchanged).
      if (cfg_.sampling_correction) {
        k.axpy(-1.0f, shared_logq_.data(), z.data(), S);
        // The example's own labels are in S with certainty: they keep their logits. (Correcting
        // them too under-trains rare labels: measured -1.2 points of P@1 on citeulike-t.)
        for (size_t i = 0; i < labels[e].count; ++i) {
          size_t p = size_t(shared_pos_[labels[e].ids[i]]) - 1;
          z[p] = zs[p];
        }
      }
      // The retrieved rows: read in place, or (bf16) gathered as fp32 first.
      const float* R = W_.data();
      const uint32_t* rids = retrieved.data();
      if (W_.bf16()) {
        w.rows.resize(retrieved.size() * ld_);
        W_.gather(retrieved.data(), retrieved.size(), w.rows.data());
        for (uint32_t i = uint32_t(w.identity.size()); i < retrieved.size(); ++i) w.identity.push_back(i);
        R = w.rows.data();
        rids = w.identity.data();
      }
      k.row_scores(R, ld_, rids, retrieved.size(), queries_.data() + e * ld_, ld_, nullptr, z.data() + S);
      losses_[e] = softmax_loss(z.data(), n, labels[e], scale, &shared_pos_, k);
      std::memcpy(zs, z.data(), S * sizeof(float));
      dz.assign(z.begin() + ptrdiff_t(S), z.begin() + ptrdiff_t(n));
      k.rows_axpy(R, ld_, rids, retrieved.size(), dz.data(), d_, dq);
    }
  });
  // dQ += dZ_S W_S (rows of S before their update).
  x.chunks(B, 16, [&](size_t e0, size_t e1, uint32_t) {
    k.gemm_nn_acc(e1 - e0, d_, S, shared_logits_.data() + e0 * S, S, shared_rows_.data(), ld_, grad + e0 * grad_stride, grad_stride);
  });
  double t2 = now_seconds();
  double qt = 0;
  for (size_t w = 0; w < workers_.size(); ++w) {
    qt += query_time[w] / double(workers_.size());
    stats_.active_sum += active_total[w];
  }
  stats_.query_seconds += qt;
  stats_.forward_backward_seconds += (t2 - t1) - qt;
}

void OutputCore::lsh_update(size_t B, const AdamStep& st, const Exec& x) {
  double t0 = now_seconds();
  const size_t S = shared_ids_.size();
  // Tail drift (Config::tail_drift): the shared rows move up along the batch's active hidden
  // units and the bias, which up to a per-query constant in every logit is every other row
  // drifting down the way the full softmax's Adam moves rows with small positive gradients.
  const bool drift = cfg_.tail_drift > 0.0f && !all_active();  // (with every neuron active nothing is missed)
  if (drift) {
    drift_step_.assign(ld_, 0.0f);
    const float a = cfg_.tail_drift * st.lr;
    for (size_t i = 0; i < d_; ++i)
      for (size_t e = 0; e < B; ++e)
        if (queries_[e * ld_ + i] > 0.0f) {
          drift_step_[i] = a;
          break;
        }
    drift_step_[d_] = a;
  }
  // Shared rows: G_S = dZ_S^T Q, then Adam, a block of rows at a time.
  const size_t nb = 64;
  x.pool->run((S + nb - 1) / nb, [&](size_t b, uint32_t wi) {
    Worker& w = workers_[wi];
    size_t j0 = b * nb, m = std::min(S, j0 + nb) - j0;
    w.block_g.assign(m * ld_, 0.0f);
    x.k->gemm_tn_acc(m, ld_, B, shared_logits_.data() + j0, S, queries_.data(), ld_, w.block_g.data(), ld_);
    for (size_t j = 0; j < m; ++j) {
      const size_t r = shared_ids_[j0 + j];
      W_.adam(*x.k, r, w.block_g.data() + j * ld_, st, w.adam);
      if (drift) W_.add(*x.k, r, drift_step_.data(), d_ + 1);
    }
  });
  // Retrieved rows: grouped by row over the examples that retrieved them.
  grouped_.collect(N_, B, [&](size_t e, auto&& add) {
    const auto& ids = active_[e];
    const auto& dz = dlogits_[e];
    for (size_t i = 0; i < ids.size(); ++i) add(ids[i], dz[i]);
  });
  // What the scheduler's next check looks at: every row this batch changes.
  if (tables_in_training()) {
    for (uint32_t j : shared_ids_) moved_.mark(j);
    for (uint32_t j : grouped_.keys) moved_.mark(j);
  }
  apply_grouped(x, grouped_, queries_.data(), ld_, ld_, row_grads_, [&](uint32_t key, const float* g, uint32_t wi) {
    W_.adam(*x.k, key, g, st, workers_[wi].adam);
  });
  // The shared rows and the distinct retrieved rows: read for the scores, updated with m and v.
  stats_.bytes_moved += 7.0 * double(S + grouped_.keys.size()) * double(ld_) * sizeof(float);
  stats_.update_seconds += now_seconds() - t0;
}

// The configuration of a standalone layer: a Model's fields that do not concern it are reset so
// that its Config says what it is.
Status check_layer_config(const Config& c, size_t input_dim, size_t labels) {
  Status st = validate_training_fields(c);
  if (st.ok()) st = validate_output_fields(c, input_dim);
  if (!st.ok()) return Status::error("OutputLayer::init: " + st.message());
  if (input_dim == 0 || input_dim > 65536) return Status::error(strf("OutputLayer::init: input_dim = %zu out of range [1, 65536]", input_dim));
  if (labels == 0 || exceeds_u32(labels)) return Status::error(strf("OutputLayer::init: labels = %zu out of range [1, 2^32)", labels));
  return Status();
}

// About how many bytes an output layer allocates at its largest: rows and moments, the index,
// label counts, and the scratch of a batch and of evaluation on `threads` workers.
uint64_t output_layer_bytes(const Config& c, uint64_t d, uint64_t N, uint64_t threads) {
  const uint64_t ld = round_up(size_t(d) + 2, 8), B = c.batch_size;
  auto mul = [](uint64_t a, uint64_t b) { return mul_sat(a, b); };
  uint64_t floats = mul(c.bf16 ? 3 : 6, mul(N, ld)) / 2;                   // rows, m, v (bf16: half)
  floats = add_sat(floats, mul(B, add_sat(ld, d)));                         // queries, dL/dh
  floats = add_sat(floats, mul(threads, add_sat(mul(B, ld), mul(128, ld))));  // per-worker dq, block
  floats = add_sat(floats, mul(threads, mul(32, N)));                       // evaluation scores
  uint64_t ints = mul(3, N);                                                // counts, positions, slots
  if (c.output == OutputMode::full) {
    floats = add_sat(floats, mul(B, N));  // the batch's logits
  } else {
    const uint64_t L = c.L;
    const uint64_t shared = std::min<uint64_t>(N, add_sat(c.min_active, mul(B, 32)));
    floats = add_sat(floats, add_sat(mul(shared, ld), mul(B, shared)));           // gathered rows, logits
    if (c.exact_retrieval) floats = add_sat(floats, mul(B, N));
    if (c.learn_hash) floats = add_sat(floats, mul(add_sat(c.learn_queries, threads), N));  // mining
    if (c.scheduler == Scheduler::incremental && c.drift_epsilon > 0) floats = add_sat(floats, mul(N, d + 1));
    ints = add_sat(ints, mul(N, mul(2, L)));                        // codes, and the ids in the tables
    ints = add_sat(ints, mul(N, add_sat(2, threads)));             // detector codes, query slots
    const uint64_t buckets = std::min<uint64_t>(N, uint64_t(1) << c.K);
    ints = add_sat(ints, mul(L, mul(buckets, 12)));               // bucket headers and directories
    // The hash functions: a SimHash projection of (d+2) x K*L floats (and its learner's copy,
    // moments and gradient), or DWTA's slot tables; the detector's projection.
    const uint64_t bits = mul(c.K, L);
    if (c.hash == HashFamily::simhash) floats = add_sat(floats, mul(mul(d + 2, bits), c.learn_hash ? 5 : 1));
    else ints = add_sat(ints, add_sat(mul(d + 2, 1), mul(mul(uint64_t(c.K) + 8, L) << 8, 2)));
    floats = add_sat(floats, mul(d + 1, c.detector_bits));
  }
  return add_sat(mul(floats, 4), mul(ints, 4));
}

// Turns a LayerBatch's CSR labels into one LabelList per row, checking them.
Status layer_labels(const LayerBatch& b, size_t N, std::vector<LabelList>* out) {
  if (!b.label_offsets) return Status::error("OutputLayer::train: label_offsets is null");
  if (b.label_offsets[0] != 0) return Status::error("OutputLayer::train: label_offsets[0] must be 0");
  out->resize(b.rows);
  std::vector<uint64_t> scratch;
  for (size_t i = 0; i < b.rows; ++i) {
    const uint64_t l0 = b.label_offsets[i], l1 = b.label_offsets[i + 1];
    if (l1 < l0) return Status::error(strf("OutputLayer::train: label_offsets decrease at row %zu", i));
    if (l1 > l0 && !b.labels) return Status::error("OutputLayer::train: labels is null");
    const uint32_t* ids = b.labels ? b.labels + l0 : nullptr;
    std::string fault = row_fault(nullptr, nullptr, 0, ids, size_t(l1 - l0), 1, N, &scratch);
    if (!fault.empty()) return Status::error(strf("OutputLayer::train: row %zu: ", i) + fault);
    (*out)[i] = LabelList{ids, size_t(l1 - l0)};
  }
  return Status();
}

// n inputs of d floats (row stride `stride`) are finite with magnitude <= max_feature_value.
Status check_inputs(const char* where, const float* h, size_t n, size_t stride, size_t d) {
  if (!h && n) return Status::error(std::string(where) + ": inputs is null");
  if (stride < d) return Status::error(strf("%s: stride %zu is below input_dim %zu", where, stride, d));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < d; ++j)
      if (!is_finite(h[i * stride + j]) || !(std::fabs(h[i * stride + j]) <= kMaxMagnitude))
        return Status::error(strf("%s: input %zu, unit %zu is %g; inputs must be finite with magnitude <= 1e18", where, i, j,
                                  double(h[i * stride + j])));
  return Status();
}

}  // namespace

struct MONGOOSE_INTERNAL OutputLayer::Impl {
  std::unique_ptr<ThreadPool> pool;
  const Kernels* k = nullptr;
  OutputCore core;
  std::vector<LabelList> labels;   // the current batch's
  std::vector<float> grad;         // dL/dh when the caller wants none
  mutable Mutex const_calls;  // inference scratch (const calls may run from several threads)
  mutable std::vector<OutputCore::InferScratch> scratch;
  Exec exec() const { return Exec{pool.get(), k}; }
};

OutputLayer::OutputLayer() = default;
OutputLayer::~OutputLayer() = default;
OutputLayer::OutputLayer(OutputLayer&&) noexcept = default;
OutputLayer& OutputLayer::operator=(OutputLayer&&) noexcept = default;

Status OutputLayer::init(const Config& config, size_t input_dim, size_t labels) {
  return guard("OutputLayer::init", [&] {
    Status st = check_layer_config(config, input_dim, labels);
    if (!st.ok()) return st;
    const uint32_t threads = resolve_threads(config.threads);
    const uint64_t need = output_layer_bytes(config, input_dim, labels, threads);
    if (need > config.max_bytes)
      return Status::error(strf("OutputLayer::init: %zu inputs x %zu labels need about %llu bytes, over the memory limit "
                                "of %zu (Config::max_bytes)", input_dim, labels, (unsigned long long)need, config.max_bytes));
    auto m = std::make_unique<Impl>();
    m->k = &kernels(config.simd);
    m->pool = std::make_unique<ThreadPool>(threads);
    m->scratch.resize(threads);
    Rng rng(mix_seed(config.seed, 0x0A7Eu));
    st = m->core.init(config, input_dim, labels, rng, m->exec());
    if (!st.ok()) return st;
    impl_ = std::move(m);
    return Status();
  });
}

bool OutputLayer::initialized() const { return impl_ != nullptr; }
const Config& OutputLayer::config() const {
  static const Config defaults;
  return impl_ ? impl_->core.config() : defaults;
}
size_t OutputLayer::input_dim() const { return impl_ ? impl_->core.input_dim() : 0; }
size_t OutputLayer::labels() const { return impl_ ? impl_->core.labels() : 0; }
const TrainStats& OutputLayer::stats() const {
  static const TrainStats none;
  return impl_ ? impl_->core.stats() : none;
}
size_t OutputLayer::parameter_bytes() const { return impl_ ? size_t(impl_->core.bytes()) : 0; }
const float* OutputLayer::weights() const { return impl_ ? impl_->core.weights() : nullptr; }
size_t OutputLayer::row_stride() const { return impl_ ? impl_->core.stride() : 0; }

Status OutputLayer::train(const LayerBatch& batch, float* loss, float* grad, size_t grad_stride) {
  if (!impl_) return Status::error("OutputLayer::train: the layer is not initialized (call init)");
  return guard("OutputLayer::train", [&] {
    Impl& m = *impl_;
    const size_t d = m.core.input_dim();
    if (batch.rows == 0) return Status::error("OutputLayer::train: the batch has no rows");
    const size_t stride = batch.stride ? batch.stride : d;
    Status st = check_inputs("OutputLayer::train", batch.inputs, batch.rows, stride, d);
    if (!st.ok()) return st;
    st = layer_labels(batch, m.core.labels(), &m.labels);
    if (!st.ok()) return st;
    if (grad && grad_stride == 0) grad_stride = d;
    if (grad && grad_stride < d) return Status::error(strf("OutputLayer::train: grad_stride %zu is below input_dim %zu", grad_stride, d));
    if (!grad) {
      m.grad.resize(batch.rows * d);
      grad = m.grad.data();
      grad_stride = d;
    }
    double l = 0;
    try {
      st = m.core.train(batch.inputs, stride, batch.rows, m.labels.data(), grad, grad_stride, &l, m.exec());
    } catch (...) {
      Status why = guard("OutputLayer::train", []() -> Status { throw; });
      return Status::error(why.message() + (m.core.interrupted_update()
                                                ? " (the batch was interrupted while updating the weights: it may be partly applied)"
                                                : " (the layer is unchanged)"));
    }
    if (st.ok() && loss) *loss = float(l);
    return st;
  });
}

Status OutputLayer::topk(const float* inputs, size_t n, size_t stride, size_t k, InferMode mode,
                         std::vector<std::vector<Scored>>* out, double* mean_candidates) const {
  if (!impl_) return Status::error("OutputLayer::topk: the layer is not initialized (call init)");
  if (!out) return Status::error("OutputLayer::topk: out is null");
  if (k == 0) return Status::error("OutputLayer::topk: k must be >= 1");
  return guard("OutputLayer::topk", [&] {
    const Impl& m = *impl_;
    const size_t d = m.core.input_dim();
    if (mode != InferMode::full && mode != InferMode::lsh) return Status::error("OutputLayer::topk: mode is not an InferMode");
    if (mode == InferMode::lsh && !m.core.lsh()) return Status::error("OutputLayer::topk: InferMode::lsh needs an lsh layer");
    if (!stride) stride = d;
    Status st = check_inputs("OutputLayer::topk", inputs, n, stride, d);
    if (!st.ok()) return st;
    MutexLock lock(m.const_calls);
    const Exec x = m.exec();
    std::vector<TopK> tops(n, TopK(k));
    std::vector<double> candidates(n, 0.0);
    const size_t chunk = 32;
    x.chunks(n, chunk, [&](size_t i0, size_t i1, uint32_t w) {
      m.core.infer(inputs + i0 * stride, stride, i1 - i0, mode, m.scratch[w], tops.data() + i0, &candidates[i0], *m.k);
    });
    out->assign(n, {});
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      (*out)[i] = std::move(tops[i].items);
      total += candidates[i];
    }
    if (mean_candidates) *mean_candidates = n ? total / double(n) : 0.0;
    return Status();
  });
}

Status OutputLayer::retrieval_recall(const float* inputs, size_t n, size_t stride, size_t k, double* recall,
                                     double* mean_retrieved) const {
  if (!impl_) return Status::error("OutputLayer::retrieval_recall: the layer is not initialized (call init)");
  if (!recall || !mean_retrieved) return Status::error("OutputLayer::retrieval_recall: output pointers are null");
  return guard("OutputLayer::retrieval_recall", [&] {
    const Impl& m = *impl_;
    const size_t d = m.core.input_dim();
    if (!m.core.lsh()) return Status::error("OutputLayer::retrieval_recall: needs an lsh layer");
    if (k < 1 || k > m.core.labels())
      return Status::error(strf("OutputLayer::retrieval_recall: k = %zu out of range [1, %zu]", k, m.core.labels()));
    if (n == 0) return Status::error("OutputLayer::retrieval_recall: no inputs to measure");
    if (!stride) stride = d;
    Status st = check_inputs("OutputLayer::retrieval_recall", inputs, n, stride, d);
    if (!st.ok()) return st;
    MutexLock lock(m.const_calls);
    std::vector<double> found(n, 0.0), kept(n, 0.0);
    m.pool->run(n, [&](size_t i, uint32_t w) {
      size_t retrieved = 0;
      found[i] = double(m.core.recall_one(inputs + i * stride, k, m.scratch[w], &retrieved, *m.k));
      kept[i] = double(retrieved);
    });
    double f = 0, r = 0;
    for (size_t i = 0; i < n; ++i) {
      f += found[i];
      r += kept[i];
    }
    *recall = f / double(n * k);
    *mean_retrieved = r / double(n);
    return Status();
  });
}

Status OutputLayer::rebuild_index(const Config& index) {
  if (!impl_) return Status::error("OutputLayer::rebuild_index: the layer is not initialized (call init)");
  return guard("OutputLayer::rebuild_index", [&] { return impl_->core.rebuild_index(index, impl_->exec()); });
}

Status OutputLayer::refresh() {
  if (!impl_) return Status::error("OutputLayer::refresh: the layer is not initialized (call init)");
  return guard("OutputLayer::refresh", [&] {
    impl_->core.refresh(impl_->exec());
    return Status();
  });
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Model
//-----------------------------------------------------------------------------------------------
// An input layer, the hidden stack and an output layer on one thread pool. A training batch:
// forward through the input layer and the stack, the output layer's own step (loss, dL/dh, its
// update and table upkeep), then back through the stack and the input layer, each updating
// itself. All layers share the step counter, so Adam's bias correction is the same everywhere.

namespace {

// Adds to hits_at[0..3) how many of the first 1, 3 and 5 predictions are true labels.
void accumulate_precision(const std::vector<Scored>& top, const Dataset::Row& row, double* hits_at) {
  size_t found = 0;
  for (size_t i = 0; i < 5; ++i) {
    if (i < top.size() && std::find(row.labels, row.labels + row.num_labels, top[i].label) != row.labels + row.num_labels)
      ++found;
    if (i == 0) hits_at[0] += double(found);
    if (i == 2) hits_at[1] += double(found);
    if (i == 4) hits_at[2] += double(found);
  }
}

// About how many bytes a network of this shape allocates at its largest: every layer's weights
// and Adam moments, the output layer's index, and the scratch of a batch and of evaluation on
// `threads` workers. Saturates instead of overflowing, so absurd shapes compare as huge.
uint64_t model_bytes(const Config& c, uint64_t D, uint64_t N, uint64_t threads) {
  const uint64_t H = c.hidden, B = c.batch_size;
  auto mul = [](uint64_t a, uint64_t b) { return mul_sat(a, b); };
  uint64_t floats = mul(3, add_sat(mul(D, H), H));                     // input layer, m, v
  floats = add_sat(floats, add_sat(mul(B, 2 * H), mul(threads, mul(64, H))));  // act, dact, eval
  uint64_t ints = D;                                                    // grouped-gradient slots
  if (c.input == InputKind::dense) floats = add_sat(floats, add_sat(mul(B, D), mul(threads, mul(64, add_sat(D, H)))));
  uint64_t in = H;
  for (uint32_t w : c.hidden_layers) {
    floats = add_sat(floats, add_sat(mul(3, add_sat(mul(in, w), w)), mul(add_sat(mul(B, 3), mul(threads, 64)), w)));
    in = w;
  }
  return add_sat(add_sat(mul(floats, 4), mul(ints, 4)), output_layer_bytes(c, in, N, threads));
}

}  // namespace

struct MONGOOSE_INTERNAL Model::Impl {
  Config cfg;
  size_t D = 0, N = 0;
  const Kernels* k = nullptr;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<InputLayer> input;
  DenseStack stack;
  OutputCore output;
  uint64_t step = 0, epoch = 0;
  TrainStats own;     // what the network itself counts: batches, examples, epochs, seconds, loss,
                      // hidden_seconds, the input layer's and the stack's update_seconds
  TrainStats merged;  // own + the output layer's: what stats() shows
  double stack_bytes_moved = 0;  // the hidden stack's traffic (every weight, every batch)
  bool update_started = false;  // this batch wrote some input or hidden weights

  // Per batch.
  std::vector<Dataset::Row> rows;
  std::vector<LabelList> labels;
  std::vector<float> act, dact;   // the input layer's activations and their gradient, B x H
  std::vector<float> top_grad;    // dL/d(the stack's output), B x d (when there is a stack)

  // Inference scratch of one worker (const calls take the lock; predict brings its own).
  struct InferBuffers {
    std::vector<Dataset::Row> rows;
    std::vector<float> act, top, stack_scratch, input_scratch;
    OutputCore::InferScratch out;
  };
  mutable Mutex const_calls;
  mutable std::vector<InferBuffers> infer_buffers;

  Exec exec() const { return Exec{pool.get(), k}; }
  size_t H() const { return input->width(); }
  size_t top_width() const { return stack.out_width(H()); }

  void merge_stats() {
    merged = output.stats();
    merged.batches = own.batches;
    merged.examples = own.examples;
    merged.epochs = own.epochs;
    merged.seconds = own.seconds;
    merged.mean_loss_last_epoch = own.mean_loss_last_epoch;
    merged.hidden_seconds = own.hidden_seconds;
    merged.update_seconds += own.update_seconds;
    merged.bytes_moved += input->bytes_moved() + stack_bytes_moved;
  }

  // The inputs of the output layer for n rows (n x top_width()), on b's buffers.
  const float* infer_rows(const Dataset::Row* r, size_t n, InferBuffers& b) const {
    b.act.resize(n * H());
    input->infer(r, n, b.act.data(), &b.input_scratch, *k);
    if (stack.empty()) return b.act.data();
    b.top.resize(n * top_width());
    stack.infer(b.act.data(), n, b.top.data(), &b.stack_scratch, *k);
    return b.top.data();
  }

  Status train_batch(const Dataset& data, const uint32_t* idx, size_t B, float* loss_out);

  // train_batch with a promise for failures: an exception before any weight was written leaves
  // the model as it was (the output layer undoes its own counts); after, the error says so.
  Status train_batch_safely(const Dataset& data, const uint32_t* idx, size_t B, float* loss_out) {
    update_started = false;
    const uint64_t step_before = step;
    try {
      return train_batch(data, idx, B, loss_out);
    } catch (...) {
      Status why = guard("Model: training", []() -> Status { throw; });
      if (update_started || output.interrupted_update())
        return Status::error(why.message() + " (the batch was interrupted while updating the weights: it may be partly applied)");
      step = step_before;
      return Status::error(why.message() + " (the model is unchanged)");
    }
  }
};

Status Model::Impl::train_batch(const Dataset& data, const uint32_t* idx, size_t B, float* loss_out) {
  const double start = now_seconds();
  const Exec x = exec();
  rows.resize(B);
  labels.resize(B);
  size_t labelled = 0;
  for (size_t e = 0; e < B; ++e) {
    rows[e] = data.row(idx[e]);
    labels[e] = LabelList{rows[e].labels, rows[e].num_labels};
    labelled += rows[e].num_labels > 0;
  }
  if (labelled == 0) {  // nothing to learn from; not an error
    if (loss_out) *loss_out = 0;
    return Status();
  }
  // Input values were validated by the entry point (finite, magnitude <= max_feature_value).
  const size_t h = H(), d = top_width();
  act.resize(B * h);
  dact.resize(B * h);
  ++step;
  const AdamStep st = AdamStep::at(cfg.learning_rate, cfg.beta1, cfg.beta2, cfg.adam_eps, step);
  double t0 = now_seconds();
  input->forward(rows.data(), B, act.data(), x);
  const float* top = stack.forward(act.data(), B, x);
  own.hidden_seconds += now_seconds() - t0;
  for (size_t e = 0; e < B; ++e)
    for (size_t i = 0; i < d; ++i)
      if (!(top[e * d + i] <= kMaxMagnitude)) {
        --step;
        return Status::error(strf("training refused at batch %llu: %s: hidden unit %zu is %g, above 1e18 "
                                  "(inputs too large or weights diverged); the model is unchanged",
                                  (unsigned long long)(own.batches + 1), row_location(data, idx[e]).c_str(), i,
                                  double(top[e * d + i])));
      }
  float* grad = dact.data();
  if (!stack.empty()) {
    top_grad.resize(B * d);
    grad = top_grad.data();
  }
  double loss = 0;
  Status result = output.train(top, d, B, labels.data(), grad, d, &loss, x);
  if (!result.ok()) {
    --step;
    return result;
  }
  update_started = true;
  t0 = now_seconds();
  if (!stack.empty()) {
    stack.backward_update(act.data(), B, top_grad.data(), dact.data(), st, x);
    stack_bytes_moved += 7.0 * double(stack.bytes()) / 3.0;  // bytes() counts w, m and v
  }
  input->backward_update(rows.data(), B, act.data(), dact.data(), st, x);
  own.update_seconds += now_seconds() - t0;
  ++own.batches;
  own.examples += labelled;
  own.seconds += now_seconds() - start;
  merge_stats();
  if (loss_out) *loss_out = float(loss);
  return Status();
}

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Status Model::init(const Config& config, size_t features, size_t labels) {
  if (busy_) return Status::error("Model::init: called while the model trains (from Config::on_progress?)");
  // Running out of memory is reported with the size of what was being made.
  const uint64_t need = model_bytes(config, features, labels, resolve_threads(config.threads <= 1024 ? config.threads : 1));
  return guard(strf("Model::init (%zu features, %zu labels: about %llu bytes)", features, labels, (unsigned long long)need),
               [&] { return init_checked(config, features, labels); });
}

Status Model::init_checked(const Config& config, size_t features, size_t labels) {
  Status st = validate(config);
  if (!st.ok()) return st;
  if (features == 0 || exceeds_u32(features)) return Status::error(strf("Model::init: features = %zu out of range [1, 2^32)", features));
  if (labels == 0 || exceeds_u32(labels)) return Status::error(strf("Model::init: labels = %zu out of range [1, 2^32)", labels));
  const uint32_t threads = resolve_threads(config.threads);
  const uint64_t need = model_bytes(config, features, labels, threads);
  if (need > config.max_bytes)
    return Status::error(strf("Model::init: %zu features x %u hidden x %zu labels need about %llu bytes (weights, "
                              "optimizer state, index and scratch), over the memory limit of %zu (Config::max_bytes)",
                              features, config.hidden, labels, (unsigned long long)need, config.max_bytes));
  auto m = std::make_unique<Impl>();
  m->cfg = config;
  m->D = features;
  m->N = labels;
  m->k = &kernels(config.simd);
  m->pool = std::make_unique<ThreadPool>(threads);
  m->infer_buffers.resize(threads);
  // One stream for every layer's weights, in order: input, hidden, output.
  Rng rng(mix_seed(config.seed, 0x1417u));
  m->input = make_input_layer(config.input);
  m->input->init(features, config.hidden, rng, threads);
  m->stack.init(config.hidden, config.hidden_layers, rng, threads);
  st = m->output.init(config, m->top_width(), labels, rng, m->exec());
  if (!st.ok()) return st;
  m->merge_stats();
  impl_ = std::move(m);
  return Status();
}

bool Model::initialized() const { return impl_ != nullptr; }
const Config& Model::config() const {
  static const Config defaults;
  return impl_ ? impl_->cfg : defaults;
}
size_t Model::features() const { return impl_ ? impl_->D : 0; }
size_t Model::labels() const { return impl_ ? impl_->N : 0; }
const TrainStats& Model::stats() const {
  static const TrainStats none;
  return impl_ ? impl_->merged : none;
}

namespace {
// The dataset fits the model and is valid: every row when rows is null, else rows[0..n).
Status check_compatible(const Model& m, const Dataset& data, const char* where, const uint32_t* rows = nullptr,
                        size_t n = 0) {
  Status st = check_dataset_shape(data);
  if (!st.ok()) return Status::error(std::string(where) + ": " + st.message());
  const std::string name = data.source.empty() ? std::string("the dataset") : data.source;
  if (data.features > m.features())
    return Status::error(strf("%s: %s has %zu features but the model takes %zu", where, name.c_str(), data.features, m.features()));
  if (data.labels > m.labels())
    return Status::error(strf("%s: %s has %zu labels but the model has %zu outputs", where, name.c_str(), data.labels, m.labels()));
  std::vector<uint64_t> scratch;
  const size_t count = rows ? n : data.rows;
  for (size_t i = 0; i < count; ++i) {
    const size_t r = rows ? rows[i] : i;
    if (r >= data.rows) return Status::error(strf("%s: row %zu out of range [0, %zu)", where, r, data.rows));
    st = check_dataset_row(data, r, &scratch);
    if (!st.ok()) return Status::error(std::string(where) + ": " + st.message());
  }
  return Status();
}
}  // namespace

Status Model::train_batch(const Dataset& data, const uint32_t* rows, size_t n, float* loss) {
  if (!impl_) return Status::error("Model::train_batch: the model is not initialized (call init)");
  if (busy_) return Status::error("Model::train_batch: called while the model trains (from Config::on_progress?)");
  if (!rows || n == 0) return Status::error("Model::train_batch: no rows given");
  return guard("Model::train_batch", [&] {
    Status st = check_compatible(*this, data, "Model::train_batch", rows, n);
    if (!st.ok()) return st;
    return impl_->train_batch_safely(data, rows, n, loss);
  });
}

Status Model::train_epoch(const Dataset& data) {
  if (!impl_) return Status::error("Model::train_epoch: the model is not initialized (call init)");
  if (busy_) return Status::error("Model::train_epoch: called while the model trains (from Config::on_progress?)");
  // While the epoch runs (and calls on_progress), calls that would replace or train the model
  // are refused: the epoch holds on to its state.
  struct Busy {
    bool& flag;
    explicit Busy(bool& f) : flag(f) { flag = true; }
    ~Busy() { flag = false; }
  } busy(busy_);
  return guard("Model::train_epoch", [&] { return train_epoch_checked(data); });
}

Status Model::train_epoch_checked(const Dataset& data) {
  Status st = check_compatible(*this, data, "Model::train_epoch");
  if (!st.ok()) return st;
  Impl& m = *impl_;
  std::vector<uint32_t> order(data.rows);
  std::iota(order.begin(), order.end(), 0u);
  Rng rng(mix_seed(m.cfg.seed, 0xE90Cu, m.epoch));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(uint32_t(i))]);
  const size_t B = m.cfg.batch_size;
  Progress p;
  p.epoch = m.epoch;
  p.batches_in_epoch = (order.size() + B - 1) / B;
  double loss_sum = 0;
  for (size_t b0 = 0; b0 < order.size(); b0 += B) {
    float loss = 0;
    st = m.train_batch_safely(data, order.data() + b0, std::min(B, order.size() - b0), &loss);
    if (!st.ok()) return st;
    loss_sum += loss;
    ++p.batch;
    p.seconds = m.own.seconds;
    p.mean_loss = loss_sum / double(p.batch);
    if (!m.cfg.on_progress) continue;
    bool go_on = true;
    try {
      go_on = m.cfg.on_progress(p);
    } catch (...) {
      Status why = guard("Config::on_progress", []() -> Status { throw; });
      return Status::error(strf("Model::train_epoch: the progress callback threw after batch %llu of epoch %llu: %s",
                                (unsigned long long)p.batch, (unsigned long long)p.epoch + 1, why.message().c_str()));
    }
    if (!go_on) break;
  }
  m.output.refresh(m.exec());
  ++m.epoch;
  ++m.own.epochs;
  m.own.mean_loss_last_epoch = p.batch ? loss_sum / double(p.batch) : 0.0;
  m.merge_stats();
  return Status();
}

Status Model::evaluate(const Dataset& data, InferMode mode, Metrics* out) const {
  if (!impl_) return Status::error("Model::evaluate: the model is not initialized (call init)");
  if (!out) return Status::error("Model::evaluate: out is null");
  return guard("Model::evaluate", [&] { return evaluate_checked(data, mode, out); });
}

Status Model::evaluate_checked(const Dataset& data, InferMode mode, Metrics* out) const {
  if (mode != InferMode::full && mode != InferMode::lsh) return Status::error("Model::evaluate: mode is not an InferMode");
  Status st = check_compatible(*this, data, "Model::evaluate");
  if (!st.ok()) return st;
  const Impl& m = *impl_;
  if (mode == InferMode::lsh && m.cfg.output != OutputMode::lsh)
    return Status::error("Model::evaluate: InferMode::lsh needs a model trained with OutputMode::lsh");
  MutexLock lock(m.const_calls);
  const double t0 = now_seconds();
  const size_t chunk = mode == InferMode::full ? 32 : 64;
  const size_t tasks = (data.rows + chunk - 1) / chunk;
  std::vector<double> hits(tasks * 3, 0.0), candidates(tasks, 0.0);
  m.pool->run(tasks, [&](size_t t, uint32_t wi) {
    Impl::InferBuffers& b = m.infer_buffers[wi];
    const size_t r0 = t * chunk, r1 = std::min(data.rows, r0 + chunk), n = r1 - r0;
    b.rows.resize(n);
    for (size_t r = r0; r < r1; ++r) b.rows[r - r0] = data.row(r);
    const float* h = m.infer_rows(b.rows.data(), n, b);
    std::vector<TopK> tops(n, TopK(5));
    m.output.infer(h, m.top_width(), n, mode, b.out, tops.data(), &candidates[t], *m.k);
    for (size_t i = 0; i < n; ++i) accumulate_precision(tops[i].items, b.rows[i], &hits[t * 3]);
  });
  double h1 = 0, h3 = 0, h5 = 0, cand = 0;
  for (size_t t = 0; t < tasks; ++t) {
    h1 += hits[t * 3];
    h3 += hits[t * 3 + 1];
    h5 += hits[t * 3 + 2];
    cand += candidates[t];
  }
  Metrics r;
  r.rows = data.rows;
  const double rows = data.rows ? double(data.rows) : 1.0;
  r.p_at_1 = h1 / rows;
  r.p_at_3 = h3 / (3 * rows);
  r.p_at_5 = h5 / (5 * rows);
  r.seconds = now_seconds() - t0;
  r.ms_per_example = 1000.0 * r.seconds * double(m.pool->size()) / rows;
  r.mean_candidates = cand / rows;
  *out = r;
  return Status();
}

Status Model::retrieval_recall(const Dataset& data, size_t max_rows, size_t topk, double* recall,
                               double* mean_retrieved) const {
  if (!impl_) return Status::error("Model::retrieval_recall: the model is not initialized (call init)");
  if (!recall || !mean_retrieved) return Status::error("Model::retrieval_recall: output pointers are null");
  return guard("Model::retrieval_recall", [&] { return retrieval_recall_checked(data, max_rows, topk, recall, mean_retrieved); });
}

Status Model::retrieval_recall_checked(const Dataset& data, size_t max_rows, size_t topk, double* recall,
                                       double* mean_retrieved) const {
  Status st = check_compatible(*this, data, "Model::retrieval_recall");
  if (!st.ok()) return st;
  const Impl& m = *impl_;
  if (m.cfg.output != OutputMode::lsh) return Status::error("Model::retrieval_recall: needs an lsh model");
  if (topk < 1 || topk > m.N) return Status::error(strf("Model::retrieval_recall: k = %zu out of range [1, %zu]", topk, m.N));
  const size_t rows = std::min(max_rows, data.rows);
  if (rows == 0) return Status::error("Model::retrieval_recall: no rows to measure");
  std::vector<double> found(rows, 0.0), retrieved(rows, 0.0);
  MutexLock lock(m.const_calls);
  m.pool->run(rows, [&](size_t i, uint32_t wi) {
    Impl::InferBuffers& b = m.infer_buffers[wi];
    const Dataset::Row row = data.row(i * data.rows / rows);  // spread over the file, never a prefix
    const float* h = m.infer_rows(&row, 1, b);
    size_t kept = 0;
    found[i] = double(m.output.recall_one(h, topk, b.out, &kept, *m.k));
    retrieved[i] = double(kept);
  });
  double f = 0, n = 0;
  for (size_t i = 0; i < rows; ++i) {
    f += found[i];
    n += retrieved[i];
  }
  *recall = f / double(rows * topk);
  *mean_retrieved = n / double(rows);
  return Status();
}

Status Model::predict(const uint32_t* ids, const float* values, size_t nnz, size_t topk, InferMode mode,
                      std::vector<Scored>* out) const {
  if (!impl_) return Status::error("Model::predict: the model is not initialized (call init)");
  if (!out) return Status::error("Model::predict: out is null");
  if (topk == 0) return Status::error("Model::predict: k must be >= 1");
  if (nnz && (!ids || !values)) return Status::error("Model::predict: ids/values are null");
  return guard("Model::predict", [&] { return predict_checked(ids, values, nnz, topk, mode, out); });
}

Status Model::predict_checked(const uint32_t* ids, const float* values, size_t nnz, size_t topk, InferMode mode,
                              std::vector<Scored>* out) const {
  const Impl& m = *impl_;
  if (mode != InferMode::full && mode != InferMode::lsh) return Status::error("Model::predict: mode is not an InferMode");
  if (mode == InferMode::lsh && m.cfg.output != OutputMode::lsh)
    return Status::error("Model::predict: InferMode::lsh needs a model trained with OutputMode::lsh");
  std::vector<uint64_t> scratch;
  std::string fault = row_fault(ids, values, nnz, nullptr, 0, m.D, m.N, &scratch);
  if (!fault.empty()) return Status::error("Model::predict: " + fault);
  const Dataset::Row row{ids, values, nnz, nullptr, 0};
  Impl::InferBuffers b;  // own scratch: predict may run concurrently with other const calls
  const float* h = m.infer_rows(&row, 1, b);
  TopK top(topk);
  double candidates = 0;
  m.output.infer(h, m.top_width(), 1, mode, b.out, &top, &candidates, *m.k);
  *out = top.items;
  return Status();
}

Model::Weights Model::weights() const {
  Weights w;
  if (!impl_) return w;
  const Impl& m = *impl_;
  w.W1 = m.input->weights();
  w.b1 = m.input->bias();
  w.W2 = m.output.weights();
  w.features = m.D;
  w.hidden = m.H();
  w.labels = m.N;
  w.output_stride = m.output.stride();
  for (size_t l = 0; l < m.stack.size(); ++l) w.hidden_layers.push_back(m.stack.view(l));
  return w;
}

Status Model::rebuild_index(const Config& index) {
  if (!impl_) return Status::error("Model::rebuild_index: the model is not initialized (call init)");
  if (busy_) return Status::error("Model::rebuild_index: called while the model trains (from Config::on_progress?)");
  return guard("Model::rebuild_index", [&] {
    Status st = impl_->output.rebuild_index(index, impl_->exec());
    if (st.ok()) impl_->cfg = impl_->output.config_with_network(impl_->cfg);
    impl_->merge_stats();
    return st;
  });
}

size_t Model::parameter_bytes() const {
  if (!impl_) return 0;
  const Impl& m = *impl_;
  return size_t(m.input->bytes() + m.stack.bytes() + m.output.bytes());
}

//-----------------------------------------------------------------------------------------------
// [SECTION] Model I/O
//-----------------------------------------------------------------------------------------------
// Each component's state goes through its own interface: the layers list their float arrays
// (state()), the output layer its index (index_state(), restore()); this section frames them
// into checksummed sections (SectionWriter, SectionReader: [SECTION] Files) and checks every size
// against the file and the memory budget before anything is allocated.

namespace {

constexpr uint32_t kFormatVersion = 4;
constexpr char kMagic[8] = {'M', 'O', 'N', 'G', 'O', 'O', 'S', 'E'};

// ---- Version 4: NETW (the network) and OUTC (the output layer). ----

void encode_training(const Config& c, Bytes& b) {
  b.f32(c.learning_rate); b.f32(c.beta1); b.f32(c.beta2); b.f32(c.adam_eps);
  b.u32(c.batch_size); b.u32(c.threads); b.u64(c.seed); b.u32(uint32_t(c.simd));
}
void decode_training(BytesReader& b, Config* c) {
  c->learning_rate = b.f32(); c->beta1 = b.f32(); c->beta2 = b.f32(); c->adam_eps = b.f32();
  c->batch_size = b.u32(); c->threads = b.u32(); c->seed = b.u64(); c->simd = Simd(b.u32());
}

// NETW: input kind, features, hidden, the hidden stack's widths, training settings, step, epoch,
// flags (bit 0: optimizer state follows each layer's weights).
std::string encode_network(const Config& c, uint64_t features, uint64_t step, uint64_t epoch, bool optimizer) {
  Bytes b;
  b.u32(uint32_t(c.input)); b.u64(features); b.u32(c.hidden); b.u32(uint32_t(c.hidden_layers.size()));
  for (uint32_t w : c.hidden_layers) b.u32(w);
  encode_training(c, b);
  b.u64(step); b.u64(epoch); b.u32(optimizer ? 1u : 0u);
  return b.b;
}
// NETW's size for a stack of `layers` hidden layers (from the encoder itself, so they agree).
size_t network_bytes(size_t layers) {
  Config c;
  c.hidden_layers.assign(layers, 1);
  return encode_network(c, 1, 0, 0, false).size();
}

struct OutputShape {
  uint64_t d = 0, N = 0, ld = 0, step = 0, generation = 0;
  bool optimizer = false;
};

// OUTC: every output-layer setting, the training settings, shapes and counters.
std::string encode_output(const Config& c, const OutputShape& s) {
  Bytes b;
  b.u32(uint32_t(c.output)); b.u32(uint32_t(c.hash)); b.u32(c.K); b.u32(c.L); b.f32(c.hash_density);
  b.u32(c.bucket_capacity); b.u32(uint32_t(c.bucket_policy)); b.u32(c.min_active); b.u32(c.max_active);
  b.u32(c.rehash_every); b.f32(c.rehash_decay); b.u32(c.new_hash_every); b.u32(uint32_t(c.scheduler));
  b.u32(c.check_every); b.u32(c.detector_bits); b.u32(c.detector_sample); b.f32(c.tau);
  b.f32(c.full_rebuild_fraction); b.f32(c.drift_epsilon); b.u32(c.learn_hash); b.u32(c.learn_every);
  b.u32(c.learn_queries); b.u32(c.hash_steps); b.f32(c.hash_lr); b.u32(c.hash_binarize); b.u32(uint32_t(c.hash_loss));
  b.f32(c.triplet_margin); b.f32(c.tail_drift); b.u32(c.infer_shortlist); b.u32(c.probes); b.u32(c.infer_probes);
  // bit 0: sampling_correction; bit 1: exact_retrieval; bit 2: optimizer state saved; bit 3: no
  // retrieval in training
  b.u32((c.sampling_correction ? 1u : 0u) | (c.exact_retrieval ? 2u : 0u) | (s.optimizer ? 4u : 0u) |
        (c.retrieval ? 0u : 8u) | (c.bf16 ? 16u : 0u) | (c.mips ? 0u : 32u));
  encode_training(c, b);
  b.u64(s.d); b.u64(s.N); b.u64(s.ld); b.u64(s.step); b.u64(s.generation);
  return b.b;
}
size_t output_config_bytes() { return encode_output(Config(), OutputShape()).size(); }

Status decode_output(const std::vector<unsigned char>& bytes, Config* c, OutputShape* s, const SectionReader& r) {
  BytesReader b{bytes.data(), bytes.size()};
  c->output = OutputMode(b.u32()); c->hash = HashFamily(b.u32()); c->K = b.u32(); c->L = b.u32(); c->hash_density = b.f32();
  c->bucket_capacity = b.u32(); c->bucket_policy = BucketPolicy(b.u32()); c->min_active = b.u32(); c->max_active = b.u32();
  c->rehash_every = b.u32(); c->rehash_decay = b.f32(); c->new_hash_every = b.u32(); c->scheduler = Scheduler(b.u32());
  c->check_every = b.u32(); c->detector_bits = b.u32(); c->detector_sample = b.u32(); c->tau = b.f32();
  c->full_rebuild_fraction = b.f32(); c->drift_epsilon = b.f32(); c->learn_hash = b.u32() != 0; c->learn_every = b.u32();
  c->learn_queries = b.u32(); c->hash_steps = b.u32(); c->hash_lr = b.f32(); c->hash_binarize = b.u32() != 0;
  c->hash_loss = HashLoss(b.u32()); c->triplet_margin = b.f32(); c->tail_drift = b.f32(); c->infer_shortlist = b.u32();
  c->probes = b.u32(); c->infer_probes = b.u32();
  const uint32_t flags = b.u32();
  if (flags & ~63u) return r.fail("OUTC: unknown flags (written by a newer version?)");
  c->bf16 = (flags & 16) != 0;
  c->mips = (flags & 32) == 0;
  c->sampling_correction = (flags & 1) != 0;
  c->exact_retrieval = (flags & 2) != 0;
  s->optimizer = (flags & 4) != 0;
  c->retrieval = (flags & 8) == 0;
  decode_training(b, c);
  s->d = b.u64(); s->N = b.u64(); s->ld = b.u64(); s->step = b.u64(); s->generation = b.u64();
  return Status();
}

// The training settings a caller asked for instead of the saved ones, and a thread count the
// machine can run (a file must not decide how many threads this process starts).
void apply_load_options(const LoadOptions& o, Config* c) {
  if (o.override_training) {
    const Config& t = *o.override_training;
    c->learning_rate = t.learning_rate; c->beta1 = t.beta1; c->beta2 = t.beta2; c->adam_eps = t.adam_eps;
    c->batch_size = t.batch_size; c->threads = t.threads; c->simd = t.simd; c->on_progress = t.on_progress;
  } else if (MONGOOSE_HAVE_THREADS && c->threads > resolve_threads(0)) {  // (without threads any count runs as 1)
    c->threads = 0;
  }
  c->max_bytes = o.max_bytes;
}

// Bytes of the arrays of state() that are weights (moments == false) or moments in a file.
uint64_t state_bytes(const std::vector<StateArray>& state, bool moments) {
  uint64_t n = 0;
  for (const StateArray& a : state)
    if (a.moment == moments) n += a.values ? a.values->size() * 4 : a.halves->size() * 2;
  return n;
}

// Writes the arrays of state(), weights (moment == false) or moments, as one section.
void write_state(SectionWriter& w, const char tag[4], const std::vector<StateArray>& state, bool moments) {
  w.begin(tag, state_bytes(state, moments));
  for (const StateArray& a : state) {
    if (a.moment != moments) continue;
    if (a.values) w.floats(a.values->data(), a.values->size());
    else w.u16s(a.halves->data(), a.halves->size());
  }
  w.end();
}
Status read_state(SectionReader& r, const char* tag, const std::vector<StateArray>& state, bool moments) {
  Status st = r.expect(tag, state_bytes(state, moments));
  for (const StateArray& a : state)
    if (st.ok() && a.moment == moments) st = a.values ? r.floats(a.values, a.values->size()) : r.bf16s(a.halves, a.halves->size());
  if (st.ok()) st = r.check_crc();
  // Adam's second moments are averages of squares: a negative one is a corrupted file (it would
  // make the next step's square root NaN).
  for (const StateArray& a : state) {
    if (!st.ok() || a.moment != moments || !std::strstr(a.name, "Adam v")) continue;
    for (size_t i = 0; i < a.size(); ++i) {
      const bool negative = a.values ? !((*a.values)[i] >= 0.0f) : ((*a.halves)[i] & 0x8000u) && ((*a.halves)[i] & 0x7FFFu);
      if (negative) return r.fail(strf("section %s: %s value %zu is negative", tag, a.name, i));
    }
  }
  return st;
}

// Step counters beyond 2^62 cannot come from training (and step + 1 must not wrap).
constexpr uint64_t kMaxStep = uint64_t(1) << 62;

// A file that load would refuse is never written: every saved value must be finite.
Status check_finite(const std::string& path, const std::vector<StateArray>& state, bool optimizer) {
  for (const StateArray& a : state) {
    if (a.moment && !optimizer) continue;
    for (size_t i = 0; i < a.size(); ++i)
      if (a.values ? !is_finite((*a.values)[i]) : ((*a.halves)[i] & 0x7F80u) == 0x7F80u)
        return Status::error(strf("save_model: %s: %s value %zu is not finite (training diverged); nothing was written",
                                  path.c_str(), a.name, i));
  }
  return Status();
}

// HASH, CODE and FREQ: the index of an lsh output layer (same layout in versions 1 to 4).
void write_index(SectionWriter& w, const OutputCore::IndexState& s, size_t N) {
  w.begin("HASH", 4 + s.projection.size() * 4);
  Bytes nb;
  nb.f32(s.mips_norm2);
  w.payload(nb.b.data(), 4);
  w.floats(s.projection.data(), s.projection.size());
  w.end();
  w.begin("CODE", s.codes.size() * 4);
  w.u32s(s.codes.data(), s.codes.size());
  w.end();
  std::vector<uint32_t> counts = s.label_count;
  counts.resize(N, 0);
  Bytes ec;
  ec.u64(s.examples_counted);
  ec.u32(uint32_t(s.shortlist.size()));
  w.begin("FREQ", 12 + counts.size() * 4 + s.shortlist.size() * 4);
  w.payload(ec.b.data(), 12);
  w.u32s(counts.data(), counts.size());
  w.u32s(s.shortlist.data(), s.shortlist.size());
  w.end();
}

Status read_index(SectionReader& r, const Config& c, uint64_t d, uint64_t N, OutputCore::IndexState* s) {
  const uint64_t hash_bytes = 4 + (c.hash == HashFamily::simhash ? uint64_t(d + 2) * c.K * c.L * 4 : 0);
  Status st = r.expect("HASH", hash_bytes);
  if (!st.ok()) return st;
  unsigned char nb[4];
  if (!(st = r.payload(nb, 4)).ok()) return st;
  BytesReader nr{nb, 4};
  s->mips_norm2 = nr.f32();
  if (!(st = r.floats(&s->projection, size_t((hash_bytes - 4) / 4))).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  if (!is_finite(s->mips_norm2) || s->mips_norm2 < 0) return r.fail("section HASH: the MIPS norm is not a finite non-negative number");
  if (!(st = r.expect("CODE", N * c.L * 4)).ok()) return st;
  if (!(st = r.u32s(&s->codes, size_t(N * c.L))).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  const uint32_t limit = 1u << c.K;
  for (size_t i = 0; i < s->codes.size(); ++i)
    if (s->codes[i] >= limit) return r.fail(strf("section CODE: code %u of neuron %zu is not below 2^K", s->codes[i], i / c.L));
  uint64_t freq_len = 0;
  if (!(st = r.expect("FREQ", ~uint64_t(0), &freq_len)).ok()) return st;
  if (freq_len < 12 + N * 4 || (freq_len - 12 - N * 4) % 4 != 0 || (freq_len - 12 - N * 4) / 4 > N)
    return r.fail(strf("section FREQ has %llu bytes, which does not fit %llu labels", (unsigned long long)freq_len, (unsigned long long)N));
  unsigned char eb[12];
  if (!(st = r.payload(eb, 12)).ok()) return st;
  BytesReader er{eb, 12};
  s->examples_counted = er.u64();
  const uint32_t listed = er.u32();
  if (uint64_t(listed) * 4 != freq_len - 12 - N * 4) return r.fail("section FREQ: the shortlist length does not match the section size");
  if (!(st = r.u32s(&s->label_count, size_t(N))).ok()) return st;
  if (!(st = r.u32s(&s->shortlist, listed)).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  for (uint32_t j : s->shortlist)
    if (j >= N) return r.fail(strf("section FREQ: shortlist label %u out of range [0, %llu)", j, (unsigned long long)N));
  return Status();
}

// The output layer's sections after OUTC: OUTW, OUTA (with optimizer state), HASH/CODE/FREQ (lsh).
uint32_t output_sections(bool lsh, bool optimizer) { return 1 + (optimizer ? 1 : 0) + (lsh ? 3 : 0); }
void write_output_layer(SectionWriter& w, OutputCore& core, bool optimizer) {
  const std::vector<StateArray> state = core.state();
  write_state(w, "OUTW", state, false);
  if (optimizer) write_state(w, "OUTA", state, true);
  if (core.lsh()) write_index(w, core.index_state(), core.labels());
}
Status read_output_layer(SectionReader& r, OutputCore& core, const Config& c, const OutputShape& s, const Exec& x) {
  const std::vector<StateArray> state = core.state();
  Status st = read_state(r, "OUTW", state, false);
  if (st.ok() && s.optimizer) st = read_state(r, "OUTA", state, true);
  if (!st.ok()) return st;
  OutputCore::IndexState index;
  if (core.lsh() && !(st = read_index(r, c, s.d, s.N, &index)).ok()) return st;
  index.generation = s.generation;
  st = core.restore(s.step, &index, x);
  return st.ok() ? st : r.fail("output layer: " + st.message());
}

// The END section, nothing after it, and as many sections as the header said.
Status read_end(SectionReader& r, uint64_t file_size, uint32_t sections) {
  char tag[5];
  uint64_t len;
  Status st = r.next(tag, &len);
  if (!st.ok()) return st;
  if (std::strcmp(tag, "END ") != 0) return r.fail(strf("expected the END section, found '%s'", tag));
  if (len != 0) return r.fail(strf("the END section must be empty, it claims %llu bytes", (unsigned long long)len));
  if (!(st = r.check_crc()).ok()) return st;
  if (r.offset() != file_size) return r.fail("trailing bytes after the END section");
  if (r.sections_read() != sections)
    return Status::error(strf("%s: the header declares %u sections but the file has %u (corrupted header)", r.name().c_str(),
                              sections, r.sections_read()));
  return Status();
}

// ---- Opening a file: the header every version shares. ----

struct OpenedFile {
  std::FILE* f = nullptr;
  uint64_t size = 0;
  uint32_t version = 0, sections = 0;
  ~OpenedFile() {
    if (f) std::fclose(f);
  }
};

Status open_model_file(const std::string& path, OpenedFile* o) {
  // Checked before opening: opening a FIFO without a writer would block forever.
  const PathKind kind = path_kind(path);
  if (kind == PathKind::directory) return Status::error(path + ": is a directory, not a model file");
  if (kind == PathKind::other) return Status::error(path + ": not a regular file (a model is read from a file whose size is known)");
  o->f = std::fopen(path.c_str(), "rb");
  if (!o->f) return Status::error(strf("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
  bool is_directory = false;
  const int64_t size = open_file_size(o->f, &is_directory);
  if (is_directory) return Status::error(path + ": is a directory, not a model file");
  if (size < 0) return Status::error(path + ": not a regular file (a model is read from a file whose size is known)");
  o->size = uint64_t(size);
  unsigned char head[16];
  if (o->size < 16) return Status::error(strf("%s: byte 0: file truncated in the file header (needs 16 bytes, %llu left)", path.c_str(),
                                             (unsigned long long)o->size));
  if (std::fread(head, 1, 16, o->f) != 16) return Status::error(path + ": read error in the file header");
  if (std::memcmp(head, kMagic, 8) != 0) return Status::error(path + ": not a mongoose model (wrong magic number)");
  BytesReader hr{head + 8, 8};
  o->version = hr.u32();
  o->sections = hr.u32();
  if (o->version < 1 || o->version > kFormatVersion)
    return Status::error(strf("%s: unknown format version %u (this library reads versions 1 to %u)", path.c_str(), o->version, kFormatVersion));
  // A layer file has at least OUTC, OUTW and END; a model file of versions 1-3 at least 5.
  if (o->sections < (o->version >= 4 ? 3u : 5u) || o->sections > 64)
    return Status::error(strf("%s: implausible section count %u", path.c_str(), o->sections));
  return Status();
}

void write_header(SectionWriter& w, uint32_t sections) {
  Bytes head;
  head.b.assign(kMagic, 8);
  head.u32(kFormatVersion);
  head.u32(sections);
  w.raw(head.b.data(), head.b.size());
}

// Reads OUTC into *c and *s, checking the shapes against the file before anything is allocated.
Status read_output_config(SectionReader& r, Config* c, OutputShape* s) {
  const size_t size = output_config_bytes();
  Status st = r.expect("OUTC", size, nullptr, "(a corrupted file?)");
  if (!st.ok()) return st;
  std::vector<unsigned char> bytes(size);
  if (!(st = r.payload(bytes.data(), bytes.size())).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  st = decode_output(bytes, c, s, r);
  if (!st.ok()) return st;
  if (s->N == 0 || s->N > 0xFFFFFFFFull) return r.fail("OUTC: label count out of range");
  if (s->d == 0 || s->d > 65536) return r.fail("OUTC: input width out of range");
  if (s->ld != round_up(size_t(s->d) + 2, 8)) return r.fail("OUTC: row stride does not match the input width");
  if (s->step > kMaxStep || s->generation > kMaxStep) return r.fail("OUTC: implausible step or generation counter (a corrupted file?)");
  return Status();
}

}  // namespace

Status save_model(const Model& model, const std::string& path, const SaveOptions& options) {
  if (!model.impl_) return Status::error("save_model: the model is not initialized");
  return guard("save_model", [&]() -> Status {
    // Saving reads through the components' state interfaces, which also serve loading.
    Model::Impl& m = const_cast<Model::Impl&>(*model.impl_);
    const bool opt = options.optimizer_state;
    std::vector<StateArray> input = m.input->state(), stack = m.stack.state(), output = m.output.state();
    for (const std::vector<StateArray>* s : {&input, &stack, &output}) {
      Status st = check_finite(path, *s, opt);
      if (!st.ok()) return st;
    }
    AtomicFile file;
    Status st = file.open(path);
    if (!st.ok()) return st;
    SectionWriter w(file.file());
    const size_t layers = m.stack.size();
    write_header(w, uint32_t(2 + (1 + opt) * (1 + layers) + output_sections(m.output.lsh(), opt) + 1));
    const std::string net = encode_network(m.cfg, m.D, m.step, m.epoch, opt);
    w.begin("NETW", net.size()); w.payload(net.data(), net.size()); w.end();
    OutputShape s{m.output.input_dim(), m.N, m.output.stride(), m.output.step(), m.output.index_state().generation, opt};
    const std::string out = encode_output(m.cfg, s);
    w.begin("OUTC", out.size()); w.payload(out.data(), out.size()); w.end();
    write_state(w, "INPW", input, false);
    if (opt) write_state(w, "INPA", input, true);
    for (size_t l = 0; l < layers; ++l) {
      const std::vector<StateArray> one(stack.begin() + ptrdiff_t(6 * l), stack.begin() + ptrdiff_t(6 * l + 6));
      write_state(w, "HIDW", one, false);
      if (opt) write_state(w, "HIDA", one, true);
    }
    write_output_layer(w, m.output, opt);
    w.begin("END ", 0); w.end();
    if (w.sections() + 0 != uint32_t(2 + (1 + opt) * (1 + layers) + output_sections(m.output.lsh(), opt) + 1))
      return Status::error("save_model: internal error: the section count does not match the header");
    return file.commit(w.ok());
  });
}

Status save_layer(const OutputLayer& layer, const std::string& path, const SaveOptions& options) {
  if (!layer.impl_) return Status::error("save_layer: the layer is not initialized");
  return guard("save_layer", [&]() -> Status {
    OutputLayer::Impl& m = const_cast<OutputLayer::Impl&>(*layer.impl_);
    const bool opt = options.optimizer_state;
    const std::vector<StateArray> state = m.core.state();
    Status st = check_finite(path, state, opt);
    if (!st.ok()) return Status::error("save_layer" + st.message().substr(std::strlen("save_model")));
    AtomicFile file;
    if (!(st = file.open(path)).ok()) return st;
    SectionWriter w(file.file());
    write_header(w, 1 + output_sections(m.core.lsh(), opt) + 1);
    OutputShape s{m.core.input_dim(), m.core.labels(), m.core.stride(), m.core.step(), m.core.index_state().generation, opt};
    const std::string out = encode_output(m.core.config(), s);
    w.begin("OUTC", out.size()); w.payload(out.data(), out.size()); w.end();
    write_output_layer(w, m.core, opt);
    w.begin("END ", 0); w.end();
    return file.commit(w.ok());
  });
}

namespace {
// Initialises the model a file describes and hands back its components to fill (load_model,
// Model's friend, provides it).
using ModelMaker = std::function<Status(const Config&, size_t features, size_t labels, Model::Impl** impl)>;
Status load_model_v4(const std::string& path, const OpenedFile& file, const LoadOptions& options, const ModelMaker& make);
Status load_model_legacy(const std::string& path, const OpenedFile& file, const LoadOptions& options, const ModelMaker& make);
}  // namespace

Status load_model(const std::string& path, Model* out, const LoadOptions& options) {
  if (!out) return Status::error("load_model: out is null");
  if (out->busy_) return Status::error("load_model: the model it would replace is training (from Config::on_progress?)");
  return guard("load_model", [&]() -> Status {
    OpenedFile file;
    Status st = open_model_file(path, &file);
    if (!st.ok()) return st;
    Model fresh;
    const ModelMaker make = [&](const Config& c, size_t features, size_t labels, Model::Impl** impl) {
      Status made = fresh.init(c, features, labels);
      if (made.ok()) *impl = fresh.impl_.get();
      return made;
    };
    st = file.version >= 4 ? load_model_v4(path, file, options, make) : load_model_legacy(path, file, options, make);
    if (!st.ok()) return st;
    *out = std::move(fresh);
    return Status();
  });
}

Status load_layer(const std::string& path, OutputLayer* out, const LoadOptions& options) {
  if (!out) return Status::error("load_layer: out is null");
  return guard("load_layer", [&]() -> Status {
    OpenedFile file;
    Status st = open_model_file(path, &file);
    if (!st.ok()) return st;
    if (file.version < 4) return Status::error(path + ": a model file of format version " + std::to_string(file.version) +
                                               ", not a layer file (load_model reads it)");
    SectionReader rr(file.f, path, file.size, options.max_bytes, 16);
    // A model file starts with NETW: say so rather than "expected OUTC".
    if (rr.peek_tag() == "NETW") return Status::error(path + ": a model file, not a layer file (load_model reads it)");
    Config c;
    OutputShape s;
    if (!(st = read_output_config(rr, &c, &s)).ok()) return st;
    apply_load_options(options, &c);
    if (options.expect_features && s.d != options.expect_features)
      return Status::error(strf("%s: the layer takes %llu inputs, the caller expects %zu", path.c_str(), (unsigned long long)s.d, options.expect_features));
    if (options.expect_labels && s.N != options.expect_labels)
      return Status::error(strf("%s: the layer has %llu labels, the caller expects %zu", path.c_str(), (unsigned long long)s.N, options.expect_labels));
    if (mul_sat(s.N, s.ld * (c.bf16 ? 2 : 4)) > file.size) return rr.fail("OUTC: the shapes need more bytes than the file has");
    OutputLayer fresh;
    st = fresh.init(c, size_t(s.d), size_t(s.N));
    if (!st.ok()) return rr.fail("OUTC: " + st.message());
    if (!(st = read_output_layer(rr, fresh.impl_->core, c, s, fresh.impl_->exec())).ok()) return st;
    if (!(st = read_end(rr, file.size, file.sections)).ok()) return st;
    *out = std::move(fresh);
    return Status();
  });
}

namespace {

// Version 4: NETW, OUTC, then every layer's sections in order.
Status load_model_v4(const std::string& path, const OpenedFile& file, const LoadOptions& options, const ModelMaker& make) {
  SectionReader r(file.f, path, file.size, options.max_bytes, 16);
  const std::string first = r.peek_tag();
  if (first == "OUTC") return Status::error(path + ": a layer file, not a model file (load_layer reads it)");
  if (first == "CONF")
    return r.fail(strf("the sections are those of format versions 1 to 3, but the header says version %u (a corrupted "
                       "version field?)", file.version));
  uint64_t net_len = 0;
  Status st = r.expect("NETW", ~uint64_t(0), &net_len);
  if (!st.ok()) return st;
  if (net_len < network_bytes(0) || net_len > network_bytes(kMaxHiddenLayers))
    return r.fail(strf("section NETW has %llu bytes, which fits no network (a corrupted file?)", (unsigned long long)net_len));
  std::vector<unsigned char> bytes(static_cast<size_t>(net_len), 0);
  if (!(st = r.payload(bytes.data(), bytes.size())).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  BytesReader b{bytes.data(), bytes.size()};
  Config c;
  c.input = InputKind(b.u32());
  const uint64_t D = b.u64();
  c.hidden = b.u32();
  const uint32_t layers = b.u32();
  if (layers > kMaxHiddenLayers || network_bytes(layers) != net_len)
    return r.fail(strf("section NETW has %llu bytes but declares %u hidden layers (a corrupted file?)", (unsigned long long)net_len, layers));
  c.hidden_layers.resize(layers);
  for (uint32_t& w : c.hidden_layers) w = b.u32();
  decode_training(b, &c);
  const uint64_t step = b.u64(), epoch = b.u64();
  const uint32_t flags = b.u32();
  if (flags & ~1u) return r.fail("NETW: unknown flags (written by a newer version?)");
  if (step > kMaxStep || epoch > kMaxStep) return r.fail("NETW: implausible step or epoch counter (a corrupted file?)");
  const bool optimizer = (flags & 1) != 0;
  Config trained_as = c;  // the training settings NETW holds win over OUTC's copy
  OutputShape s;
  if (!(st = read_output_config(r, &c, &s)).ok()) return st;
  c.learning_rate = trained_as.learning_rate; c.beta1 = trained_as.beta1; c.beta2 = trained_as.beta2;
  c.adam_eps = trained_as.adam_eps; c.batch_size = trained_as.batch_size; c.threads = trained_as.threads;
  c.seed = trained_as.seed; c.simd = trained_as.simd;
  apply_load_options(options, &c);
  st = validate(c);
  if (!st.ok()) return r.fail("NETW/OUTC: " + st.message());
  if (D == 0 || D > 0xFFFFFFFFull) return r.fail("NETW: feature count out of range");
  if (s.d != network_output_width(c)) return r.fail("OUTC: the output layer's input width does not match the network");
  if (options.expect_features && D != options.expect_features)
    return Status::error(strf("%s: the model takes %llu features, the caller expects %zu", path.c_str(), (unsigned long long)D, options.expect_features));
  if (options.expect_labels && s.N != options.expect_labels)
    return Status::error(strf("%s: the model has %llu labels, the caller expects %zu", path.c_str(), (unsigned long long)s.N, options.expect_labels));
  // The weights alone must fit in the file before anything is allocated for them.
  uint64_t weights = mul_sat(D, c.hidden);
  uint64_t in = c.hidden;
  for (uint32_t w : c.hidden_layers) weights = add_sat(weights, mul_sat(in, w)), in = w;
  if (add_sat(mul_sat(weights, 4), mul_sat(mul_sat(s.N, s.ld), c.bf16 ? 2 : 4)) > file.size)
    return r.fail(strf("NETW/OUTC: shapes (%llu features, %u hidden, %llu labels) need more bytes than the file has",
                       (unsigned long long)D, c.hidden, (unsigned long long)s.N));
  Model::Impl* made = nullptr;
  st = make(c, size_t(D), size_t(s.N), &made);
  if (!st.ok()) return r.fail("NETW/OUTC: " + st.message());
  Model::Impl& m = *made;
  const std::vector<StateArray> input = m.input->state(), stack = m.stack.state();
  if (!(st = read_state(r, "INPW", input, false)).ok()) return st;
  if (optimizer && !(st = read_state(r, "INPA", input, true)).ok()) return st;
  for (size_t l = 0; l < layers; ++l) {
    const std::vector<StateArray> one(stack.begin() + ptrdiff_t(6 * l), stack.begin() + ptrdiff_t(6 * l + 6));
    if (!(st = read_state(r, "HIDW", one, false)).ok()) return st;
    if (optimizer && !(st = read_state(r, "HIDA", one, true)).ok()) return st;
  }
  if (!(st = read_output_layer(r, m.output, c, s, m.exec())).ok()) return st;
  if (!(st = read_end(r, file.size, file.sections)).ok()) return st;
  m.step = step;
  m.epoch = epoch;
  m.own = TrainStats();
  m.own.epochs = epoch;
  m.merge_stats();
  return Status();
}

// Versions 1 to 3: one network shape (sparse input, one hidden layer), CONF then the arrays.
constexpr size_t kConfBytes = 4 * 36 + 8 * 8;  // 36 four-byte fields, 8 eight-byte ones

// CONF grew at the end: version 2 added hash_loss and triplet_margin, version 3 tail_drift.
size_t conf_bytes_of_version(uint32_t version) {
  return version == 1 ? kConfBytes - 12 : version == 2 ? kConfBytes - 4 : kConfBytes;
}

Status load_model_legacy(const std::string& path, const OpenedFile& file, const LoadOptions& options, const ModelMaker& make) {
  SectionReader r(file.f, path, file.size, options.max_bytes, 16);
  const uint32_t version = file.version;
  if (file.sections > 9) return Status::error(strf("%s: implausible section count %u", path.c_str(), file.sections));
  const size_t conf_bytes = conf_bytes_of_version(version);
  const std::string first = r.peek_tag();
  if (first == "NETW" || first == "OUTC")
    return r.fail(strf("the sections are those of format version 4, but the header says version %u (a corrupted "
                       "version field?)", version));
  uint64_t conf_len = 0;
  Status st = r.expect("CONF", ~uint64_t(0), &conf_len);
  if (!st.ok()) return st;
  if (conf_len != conf_bytes)
    return r.fail(strf("section CONF has %llu bytes, but format version %u has %zu (a corrupted version field?)",
                       (unsigned long long)conf_len, version, conf_bytes));
  std::vector<unsigned char> conf(conf_bytes);
  if (!(st = r.payload(conf.data(), conf.size())).ok()) return st;
  if (!(st = r.check_crc()).ok()) return st;
  BytesReader b{conf.data(), conf.size()};
  Config c;
  c.hidden = b.u32(); c.output = OutputMode(b.u32()); c.learning_rate = b.f32(); c.beta1 = b.f32(); c.beta2 = b.f32();
  c.adam_eps = b.f32(); c.batch_size = b.u32(); c.threads = b.u32(); c.seed = b.u64(); c.simd = Simd(b.u32());
  c.hash = HashFamily(b.u32()); c.K = b.u32(); c.L = b.u32(); c.hash_density = b.f32(); c.bucket_capacity = b.u32();
  c.bucket_policy = BucketPolicy(b.u32()); c.min_active = b.u32(); c.max_active = b.u32(); c.rehash_every = b.u32();
  c.rehash_decay = b.f32(); c.new_hash_every = b.u32(); c.scheduler = Scheduler(b.u32()); c.check_every = b.u32();
  c.detector_bits = b.u32(); c.tau = b.f32(); c.full_rebuild_fraction = b.f32(); c.drift_epsilon = b.f32();
  c.learn_hash = b.u32() != 0; c.learn_every = b.u32(); c.learn_queries = b.u32(); c.hash_steps = b.u32(); c.hash_lr = b.f32();
  c.hash_binarize = b.u32() != 0;
  const uint64_t D = b.u64(), N = b.u64(), ld = b.u64(), step = b.u64(), epoch = b.u64(), generation = b.u64();
  if (step > kMaxStep || epoch > kMaxStep || generation > kMaxStep)
    return r.fail("CONF: implausible step, epoch or generation counter (a corrupted file?)");
  const uint64_t flags = b.u64();
  if (flags & 0xFFFFFFFCull) return r.fail("CONF: unknown flags (written by a newer version?)");
  c.sampling_correction = (flags & 1) != 0;
  c.exact_retrieval = (flags & 2) != 0;
  c.detector_sample = uint32_t(flags >> 32);
  c.infer_shortlist = b.u32();
  if (version >= 2) {
    c.hash_loss = HashLoss(b.u32());
    c.triplet_margin = b.f32();
  }
  c.tail_drift = version >= 3 ? b.f32() : 0.0f;  // older models were trained without it
  apply_load_options(options, &c);
  st = validate(c);
  if (!st.ok()) return r.fail("CONF: " + st.message());
  if (D == 0 || D > 0xFFFFFFFFull || N == 0 || N > 0xFFFFFFFFull) return r.fail("CONF: feature or label count out of range");
  if (ld != round_up(size_t(c.hidden) + 2, 8)) return r.fail("CONF: row stride does not match the hidden size");
  if (options.expect_features && D != options.expect_features)
    return Status::error(strf("%s: the model takes %llu features, the caller expects %zu", path.c_str(), (unsigned long long)D, options.expect_features));
  if (options.expect_labels && N != options.expect_labels)
    return Status::error(strf("%s: the model has %llu labels, the caller expects %zu", path.c_str(), (unsigned long long)N, options.expect_labels));
  const bool lsh = c.output == OutputMode::lsh;
  // Everything the shapes imply must fit in the file before anything is allocated for it.
  const uint64_t H = c.hidden;
  const uint64_t w1 = D * H * 4, b1 = H * 4, w2 = N * ld * 4;
  const uint64_t hash_bytes = lsh ? 4 + (c.hash == HashFamily::simhash ? uint64_t(H + 2) * c.K * c.L * 4 : 0) : 0;
  const uint64_t code_bytes = lsh ? N * c.L * 4 : 0;
  const uint64_t freq_bytes = lsh ? 12 + N * 4 : 0;
  if (w1 / 4 / H != D || w2 / 4 / ld != N || w1 + b1 + w2 + hash_bytes + code_bytes + freq_bytes > file.size)
    return r.fail(strf("CONF: shapes (%llu features, %llu hidden, %llu labels) need more bytes than the file has",
                       (unsigned long long)D, (unsigned long long)H, (unsigned long long)N));
  Model::Impl* made = nullptr;
  st = make(c, size_t(D), size_t(N), &made);
  if (!st.ok()) return r.fail("CONF: " + st.message());
  Model::Impl& m = *made;
  const std::vector<StateArray> input = m.input->state(), output = m.output.state();
  // W1, b1 and W2 in sections of their own; the moments of all three in one ADAM section.
  for (const auto& sec : {std::make_pair("W1  ", input[0]), std::make_pair("B1  ", input[1]), std::make_pair("W2  ", output[0])})
    if (!(st = read_state(r, sec.first, {sec.second}, false)).ok()) return st;
  OutputCore::IndexState index;
  if (lsh && !(st = read_index(r, c, H, N, &index)).ok()) return st;
  index.generation = generation;
  if (r.peek_tag() == "ADAM") {
    const std::vector<StateArray> moments = {input[2], input[3], input[4], input[5], output[1], output[2]};
    if (!(st = read_state(r, "ADAM", moments, true)).ok()) return st;
  }
  OutputShape s{H, N, ld, step, generation, false};
  st = m.output.restore(step, &index, m.exec());
  if (!st.ok()) return r.fail("section W2: " + st.message());
  if (!(st = read_end(r, file.size, file.sections)).ok()) return st;
  (void)s;
  m.step = step;
  m.epoch = epoch;
  m.own = TrainStats();
  m.own.epochs = epoch;
  m.merge_stats();
  return Status();
}

}  // namespace

}  // namespace mongoose

//-----------------------------------------------------------------------------------------------
// [SECTION] C API
//-----------------------------------------------------------------------------------------------
// Thin wrappers: each checks its pointers and sizes, calls the C++ API inside a guard (nothing
// thrown leaves through a C frame) and turns the Status into a code and a message.

struct mg_dataset {
  mongoose::Dataset data;
};

struct mg_model {
  mongoose::Model model;
};

namespace {

// Writes code and message into *err (when given) and returns the code. Formats into the fixed
// buffer without allocating, so it also works in an out-of-memory handler.
MONGOOSE_PRINTF_LIKE(3, 4)
int c_result(mg_error* err, int code, const char* fmt, ...) {
  if (err) {
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    int n = std::vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n < 0) err->message[0] = '\0';
  }
  return code;
}

int c_ok(mg_error* err) { return c_result(err, MG_OK, "%s", ""); }

// A library Status as a C status: ok, or `code` with its message.
int c_status(mg_error* err, int code, const mongoose::Status& st) {
  return st.ok() ? c_ok(err) : c_result(err, code, "%s", st.message().c_str());
}

// Runs a C entry point's body: whatever escapes it becomes MG_ERROR_FAILED naming `where`.
template <class F>
int c_guard(const char* where, mg_error* err, F&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return c_result(err, MG_ERROR_FAILED, "%s: out of memory", where);
  } catch (const std::exception& e) {
    return c_result(err, MG_ERROR_FAILED, "%s: %s", where, e.what());
  } catch (...) {
    return c_result(err, MG_ERROR_FAILED, "%s: an unknown exception was thrown", where);
  }
}

// Checks one CSR offset array before anything is read through it: rows + 1 entries from 0,
// never decreasing, ending at nnz. Returns "" or the fault.
std::string csr_offsets_fault(const char* name, const uint64_t* indptr, size_t rows, size_t nnz) {
  if (indptr[0] != 0) return mongoose::strf("%s[0] is %llu, not 0", name, (unsigned long long)indptr[0]);
  for (size_t r = 0; r < rows; ++r)
    if (indptr[r + 1] < indptr[r] || indptr[r + 1] > nnz)
      return mongoose::strf("%s[%zu] = %llu is below %s[%zu] or above the nnz given (%zu)", name, r + 1,
                            (unsigned long long)indptr[r + 1], name, r, nnz);
  if (indptr[rows] != nnz)
    return mongoose::strf("%s[%zu] = %llu, not the nnz given (%zu)", name, rows, (unsigned long long)indptr[rows], nnz);
  return std::string();
}

// The C configuration as a mongoose::Config; "" or the field that has no meaning.
std::string config_from_c(const mg_config& c, mongoose::Config* out) {
  mongoose::Config cfg;
  switch (c.output) {
    case MG_OUTPUT_FULL: cfg.output = mongoose::OutputMode::full; break;
    case MG_OUTPUT_LSH: cfg.output = mongoose::OutputMode::lsh; break;
    case MG_OUTPUT_MONGOOSE:  // as mongoose-train --output mongoose
      cfg.output = mongoose::OutputMode::lsh;
      cfg.scheduler = mongoose::Scheduler::detect;
      cfg.learn_hash = true;
      break;
    default: return mongoose::strf("output is %d, not MG_OUTPUT_FULL, MG_OUTPUT_LSH or MG_OUTPUT_MONGOOSE", int(c.output));
  }
  if (c.hash == MG_HASH_SIMHASH) cfg.hash = mongoose::HashFamily::simhash;
  else if (c.hash == MG_HASH_DWTA) cfg.hash = mongoose::HashFamily::dwta;
  else return mongoose::strf("hash is %d, not MG_HASH_SIMHASH or MG_HASH_DWTA", int(c.hash));
  if (c.max_bytes > uint64_t(SIZE_MAX)) return "max_bytes does not fit in size_t";
  cfg.hidden = c.hidden;
  cfg.learning_rate = c.learning_rate;
  cfg.batch_size = c.batch_size;
  cfg.threads = c.threads;
  cfg.seed = c.seed;
  cfg.simd = c.scalar ? mongoose::Simd::scalar : mongoose::Simd::automatic;
  cfg.K = c.K;
  cfg.L = c.L;
  cfg.min_active = c.min_active;
  cfg.max_active = c.max_active;
  cfg.tail_drift = c.tail_drift;
  cfg.rehash_every = c.rehash_every;
  cfg.infer_shortlist = c.infer_shortlist;
  cfg.max_bytes = size_t(c.max_bytes);
  *out = std::move(cfg);
  return std::string();
}

bool infer_from_c(int32_t infer, mongoose::InferMode* mode) {
  if (infer == MG_INFER_FULL) *mode = mongoose::InferMode::full;
  else if (infer == MG_INFER_LSH) *mode = mongoose::InferMode::lsh;
  else return false;
  return true;
}

}  // namespace

extern "C" {

void mg_config_init(mg_config* config) {
  if (!config) return;
  const mongoose::Config d;
  *config = mg_config{};
  config->output = MG_OUTPUT_FULL;
  config->hidden = d.hidden;
  config->learning_rate = d.learning_rate;
  config->batch_size = d.batch_size;
  config->threads = d.threads;
  config->seed = d.seed;
  config->scalar = 0;
  config->hash = MG_HASH_SIMHASH;
  config->K = d.K;
  config->L = d.L;
  config->min_active = d.min_active;
  config->max_active = d.max_active;
  config->tail_drift = d.tail_drift;
  config->rehash_every = d.rehash_every;
  config->infer_shortlist = d.infer_shortlist;
  config->max_bytes = d.max_bytes;
}

int mg_dataset_read(const char* path, mg_dataset** out, mg_error* err) {
  if (out) *out = nullptr;
  if (!path || !out) return c_result(err, MG_ERROR_ARGUMENT, "mg_dataset_read: %s is NULL", path ? "out" : "path");
  return c_guard("mg_dataset_read", err, [&] {
    std::unique_ptr<mg_dataset> d(new mg_dataset);
    mongoose::Status st = mongoose::read_dataset(path, &d->data);
    if (st.ok()) *out = d.release();
    return c_status(err, MG_ERROR_FILE, st);
  });
}

int mg_dataset_from_csr(size_t rows, size_t features, size_t labels, const uint64_t* feature_indptr,
                        const uint32_t* feature_indices, const float* feature_values, size_t feature_nnz,
                        const uint64_t* label_indptr, const uint32_t* label_indices, size_t label_nnz,
                        mg_dataset** out, mg_error* err) {
  const char* where = "mg_dataset_from_csr";
  if (out) *out = nullptr;
  if (!out) return c_result(err, MG_ERROR_ARGUMENT, "%s: out is NULL", where);
  if (!feature_indptr) return c_result(err, MG_ERROR_ARGUMENT, "%s: feature_indptr is NULL", where);
  if (feature_nnz && !feature_indices) return c_result(err, MG_ERROR_ARGUMENT, "%s: feature_indices is NULL", where);
  if (!label_indptr && label_nnz)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: label_indptr is NULL but label_nnz is %zu", where, label_nnz);
  if (label_nnz && !label_indices) return c_result(err, MG_ERROR_ARGUMENT, "%s: label_indices is NULL", where);
  if (rows == SIZE_MAX) return c_result(err, MG_ERROR_ARGUMENT, "%s: rows is SIZE_MAX", where);
  return c_guard(where, err, [&] {
    // The arrays' sizes follow from rows and the nnz counts: check them against the default
    // budget before copying (the Dataset's vectors hold 8 + 8 bytes per row, 8 per feature and
    // 4 per label entry).
    const uint64_t bytes = mongoose::add_sat(mongoose::mul_sat(rows, 16),
                                             mongoose::add_sat(mongoose::mul_sat(feature_nnz, 8),
                                                               mongoose::mul_sat(label_nnz, 4)));
    if (bytes > mongoose::default_max_bytes)
      return c_result(err, MG_ERROR_ARGUMENT, "%s: %llu bytes needed, above the budget of %llu", where,
                      (unsigned long long)bytes, (unsigned long long)mongoose::default_max_bytes);
    std::string fault = csr_offsets_fault("feature_indptr", feature_indptr, rows, feature_nnz);
    if (fault.empty() && label_indptr) fault = csr_offsets_fault("label_indptr", label_indptr, rows, label_nnz);
    if (!fault.empty()) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s", where, fault.c_str());
    std::unique_ptr<mg_dataset> d(new mg_dataset);
    mongoose::Dataset& data = d->data;
    data.rows = rows;
    data.features = features;
    data.labels = labels;
    data.row_offsets.assign(feature_indptr, feature_indptr + rows + 1);
    data.feature_ids.assign(feature_indices, feature_indices + feature_nnz);
    if (feature_values) data.feature_values.assign(feature_values, feature_values + feature_nnz);
    else data.feature_values.assign(feature_nnz, 1.0f);
    if (label_indptr) data.label_offsets.assign(label_indptr, label_indptr + rows + 1);
    else data.label_offsets.assign(rows + 1, 0);
    data.label_ids.assign(label_indices, label_indices + label_nnz);
    mongoose::Status st = mongoose::validate(data);
    if (!st.ok()) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s", where, st.message().c_str());
    *out = d.release();
    return c_ok(err);
  });
}

int mg_dataset_normalize(mg_dataset* data, mg_error* err) {
  if (!data) return c_result(err, MG_ERROR_ARGUMENT, "mg_dataset_normalize: data is NULL");
  return c_guard("mg_dataset_normalize", err,
                 [&] { return c_status(err, MG_ERROR_FAILED, mongoose::normalize_rows(&data->data)); });
}

size_t mg_dataset_rows(const mg_dataset* data) { return data ? data->data.rows : 0; }
size_t mg_dataset_features(const mg_dataset* data) { return data ? data->data.features : 0; }
size_t mg_dataset_labels(const mg_dataset* data) { return data ? data->data.labels : 0; }
void mg_dataset_free(mg_dataset* data) { delete data; }

int mg_model_create(const mg_config* config, size_t features, size_t labels, mg_model** out, mg_error* err) {
  const char* where = "mg_model_create";
  if (out) *out = nullptr;
  if (!config || !out) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s is NULL", where, config ? "out" : "config");
  return c_guard(where, err, [&] {
    mongoose::Config cfg;
    std::string fault = config_from_c(*config, &cfg);
    if (!fault.empty()) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s", where, fault.c_str());
    mongoose::Status st = mongoose::validate(cfg);
    if (!st.ok()) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s", where, st.message().c_str());
    std::unique_ptr<mg_model> m(new mg_model);
    st = m->model.init(cfg, features, labels);
    if (st.ok()) *out = m.release();
    return c_status(err, MG_ERROR_FAILED, st);
  });
}

int mg_model_train_epoch(mg_model* model, const mg_dataset* data, double* mean_loss, mg_error* err) {
  if (!model || !data)
    return c_result(err, MG_ERROR_ARGUMENT, "mg_model_train_epoch: %s is NULL", model ? "data" : "model");
  return c_guard("mg_model_train_epoch", err, [&] {
    mongoose::Status st = model->model.train_epoch(data->data);
    if (st.ok() && mean_loss) *mean_loss = model->model.stats().mean_loss_last_epoch;
    return c_status(err, MG_ERROR_FAILED, st);
  });
}

int mg_model_train_batch(mg_model* model, const mg_dataset* data, size_t begin, size_t end, float* loss,
                         mg_error* err) {
  const char* where = "mg_model_train_batch";
  if (!model || !data) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s is NULL", where, model ? "data" : "model");
  if (begin >= end || end > data->data.rows)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: rows [%zu, %zu) are not a non-empty range of the %zu rows", where,
                    begin, end, data->data.rows);
  if (end > size_t(UINT32_MAX) + 1)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: row %zu is beyond 32-bit row ids", where, end - 1);
  return c_guard(where, err, [&] {
    std::vector<uint32_t> rows(end - begin);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = uint32_t(begin + i);
    return c_status(err, MG_ERROR_FAILED, model->model.train_batch(data->data, rows.data(), rows.size(), loss));
  });
}

int mg_model_evaluate(const mg_model* model, const mg_dataset* data, int32_t infer, mg_metrics* out, mg_error* err) {
  const char* where = "mg_model_evaluate";
  if (!model || !data || !out)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: %s is NULL", where, !model ? "model" : !data ? "data" : "out");
  mongoose::InferMode mode;
  if (!infer_from_c(infer, &mode))
    return c_result(err, MG_ERROR_ARGUMENT, "%s: infer is %d, not MG_INFER_FULL or MG_INFER_LSH", where, int(infer));
  return c_guard(where, err, [&] {
    mongoose::Metrics m;
    mongoose::Status st = model->model.evaluate(data->data, mode, &m);
    if (st.ok()) *out = mg_metrics{m.p_at_1, m.p_at_3, m.p_at_5, uint64_t(m.rows), m.seconds};
    return c_status(err, MG_ERROR_FAILED, st);
  });
}

int mg_model_predict(const mg_model* model, const uint32_t* ids, const float* values, size_t nnz, size_t k,
                     int32_t infer, uint32_t* labels, float* scores, size_t* count, mg_error* err) {
  const char* where = "mg_model_predict";
  if (count) *count = 0;
  if (!model || !labels) return c_result(err, MG_ERROR_ARGUMENT, "%s: %s is NULL", where, model ? "labels" : "model");
  if (nnz && !ids) return c_result(err, MG_ERROR_ARGUMENT, "%s: ids is NULL with nnz %zu", where, nnz);
  if (k == 0) return c_result(err, MG_ERROR_ARGUMENT, "%s: k must be >= 1", where);
  mongoose::InferMode mode;
  if (!infer_from_c(infer, &mode))
    return c_result(err, MG_ERROR_ARGUMENT, "%s: infer is %d, not MG_INFER_FULL or MG_INFER_LSH", where, int(infer));
  return c_guard(where, err, [&] {
    std::vector<float> ones;
    if (!values) ones.assign(nnz, 1.0f), values = ones.data();
    std::vector<mongoose::Scored> top;
    mongoose::Status st = model->model.predict(ids, values, nnz, k, mode, &top);
    if (!st.ok()) return c_status(err, MG_ERROR_FAILED, st);
    for (size_t i = 0; i < top.size() && i < k; ++i) {
      labels[i] = top[i].label;
      if (scores) scores[i] = top[i].score;
    }
    if (count) *count = std::min(top.size(), k);
    return c_ok(err);
  });
}

int mg_model_predict_dataset(const mg_model* model, const mg_dataset* data, size_t k, int32_t infer, uint32_t* labels,
                             float* scores, mg_error* err) {
  const char* where = "mg_model_predict_dataset";
  if (!model || !data || !labels)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: %s is NULL", where, !model ? "model" : !data ? "data" : "labels");
  if (k == 0) return c_result(err, MG_ERROR_ARGUMENT, "%s: k must be >= 1", where);
  if (data->data.rows && k > SIZE_MAX / data->data.rows)
    return c_result(err, MG_ERROR_ARGUMENT, "%s: rows x k overflows size_t", where);
  mongoose::InferMode mode;
  if (!infer_from_c(infer, &mode))
    return c_result(err, MG_ERROR_ARGUMENT, "%s: infer is %d, not MG_INFER_FULL or MG_INFER_LSH", where, int(infer));
  return c_guard(where, err, [&] {
    // A dataset from mg_dataset_read or mg_dataset_from_csr was validated; the model checks its
    // ids against its own sizes in predict.
    std::vector<mongoose::Scored> top;
    for (size_t r = 0; r < data->data.rows; ++r) {
      const mongoose::Dataset::Row row = data->data.row(r);
      mongoose::Status st = model->model.predict(row.ids, row.values, row.nnz, k, mode, &top);
      if (!st.ok()) return c_result(err, MG_ERROR_FAILED, "%s: row %zu: %s", where, r, st.message().c_str());
      for (size_t i = 0; i < k; ++i) {
        const bool have = i < top.size();
        labels[r * k + i] = have ? top[i].label : UINT32_MAX;
        if (scores) scores[r * k + i] = have ? top[i].score : -std::numeric_limits<float>::infinity();
      }
    }
    return c_ok(err);
  });
}

int mg_model_save(const mg_model* model, const char* path, mg_error* err) {
  if (!model || !path) return c_result(err, MG_ERROR_ARGUMENT, "mg_model_save: %s is NULL", model ? "path" : "model");
  return c_guard("mg_model_save", err,
                 [&] { return c_status(err, MG_ERROR_FILE, mongoose::save_model(model->model, path)); });
}

int mg_model_load(const char* path, mg_model** out, mg_error* err) {
  if (out) *out = nullptr;
  if (!path || !out) return c_result(err, MG_ERROR_ARGUMENT, "mg_model_load: %s is NULL", path ? "out" : "path");
  return c_guard("mg_model_load", err, [&] {
    std::unique_ptr<mg_model> m(new mg_model);
    mongoose::Status st = mongoose::load_model(path, &m->model);
    if (st.ok()) *out = m.release();
    return c_status(err, MG_ERROR_FILE, st);
  });
}

size_t mg_model_features(const mg_model* model) { return model ? model->model.features() : 0; }
size_t mg_model_labels(const mg_model* model) { return model ? model->model.labels() : 0; }
void mg_model_free(mg_model* model) { delete model; }

}  // extern "C"
