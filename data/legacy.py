"""The earlier system's processed file (pickle or joblib), read without executing code from it.

The file holds a dict::

    {"data": [ {"patient_id", "static_params" (4: age, intensity, rate, FMP), "signal" (200),
                "v_peak" (2: latency ms, amplitude µV), "v_peak_mask" (2, bool), "target" (int),
                "clinical_threshold" (optional)}, ... ],
     "scaler": StandardScaler, "label_encoder": LabelEncoder, "metadata": {...}}

``pickle.load`` on such a file runs whatever callables it names, so a crafted file can run a
command. :class:`SafeUnpickler` resolves only an allow-list of names: numpy array reconstruction,
builtin containers, and scikit-learn's StandardScaler / LabelEncoder, which are rebuilt as inert
stand-ins holding their fitted attributes (sklearn is never imported). Anything else raises
:class:`UnsafePickleError` before it can be called. joblib files go through the same allow-list
(joblib's own unpickler, with ``find_class`` replaced), including compressed ones.

Conversion: ``target`` indices follow the file's label encoder (classes in alphabetical order:
NORMAL, NÖROPATİ, SNİK, TOTAL, İTİK); names are matched to CLASS_NAMES ignoring case and Turkish
diacritics. If the scaler was fitted on 4 (static) or 200 (signal) features and that block looks
standardized (column means near 0 and standard deviations near 1), it is inverse-transformed to
physical units; the report says which. wave V counts as present where both ``v_peak_mask``
entries are true; one true and one false is kept as absent and counted in the report.

A pickle can describe far more than it stores (shared references cost two bytes each), so reading
never expands such structures blindly: sample fields must be arrays or flat lists of numbers,
all of them together at most :data:`MAX_LEGACY_VALUES` values, and the copied ``metadata`` at most
:data:`MAX_METADATA_NODES` values (shared references counted each time) nested at most
:data:`MAX_METADATA_DEPTH` deep, with no reference to itself.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from data.records import (
    CLASS_NAMES,
    NUM_CLASSES,
    SIGNAL_LENGTH,
    STATIC_NAMES,
    UNKNOWN_LABEL,
    DataFormatError,
    Records,
    ValidationReport,
    class_index,
    integer_value,
    validate,
)

# Limits against reference bombs (see module docstring). The clinical data set is 51,961 recordings of
# 206 values (10.7 million); 200 million values (1.6 GB as float64) is about 19 times that.
MAX_LEGACY_VALUES = 200_000_000
MAX_METADATA_NODES = 100_000
MAX_METADATA_DEPTH = 50


class UnsafePickleError(DataFormatError):
    """The file names a callable outside the allow-list; nothing from it was executed."""


class _Inert:
    """Stand-in for an allow-listed class: keeps the pickled state as attributes, has no behaviour."""

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"{type(self).__name__}: expected a dict state, found {type(state).__name__}")
        self.__dict__.update(state)


class StandardScaler(_Inert):
    """Fitted attributes of sklearn.preprocessing.StandardScaler (mean_, scale_, n_features_in_)."""


class LabelEncoder(_Inert):
    """Fitted attributes of sklearn.preprocessing.LabelEncoder (classes_)."""


_ma, _numeric = np._core.multiarray, np._core.numeric  # numpy >= 2 (pinned in requirements.txt)
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric", "numpy.dtypes")
_ALLOWED: dict[tuple[str, str], object] = {
    **{(m, "_reconstruct"): _ma._reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _ma.scalar for m in _NUMPY_MODULES},
    **{(m, "_frombuffer"): _numeric._frombuffer for m in _NUMPY_MODULES},
    **{(m, "ndarray"): np.ndarray for m in _NUMPY_MODULES},
    **{(m, "dtype"): np.dtype for m in _NUMPY_MODULES},
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex, ("builtins", "object"): object,
    ("collections", "OrderedDict"): dict,
    ("copyreg", "_reconstructor"): None,  # filled below: object.__new__ only, never a base's __init__
}
_PY2_MODULES = {"copy_reg": "copyreg", "__builtin__": "builtins"}
_SKLEARN = {"StandardScaler": StandardScaler, "LabelEncoder": LabelEncoder}
_SKLEARN_MODULES = ("sklearn.preprocessing", "sklearn.preprocessing._data", "sklearn.preprocessing.data",
                    "sklearn.preprocessing._label", "sklearn.preprocessing.label")


def _reconstructor(cls: type, base: type, state: object) -> object:
    """copyreg._reconstructor for protocol 0/1 files, limited to plain objects of allowed classes."""
    if base is not object or state is not None:
        raise UnsafePickleError(f"copyreg._reconstructor: expected base 'object', found {base!r}")
    return object.__new__(cls)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """_codecs.encode as protocol 0-2 pickles use it for numpy's raw bytes: latin-1 only."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode: expected a str and encoding 'latin1', found {encoding!r}")
    return text.encode("latin1")


_ALLOWED[("copyreg", "_reconstructor")] = _reconstructor
_ALLOWED[("_codecs", "encode")] = _latin1_encode
# numpy dtype classes (numpy.dtypes.Float32DType, ...) appear in some numpy >= 1.25 pickles
_ALLOWED.update({("numpy.dtypes", name): getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")})


def allowed_global(module: str, name: str, extra: dict | None = None) -> object:
    """Resolve ``module.name`` if it is on the allow-list; raise :class:`UnsafePickleError` otherwise."""
    module = _PY2_MODULES.get(module, module)  # protocol 0-2 files name Python 2 modules
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if module in _SKLEARN_MODULES and name in _SKLEARN:
        return _SKLEARN[name]
    if extra and (module, name) in extra:
        return extra[(module, name)]
    raise UnsafePickleError(
        f"refusing to load '{module}.{name}': only numpy arrays, builtin containers and sklearn "
        "StandardScaler/LabelEncoder are allowed in a legacy data file (nothing from the file was executed)"
    )


class SafeUnpickler(pickle.Unpickler):
    """A pickle.Unpickler whose find_class only resolves :func:`allowed_global` names."""

    def find_class(self, module: str, name: str) -> object:
        return allowed_global(module, name)


class _PySafeUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with the same allow-list (reads exactly one pickle from a stream)."""

    def find_class(self, module: str, name: str) -> object:
        return allowed_global(module, name)


def _joblib_unpickler() -> type | None:
    """joblib's NumpyUnpickler with the same allow-list (plus joblib's array wrapper), or None."""
    try:
        from joblib import numpy_pickle
    except ImportError:
        return None

    class SafeArrayWrapper(numpy_pickle.NumpyArrayWrapper):
        """Reads raw array bytes; an array of Python objects (a nested pickle) through the allow-list
        too, whatever the installed joblib does with it."""

        def read_array(self, unpickler: object, ensure_native_byte_order: bool) -> np.ndarray:
            if self.dtype.hasobject:
                return _PySafeUnpickler(unpickler.file_handle).load()
            return super().read_array(unpickler, ensure_native_byte_order)

    class SafeJoblibUnpickler(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str) -> object:
            extra = {("joblib.numpy_pickle", "NumpyArrayWrapper"): SafeArrayWrapper}
            return allowed_global(module, name, extra)

    return SafeJoblibUnpickler


def safe_load(path: str | Path) -> object:
    """Unpickle a pickle or joblib file through the allow-list (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    joblib_unpickler = _joblib_unpickler()
    try:
        if joblib_unpickler is None:
            with path.open("rb") as f:
                return SafeUnpickler(f).load()
        from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

        with path.open("rb") as f, _validate_fileobject_and_memmap(f, str(path), None) as (fobj, _):
            if isinstance(fobj, str):  # joblib < 0.10 kept arrays in companion files
                raise DataFormatError(f"{path}: a joblib < 0.10 file with companion .npy files is not supported; "
                                      "re-save it with a current joblib")
            return joblib_unpickler(str(path), fobj, ensure_native_byte_order=True).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except DataFormatError:
        raise
    except Exception as exc:  # a malformed stream fails in many ways (KeyError on an unknown opcode, ...)
        hint = "" if joblib_unpickler else " (if it was written by joblib.dump, install joblib to read it)"
        raise DataFormatError(f"{path}: not a readable pickle/joblib file: {type(exc).__name__}: {exc}{hint}") from None


def read_legacy(path: str | Path, strict: bool = True, labelled: bool = True) -> tuple[Records, ValidationReport]:
    """Read the earlier system's processed file as validated Records in physical units.
    ``labelled=False`` (prediction): a sample may lack ``target``, ``v_peak`` and ``v_peak_mask``
    (class unknown, wave V not marked)."""
    path = Path(path)
    obj = safe_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataFormatError(f"{path}: expected a dict with a 'data' list of samples, found {found}")
    samples = obj["data"]
    report_notes: list[str] = []
    label_map = _label_map(path, obj.get("label_encoder"), report_notes)
    columns, lengths = _columns(path, samples, label_map, strict, report_notes, labelled)
    _unscale(path, obj.get("scaler"), columns, lengths, report_notes)
    meta = {"source": {"kind": "legacy", "file": path.name, "metadata": _plain(path, obj.get("metadata"))}}
    records, report = validate(columns, source=str(path), strict=strict, signal_lengths=lengths, meta=meta,
                               labelled=labelled)
    report.notes.extend(report_notes)
    return records, report


def _label_map(path: Path, encoder: object, notes: list[str]) -> np.ndarray:
    """Index in the file -> index in CLASS_NAMES (from the encoder's classes_, else the stated order)."""
    if encoder is None or not hasattr(encoder, "classes_"):
        notes.append("no label encoder in the file: targets read in the order " + ", ".join(CLASS_NAMES))
        return np.arange(NUM_CLASSES)
    classes = encoder.classes_
    if not (isinstance(classes, (list, tuple)) or isinstance(classes, np.ndarray) and classes.ndim == 1) \
            or len(classes) > 100 or any(isinstance(c, (list, tuple, dict, np.ndarray)) for c in classes):
        raise DataFormatError(f"{path}: label_encoder.classes_: expected a flat list of class names, "
                              f"found {type(classes).__name__}")
    names = [str(c) for c in classes]
    mapping = np.array([class_index(n) for n in names])
    if (mapping < 0).any():
        unknown = [n for n, m in zip(names, mapping, strict=True) if m < 0]
        raise DataFormatError(f"{path}: label_encoder.classes_: unknown class name(s) {unknown}; "
                              f"expected names among {list(CLASS_NAMES)}")
    repeated = sorted({n for n, m in zip(names, mapping, strict=True) if (mapping == m).sum() > 1})
    if repeated:  # a LabelEncoder's classes are distinct: repeats would fold several classes into one
        raise DataFormatError(f"{path}: label_encoder.classes_: class name(s) {repeated} given more than once; "
                              f"expected each class once (found {names})")
    return mapping


_SAMPLE_KEYS = ("patient_id", "static_params", "signal", "v_peak", "v_peak_mask", "target")
_LABEL_KEYS = ("v_peak", "v_peak_mask", "target")  # optional in a labelled=False read


def _columns(path: Path, samples: list, label_map: np.ndarray, strict: bool,
             notes: list[str], labelled: bool = True) -> tuple[dict[str, object], np.ndarray]:
    n = len(samples)
    signal: list[np.ndarray] = []
    static = np.full((n, len(STATIC_NAMES)), np.nan)
    label = np.full(n, -1, dtype=np.int64)
    peak = np.full((n, 2), np.nan)
    mask2 = np.zeros((n, 2), dtype=bool)
    threshold = np.full(n, np.nan)
    patient = np.empty(n, dtype=object)  # as in the file: the validator refuses non-integers, never casts
    malformed: list[int] = []
    total = 0
    for i, s in enumerate(samples):
        s, unlabelled = _sample_fields(path, i, s, labelled)
        total += sum(_size(s[k]) for k in ("signal", "static_params", "v_peak", "v_peak_mask"))
        if total > MAX_LEGACY_VALUES:
            raise DataFormatError(f"{path}: samples 0..{i} hold more than MAX_LEGACY_VALUES = {MAX_LEGACY_VALUES:,} "
                                  "values (data/legacy.py); a file this large, or built from shared references, "
                                  "is refused")
        try:
            signal.append(_numbers(s["signal"], "signal"))
            st = _numbers(s["static_params"], "static_params")
            target = integer_value(s["target"])
            v_peak = _numbers(s["v_peak"], "v_peak")
            v_mask = _numbers(s["v_peak_mask"], "v_peak_mask").astype(bool)
            thr = s.get("clinical_threshold")
            threshold[i] = np.nan if thr is None else _number(thr, "clinical_threshold")
            patient[i] = s["patient_id"]
        except ValueError as exc:
            raise DataFormatError(f"{path}: sample {i}: {exc}") from None
        if target is None:
            if strict:
                raise DataFormatError(f"{path}: sample {i}: target: expected an integer class index, "
                                      f"found {s['target']!r}")
            target = -1
        if st.shape == (len(STATIC_NAMES),):
            static[i] = st
        elif strict:
            raise DataFormatError(f"{path}: sample {i}: static_params has {st.size} values, "
                                  f"expected 4 ({', '.join(STATIC_NAMES)})")
        # a target outside the encoder is an unknown label (NUM_CLASSES: refused by the validator in every mode)
        label[i] = (UNKNOWN_LABEL if unlabelled else label_map[target] if 0 <= target < len(label_map)
                    else NUM_CLASSES)
        if v_peak.size == 2 and v_mask.size == 2:
            peak[i], mask2[i] = v_peak, v_mask
        else:
            malformed.append(i)
        if malformed and strict:
            raise DataFormatError(f"{path}: sample {i}: v_peak and v_peak_mask: expected 2 values each, "
                                  f"found {v_peak.size} and {v_mask.size}")
    peak_mask, lat, amp = _wave_v(peak, mask2, malformed, notes)
    lengths = np.array([s.size for s in signal])
    cols = {"signal": signal, "static": static, "label": label, "peak_mask": peak_mask, "peak_latency": lat,
            "peak_amplitude": amp, "threshold": threshold, "patient_id": patient}
    return cols, lengths


def _sample_fields(path: Path, i: int, s: object, labelled: bool) -> tuple[dict, bool]:
    """Sample ``i`` as a dict holding every field :func:`_columns` reads (a labelled=False read fills
    the absent label fields: no class, no wave V), and whether its class is unknown."""
    if not isinstance(s, dict):
        raise DataFormatError(f"{path}: sample {i}: expected a dict, found {type(s).__name__}")
    missing = [k for k in _SAMPLE_KEYS if k not in s and (labelled or k not in _LABEL_KEYS)]
    if missing:
        raise DataFormatError(f"{path}: sample {i}: missing field(s) {missing}")
    unlabelled = "target" not in s  # (labelled=False only) the class is not known
    if not labelled:
        s = {"target": UNKNOWN_LABEL, "v_peak": [np.nan, np.nan], "v_peak_mask": [False, False], **s}
    return s, unlabelled


def _wave_v(peak: np.ndarray, mask2: np.ndarray, malformed: list[int],
            notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peak_mask, latency, amplitude): wave V where both its latency and amplitude are marked, NaN
    elsewhere; a note for the malformed and the half-marked recordings."""
    if malformed:
        notes.append(f"{len(malformed)} recordings had a malformed v_peak/v_peak_mask: kept with wave V absent "
                     f"(first samples: {malformed[:5]})")
    peak_mask = mask2.all(axis=1)
    partial = int((mask2.any(axis=1) & ~peak_mask).sum())
    if partial:
        notes.append(f"{partial} recordings had only one of latency/amplitude marked: kept with wave V absent")
    lat = np.where(peak_mask, peak[:, 0], np.nan)
    amp = np.where(peak_mask, peak[:, 1], np.nan)
    return peak_mask, lat, amp


_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _size(value: object) -> int:
    """How many values a sample field holds, without expanding it (nested lists count as 1: refused later)."""
    return value.size if isinstance(value, np.ndarray) else len(value) if isinstance(value, (list, tuple)) else 1


def _numbers(value: object, key: str) -> np.ndarray:
    """A flat float64 array from a numeric ndarray, a flat list of numbers or one number; nothing else
    (a nested list can be a reference bomb: ``[[x] * 1000] * 1000`` pickles into a few bytes)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"field '{key}': expected numbers, found an array of dtype {value.dtype}")
        return value.astype(np.float64).reshape(-1)
    items = value if isinstance(value, (list, tuple)) else [value]
    bad = next((v for v in items if not isinstance(v, _SCALARS)), None)
    if bad is not None:
        raise ValueError(f"field '{key}': expected a number, an array or a flat list of numbers, "
                         f"found {type(bad).__name__} inside")
    return np.array([_number(v, key) for v in items], dtype=np.float64)


def _number(value: object, key: str) -> float:
    if not isinstance(value, _SCALARS):
        raise ValueError(f"field '{key}': expected a number, found {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # a Python int beyond float range
        raise ValueError(f"field '{key}': expected a number within float range, found an integer of "
                         f"{len(str(value))} digits") from None


def _unscale(path: Path, scaler: object, cols: dict[str, object], lengths: np.ndarray, notes: list[str]) -> None:
    """Undo the file's StandardScaler on the block it was fitted to, if that block is still standardized."""
    if scaler is None or not hasattr(scaler, "mean_") or not hasattr(scaler, "scale_"):
        return
    try:
        mean, scale = _numbers(scaler.mean_, "scaler.mean_"), _numbers(scaler.scale_, "scaler.scale_")
    except (ValueError, OverflowError) as exc:
        raise DataFormatError(f"{path}: scaler: {exc}") from None
    if mean.size != scale.size:
        raise DataFormatError(f"{path}: scaler: mean_ has {mean.size} values and scale_ {scale.size}; "
                              "expected the same number")
    if mean.size == len(STATIC_NAMES):
        block = cols["static"]
        ok = np.isfinite(block).all(axis=1)
        if ok.any() and _looks_standardized(block[ok]):
            cols["static"] = block * scale + mean
            notes.append("static_params were standardized: inverse-transformed with the file's scaler")
            return
        notes.append("static_params already in physical units: the file's scaler was not applied")
    elif mean.size == SIGNAL_LENGTH:
        ok = np.flatnonzero(lengths == SIGNAL_LENGTH)
        block = np.stack([cols["signal"][i] for i in ok]) if len(ok) else np.zeros((0, SIGNAL_LENGTH))
        if len(ok) and _looks_standardized(block):
            for i in ok:
                cols["signal"][i] = cols["signal"][i] * scale + mean
            notes.append("signals were standardized: inverse-transformed with the file's scaler")
            return
        notes.append("signals already in physical units: the file's scaler was not applied")
    else:
        notes.append(f"the file's scaler has {mean.size} features (neither 4 nor {SIGNAL_LENGTH}): not applied")


def _looks_standardized(block: np.ndarray) -> bool:
    """Column means near 0 and standard deviations near 1 (or 0: StandardScaler leaves a constant column,
    e.g. an age of 0 for every infant, at 0 with scale 1)."""
    std = block.std(axis=0)
    return bool(np.all(np.abs(block.mean(axis=0)) < 0.1) and np.all((np.abs(std - 1.0) < 0.1) | (std < 1e-6)))


def _plain(path: Path, value: object) -> object:
    """JSON-safe copy of the file's metadata (arrays become lists, other objects their repr), within
    MAX_METADATA_NODES values and MAX_METADATA_DEPTH levels, and refusing references to itself."""
    count = 0

    def copy(v: object, where: str, parents: tuple[int, ...]) -> object:
        nonlocal count
        count += 1
        if count > MAX_METADATA_NODES:
            raise DataFormatError(f"{path}: metadata: more than MAX_METADATA_NODES = {MAX_METADATA_NODES:,} values "
                                  "(shared references counted each time; data/legacy.py); expected plain metadata")
        if isinstance(v, (dict, list, tuple)):
            if id(v) in parents:
                raise DataFormatError(f"{path}: {where}: refers to itself (a reference cycle); expected plain data")
            if len(parents) >= MAX_METADATA_DEPTH:
                raise DataFormatError(f"{path}: {where}: nested more than MAX_METADATA_DEPTH = {MAX_METADATA_DEPTH} "
                                      "levels (data/legacy.py); expected plain metadata")
            inner = (*parents, id(v))
            if isinstance(v, dict):
                return {str(k): copy(x, f"{where}.{k}", inner) for k, x in v.items()}
            return [copy(x, f"{where}[{i}]", inner) for i, x in enumerate(v)]
        if isinstance(v, np.ndarray):
            return v.tolist() if v.size <= 1000 and v.dtype.kind in "biufU" else f"array{v.shape}"
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return f"<{type(v).__name__}>"  # an inert stand-in or another object: its type, not its (unbounded) repr

    return copy(value, "metadata", ())
