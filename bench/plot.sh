#!/usr/bin/env bash
# bench/plot.sh - regenerates bench/p1-vs-seconds.svg: P@1 against training seconds on citeulike-t
# (full, lsh, mongoose: the library's defaults) and on the two large sets (the full softmax for a
# limited time, the shared set alone, SimHash retrieval, mongoose), from bench-scale checkpoints.
# These are the runs behind the README's "Large sets" figures. Run from the repository root after
# `meson setup build && ninja -C build` and the data builders (bench/README.md). About an hour on
# two quiet cores, most of it exact evaluation at 10^6 labels and the time-limited full softmax.
#   DATA=/work/data-large bench/plot.sh
# SWEEP=on adds the LSH inference sweeps (xml1m, on the simhash model; lm likewise).
set -eu
DATA=${DATA:-/work/data-large}
XML_FULL_SECONDS=${XML_FULL_SECONDS:-300}
LM_FULL_SECONDS=${LM_FULL_SECONDS:-240}
SWEEP=${SWEEP:-off}
SHARED=${SHARED:-../shared/data}
out=${OUT:-bench/p1-vs-seconds.csv}
: >"$out"
build/bench-scale --name citeulike-t --train "$SHARED/citeulike-t/citeulike-t_train.txt" \
  --test "$SHARED/citeulike-t/citeulike-t_test.txt" --epochs 8 --variants full,lsh,mongoose --full-seconds 3600 \
  --checkpoints 20780,41560,62340,83120,103900,124680,145460 --csv "$out"
# xml1m in two runs: the shared set and SimHash retrieval (final numbers on the 20k test rows),
# then mongoose against the full softmax (time-limited; everything on the 5k rows)
build/bench-scale --name xml1m --train "$DATA/xml1m/xml1m_train.txt" --test "$DATA/xml1m/xml1m_test_20k.txt" \
  --eval "$DATA/xml1m/xml1m_test_5k.txt" --epochs 1 --variants shared,simhash --set K=12 --set max_active=256 \
  --checkpoints 12800,25600,51200,102400,204800 --csv "$out" \
  --infer-sweep "$SWEEP" --sweep-K 10,12,14 --sweep-L 16,32,64 --sweep-probes 0,2 --sweep-mips on
build/bench-scale --name xml1m --train "$DATA/xml1m/xml1m_train.txt" --test "$DATA/xml1m/xml1m_test_5k.txt" \
  --eval "$DATA/xml1m/xml1m_test_5k.txt" --epochs 1 --variants mongoose,full --set K=12 --set max_active=256 \
  --full-seconds "$XML_FULL_SECONDS" --checkpoints 12800,25600 --csv "$out"
build/bench-scale --name lm --train "$DATA/lm/lm_train.txt" --test "$DATA/lm/lm_test_20k.txt" \
  --eval "$DATA/lm/lm_test_5k.txt" --epochs 0.2 --variants shared,simhash,mongoose,full \
  --set K=11 --set max_active=256 --full-seconds "$LM_FULL_SECONDS" --checkpoints 12800,51200,204800 --csv "$out" \
  --infer-sweep "$SWEEP" --sweep-K 8,10,12 --sweep-L 16,32,64 --sweep-probes 0,2 --sweep-mips on
python3 bench/plot.py "$out" bench/p1-vs-seconds.svg
echo "wrote bench/p1-vs-seconds.svg from $out"
