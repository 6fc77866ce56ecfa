/* mongoose-train-c: the C API from C99. Trains an lsh model on an XC training file, evaluates it
 * on the test file and prints one line "p@1=X p@3=X p@5=X".
 *   cc -std=c99 -O2 -c examples/train.c && c++ train.o mongoose.cpp -pthread -o mongoose-train-c
 *   ./mongoose-train-c TRAIN TEST [EPOCHS] [THREADS]
 * Exit status: 0 ok, 1 a data or training error (the message names it), 2 usage. */
#include <stdio.h>
#include <stdlib.h>

#include "../mongoose.h"

/* A whole non-negative decimal number, or -1. */
static long parse_count(const char* text) {
  char* end = NULL;
  long v = strtol(text, &end, 10);
  return (end == text || *end != '\0' || v < 0 || v > 1000000) ? -1 : v;
}

int main(int argc, char** argv) {
  mg_error err;
  mg_dataset* train = NULL;
  mg_dataset* test = NULL;
  mg_model* model = NULL;
  mg_config cfg;
  mg_metrics m;
  long epochs = 3, threads = 1, e;
  int rc = 0;
  if (argc < 3 || argc > 5) {
    fprintf(stderr, "usage: mongoose-train-c TRAIN TEST [EPOCHS (3)] [THREADS (1)]\n");
    return 2;
  }
  if (argc > 3) epochs = parse_count(argv[3]);
  if (argc > 4) threads = parse_count(argv[4]);
  if (epochs < 0 || threads < 0) {
    fprintf(stderr, "mongoose-train-c: EPOCHS and THREADS are whole numbers in [0, 1000000]\n");
    return 2;
  }
  mg_config_init(&cfg);
  cfg.output = MG_OUTPUT_LSH;
  cfg.threads = (uint32_t)threads;
  rc = mg_dataset_read(argv[1], &train, &err);
  if (rc == MG_OK) rc = mg_dataset_read(argv[2], &test, &err);
  if (rc == MG_OK) rc = mg_model_create(&cfg, mg_dataset_features(train), mg_dataset_labels(train), &model, &err);
  for (e = 0; rc == MG_OK && e < epochs; ++e) rc = mg_model_train_epoch(model, train, NULL, &err);
  if (rc == MG_OK) rc = mg_model_evaluate(model, test, MG_INFER_FULL, &m, &err);
  if (rc == MG_OK) printf("p@1=%.4f p@3=%.4f p@5=%.4f\n", m.p_at_1, m.p_at_3, m.p_at_5);
  else fprintf(stderr, "mongoose-train-c: %s\n", err.message);
  mg_model_free(model);
  mg_dataset_free(test);
  mg_dataset_free(train);
  return rc == MG_OK ? 0 : 1;
}
