#!/usr/bin/env bash
# bench/plot.sh - regenerates bench/p1-vs-seconds.svg: P@1 against training seconds on citeulike-t
# (full, lsh, mongoose: the library's defaults) and on the two large sets (full softmax for
# FULL_SECONDS, the shared set alone, SimHash retrieval, learned hashing, perfect retrieval), from
# bench-scale checkpoints. Run from the repository root after `meson setup build && ninja -C build`
# and the two data builders (bench/README.md). Takes a few hours on two cores (the full softmax on
# the large sets is time-limited; perfect retrieval costs a full forward pass per batch).
#   FULL_SECONDS=600 DATA=/work/data-large bench/plot.sh
# EXTRA="--infer-sweep on" adds the LSH inference sweep on the large sets (about 20 minutes more).
set -eu
DATA=${DATA:-/work/data-large}
FULL_SECONDS=${FULL_SECONDS:-600}
EXTRA=${EXTRA:-}
SHARED=${SHARED:-../shared/data}
out=${OUT:-bench/p1-vs-seconds.csv}
: >"$out"
build/bench-scale --name citeulike-t --train "$SHARED/citeulike-t/citeulike-t_train.txt" \
  --test "$SHARED/citeulike-t/citeulike-t_test.txt" --epochs 8 --variants full,lsh,mongoose --full-seconds 3600 \
  --checkpoints 20780,41560,62340,83120,103900,124680,145460 --csv "$out"
build/bench-scale --name xml1m --train "$DATA/xml1m/xml1m_train.txt" --test "$DATA/xml1m/xml1m_test_20k.txt" \
  --eval "$DATA/xml1m/xml1m_test_5k.txt" --epochs 1 --variants shared,simhash,learned,perfect,full \
  --set K=12 --set max_active=256 --full-seconds "$FULL_SECONDS" \
  --checkpoints 12800,25600,51200,102400,204800 --csv "$out" $EXTRA
build/bench-scale --name lm --train "$DATA/lm/lm_train.txt" --test "$DATA/lm/lm_test_20k.txt" \
  --eval "$DATA/lm/lm_test_5k.txt" --epochs 0.2 --variants shared,simhash,learned,perfect,full \
  --set K=11 --set max_active=256 --full-seconds "$FULL_SECONDS" \
  --checkpoints 12800,25600,51200,102400,204800,409600 --csv "$out" $EXTRA
python3 bench/plot.py "$out" bench/p1-vs-seconds.svg
echo "wrote bench/p1-vs-seconds.svg from $out"
