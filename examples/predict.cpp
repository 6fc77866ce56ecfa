// mongoose-predict: loads a saved model and prints the top-k labels with their scores for every
// row of an XC text file (the rows' labels, if any, are ignored).
//
//   c++ -O2 -std=c++17 -pthread examples/predict.cpp mongoose.cpp -o mongoose-predict
//   ./mongoose-predict --model model.bin --input test.txt --k 5 [--infer full|lsh]
//
// Output: one line per row, "label:score label:score ...", best first.
// Exit status: 0 on success, 1 on a model or data error, 2 on a usage error.

#include "../mongoose.h"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

namespace {
std::string feature_mismatch(const std::string& path, size_t declared, size_t model_features) {
  return path + ": declares " + std::to_string(declared) + " features but the model takes " +
         std::to_string(model_features) + " (another data set?)";
}
}  // namespace

int main(int argc, char** argv) {
  std::string model_path, input_path;
  uint64_t k = 5;
  mongoose::InferMode mode = mongoose::InferMode::full;
  const char* usage = "usage: mongoose-predict --model FILE --input FILE [--k 5] [--infer full|lsh]\n";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (a != "--model" && a != "--input" && a != "--k" && a != "--infer") {
      std::fprintf(stderr, "mongoose-predict: unknown option %s\n", a.c_str());
      return 2;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "mongoose-predict: missing value after %s\n", a.c_str());
      return 2;
    }
    std::string v = argv[++i];
    if ((a == "--model" || a == "--input") && v.empty()) {
      std::fprintf(stderr, "mongoose-predict: %s needs a file path\n", a.c_str());
      return 2;
    }
    if (a == "--model") model_path = v;
    else if (a == "--input") input_path = v;
    else if (a == "--k") {
      // Digits only: "5.5", "0x10" or "-1" are refused, not truncated.
      auto res = std::from_chars(v.data(), v.data() + v.size(), k);
      bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || res.ec != std::errc() || res.ptr != v.data() + v.size() || k < 1 || k > 100000) {
        std::fprintf(stderr, "mongoose-predict: bad value '%s' for --k (expected 1..100000)\n", v.c_str());
        return 2;
      }
    } else if (a == "--infer") {
      if (v == "full") mode = mongoose::InferMode::full;
      else if (v == "lsh") mode = mongoose::InferMode::lsh;
      else {
        std::fprintf(stderr, "mongoose-predict: bad value '%s' for --infer (expected full or lsh)\n", v.c_str());
        return 2;
      }
    }
  }
  if (model_path.empty() || input_path.empty()) {
    std::fputs(usage, stderr);
    return 2;
  }
  mongoose::Model model;
  mongoose::Status st = mongoose::load_model(model_path, &model);
  mongoose::Dataset data;
  if (st.ok()) st = mongoose::read_dataset(input_path, &data);
  // Feature ids mean nothing across data sets: the input must declare the model's feature count.
  if (st.ok() && data.features != model.features())
    st = mongoose::Status::error(feature_mismatch(input_path, data.features, model.features()));
  if (st.ok() && data.labels > model.labels())
    st = mongoose::Status::error(input_path + ": declares " + std::to_string(data.labels) + " labels, more than the model's " +
                                 std::to_string(model.labels()) + " (another data set?)");
  std::vector<mongoose::Scored> top;
  std::string line;
  for (size_t r = 0; st.ok() && r < data.rows; ++r) {
    mongoose::Dataset::Row row = data.row(r);
    st = model.predict(row.ids, row.values, row.nnz, size_t(k), mode, &top);
    line.clear();
    char buf[64];
    for (size_t i = 0; st.ok() && i < top.size(); ++i) {
      std::snprintf(buf, sizeof buf, "%s%u:%.6g", i ? " " : "", top[i].label, double(top[i].score));
      line += buf;
    }
    if (st.ok()) std::printf("%s\n", line.c_str());
  }
  if (st.ok() && (std::fflush(stdout) != 0 || std::ferror(stdout)))
    st = mongoose::Status::error(std::string("writing the predictions failed: ") + std::strerror(errno));
  if (!st.ok()) {
    std::fprintf(stderr, "mongoose-predict: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}
