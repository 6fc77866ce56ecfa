// Shared helpers for the tests: where the real datasets live, and a skip message when absent;
// which vector kernel tables this build and CPU run.
#pragma once
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "../mongoose.h"

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

// The non-scalar kernel levels that really run here (kernels(level).level == level): AVX2 on x86
// CPUs with AVX2+FMA, NEON on ARM builds with NEON, none on a scalar-only build. Tests that
// compare a vector path with the scalar one loop over these.
inline std::vector<mongoose::Simd> vector_levels() {
  std::vector<mongoose::Simd> out;
  for (mongoose::Simd s : {mongoose::Simd::avx2, mongoose::Simd::neon})
    if (mongoose::kernels(s).level == s) out.push_back(s);
  return out;
}
