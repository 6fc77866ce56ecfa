// mongoose-convert: converts a dataset between XC text and the binary dataset format.
//
//   c++ -O2 -std=c++17 -pthread examples/convert.cpp mongoose.cpp -o mongoose-convert
//   ./mongoose-convert IN OUT [--to binary|text]
//
// IN may be either kind (read_dataset tells them apart by the binary format's magic); OUT is
// written atomically, in binary unless --to text. Binary files read without parsing: convert
// large training files once, then train from the copy (mongoose-train reads both kinds).
// Prints one line: rows, features, labels, non-zeros, bytes in and out, seconds to read.
// Exit status: 0 on success, 1 on a data or I/O error, 2 on a usage error.

#include "../mongoose.h"

#include <chrono>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  std::string in, out, to = "binary";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--to" && i + 1 < argc) to = argv[++i];
    else if (in.empty()) in = a;
    else if (out.empty()) out = a;
    else in.clear(), i = argc;
  }
  if (in.empty() || out.empty() || (to != "binary" && to != "text")) {
    std::fprintf(stderr, "usage: mongoose-convert IN OUT [--to binary|text]\n");
    return 2;
  }
  mongoose::Dataset data;
  const auto t0 = std::chrono::steady_clock::now();
  mongoose::Status st = mongoose::read_dataset(in, &data);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (st.ok()) st = to == "binary" ? mongoose::save_dataset(out, data) : mongoose::write_xc(out, data);
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-convert: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("converted rows=%zu features=%zu labels=%zu nnz=%zu read_seconds=%.3f\n", data.rows, data.features,
              data.labels, data.feature_ids.size(), seconds);
  return 0;
}
