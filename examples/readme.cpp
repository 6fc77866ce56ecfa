// The README's "Embedding" program, verbatim (CI checks that the two agree and that it compiles).
#include "mongoose.h"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  mongoose::Dataset train, test;
  mongoose::Status st = mongoose::read_xc(argv[1], &train);        // errors say file:line:col
  if (st.ok()) st = mongoose::read_xc(argv[2], &test);
  mongoose::Config cfg;                                            // documented defaults
  cfg.output = mongoose::OutputMode::lsh;
  mongoose::Model model;
  if (st.ok()) st = model.init(cfg, train.features, train.labels);
  for (int epoch = 0; st.ok() && epoch < 3; ++epoch) st = model.train_epoch(train);
  mongoose::Metrics m;
  if (st.ok()) st = model.evaluate(test, mongoose::InferMode::full, &m);
  if (!st.ok()) return std::fprintf(stderr, "%s\n", st.message().c_str()), 1;
  std::printf("p@1=%.4f p@5=%.4f\n", m.p_at_1, m.p_at_5);
}
