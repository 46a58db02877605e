"""The native file format: one NPZ (zip of ``.npy`` arrays), written byte-for-byte deterministically.

Layout (format version 1; see docs/data.md for the full specification):

=================  ===========  ========  ==================================================
member             dtype        shape     content
=================  ===========  ========  ==================================================
``signal``         float32      (N, 200)  averaged waveform, µV, 10 ms at 20 kHz
``static``         float32      (N, 4)    age (years), intensity (dB nHL), rate (1/s), FMP
``label``          int64        (N,)      class index into ``meta.class_names``
``peak_mask``      bool         (N,)      wave V present
``peak_latency``   float32      (N,)      ms; NaN where ``peak_mask`` is False
``peak_amplitude`` float32      (N,)      µV, baseline-to-peak; NaN where no peak
``threshold``      float32      (N,)      dB nHL
``patient_id``     int64        (N,)      recordings of one patient share it
``series_id``      int64        (N,)      optional: recordings of one intensity series (ear or session);
                                          absent: one series per patient
``wave_present``   int8         (N, 2)    optional: waves I, III: 1 present, 0 absent, -1 not marked;
                                          absent: every wave I / III unmarked (the loss ignores them)
``wave_latency``   float32      (N, 2)    optional (with wave_present): ms, NaN unless present
``wave_amplitude`` float32      (N, 2)    optional (with wave_present): µV baseline-to-peak, NaN unless present
``meta``           unicode      ()        JSON: format, format_version, sample_rate_hz, units, ...
=================  ===========  ========  ==================================================

No member is pickled (``np.load(..., allow_pickle=False)`` reads it). Zip entries carry a fixed
1980-01-01 timestamp and are stored uncompressed, so equal records give equal bytes.

Reading checks sizes before allocating: each member's ``.npy`` header must describe exactly the
bytes the member holds (a header claiming 728 TiB in a small file is refused), and the members
together may hold at most :data:`MAX_NATIVE_BYTES` uncompressed (a deflate bomb is refused from
the zip directory, before anything is inflated). Members holding Python objects are refused
without being unpickled.
"""

from __future__ import annotations

import io
import json
import lzma
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from data.files import write_atomic
from data.records import (
    CLASS_NAMES,
    SAMPLE_RATE_HZ,
    SIGNAL_LENGTH,
    STATIC_NAMES,
    STATIC_UNITS,
    DataFormatError,
    Records,
    ValidationReport,
    validate,
)

FORMAT_NAME = "abr-native"
FORMAT_VERSION = 1
AMPLITUDE_CONVENTION = (
    "baseline-to-peak: the recorded waveform's value (µV, against the recording's zero line) at the "
    "marked wave-V peak; not peak-to-trough"
)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MEMBERS = (*Records.COLUMNS, *Records.OPTIONAL_COLUMNS, "meta")
# Uncompressed bytes a native file may hold: 4 GiB is about 5 million recordings, 100 times the
# clinical data set (51,961 recordings, 42 MB of signal). Above it a file is refused before reading.
MAX_NATIVE_BYTES = 4 * 2**30


def standard_meta(extra: dict | None = None) -> dict:
    """The metadata every native file carries, merged with ``extra`` (e.g. a ``source`` block)."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "signal_length": SIGNAL_LENGTH,
        "class_names": list(CLASS_NAMES),
        "static_names": list(STATIC_NAMES),
        "units": {
            "signal": "µV",
            "static": dict(zip(STATIC_NAMES, STATIC_UNITS, strict=True)),
            "peak_latency": "ms",
            "peak_amplitude": "µV",
            "threshold": "dB nHL",
        },
        "amplitude_convention": AMPLITUDE_CONVENTION,
    }
    meta.update({k: v for k, v in (extra or {}).items() if k not in meta})
    return meta


def write_native(path: str | Path, records: Records) -> Path:
    """Write ``records`` to ``path`` (.npz); the same records always give the same bytes."""
    path = Path(path)
    meta = standard_meta(records.meta)
    members = {**records.columns(), "meta": np.array(json.dumps(meta, sort_keys=True, ensure_ascii=False))}
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in members.items():
                buf = io.BytesIO()
                array = array if array.flags.c_contiguous else np.ascontiguousarray(array)  # (keeps 0-d meta 0-d)
                np.lib.format.write_array(buf, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())

    return write_atomic(path, write)


def read_native(path: str | Path, strict: bool = True, labelled: bool = True) -> tuple[Records, ValidationReport]:
    """Read and validate a native file. ``strict``: the first bad recording raises
    :class:`DataFormatError` (naming file and sample); otherwise bad recordings are dropped and
    counted in the returned report. ``labelled=False``: the label members may be absent, and a
    recording may carry no class or threshold (prediction; see data.records)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: not a native .npz file (expected a zip archive, found an empty file); "
                              "convert it with `python -m data.convert`")
    arrays = _read_members(path)
    meta = _read_meta(path, arrays.pop("meta", None))
    signal = arrays.get("signal")
    if signal is not None and signal.ndim != 2:
        raise DataFormatError(f"{path}: field 'signal' has shape {signal.shape}, expected (N, {SIGNAL_LENGTH})")
    return validate(arrays, source=str(path), strict=strict, meta=meta, labelled=labelled)


def _not_native(path: Path, why: str, hint: str = "convert it with `python -m data.convert`") -> DataFormatError:
    return DataFormatError(f"{path}: not a native .npz file ({why}); {hint}")


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """The members of the zip, each checked against its header and the size limit before it is read
    (see module docstring); an unknown member is refused, never read."""
    with path.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # a pickle: never loaded here (a pickle can run code)
        raise _not_native(path, "it is a pickle, which is never loaded here", "if it is the earlier system's "
                          "processed file, convert it with `python -m data.convert --from legacy` (it reads it safely)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
            unknown = sorted(k for k in infos if k not in MEMBERS)
            if unknown:  # dropped silently before: a misspelt optional column would vanish unseen
                raise DataFormatError(f"{path}: unknown member(s) {unknown[:5]}; expected only {list(MEMBERS)}")
            total = sum(i.file_size for i in infos.values())
            if total > MAX_NATIVE_BYTES:
                raise DataFormatError(f"{path}: members hold {total:,} bytes uncompressed; the limit is "
                                      f"MAX_NATIVE_BYTES = {MAX_NATIVE_BYTES:,} (data/native.py)")
            try:
                return {name: _read_member(path, zf, info) for name, info in infos.items()}
            except MemoryError:  # under the limit but over this machine's memory: name the file, as convert does
                raise MemoryError(f"{path}: its members hold {total:,} bytes uncompressed") from None
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error,
            lzma.LZMAError) as exc:
        raise _not_native(path, str(exc) or type(exc).__name__) from None


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise _not_native(path, f"member '{info.filename}': .npy format version {version}, expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise _not_native(path, f"member '{info.filename}' holds Python objects (dtype {dtype}), "
                                    "which are never unpickled")
        claimed = math.prod(shape) * dtype.itemsize
        held = info.file_size - f.tell()
    if claimed != held:
        raise _not_native(path, f"member '{info.filename}': its header claims shape {shape} of {dtype} "
                                f"({claimed:,} bytes), but it holds {held:,} bytes")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_meta(path: Path, raw: np.ndarray | None) -> dict:
    if raw is None:
        raise DataFormatError(f"{path}: missing field(s) ['meta']; expected the native format's metadata member")
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise DataFormatError(f"{path}: field 'meta': expected a JSON text (a 0-d unicode array), "
                              f"found an array of shape {raw.shape} and dtype {raw.dtype}")
    try:
        meta = json.loads(str(raw[()]))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataFormatError(f"{path}: field 'meta' is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{path}: field 'meta': expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise DataFormatError(f"{path}: meta.format: expected '{FORMAT_NAME}', found {meta.get('format')!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise DataFormatError(f"{path}: meta.format_version: expected an integer 1 to {FORMAT_VERSION}, "
                              f"found {version!r}")
    if meta.get("class_names") != list(CLASS_NAMES):
        raise DataFormatError(f"{path}: meta.class_names: expected {list(CLASS_NAMES)}, "
                              f"found {meta.get('class_names')!r}")
    if meta.get("sample_rate_hz") != SAMPLE_RATE_HZ:
        raise DataFormatError(f"{path}: meta.sample_rate_hz: expected {SAMPLE_RATE_HZ}, "
                              f"found {meta.get('sample_rate_hz')!r}")
    return meta
