"""Convert recordings between formats: ``python -m data.convert IN OUT [options]``.

Input formats (``--from``, or detected from the extension and the first bytes):

- ``native``: this pipeline's .npz (``data/native.py``);
- ``legacy``: the earlier system's processed pickle/joblib (.pkl, .pickle, .joblib, also compressed);
- ``csv``:    one row per recording (``data/table.py``; ``--columns``, ``--sample-prefix``, ``--delimiter``);
- ``epl``:    an Eaton-Peabody Lab text file (``data/epl.py``; needs ``--label`` and ``--age``).

Output: ``.npz`` writes the native format, ``.csv`` a table. Strict by default: the first bad
recording stops the conversion with its file and sample index; ``--lenient`` drops bad
recordings and prints how many, and why. A file with no (usable) recordings is an error. An
existing OUT (or --report file) is replaced only with ``--overwrite``. Errors are one line
(exit 2 for a bad file, value or flag; 1 for a disk or permission error); ``--debug`` shows the
traceback.

Examples::

    python -m data.convert processed_data.pkl data/abr.npz
    python -m data.convert recordings.csv data/abr.npz --columns label=Diagnosis,fmp=FMP --lenient
    python -m data.convert ABR-52-3 mouse.npz --label NORMAL --age 0.2 --patient-id 52 \\
        --analysis ABR-52-3-16.0kHz-analyzed.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data.cli import ArgumentParser, refuse_unsafe_output, run_main
from data.records import DataFormatError, Records, ValidationReport
from data.table import check_delimiter

FORMATS = ("native", "legacy", "csv", "epl")
_LEGACY_EXT = (".pkl", ".pickle", ".joblib", ".z", ".gz", ".bz2", ".xz", ".lzma")


def detect_format(path: Path) -> str:
    """The input format from the extension, else from the first bytes."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "native"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in _LEGACY_EXT:
        return "legacy"
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b":RUN-"):
        return "epl"
    if head.startswith(b"PK"):
        return "native"
    if head[:1] == b"\x80" or head[:2] in (b"\x1f\x8b", b"BZ") or head[:1] == b"\x78":
        return "legacy"
    choices = ",".join(FORMATS)
    raise DataFormatError(f"{path}: cannot tell the format from the name or content; pass --from {{{choices}}}")


def read_any(path: Path, fmt: str, args: argparse.Namespace, *, labelled: bool = True,
             fill: dict[str, float] | None = None) -> tuple[Records, ValidationReport]:
    """Read ``path`` in format ``fmt`` with the options of ``args`` (this parser's, or
    ``evaluation.predict``'s). ``labelled=False``: labels optional (prediction); ``fill``: static
    values for a table that lacks the column (see data.table)."""
    strict = not args.lenient
    if fmt == "native":
        from data.native import read_native

        return read_native(path, strict=strict, labelled=labelled)
    if fmt == "legacy":
        from data.legacy import read_legacy

        return read_legacy(path, strict=strict, labelled=labelled)
    if fmt == "csv":
        from data.table import parse_column_spec, read_table

        delimiter = args.delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")  # checked in main
        return read_table(path, parse_column_spec(args.columns), args.sample_prefix, delimiter, strict=strict,
                          labelled=labelled, fill=fill)
    from data.epl import read_epl

    if labelled and (args.label is None or args.age is None):
        raise DataFormatError(f"{path}: an EPL file carries no class or age; pass --label NAME and --age YEARS")
    if args.age is None:
        raise DataFormatError(f"{path}: an EPL file carries no age; pass --age YEARS")
    return read_epl(path, args.label if labelled else None, args.age, args.patient_id, args.threshold, args.analysis,
                    args.wave, epl_filter(args), args.scale, args.fmp, strict=strict, rate=args.rate)


def epl_filter(args: argparse.Namespace) -> dict | None:
    """The band-pass settings of :func:`add_epl_signal_flags`'s flags (None: no filter)."""
    from data.epl import ABR_DEFAULT_FILTER

    if args.no_filter:
        return None
    given = (("highpass", args.highpass), ("lowpass", args.lowpass), ("order", args.order))
    return {**ABR_DEFAULT_FILTER, **{k: v for k, v in given if v is not None}}


def add_epl_signal_flags(g: argparse._ArgumentGroup) -> None:
    """How an EPL file's waveforms become µV at 20 kHz (shared with ``evaluation.predict``)."""
    g.add_argument("--no-filter", action="store_true", help="skip the band-pass (default: abr's 300-3000 Hz, order 1)")
    g.add_argument("--highpass", type=float)
    g.add_argument("--lowpass", type=float)
    g.add_argument("--order", type=int)
    g.add_argument("--scale", type=float, default=1.0, help="multiply samples and amplitudes to get µV (default 1)")


def write_any(path: Path, records: Records, args: argparse.Namespace) -> None:
    if path.suffix.lower() == ".csv":
        from data.table import parse_column_spec, write_table

        write_table(path, records, parse_column_spec(args.columns), args.sample_prefix, args.delimiter or ",")
    elif path.suffix.lower() == ".npz":
        from data.native import write_native

        write_native(path, records)
    else:
        raise DataFormatError(f"{path}: output must end in .npz (native) or .csv (table), found '{path.suffix}'")


def parser() -> ArgumentParser:
    summary, details = __doc__.split("\n\n", 1)
    ap = ArgumentParser(prog="python -m data.convert", description=summary, epilog=details,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--from", dest="fmt", choices=FORMATS, help="input format (default: detected)")
    ap.add_argument("--lenient", action="store_true", help="drop bad recordings and report them instead of stopping")
    ap.add_argument("--report", type=Path, help="also write the validation report as JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT (and the --report file) if it exists")
    g = ap.add_argument_group("csv")
    g.add_argument("--columns", default="", help="key=column renames, e.g. label=Diagnosis,fmp=FMP")
    g.add_argument("--sample-prefix", default="s", help="sample columns are <prefix>0..<prefix>199 (default s)")
    g.add_argument("--delimiter", default=None, help="field separator (default ',' or tab for .tsv)")
    g = ap.add_argument_group("epl")
    g.add_argument("--label", help="class of this ear: NORMAL, NÖROPATİ, SNİK, TOTAL or İTİK")
    g.add_argument("--age", type=float, help="age in years")
    g.add_argument("--patient-id", type=int, default=0)
    g.add_argument("--threshold", type=float, help="dB; default: from --analysis")
    g.add_argument("--analysis", type=Path, help="abr analysis file with marked peaks and threshold")
    g.add_argument("--wave", type=int, default=5, help="which P<i> of the analysis file is wave V (default 5)")
    add_epl_signal_flags(g)
    g.add_argument("--rate", type=float, help="stimulus rate (/s) where the header has no 'REP RATE (/sec)'")
    g.add_argument("--fmp", type=float, help="fixed FMP for every recording (default: estimated, needs >= 14 ms)")
    return ap


def check_output(path: Path, flag: str, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output path that would replace a file unasked, or whose folder does not exist; one
    that is an input or lies in a run directory is refused even with --overwrite."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; expected a file name")
    refuse_unsafe_output(path, flag, inputs=inputs)
    if path.exists() and not overwrite:
        raise ValueError(f"{flag} {path}: exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: folder '{path.parent}' does not exist")


def convert(args: argparse.Namespace) -> None:
    if args.delimiter is not None:
        check_delimiter(args.delimiter)
    inputs = (args.input, *([args.analysis] if getattr(args, "analysis", None) else []))
    check_output(args.output, "OUT", args.overwrite, inputs)
    if args.report is not None:
        check_output(args.report, "--report", args.overwrite, inputs)
        if args.report.resolve() == args.output.resolve():
            raise ValueError(f"--report {args.report}: the same file as OUT")
    if args.output.suffix.lower() not in (".npz", ".csv"):
        raise DataFormatError(f"{args.output}: output must end in .npz (native) or .csv (table), "
                              f"found '{args.output.suffix}'")
    if not args.input.is_file():
        raise DataFormatError(f"{args.input}: file not found")
    fmt = args.fmt or detect_format(args.input)
    records, report = read_any(args.input, fmt, args)
    write_any(args.output, records, args)
    print("\n".join(report.lines()))
    if args.report:
        try:
            args.report.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        except OSError as exc:
            raise OSError(f"--report {args.report}: cannot write ({exc.strerror or exc}); "
                          f"{args.output} was written") from None
    print(f"wrote {args.output}: {len(records)} recordings from {len(set(records.patient_id.tolist()))} patients")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_main(lambda: convert(args), debug=args.debug, source=args.input)


if __name__ == "__main__":
    sys.exit(main())
