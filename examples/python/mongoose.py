"""mongoose from Python: ctypes over the library's C API (no compiled extension) and numpy.

The shared library is found through $MONGOOSE_LIB (a path to libmongoose.so), else in the
repository's build directories (build-shared/, build/), else on the system (an installed
libmongoose.so). Build one with
    meson setup build-shared -Ddefault_library=shared && ninja -C build-shared mongoose

    import mongoose
    train = mongoose.Dataset.read("train.txt")         # XC text or binary, or Dataset.from_csr(...)
    model = mongoose.Model(train.features, train.labels, output="lsh", threads=1)
    for _ in range(3):
        model.train_epoch(train)
    print(model.evaluate(mongoose.Dataset.read("test.txt"))["p@1"])
    labels, scores = model.predict_dataset(test, k=5)  # numpy arrays, rows x 5

Errors raise MongooseError (its .code is the C API's MG_ERROR_* code, its message the library's).
"""

import ctypes
import ctypes.util
import os

import numpy as np

MG_OK, MG_ERROR_ARGUMENT, MG_ERROR_FILE, MG_ERROR_FAILED = 0, 1, 2, 3
_OUTPUTS = {"full": 0, "lsh": 1, "mongoose": 2}
_HASHES = {"simhash": 0, "dwta": 1}
_INFER = {"full": 0, "lsh": 1}


class MongooseError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 1024)]


class _Config(ctypes.Structure):  # mg_config, field for field
    _fields_ = [("output", ctypes.c_int32), ("hidden", ctypes.c_uint32), ("learning_rate", ctypes.c_float),
                ("batch_size", ctypes.c_uint32), ("threads", ctypes.c_uint32), ("seed", ctypes.c_uint64),
                ("scalar", ctypes.c_int32), ("hash", ctypes.c_int32), ("K", ctypes.c_uint32),
                ("L", ctypes.c_uint32), ("min_active", ctypes.c_uint32), ("max_active", ctypes.c_uint32),
                ("tail_drift", ctypes.c_float), ("rehash_every", ctypes.c_uint32),
                ("infer_shortlist", ctypes.c_uint32), ("max_bytes", ctypes.c_uint64)]


class _Metrics(ctypes.Structure):
    _fields_ = [("p_at_1", ctypes.c_double), ("p_at_3", ctypes.c_double), ("p_at_5", ctypes.c_double),
                ("rows", ctypes.c_uint64), ("seconds", ctypes.c_double)]


def _library_path():
    env = os.environ.get("MONGOOSE_LIB")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for build in ("build-shared", "build"):
        for name in ("libmongoose.so", "libmongoose.dylib", "mongoose.dll"):
            path = os.path.join(repo, build, name)
            if os.path.exists(path):
                return path
    found = ctypes.util.find_library("mongoose")
    if found:
        return found
    raise OSError("libmongoose not found: set MONGOOSE_LIB to the shared library, or build one with "
                  "`meson setup build-shared -Ddefault_library=shared && ninja -C build-shared mongoose`")


def _load():
    lib = ctypes.CDLL(_library_path())
    P, c_size, u32p, u64p, f32p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32), \
        ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_float)
    err = ctypes.POINTER(_Error)
    sig = {
        "mg_config_init": (None, [ctypes.POINTER(_Config)]),
        "mg_dataset_read": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(P), err]),
        "mg_dataset_from_csr": (ctypes.c_int, [c_size, c_size, c_size, u64p, u32p, f32p, c_size, u64p, u32p, c_size,
                                               ctypes.POINTER(P), err]),
        "mg_dataset_normalize": (ctypes.c_int, [P, err]),
        "mg_dataset_rows": (c_size, [P]),
        "mg_dataset_features": (c_size, [P]),
        "mg_dataset_labels": (c_size, [P]),
        "mg_dataset_free": (None, [P]),
        "mg_model_create": (ctypes.c_int, [ctypes.POINTER(_Config), c_size, c_size, ctypes.POINTER(P), err]),
        "mg_model_train_epoch": (ctypes.c_int, [P, P, ctypes.POINTER(ctypes.c_double), err]),
        "mg_model_train_batch": (ctypes.c_int, [P, P, c_size, c_size, f32p, err]),
        "mg_model_evaluate": (ctypes.c_int, [P, P, ctypes.c_int32, ctypes.POINTER(_Metrics), err]),
        "mg_model_predict": (ctypes.c_int, [P, u32p, f32p, c_size, c_size, ctypes.c_int32, u32p, f32p,
                                            ctypes.POINTER(c_size), err]),
        "mg_model_predict_dataset": (ctypes.c_int, [P, P, c_size, ctypes.c_int32, u32p, f32p, err]),
        "mg_model_save": (ctypes.c_int, [P, ctypes.c_char_p, err]),
        "mg_model_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(P), err]),
        "mg_model_features": (c_size, [P]),
        "mg_model_labels": (c_size, [P]),
        "mg_model_free": (None, [P]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


_lib = _load()


def _call(fn, *args):
    """Calls a C API function taking mg_error* last; raises MongooseError on failure."""
    err = _Error()
    code = fn(*args, ctypes.byref(err))
    if code != MG_OK:
        raise MongooseError(code, err.message.decode("utf-8", "replace"))


def _ptr(array, ctype):
    return None if array is None else array.ctypes.data_as(ctypes.POINTER(ctype))


def _path(path):
    return os.fsencode(path)


class Dataset:
    """A multi-label sparse dataset, validated by the library (ids in range, finite values, ...)."""

    def __init__(self, handle):
        self._handle = handle

    @classmethod
    def read(cls, path):
        """Reads an XC text file or a binary dataset (mongoose-convert)."""
        handle = ctypes.c_void_p()
        _call(_lib.mg_dataset_read, _path(path), ctypes.byref(handle))
        return cls(handle)

    @classmethod
    def from_csr(cls, indptr, indices, values, features, label_indptr=None, label_indices=None, labels=None):
        """From CSR arrays, scipy's layout (a scipy.sparse.csr_matrix X gives X.indptr, X.indices,
        X.data; labels likewise, without values). values None = every value 1; label arrays None =
        no labels. labels (the label count) defaults to the largest label id + 1."""
        indptr = np.ascontiguousarray(indptr, dtype=np.uint64)
        indices = np.ascontiguousarray(indices, dtype=np.uint32)
        rows = len(indptr) - 1
        if rows < 0:
            raise MongooseError(MG_ERROR_ARGUMENT, "from_csr: indptr needs rows + 1 entries")
        if values is not None:
            values = np.ascontiguousarray(values, dtype=np.float32)
            if len(values) != len(indices):
                raise MongooseError(MG_ERROR_ARGUMENT, "from_csr: values and indices differ in length "
                                    f"({len(values)} and {len(indices)})")
        label_nnz = 0
        if label_indptr is not None:
            label_indptr = np.ascontiguousarray(label_indptr, dtype=np.uint64)
            label_indices = np.ascontiguousarray(label_indices if label_indices is not None else [], dtype=np.uint32)
            if len(label_indptr) != rows + 1:
                raise MongooseError(MG_ERROR_ARGUMENT, f"from_csr: label_indptr has {len(label_indptr)} entries, "
                                    f"not rows + 1 = {rows + 1}")
            label_nnz = len(label_indices)
            if labels is None:
                labels = int(label_indices.max()) + 1 if label_nnz else 1
        if labels is None:
            labels = 1
        handle = ctypes.c_void_p()
        _call(_lib.mg_dataset_from_csr, rows, int(features), int(labels), _ptr(indptr, ctypes.c_uint64),
              _ptr(indices, ctypes.c_uint32), _ptr(values, ctypes.c_float), len(indices),
              _ptr(label_indptr, ctypes.c_uint64), _ptr(label_indices, ctypes.c_uint32), label_nnz,
              ctypes.byref(handle))
        return cls(handle)

    def normalize(self):
        """Scales each row to unit L2 norm (mongoose-train --normalize on)."""
        _call(_lib.mg_dataset_normalize, self._handle)

    @property
    def rows(self):
        return _lib.mg_dataset_rows(self._handle)

    @property
    def features(self):
        return _lib.mg_dataset_features(self._handle)

    @property
    def labels(self):
        return _lib.mg_dataset_labels(self._handle)

    def __del__(self):
        # At interpreter exit the module's globals may already be gone: the process frees all.
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.mg_dataset_free(self._handle)
            self._handle = None


class Model:
    """The network. Keyword options are mg_config's fields (output="full"|"lsh"|"mongoose",
    hidden, learning_rate, batch_size, threads, seed, scalar, hash="simhash"|"dwta", K, L,
    min_active, max_active, tail_drift, rehash_every, infer_shortlist, max_bytes); the rest keep
    the library's defaults."""

    def __init__(self, features, labels, _handle=None, **options):
        if _handle is not None:
            self._handle = _handle
            return
        config = _Config()
        _lib.mg_config_init(ctypes.byref(config))
        for key, value in options.items():
            if key == "output":
                value = _OUTPUTS[value]
            elif key == "hash":
                value = _HASHES[value]
            elif key not in dict(_Config._fields_):
                raise MongooseError(MG_ERROR_ARGUMENT, f"Model: unknown option {key!r}")
            setattr(config, key, value)
        self._handle = ctypes.c_void_p()
        _call(_lib.mg_model_create, ctypes.byref(config), int(features), int(labels), ctypes.byref(self._handle))

    @classmethod
    def load(cls, path):
        handle = ctypes.c_void_p()
        _call(_lib.mg_model_load, _path(path), ctypes.byref(handle))
        return cls(0, 0, _handle=handle)

    def save(self, path):
        _call(_lib.mg_model_save, self._handle, _path(path))

    @property
    def features(self):
        return _lib.mg_model_features(self._handle)

    @property
    def labels(self):
        return _lib.mg_model_labels(self._handle)

    def train_epoch(self, data):
        """One shuffled pass over data; returns the epoch's mean loss."""
        loss = ctypes.c_double()
        _call(_lib.mg_model_train_epoch, self._handle, data._handle, ctypes.byref(loss))
        return loss.value

    def train_batch(self, data, begin, end):
        """One Adam step on rows [begin, end) of data; returns the batch's loss."""
        loss = ctypes.c_float()
        _call(_lib.mg_model_train_batch, self._handle, data._handle, begin, end, ctypes.byref(loss))
        return loss.value

    def evaluate(self, data, infer="full"):
        """{"p@1", "p@3", "p@5", "rows", "seconds"} over every row of data."""
        m = _Metrics()
        _call(_lib.mg_model_evaluate, self._handle, data._handle, _INFER[infer], ctypes.byref(m))
        return {"p@1": m.p_at_1, "p@3": m.p_at_3, "p@5": m.p_at_5, "rows": m.rows, "seconds": m.seconds}

    def predict(self, ids, values=None, k=5, infer="full"):
        """The k best labels of one sparse input, best first: (labels uint32, scores float32)."""
        ids = np.ascontiguousarray(ids, dtype=np.uint32)
        if values is not None:
            values = np.ascontiguousarray(values, dtype=np.float32)
            if len(values) != len(ids):
                raise MongooseError(MG_ERROR_ARGUMENT, "predict: ids and values differ in length")
        labels = np.empty(k, dtype=np.uint32)
        scores = np.empty(k, dtype=np.float32)
        count = ctypes.c_size_t()
        _call(_lib.mg_model_predict, self._handle, _ptr(ids, ctypes.c_uint32), _ptr(values, ctypes.c_float),
              len(ids), k, _INFER[infer], _ptr(labels, ctypes.c_uint32), _ptr(scores, ctypes.c_float),
              ctypes.byref(count))
        return labels[:count.value], scores[:count.value]

    def predict_dataset(self, data, k=5, infer="full"):
        """The k best labels of every row: (labels rows x k uint32, scores rows x k float32); when
        k exceeds the labels, a row ends with label 2^32-1 and score -inf."""
        labels = np.empty((data.rows, k), dtype=np.uint32)
        scores = np.empty((data.rows, k), dtype=np.float32)
        _call(_lib.mg_model_predict_dataset, self._handle, data._handle, k, _INFER[infer],
              _ptr(labels, ctypes.c_uint32), _ptr(scores, ctypes.c_float))
        return labels, scores

    def __del__(self):
        # At interpreter exit the module's globals may already be gone: the process frees all.
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.mg_model_free(self._handle)
            self._handle = None


def read_xc_arrays(path):
    """Parses an XC text file in Python into CSR arrays: (indptr, indices, values, label_indptr,
    label_indices, features, labels), to show and test Dataset.from_csr. Dataset.read is faster."""
    with open(path) as f:
        rows, features, labels = (int(x) for x in f.readline().split())
        indptr, indices, values, label_indptr, label_indices = [0], [], [], [0], []
        for line in f:
            line = line.rstrip("\n")
            head, _, rest = line.partition(" ")
            if ":" in head:  # no labels: the first token is a feature
                head, rest = "", line
            if head:
                label_indices.extend(int(x) for x in head.split(","))
            for token in rest.split():
                fid, _, val = token.partition(":")
                indices.append(int(fid))
                values.append(float(val))
            indptr.append(len(indices))
            label_indptr.append(len(label_indices))
    if len(indptr) - 1 != rows:
        raise MongooseError(MG_ERROR_FILE, f"{path}: {len(indptr) - 1} rows, the header says {rows}")
    return (np.array(indptr, dtype=np.uint64), np.array(indices, dtype=np.uint32),
            np.array(values, dtype=np.float32), np.array(label_indptr, dtype=np.uint64),
            np.array(label_indices, dtype=np.uint32), features, labels)
