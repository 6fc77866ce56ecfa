#!/usr/bin/env python3
"""Trains an lsh model with the library's defaults (3 epochs, 1 thread) on an XC training file,
evaluates it on the test file and prints "p@1=X p@3=X p@5=X", as examples/train.c does.
    python3 examples/python/train.py TRAIN TEST [--csr] [--epochs N] [--threads N]
--csr parses the files in Python and trains from numpy CSR arrays (Dataset.from_csr) instead of
reading them with the library: the result is the same."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mongoose  # noqa: E402


def load(path, csr):
    if not csr:
        return mongoose.Dataset.read(path)
    indptr, indices, values, label_indptr, label_indices, features, labels = mongoose.read_xc_arrays(path)
    return mongoose.Dataset.from_csr(indptr, indices, values, features, label_indptr, label_indices, labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--csr", action="store_true", help="train from numpy CSR arrays parsed in Python")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        train, test = load(args.train, args.csr), load(args.test, args.csr)
        model = mongoose.Model(train.features, train.labels, output="lsh", threads=args.threads)
        for _ in range(args.epochs):
            model.train_epoch(train)
        m = model.evaluate(test)
    except (mongoose.MongooseError, OSError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    print(f"p@1={m['p@1']:.4f} p@3={m['p@3']:.4f} p@5={m['p@5']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
