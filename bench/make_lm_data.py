#!/usr/bin/env python3
"""bench/make_lm_data.py - next-word prediction as extreme classification, from the kernel docs.

What it builds. A language-modelling data set in the XC text format, from the documentation
tree of Debian's `linux-doc-6.1` package (Documentation/**/*.gz: reST, plain text, YAML device-
tree bindings, a few SVG/scripts). Every word is a class: the label of a row is the word at
position i, its features are the up to 4 words before it, one feature per (distance, word):

    feature id = p * V + id(w[i-p-1]),  p = 0..3,  value 1      (so D = 4V, L = V)

Rows are every position i >= 1 of every document; a document never sees the words of another,
so the first rows of a document simply have fewer than 4 features. The ids grow with p, so every
row's feature ids come out distinct and ascending without sorting.

Choices, and why:
  * Tokens are maximal runs of Unicode letters, digits and underscore (regex \\w), so C
    identifiers such as `spin_lock_irqsave` or `CONFIG_SMP` stay one word, lowercased so that
    sentence-initial capitals do not double the common words. CJK ideographs and kana (the zh_CN,
    zh_TW and ja_JP translations, written without spaces) are one token per character: otherwise
    a whole Chinese clause would be one "word" seen once.
  * Vocabulary: every distinct word of the whole corpus (train and test), ids by descending
    count, ties broken by the word itself, so label 0 is the most frequent word and a test label
    is never out of range (it may still never occur as a training label; see the stats).
  * A document is one regular .gz file; symlinks (Documentation/Changes.gz points at
    process/changes.rst.gz) are skipped so no text is counted twice.
  * Train/test split by document: test when crc32(path relative to Documentation/) % 10 == 0.
    crc32 is stable across Python versions and machines (unlike hash()).

Run (Python 3 standard library only, plus apt-get and dpkg; a few minutes at most on one core):
    python3 bench/make_lm_data.py [--out /work/data-large/lm] [--work /work/data-large/linux-doc]
It runs `apt-get download linux-doc-6.1` in the work dir unless a linux-doc-6.1_*.deb is already
there, and `dpkg -x` it there unless already extracted. It takes about 15 s on one core
(linux-doc 6.1.192-3: 8,848 documents, 5.9M words, V = 183,610, 5.2M train / 0.7M test rows,
218 MB of XC text, 250 MB peak memory; the run's own figures go to lm_stats.txt).

Output, in --out:
    lm_train.txt, lm_test.txt   header "N 4V V", one row per word position
    lm_test_20k.txt             20,000 rows of lm_test.txt, every (n/20000)-th row
    lm_vocab.txt                line i is the word with id i
    lm_stats.txt                the statistics this script prints
Each file is written to NAME.tmp and renamed, so a failed run leaves no half-written file.
"""

import argparse
import array
import collections
import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

PACKAGE = "linux-doc-6.1"
DOC_SUBDIR = os.path.join("usr", "share", "doc", PACKAGE, "Documentation")
CONTEXT = 4               # previous words used as features
QUICK_TEST_ROWS = 20000   # size of lm_test_20k.txt
SHORTLIST = 1024          # the frequency shortlist whose coverage we report

# Scripts written without spaces between words: one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
TOKEN_RE = re.compile("[" + _CJK + "]|[^\\W" + _CJK + "]+")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fetch_package(work_dir):
    """Returns the extracted Documentation/ dir and the .deb used, downloading if needed."""
    os.makedirs(work_dir, exist_ok=True)
    debs = sorted(glob.glob(os.path.join(work_dir, PACKAGE + "_*.deb")), key=os.path.getmtime)
    if not debs:
        log(f"apt-get download {PACKAGE} (into {work_dir})")
        subprocess.run(["apt-get", "download", PACKAGE], cwd=work_dir, check=True)
        debs = sorted(glob.glob(os.path.join(work_dir, PACKAGE + "_*.deb")), key=os.path.getmtime)
        if not debs:
            sys.exit(f"apt-get download left no {PACKAGE}_*.deb in {work_dir}")
    deb = debs[-1]
    # One extraction dir per .deb, so a newer package version is never mixed with an older tree.
    root = os.path.join(work_dir, os.path.basename(deb)[:-len(".deb")])
    if not os.path.isdir(root):
        log(f"dpkg -x {os.path.basename(deb)}")
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg", "-x", deb, tmp], check=True)
        os.rename(tmp, root)
    doc_dir = os.path.join(root, DOC_SUBDIR)
    if not os.path.isdir(doc_dir):
        sys.exit(f"{doc_dir}: not found in the package (has its layout changed?)")
    return doc_dir, deb


def list_documents(doc_dir):
    """Relative paths of every regular *.gz file under doc_dir, sorted (a stable order)."""
    docs, skipped_links = [], 0
    for dirpath, dirnames, filenames in os.walk(doc_dir):
        dirnames.sort()
        for name in filenames:
            if not name.endswith(".gz"):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                skipped_links += 1
                continue
            docs.append(os.path.relpath(full, doc_dir))
    docs.sort()
    return docs, skipped_links


def is_test(rel_path):
    return zlib.crc32(rel_path.encode("utf-8")) % 10 == 0


def tokenize_corpus(doc_dir, docs):
    """Reads every document; returns (per-document arrays of provisional ids, words, counts).

    Provisional ids are assigned in order of first appearance, so the corpus is held as compact
    uint32 arrays instead of millions of str objects; they are renumbered by frequency later.
    """
    provisional = {}
    doc_ids = []
    for rel in docs:
        with gzip.open(os.path.join(doc_dir, rel), "rb") as f:
            text = f.read().decode("utf-8", errors="replace").lower()
        words = TOKEN_RE.findall(text)
        setdefault = provisional.setdefault
        ids = array.array("I", [setdefault(w, len(provisional)) for w in words])
        doc_ids.append(ids)
    words = [None] * len(provisional)
    for w, i in provisional.items():
        words[i] = w
    counts = [0] * len(words)
    for ids in doc_ids:
        for i, c in collections.Counter(ids).items():
            counts[i] += c
    return doc_ids, words, counts


def write_atomically(path, write_body):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        write_body(f)
    os.replace(tmp, path)


def row_lines(ids, label_str, feature_str):
    """The XC lines of one document: row i has label ids[i] and features ids[i-1..i-4]."""
    n = len(ids)
    lab = [label_str[w] for w in ids]
    feats = [[fs[w] for w in ids] for fs in feature_str]   # feats[p][j]: word j at distance p
    lines = []
    # Positions 1..3 have fewer than CONTEXT earlier words.
    for i in range(1, min(n, CONTEXT)):
        parts = [lab[i]] + [feats[p][i - p - 1] for p in range(i)]
        lines.append(" ".join(parts) + "\n")
    if n > CONTEXT:
        f0, f1, f2, f3 = feats
        lines.extend(f"{a} {b} {c} {d} {e}\n" for a, b, c, d, e in
                     zip(lab[CONTEXT:], f0[3:n - 1], f1[2:n - 2], f2[1:n - 3], f3[0:n - 4]))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/work/data-large/lm", help="output directory")
    ap.add_argument("--work", default="/work/data-large/linux-doc",
                    help="where the .deb is downloaded and extracted")
    args = ap.parse_args()
    t_start = time.time()
    assert CONTEXT == 4, "row_lines' fast path is written for 4 context words"

    doc_dir, deb = fetch_package(args.work)
    t_fetched = time.time()
    docs, skipped_links = list_documents(doc_dir)
    log(f"tokenizing {len(docs)} documents")
    doc_ids, prov_words, prov_counts = tokenize_corpus(doc_dir, docs)

    # Final ids: descending count, ties by the word itself.
    order = sorted(range(len(prov_words)), key=lambda i: (-prov_counts[i], prov_words[i]))
    V = len(order)
    remap = [0] * V
    for new, old in enumerate(order):
        remap[old] = new
    vocab = [prov_words[old] for old in order]
    counts = [prov_counts[old] for old in order]
    doc_ids = [array.array("I", [remap[w] for w in ids]) for ids in doc_ids]
    t_tokenized = time.time()

    test_flags = [is_test(rel) for rel in docs]
    n_words = sum(len(ids) for ids in doc_ids)
    rows = [0, 0]
    docs_per_split = [0, 0]
    train_label_counts = [0] * V
    for ids, test in zip(doc_ids, test_flags):
        rows[test] += max(0, len(ids) - 1)
        docs_per_split[test] += 1
        if not test:
            for w, c in collections.Counter(ids[1:]).items():
                train_label_counts[w] += c
    train_rows, test_rows = rows

    # Strings for "label" and "feature:1" of every word, built once and reused for every row.
    label_str = [str(w) for w in range(V)]
    feature_str = [[f"{p * V + w}:1" for w in range(V)] for p in range(CONTEXT)]
    D = CONTEXT * V
    os.makedirs(args.out, exist_ok=True)
    paths = {name: os.path.join(args.out, f"lm_{name}.txt")
             for name in ("train", "test", "test_20k", "vocab", "stats")}

    log(f"writing {train_rows} train rows")

    def write_train(f):
        f.write(f"{train_rows} {D} {V}\n")
        for ids, test in zip(doc_ids, test_flags):
            if not test:
                f.writelines(row_lines(ids, label_str, feature_str))
    write_atomically(paths["train"], write_train)

    log(f"writing {test_rows} test rows")
    test_lines = []
    for ids, test in zip(doc_ids, test_flags):
        if test:
            test_lines.extend(row_lines(ids, label_str, feature_str))
    assert len(test_lines) == test_rows
    write_atomically(paths["test"], lambda f: (f.write(f"{test_rows} {D} {V}\n"),
                                               f.writelines(test_lines)))
    # Rows floor(k * n / 20000), k = 0..19999: evenly spread, so every part of the test split
    # (every document group, not just the first few files) is represented.
    quick_n = min(QUICK_TEST_ROWS, test_rows)
    quick = [test_lines[k * test_rows // quick_n] for k in range(quick_n)]
    write_atomically(paths["test_20k"], lambda f: (f.write(f"{quick_n} {D} {V}\n"),
                                                   f.writelines(quick)))
    write_atomically(paths["vocab"], lambda f: f.writelines(w + "\n" for w in vocab))

    # Coverage of the test labels by the most frequent *training* labels (ties by id), i.e. what
    # a frequency shortlist built from training data alone would catch.
    shortlist = set(sorted(range(V), key=lambda w: (-train_label_counts[w], w))[:SHORTLIST])
    test_label_hist = collections.Counter()
    for ids, test in zip(doc_ids, test_flags):
        if test:
            test_label_hist.update(ids[1:])
    covered = sum(c for w, c in test_label_hist.items() if w in shortlist)
    unseen = sum(c for w, c in test_label_hist.items() if train_label_counts[w] == 0)
    labels_in_train = sum(1 for c in train_label_counts if c)
    seconds = time.time() - t_start

    def mb(path):
        return os.path.getsize(path) / 1e6

    stats = [
        f"source                     {os.path.basename(deb)} ({doc_dir})",
        f"documents                  {len(docs)} (train {docs_per_split[0]}, test {docs_per_split[1]};"
        f" {skipped_links} symlink(s) skipped)",
        f"words (tokens)             {n_words}",
        f"vocabulary V = L           {V}",
        f"features D = 4V            {D}",
        f"train rows                 {train_rows}",
        f"test rows                  {test_rows}",
        f"test_20k rows              {quick_n}",
        f"distinct train labels      {labels_in_train}",
        f"test labels never a train label  {unseen / max(1, test_rows):.4f}",
        f"top-{SHORTLIST} train labels cover  {covered / max(1, test_rows):.4f} of test labels",
        f"most frequent words        " + " ".join(f"{vocab[i]}:{counts[i]}" for i in range(10)),
        f"words seen once            {sum(1 for c in counts if c == 1)}",
        f"file sizes (MB)            train {mb(paths['train']):.1f}, test {mb(paths['test']):.1f},"
        f" test_20k {mb(paths['test_20k']):.1f}, vocab {mb(paths['vocab']):.1f}",
        f"seconds                    {seconds:.1f} total (download/extract {t_fetched - t_start:.1f},"
        f" tokenize+vocab {t_tokenized - t_fetched:.1f}, write {time.time() - t_tokenized:.1f})",
    ]
    write_atomically(paths["stats"], lambda f: f.writelines(s + "\n" for s in stats))
    print("\n".join(stats))


if __name__ == "__main__":
    main()
