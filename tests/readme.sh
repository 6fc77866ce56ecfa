#!/usr/bin/env bash
# The README's C++ snippets compile exactly as shown: each ```cpp block is written to a file and
# compiled against the library (a block with main() is linked and run on bibtex when the data is
# there); the first block must also equal examples/readme.cpp (without its first comment line).
#   tests/readme.sh SOURCE_DIR CXX
set -eu
src=$1
cxx=${2:-c++}
work=$(mktemp -d "${TMPDIR:-/tmp}/mongoose_readme_XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$src/README.md" "$work" <<'PY'
import re, sys
blocks = re.findall(r"```cpp\n(.*?)```", open(sys.argv[1]).read(), re.S)
for i, b in enumerate(blocks):
    open(f"{sys.argv[2]}/snippet{i}.cpp", "w").write(b)
print(len(blocks))
PY
tail -n +2 "$src/examples/readme.cpp" | cmp -s - "$work/snippet0.cpp" ||
  { echo "readme: examples/readme.cpp differs from the README's first snippet"; exit 1; }
"$cxx" -std=c++17 -O1 -pthread -I"$src" -c "$src/mongoose.cpp" -o "$work/mongoose.o"
n=0
for f in "$work"/snippet*.cpp; do
  if grep -q 'int main' "$f"; then
    "$cxx" -std=c++17 -O1 -pthread -Wall -Wextra -Werror -I"$src" "$f" "$work/mongoose.o" -o "$f.bin"
    data="$src/../shared/data/bibtex"
    if [ -f "$data/bibtex_train.txt" ]; then "$f.bin" "$data/bibtex_train.txt" "$data/bibtex_test.txt" | grep -q 'p@1='; fi
  else
    "$cxx" -std=c++17 -O1 -Wall -Wextra -Werror -I"$src" -c "$f" -o "$f.o"
  fi
  n=$((n + 1))
done
echo "readme: $n snippets compile"
