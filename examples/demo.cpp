// mongoose-demo: makes synthetic multi-label data, trains the full softmax and the LSH-sampled
// layer on it, and prints P@k and time for both. Runs in well under a minute.
//
//   c++ -O2 -std=c++17 -pthread examples/demo.cpp mongoose.cpp -o mongoose-demo && ./mongoose-demo

#include "../mongoose.h"

#include <cstdio>

int main() {
  mongoose::SyntheticConfig data_cfg;  // 20,000 train / 5,000 test rows, 5,000 features
  data_cfg.labels = 20000;
  mongoose::Dataset train, test;
  mongoose::Status st = mongoose::make_synthetic(data_cfg, &train, &test);
  if (!st.ok()) {
    std::fprintf(stderr, "demo: %s\n", st.message().c_str());
    return 1;
  }
  std::printf("synthetic data: %zu train rows, %zu test rows, %zu features, %zu labels\n", train.rows, test.rows,
              train.features, train.labels);

  for (mongoose::OutputMode mode : {mongoose::OutputMode::full, mongoose::OutputMode::lsh}) {
    mongoose::Config cfg;  // hidden 128, Adam 1e-3, batch 128, all cores
    cfg.output = mode;
    mongoose::Model model;
    st = model.init(cfg, train.features, train.labels);
    for (int epoch = 0; st.ok() && epoch < 3; ++epoch) st = model.train_epoch(train);
    mongoose::Metrics m;
    if (st.ok()) st = model.evaluate(test, mongoose::InferMode::full, &m);
    if (!st.ok()) {
      std::fprintf(stderr, "demo: %s\n", st.message().c_str());
      return 1;
    }
    const mongoose::TrainStats& s = model.stats();
    std::printf("%-4s softmax: 3 epochs in %6.2f s   P@1 %.3f  P@3 %.3f  P@5 %.3f", mode == mongoose::OutputMode::lsh ? "lsh" : "full",
                s.seconds, m.p_at_1, m.p_at_3, m.p_at_5);
    if (mode == mongoose::OutputMode::lsh) std::printf("   (%.0f active neurons of %zu)", s.active_mean(), train.labels);
    std::printf("\n");
  }
  return 0;
}
