// Shared helpers for the tests: where the real datasets live, and a skip message when absent;
// which vector kernel tables this build and CPU run.
#pragma once
#include <dirent.h>
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../mongoose.h"

#if defined(_WIN32)
// mingw-w64 has most of the POSIX calls the tests use; these two it lacks (no symlinks to avoid).
#include <direct.h>
#include <fcntl.h>
#include <io.h>
inline int lstat(const char* path, struct stat* st) { return stat(path, st); }
inline int mkdir(const char* path, int /*mode*/) { return _mkdir(path); }
inline long pwrite(int fd, const void* data, size_t size, long long offset) {
  _setmode(fd, _O_BINARY);  // open() gives text mode on Windows, which would rewrite '\n'
  if (_lseeki64(fd, offset, SEEK_SET) < 0) return -1;
  return _write(fd, data, unsigned(size));
}
inline char* mkdtemp(char* pattern) {
  const size_t n = std::strlen(pattern);
  for (unsigned attempt = 0; attempt < 100; ++attempt) {
    const std::string tail = std::to_string((unsigned(std::rand()) * 7919u + attempt) % 1000000u);
    std::string name(pattern, n - 6);
    name += std::string(6 - std::min<size_t>(6, tail.size()), '0') + tail.substr(0, 6);
    if (_mkdir(name.c_str()) == 0) {
      std::memcpy(pattern, name.data(), n);
      return pattern;
    }
  }
  return nullptr;
}
#endif

#ifndef MONGOOSE_SOURCE_DIR
#define MONGOOSE_SOURCE_DIR "."
#endif

// ../shared/data next to the repository, or "" when absent (tests then skip with a message).
inline std::string shared_data_dir() {
  const char* env = std::getenv("MONGOOSE_DATA");
  std::string dir = env ? env : std::string(MONGOOSE_SOURCE_DIR) + "/../shared/data";
  struct stat st;
  return stat(dir.c_str(), &st) == 0 ? dir : std::string();
}

// ---- Files and directories (POSIX; tests only). ----

// Removes a file or a directory tree (no symlinks are followed).
inline void remove_tree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR* d = opendir(path.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      closedir(d);
      for (const std::string& n : names) remove_tree(path + "/" + n);
    }
    rmdir(path.c_str());
  } else {
    unlink(path.c_str());
  }
}

// A fresh directory $TMPDIR/mongoose_io_<pid>_XXXXXX (or under /tmp), removed with its contents.
struct TempDir {
  std::string path;
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/mongoose_io_" + std::to_string(getpid()) + "_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    const char* made = mkdtemp(buf.data());
    REQUIRE_MESSAGE(made != nullptr, "mkdtemp failed: ", std::strerror(errno));
    path = made;
  }
  ~TempDir() { remove_tree(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

inline bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE_MESSAGE(f != nullptr, "cannot write ", path);
  size_t n = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  REQUIRE(std::fclose(f) == 0);
  REQUIRE(n == bytes.size());
}


// The non-scalar kernel levels that really run here (kernels(level).level == level): AVX2 on x86
// CPUs with AVX2+FMA, NEON on ARM builds with NEON, none on a scalar-only build. Tests that
// compare a vector path with the scalar one loop over these.
inline std::vector<mongoose::Simd> vector_levels() {
  std::vector<mongoose::Simd> out;
  for (mongoose::Simd s : {mongoose::Simd::avx2, mongoose::Simd::neon})
    if (mongoose::kernels(s).level == s) out.push_back(s);
  return out;
}
