#!/usr/bin/env bash
# Packaging, end to end (.ci/run's "package" stage; about 2.5 minutes on 2 cores):
#  1. a shared build (-Ddefault_library=shared) exports only the API: the C functions (mg_*) and
#     the mongoose namespace, no std:: instances; and everything the doctest suite uses (it links
#     with the shared library and passes);
#  2. `meson install` into a DESTDIR gives the header, the library and mongoose.pc, and a C++ and a
#     C host program build with `pkg-config --cflags --libs mongoose` alone and run;
#  3. a host Meson project with mongoose in subprojects/ gets it through dependency('mongoose'),
#     and builds the library alone (no examples, benches or tests; none of mongoose's tests
#     registered);
#  4. examples/train.c compiles as C99 and trains on bibtex (when ../shared/data is there), with
#     the same P@1 as mongoose-train;
#  5. the Python binding's test (tests/python_test.py), with Debian's /usr/bin/python3 when there,
#     and the README's snippets, its Python one included (tests/readme.sh with MONGOOSE_LIB).
# Prints "package: N passed, N failed" last; exits 1 when a check failed.
#   tests/package.sh [WORK_DIR]   (default: a fresh temporary directory, removed at the end)
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -ge 1 ]; then work=$1; rm -rf "$work"; mkdir -p "$work"; else
  work=$(mktemp -d "${TMPDIR:-/tmp}/mongoose_package_XXXXXX"); trap 'rm -rf "$work"' EXIT; fi
data=$src/../shared/data/bibtex
passed=0 failed=0
pass() { echo "package: ok      $*"; passed=$((passed + 1)); }
fail() { echo "package: FAILED  $*"; failed=$((failed + 1)); }
# run LOG CMD...: runs a step with its output in LOG, shown when it fails.
run() { local log=$1; shift; if "$@" >"$log" 2>&1; then return 0; fi; tail -n 40 "$log"; return 1; }
finish() { echo "package: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

# Optimization level 1: the checks are about packaging, not speed (a third of -O3's compile time).
build=$work/build-shared
dest=$work/dest
if run "$work/setup.log" meson setup "$build" "$src" -Ddefault_library=shared -Doptimization=1 --prefix=/usr/local &&
   run "$work/compile.log" meson compile -C "$build" mongoose mongoose-train mongoose-train-c &&
   run "$work/install.log" env DESTDIR="$dest" meson install -C "$build" --no-rebuild; then
  pass "shared build and DESTDIR install"
else
  fail "shared build and DESTDIR install"; finish
fi

# 1. Exports.
so=$(ls "$build"/libmongoose.so.*.*.* 2>/dev/null | head -n 1)
syms=$(nm -D --defined-only "$so" | c++filt | awk '{ $1 = ""; $2 = ""; sub(/^ +/, ""); print }')
total=$(echo "$syms" | grep -c .)
ours=$(echo "$syms" | grep -cE '^(mg_[a-z_]+$|mongoose::)')
capi=$(echo "$syms" | grep -cE '^mg_[a-z_]+$')
echo "package: $so exports $total symbols: $capi C functions, $((ours - capi)) mongoose::, $((total - ours)) other"
if [ "$total" -gt 0 ] && [ "$total" -eq "$ours" ]; then pass "only the API is exported"
else fail "exports besides the API:"; echo "$syms" | grep -vE '^(mg_[a-z_]+$|mongoose::)' | head -n 20; fi

# The doctest suite uses the public header alone: linked with the shared library, it fails to link
# if anything it calls lacks MONGOOSE_API (and runs as in the static build).
if run "$work/unit-build.log" meson compile -C "$build" mongoose-tests &&
   run "$work/unit.log" meson test -C "$build" --no-rebuild unit; then
  pass "the doctest suite links with the shared library (every API it uses is exported) and passes"
else fail "the doctest suite against the shared library"; fi

# 2. Installed files and pkg-config.
pc=$(find "$dest" -name mongoose.pc | head -n 1)
if [ -f "$dest/usr/local/include/mongoose.h" ] && [ -n "$pc" ] && ls "$(dirname "$(dirname "$pc")")"/libmongoose.so* >/dev/null 2>&1; then
  pass "installed: include/mongoose.h, $(basename "$(dirname "$(dirname "$pc")")")/libmongoose.so, mongoose.pc"
else
  fail "installed files missing"; find "$dest" | head -n 20
fi
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$dest
libdir=$(dirname "$(dirname "$pc")")
cat >"$work/host.cpp" <<'CPP'
#include <mongoose.h>
#include <cstdio>
int main() {
  mongoose::Dataset train, test;
  mongoose::SyntheticConfig sc;
  sc.train_rows = 400; sc.test_rows = 100; sc.features = 200; sc.labels = 50;
  mongoose::Status st = mongoose::make_synthetic(sc, &train, &test);
  mongoose::Config cfg;
  cfg.output = mongoose::OutputMode::lsh;
  cfg.hidden = 16; cfg.threads = 1;
  mongoose::Model model;
  if (st.ok()) st = model.init(cfg, train.features, train.labels);
  if (st.ok()) st = model.train_epoch(train);
  mongoose::Metrics m;
  if (st.ok()) st = model.evaluate(test, mongoose::InferMode::full, &m);
  if (!st.ok()) return std::fprintf(stderr, "%s\n", st.message().c_str()), 1;
  std::printf("host p@1=%.4f\n", m.p_at_1);
}
CPP
cat >"$work/host.c" <<'C'
#include <mongoose.h>
#include <stdio.h>
int main(void) {
  mg_error err;
  mg_config cfg;
  mg_model* model = NULL;
  mg_config_init(&cfg);
  if (mg_model_create(&cfg, 10, 5, &model, &err) != MG_OK) return fprintf(stderr, "%s\n", err.message), 1;
  printf("host-c labels=%zu\n", mg_model_labels(model));
  mg_model_free(model);
  return 0;
}
C
flags=$(pkg-config --cflags --libs mongoose) || flags=""
echo "package: pkg-config --cflags --libs mongoose: $flags"
if [ -n "$flags" ] && run "$work/host-cpp.log" c++ -std=c++17 "$work/host.cpp" -o "$work/host-cpp" $flags &&
   LD_LIBRARY_PATH=$libdir "$work/host-cpp" | grep -q 'host p@1='; then
  pass "a C++ host program builds with pkg-config alone and runs"
else fail "C++ host program through pkg-config"; fi
if [ -n "$flags" ] && run "$work/host-c.log" cc -std=c99 -Wall -Wextra -pedantic -Werror "$work/host.c" -o "$work/host-c" $flags &&
   LD_LIBRARY_PATH=$libdir "$work/host-c" | grep -q 'host-c labels=5'; then
  pass "a C99 host program builds with pkg-config alone and runs"
else fail "C host program through pkg-config"; fi
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# 3. As a Meson subproject.
host=$work/host-project
mkdir -p "$host/subprojects"
ln -s "$src" "$host/subprojects/mongoose"
cp "$work/host.cpp" "$host/main.cpp"
cat >"$host/meson.build" <<'MESON'
project('host', 'cpp', default_options : ['cpp_std=c++17', 'optimization=1'])
mongoose_dep = dependency('mongoose')  # subprojects/mongoose, found by its name
test('host', executable('host', 'main.cpp', dependencies : mongoose_dep))
MESON
# forcefallback: the subproject even where a mongoose is installed system-wide.
if run "$work/host-setup.log" meson setup "$host/build" "$host" --wrap-mode=forcefallback &&
   run "$work/host-build.log" meson compile -C "$host/build"; then
  targets=$(meson introspect --targets "$host/build" | python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
  tests=$(meson introspect --tests "$host/build" | python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
  echo "package: subproject host: targets: $targets; tests: $tests"
  if [ "$targets" = "host mongoose" ] && [ "$tests" = "host" ] && "$host/build/host" | grep -q 'host p@1='; then
    pass "as a subproject: the library alone, no tests registered, the host runs"
  else fail "as a subproject: expected targets 'host mongoose' and tests 'host'"; fi
else fail "host project with mongoose as a subproject"; fi

# 4. The C example as C99, on bibtex.
if run "$work/train-c.log" cc -std=c99 -Wall -Wextra -pedantic -Werror -c "$src/examples/train.c" -o "$work/train-c.o"; then
  pass "examples/train.c compiles as C99 (-Wall -Wextra -pedantic -Werror)"
else fail "examples/train.c as C99"; fi
if [ -f "$data/bibtex_train.txt" ]; then
  c_line=$("$build/mongoose-train-c" "$data/bibtex_train.txt" "$data/bibtex_test.txt" 3 1)
  cli_line=$("$build/mongoose-train" --train "$data/bibtex_train.txt" --test "$data/bibtex_test.txt" --output lsh \
             --epochs 3 --threads 1 | grep -o 'p@1=[0-9.]* p@3=[0-9.]* p@5=[0-9.]*')
  echo "package: bibtex, lsh, 3 epochs, 1 thread: mongoose-train-c $c_line; mongoose-train $cli_line"
  if [ -n "$c_line" ] && [ "$c_line" = "$cli_line" ]; then pass "the C API's P@k equal mongoose-train's"
  else fail "the C API's P@k differ from mongoose-train's"; fi
else
  echo "package: SKIPPED the bibtex runs: $data is absent"
fi

# 5. Python.
py=python3
if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; fi
"$py" "$src/tests/python_test.py" "$so" "$build/mongoose-train" "$src/../shared/data" | sed 's/^/package: python: /'
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ]; then pass "the Python binding (tests/python_test.py)"
elif [ "$rc" -eq 77 ]; then echo "package: SKIPPED the Python test (see its reason above)"
else fail "the Python binding (tests/python_test.py exited $rc)"; fi
if MONGOOSE_LIB=$so bash "$src/tests/readme.sh" "$src" c++ cc >"$work/readme.log" 2>&1 &&
   ! grep -q skipped "$work/readme.log"; then
  pass "the README's C++, C and Python snippets compile and run ($(tail -n 1 "$work/readme.log"))"
elif [ -n "$(grep -s 'Python snippets skipped' "$work/readme.log")" ]; then
  echo "package: SKIPPED the README's Python snippet: $(tail -n 1 "$work/readme.log")"
else
  tail -n 30 "$work/readme.log"; fail "the README's snippets with the shared library"
fi
finish
