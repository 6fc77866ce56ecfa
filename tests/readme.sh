#!/usr/bin/env bash
# The README's snippets compile exactly as shown: each ```cpp block is written to a file and
# compiled against the library (a block with main() is linked and run on bibtex when the data is
# there); the first block must also equal examples/readme.cpp (without its first comment line).
# Each ```c block is compiled as C99 (warnings as errors) and run the same way. Each ```python
# block runs on bibtex when MONGOOSE_LIB names a shared library and Python has numpy
# (tests/package.sh does that).
#   tests/readme.sh SOURCE_DIR CXX [CC]
set -eu
src=$1
cxx=${2:-c++}
cc=${3:-cc}
work=$(mktemp -d "${TMPDIR:-/tmp}/mongoose_readme_XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$src/README.md" "$work" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for lang, ext in (("cpp", "cpp"), ("c", "c"), ("python", "py")):
    for i, b in enumerate(re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)):
        open(f"{sys.argv[2]}/snippet{i}.{ext}", "w").write(b)
PY
tail -n +2 "$src/examples/readme.cpp" | cmp -s - "$work/snippet0.cpp" ||
  { echo "readme: examples/readme.cpp differs from the README's first snippet"; exit 1; }
"$cxx" -std=c++17 -O1 -pthread -I"$src" -c "$src/mongoose.cpp" -o "$work/mongoose.o"
data="$src/../shared/data/bibtex"
# run_on_bibtex PROGRAM...: runs it on bibtex when the data is there; it must print p@1=.
run_on_bibtex() {
  if [ -f "$data/bibtex_train.txt" ]; then "$@" "$data/bibtex_train.txt" "$data/bibtex_test.txt" | grep -q 'p@1='; fi
}
n=0
skipped=""
for f in "$work"/snippet*.cpp; do
  if grep -q 'int main' "$f"; then
    "$cxx" -std=c++17 -O1 -pthread -Wall -Wextra -Werror -I"$src" "$f" "$work/mongoose.o" -o "$f.bin"
    run_on_bibtex "$f.bin"
  else
    "$cxx" -std=c++17 -O1 -Wall -Wextra -Werror -I"$src" -c "$f" -o "$f.o"
  fi
  n=$((n + 1))
done
for f in "$work"/snippet*.c; do
  [ -e "$f" ] || continue
  command -v "$cc" >/dev/null || { skipped=" (C snippets skipped: no C compiler $cc)"; continue; }
  "$cc" -std=c99 -O1 -Wall -Wextra -pedantic -Werror -I"$src" -c "$f" -o "$f.o"
  if grep -q 'int main' "$f"; then
    "$cxx" "$f.o" "$work/mongoose.o" -pthread -o "$f.bin"
    run_on_bibtex "$f.bin"
  fi
  n=$((n + 1))
done
py=python3
if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; fi
for f in "$work"/snippet*.py; do
  [ -e "$f" ] || continue
  if [ -n "${MONGOOSE_LIB:-}" ] && "$py" -c 'import numpy' 2>/dev/null && [ -f "$data/bibtex_train.txt" ]; then
    (cd "$src" && run_on_bibtex "$py" "$f")
    n=$((n + 1))
  else
    skipped=" (Python snippets skipped: they need MONGOOSE_LIB, numpy and the bibtex data)"
  fi
done
echo "readme: $n snippets compile and run$skipped"
