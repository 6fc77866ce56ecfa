#!/usr/bin/env bash
# The command-line programs against a hostile user: bad numbers, unknown flags, outputs that are
# inputs, planted symlinks, destinations that cannot be written, binary and empty inputs, files of
# another data set. Every refusal must exit with 1 or 2 and a message naming the problem, leave
# every input file and every bystander file untouched, and (for destinations) happen before any
# training. Run by meson (`meson test`), also under the sanitizers.
#
#   tests/cli.sh MONGOOSE_TRAIN MONGOOSE_PREDICT [--also-under-ulimit]
#
# With --also-under-ulimit every case runs a second time with `ulimit -v 4000000` (4 GB of address
# space; not under a sanitizer, whose shadow memory needs more). Ends with "cli: N cases passed".
set -u
train_bin=$1
predict_bin=$2
also_ulimit=${3:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/mongoose_cli_XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
cases=0

# A small learnable data set: row r has label r % 8 and features {r % 8, 8 + r % 8, 16 + r % 4}.
make_xc() {  # make_xc FILE ROWS [FEATURES]
  local file=$1 rows=$2 features=${3:-32}
  {
    echo "$rows $features 8"
    for ((r = 0; r < rows; r++)); do
      echo "$((r % 8)) $((r % 8)):1 $((8 + r % 8)):0.5 $((16 + r % 4)):1"
    done
  } >"$file"
}
make_xc "$work/train.txt" 200
make_xc "$work/test.txt" 40
make_xc "$work/other.txt" 10 20  # another data set: 20 features
echo "0 32 8" >"$work/empty.txt"
printf '2 32 8\n0 1:nan\n1 2:1\n' >"$work/nan.txt"
echo "precious" >"$work/victim.txt"

checksum() { cksum "$@" 2>/dev/null | awk '{print $1 $2}' | tr -d '\n'; }
inputs_before=$(checksum "$work/train.txt" "$work/test.txt" "$work/victim.txt")

# expect_refusal NAME EXPECTED_MESSAGE_PART COMMAND...: exit 1..125, not a signal, the message
# on stderr, no sanitizer report, inputs untouched.
expect_refusal() {
  local name=$1 want=$2
  shift 2
  cases=$((cases + 1))
  local out rc
  out=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -lt 1 ] || [ "$rc" -gt 125 ]; then
    echo "cli: FAIL $name: exit $rc (wanted 1..125): $out"
    failures=$((failures + 1))
  elif [[ "$out" != *"$want"* ]]; then
    echo "cli: FAIL $name: message lacks '$want': $out"
    failures=$((failures + 1))
  elif [[ "$out" == *"Sanitizer"* || "$out" == *"runtime error"* ]]; then
    echo "cli: FAIL $name: sanitizer report: $out"
    failures=$((failures + 1))
  fi
  if [ "$(checksum "$work/train.txt" "$work/test.txt" "$work/victim.txt")" != "$inputs_before" ]; then
    echo "cli: FAIL $name: an input or bystander file changed"
    failures=$((failures + 1))
    make_xc "$work/train.txt" 200
    make_xc "$work/test.txt" 40
    echo "precious" >"$work/victim.txt"
  fi
}

# expect_success NAME COMMAND...
expect_success() {
  local name=$1
  shift
  cases=$((cases + 1))
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "cli: FAIL $name: exit $rc: $out"
    failures=$((failures + 1))
  fi
}

T=(--train "$work/train.txt" --test "$work/test.txt" --epochs 1 --threads 2 --hidden 8)

run_cases() {
  # Numbers: no truncation, no hex, no sign tricks; the whole uint64 range for the seed.
  expect_refusal "epochs 1.5" "bad value '1.5' for --epochs" "$train_bin" "${T[@]}" --epochs 1.5
  expect_refusal "hidden 1.9" "bad value '1.9' for --hidden" "$train_bin" "${T[@]}" --hidden 1.9
  expect_refusal "epochs hex" "bad value '0x10' for --epochs" "$train_bin" "${T[@]}" --epochs 0x10
  expect_refusal "negative batch" "bad value '-4' for --batch" "$train_bin" "${T[@]}" --batch -4
  expect_refusal "lr nan" "bad value 'nan' for --lr" "$train_bin" "${T[@]}" --lr nan
  expect_refusal "lr hex float" "bad value '0x1p-3' for --lr" "$train_bin" "${T[@]}" --lr 0x1p-3
  expect_refusal "seed 2^64" "bad value '18446744073709551616' for --seed" "$train_bin" "${T[@]}" --seed 18446744073709551616
  expect_success "seed 2^64-1" "$train_bin" "${T[@]}" --seed 18446744073709551615
  # Flags.
  expect_refusal "unknown flag last" "unknown option --bogus" "$train_bin" "${T[@]}" --bogus
  expect_refusal "missing value" "missing value after --epochs" "$train_bin" "${T[@]}" --epochs
  expect_refusal "empty save" "--save needs a file path" "$train_bin" "${T[@]}" --save ""
  expect_refusal "empty log" "--log needs a file path" "$train_bin" "${T[@]}" --log ""
  # Outputs that are inputs, or cannot be written: refused before training.
  expect_refusal "save over train" "is the same file as --train" "$train_bin" "${T[@]}" --save "$work/train.txt"
  expect_refusal "log over test" "is the same file as --test" "$train_bin" "${T[@]}" --log "$work/test.txt"
  expect_refusal "save over train, other spelling" "is the same file as --train" "$train_bin" "${T[@]}" \
    --save "$work/../$(basename "$work")/train.txt"
  expect_refusal "save into a missing directory" "cannot create a temporary file" "$train_bin" "${T[@]}" \
    --save "$work/no/such/dir/model.bin"
  expect_refusal "save to a device" "not a regular file" "$train_bin" "${T[@]}" --save /dev/null
  expect_refusal "save to a directory" "is a directory" "$train_bin" "${T[@]}" --save "$work"
  expect_refusal "save and log the same" "--save and --log name the same file" "$train_bin" "${T[@]}" \
    --save "$work/out.bin" --log "$work/out.bin"
  # Inputs.
  expect_refusal "train from /dev/zero" "/dev/zero:1:1: NUL byte" "$train_bin" --train /dev/zero --test "$work/test.txt"
  expect_refusal "train from a directory" "is a directory" "$train_bin" --train "$work" --test "$work/test.txt"
  expect_refusal "missing train file" "cannot open" "$train_bin" --train "$work/nothing.txt" --test "$work/test.txt"
  expect_refusal "NaN in the test file" "$work/nan.txt:2:5: value 'nan' of feature 1 is not finite" \
    "$train_bin" --train "$work/train.txt" --test "$work/nan.txt"
  expect_refusal "test file of another data set" "not the same data set" "$train_bin" --train "$work/train.txt" \
    --test "$work/other.txt"
  expect_refusal "test file with no rows" "has no rows to evaluate on" "$train_bin" --train "$work/train.txt" \
    --test "$work/empty.txt" --output lsh --save "$work/never.bin"
  [ -e "$work/never.bin" ] && { echo "cli: FAIL 0-row test: a model was saved"; failures=$((failures + 1)); rm -f "$work/never.bin"; }
  printf '1 100000000 100000000\n0 7:1\n' >"$work/huge.txt"
  expect_refusal "absurd header sizes" "over the memory limit" "$train_bin" --train "$work/huge.txt" --test "$work/huge.txt"
  # A planted temporary-name symlink is not followed; a good save and log succeed.
  ln -sf "$work/victim.txt" "$work/model.bin.tmp"
  expect_success "save past a planted symlink" "$train_bin" "${T[@]}" --save "$work/model.bin" --log "$work/log.csv"
  [ "$(cat "$work/victim.txt")" = "precious" ] || { echo "cli: FAIL symlink: victim overwritten"; failures=$((failures + 1)); }
  grep -q '^epoch,seconds' "$work/log.csv" 2>/dev/null || { echo "cli: FAIL log: no CSV header"; failures=$((failures + 1)); }
  rm -f "$work/model.bin.tmp"
  # Outputs that are the same file however they are spelled, before either exists.
  expect_refusal "save and log, spelled apart" "--save and --log name the same file" "$train_bin" "${T[@]}" \
    --save "$work/./same.out" --log "$work/same.out"
  [ -e "$work/same.out" ] && { echo "cli: FAIL same.out was written"; failures=$((failures + 1)); rm -f "$work/same.out"; }
  # Ranges stated as they are; values that would underflow to 0 are refused.
  expect_refusal "lr below range" "expected a number in [1e-9, 1]" "$train_bin" "${T[@]}" --lr 1e-10
  expect_refusal "tail drift underflow" "bad value '1e-50' for --tail-drift" "$train_bin" "${T[@]}" --tail-drift 1e-50
  expect_refusal "detector bits 25" "expected an integer in 1..24" "$train_bin" "${T[@]}" --detector-bits 25
  # A result that cannot be written is an error.
  cases=$((cases + 1))
  if "$train_bin" "${T[@]}" >/dev/full 2>/dev/null; then echo "cli: FAIL >/dev/full: exit 0"; failures=$((failures + 1)); fi
  # mongoose-predict.
  expect_success "predict" "$predict_bin" --model "$work/model.bin" --input "$work/test.txt" --k 3
  expect_refusal "predict another data set" "declares 20 features but the model takes 32" "$predict_bin" \
    --model "$work/model.bin" --input "$work/other.txt"
  expect_refusal "predict k 5.5" "bad value '5.5' for --k" "$predict_bin" --model "$work/model.bin" --input "$work/test.txt" --k 5.5
  expect_refusal "predict unknown flag last" "unknown option --x" "$predict_bin" --model "$work/model.bin" --x
  expect_refusal "predict a text file as model" "wrong magic number" "$predict_bin" --model "$work/train.txt" \
    --input "$work/test.txt"
  expect_refusal "predict a directory as model" "is a directory" "$predict_bin" --model "$work" --input "$work/test.txt"
  expect_refusal "predict empty model path" "--model needs a file path" "$predict_bin" --model "" --input "$work/test.txt"
  expect_success "predict --help" "$predict_bin" --help
  cases=$((cases + 1))
  if "$predict_bin" --model "$work/model.bin" --input "$work/test.txt" >/dev/full 2>/dev/null; then
    echo "cli: FAIL predict >/dev/full: exit 0"; failures=$((failures + 1))
  fi
  mkfifo "$work/model.fifo"
  expect_refusal "predict a FIFO as model" "not a regular file" timeout 20 "$predict_bin" --model "$work/model.fifo" \
    --input "$work/test.txt"
  rm -f "$work/model.fifo"
  # --load of a full model with --infer lsh: refused before training, nothing saved.
  expect_refusal "load full, infer lsh" "is a full-softmax model" "$train_bin" "${T[@]}" --load "$work/model.bin" \
    --infer lsh --save "$work/late.bin"
  [ -e "$work/late.bin" ] && { echo "cli: FAIL late.bin was saved"; failures=$((failures + 1)); rm -f "$work/late.bin"; }
}

run_cases
if [ "$also_ulimit" = "--also-under-ulimit" ]; then
  # The subshell's counters do not come back: it exits with its failure count.
  (
    ulimit -v 4000000 || exit 99
    failures=0
    run_cases
    exit "$failures"
  )
  rc=$?
  failures=$((failures + rc))
  cases=$((cases * 2))
fi
if [ "$failures" -ne 0 ]; then
  echo "cli: $failures of $cases cases failed"
  exit 1
fi
echo "cli: $cases cases passed"
