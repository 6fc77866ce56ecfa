// Shared helpers for the tests: where the real datasets live, and a skip message when absent.
#pragma once
#include <string>
#include <sys/stat.h>

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
