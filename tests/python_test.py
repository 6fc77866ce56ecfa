#!/usr/bin/env python3
"""The Python binding (examples/python/mongoose.py) against the C++ command line on bibtex: the
same configuration (lsh, 3 epochs, 1 thread, seed 42) must give the same P@1 (within 0.005; in
practice bit for bit) read by the library or built from numpy CSR arrays; predictions, save/load
and errors are checked too.
    tests/python_test.py LIBMONGOOSE.so MONGOOSE-TRAIN [DATA_DIR]
Exits 77 (skipped, with the reason) without numpy or the bibtex data."""

import os
import subprocess
import sys
import tempfile

SKIP = 77
here = os.path.dirname(os.path.abspath(__file__))


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        return 2
    lib, cli = os.path.abspath(sys.argv[1]), sys.argv[2]
    data = sys.argv[3] if len(sys.argv) == 4 else os.path.join(here, "..", "..", "shared", "data")
    train_path = os.path.join(data, "bibtex", "bibtex_train.txt")
    test_path = os.path.join(data, "bibtex", "bibtex_test.txt")
    try:
        import numpy as np
    except ImportError:
        print(f"python_test: SKIPPED: numpy is not installed for {sys.executable} "
              "(Debian: apt-get install python3-numpy, then run with /usr/bin/python3)")
        return SKIP
    if not os.path.exists(train_path):
        print(f"python_test: SKIPPED: {train_path} is absent (the bibtex data set of ../shared/data)")
        return SKIP
    os.environ["MONGOOSE_LIB"] = lib
    sys.path.insert(0, os.path.join(here, "..", "examples", "python"))
    import mongoose

    failures = []

    def check(ok, what):
        print(("ok      " if ok else "FAILED  ") + what)
        if not ok:
            failures.append(what)

    out = subprocess.run([cli, "--train", train_path, "--test", test_path, "--output", "lsh", "--epochs", "3",
                          "--threads", "1"], check=True, capture_output=True, text=True).stdout
    cli_p1 = float(out.split("p@1=")[1].split()[0])

    def train(csr):
        if csr:
            def load(path):
                indptr, indices, values, lindptr, lindices, features, labels = mongoose.read_xc_arrays(path)
                return mongoose.Dataset.from_csr(indptr, indices, values, features, lindptr, lindices, labels)
        else:
            load = mongoose.Dataset.read
        tr, te = load(train_path), load(test_path)
        model = mongoose.Model(tr.features, tr.labels, output="lsh", threads=1)
        losses = [model.train_epoch(tr) for _ in range(3)]
        return model, te, losses

    model, test, losses = train(csr=False)
    metrics = model.evaluate(test)
    print(f"cli p@1={cli_p1:.4f}  python p@1={metrics['p@1']:.4f} (files)")
    check(abs(metrics["p@1"] - cli_p1) < 0.005, "the binding's P@1 matches mongoose-train's within 0.005")
    check(f"{metrics['p@1']:.4f}" == f"{cli_p1:.4f}", "... and to the 4 digits it prints")
    check(losses[2] < losses[0], "the loss falls over the epochs")
    model_csr, test_csr, losses_csr = train(csr=True)
    metrics_csr = model_csr.evaluate(test_csr)
    print(f"python p@1={metrics_csr['p@1']:.4f} (numpy CSR arrays)")
    check(metrics_csr["p@1"] == metrics["p@1"] and losses_csr == losses, "training from CSR arrays equals reading the files")

    labels, scores = model.predict_dataset(test, k=5)
    check(labels.shape == (test.rows, 5) and labels.dtype == np.uint32 and scores.dtype == np.float32,
          "predict_dataset gives rows x k numpy arrays")
    check(bool(np.all(scores[:, :-1] >= scores[:, 1:])), "scores are sorted, best first")
    _, _, _, lindptr, lindices, _, _ = mongoose.read_xc_arrays(test_path)
    hits = sum(int(labels[r, 0]) in set(lindices[lindptr[r]:lindptr[r + 1]].tolist()) for r in range(test.rows))
    check(abs(hits / test.rows - metrics["p@1"]) < 1e-12, "P@1 from predict_dataset equals evaluate's")
    indptr, indices, values, _, _, _, _ = mongoose.read_xc_arrays(test_path)
    one_labels, one_scores = model.predict(indices[indptr[0]:indptr[1]], values[indptr[0]:indptr[1]], k=5)
    check(np.array_equal(one_labels, labels[0]) and np.array_equal(one_scores, scores[0]),
          "predict on one row equals predict_dataset's row")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.bin")
        model.save(path)
        check(mongoose.Model.load(path).evaluate(test)["p@1"] == metrics["p@1"], "save and load keep P@1")

    def raises(code, fn, what):
        try:
            fn()
        except mongoose.MongooseError as e:
            check(e.code == code and str(e), f"{what}: refused with code {e.code}: {e}")
            return
        check(False, f"{what}: not refused")

    raises(mongoose.MG_ERROR_ARGUMENT, lambda: mongoose.Dataset.from_csr([0, 2], [0, 7], [1, 1], 5),
           "a feature id out of range")
    raises(mongoose.MG_ERROR_ARGUMENT, lambda: mongoose.Dataset.from_csr([0, 2], [0, 1], [1, float("nan")], 5),
           "a NaN value")
    raises(mongoose.MG_ERROR_ARGUMENT, lambda: mongoose.Dataset.from_csr([0, 3], [0, 1], None, 5),
           "indptr beyond the indices")
    raises(mongoose.MG_ERROR_FILE, lambda: mongoose.Dataset.read(os.path.join(data, "no-such-file.txt")),
           "a missing file")
    raises(mongoose.MG_ERROR_ARGUMENT, lambda: mongoose.Model(10, 5, hidden=0), "hidden = 0")
    raises(mongoose.MG_ERROR_FAILED, lambda: model.predict([0, 99999], k=3), "a feature id beyond the model")

    print(f"python_test: {'FAILED: ' + str(len(failures)) if failures else 'all passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
