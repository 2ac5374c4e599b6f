"""Reading a person's uploaded file: bytes in, a checked and parsed :class:`ReadFile` out (no I/O, no DB).

A file is accepted when its suffix is one of :data:`ACCEPTED_SUFFIXES` *and* its content is what the suffix
says: UTF-8 text without NUL bytes for CSV/TSV/TXT/Markdown/JSON, a table pandas can parse, JSON that
parses, a PDF that ``pypdf`` opens. Archives are refused whatever their name. Anything else raises
:class:`FileRefused`, whose message is one sentence for the person: the file's name and what would be
accepted. :func:`read_upload` is CPU-bound (pandas, pypdf): call it from a worker thread.

The table helpers (:func:`load_table`, :func:`describe_table`, :func:`query_table`) answer the agent's tools
with plain sentences; filters and sums are pandas operations on the column named, never ``eval``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

ACCEPTED_SUFFIXES = (".csv", ".tsv", ".txt", ".md", ".json", ".pdf")
MAX_COLUMNS = 500
MAX_PDF_PAGES = 1000
MAX_TEXT_CHARS = 20_000_000
MAX_PDF_CONTENT_BYTES = 40_000_000  # page content streams, decompressed, summed over pages (parsing them is slow)
MAX_PDF_SECONDS = 60.0  # a PDF whose text takes longer than this to extract is refused, not read to the end
MAX_NAME_CHARS = 120
MAX_PASSAGE_CHARS = 4000  # a longer line or page is indexed as several passages with the same location
MAX_TOP_ROWS = 50
QUERY_OPERATIONS = ("count", "sum", "mean", "min", "max", "top")
ACCEPTED = "a CSV, TSV, TXT, Markdown (.md), JSON or PDF file"

_KINDS = ((".csv", "table", "text/csv"), (".tsv", "table", "text/tab-separated-values"),
          (".txt", "text", "text/plain"), (".md", "text", "text/markdown"),
          (".json", "json", "application/json"), (".pdf", "pdf", "application/pdf"))
_ARCHIVES = ((b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"), (b"PK\x07\x08", "a zip archive"),
             (b"\x1f\x8b", "a gzip archive"), (b"\x1f\x9d", "a compressed archive"),
             (b"\x1f\xa0", "a compressed archive"),
             (b"\xfd7zXZ\x00", "an xz archive"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
             (b"Rar!\x1a\x07", "a RAR archive"), (b"\x28\xb5\x2f\xfd", "a Zstandard archive"),
             (b"\x04\x22\x4d\x18", "an LZ4 archive"), (b"LZIP\x01", "an lzip archive"),
             (b"MSCF\x00\x00\x00\x00", "a cabinet archive"))
# pypdf's own per-stream limits, tightened: text extraction never needs a 75 MB stream.
_PDF_LIMITS = (("zlib_maximum_output_length", 25_000_000), ("lzw_maximum_output_length", 25_000_000),
               ("run_length_maximum_output_length", 25_000_000),
               ("array_based_stream_maximum_output_length", 25_000_000),
               ("maximum_declared_stream_length", 25_000_000), ("stream_decoding_work_maximum_length", 100_000_000),
               ("stream_parsing_work_maximum_count", 1_000_000))


class FileRefused(ValueError):
    """Why a file is not accepted: str(error) is one sentence for the person, naming the file and what to do."""


class TableQueryError(ValueError):
    """A table question that cannot be answered as asked (unknown column or operation); the message says
    what is available, for the model to retry or tell the person."""


@dataclass(frozen=True)
class Passage:
    location: str  # "line 12" (text, markdown, json), "row 5" (tables, 1-based data rows), "page 3" (pdf)
    text: str


@dataclass(frozen=True)
class ReadFile:
    name: str
    kind: str  # "table" | "text" | "json" | "pdf"
    media_type: str
    size: int
    summary: str  # one line for the person: "1,000 rows × 5 columns", "12 pages", "240 lines", ...
    passages: tuple[Passage, ...]  # what the full-text index holds; empty lines skipped


# -- accepting a file --------------------------------------------------------------------------------
def read_upload(name: str, data: bytes, *, max_bytes: int) -> ReadFile:
    """Check and parse one upload; raises :class:`FileRefused` with a sentence for the person."""
    name = clean_name(name)
    size = len(data)
    if size == 0:
        raise FileRefused(f"{name} is empty; upload {ACCEPTED} that has some content.")
    if size > max_bytes:
        raise FileRefused(f"{name} is {format_size(size)}; the limit is {_format_limit(max_bytes)} per file, "
                          "so upload a smaller file (split it, or keep only the part you need).")
    archive = _archive_kind(data)
    if archive:
        raise FileRefused(f"{name} is {archive}, and archives aren't accepted; unpack it and upload "
                          f"{ACCEPTED} itself.")
    suffix = os.path.splitext(name)[1].lower()
    kinds = [(kind, media_type) for accepted, kind, media_type in _KINDS if accepted == suffix]
    if not kinds:
        raise FileRefused(f"{name} is not a type I can read; upload {ACCEPTED}.")
    [(kind, media_type)] = kinds
    if kind == "pdf":
        summary, passages = _read_pdf(name, data)
    else:
        text = _decode(name, data)
        if kind == "table":
            summary, passages = _read_table(name, text, media_type)
        elif kind == "json":
            summary, passages = _read_json(name, text)
        else:
            summary, passages = _count(len(_lines(text)), "line"), _line_passages(text)
    return ReadFile(name, kind, media_type, size, summary, tuple(passages))


def clean_name(name: str) -> str:
    """The base name only (no directories), control and format characters removed, at most 120 chars."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    base = " ".join(base.split()).lstrip(". ") or "file"
    if len(base) > MAX_NAME_CHARS:
        stem, suffix = os.path.splitext(base)
        suffix = suffix if len(suffix) <= 10 else ""
        base = stem[: MAX_NAME_CHARS - len(suffix)].rstrip() + suffix
    return base


def format_size(size: int) -> str:
    """``532 bytes``, ``12.5 KB``, ``100.0 MB`` (binary units, one decimal)."""
    if size < 1024:
        return _count(size, "byte")
    for unit, scale in (("KB", 1024), ("MB", 1024 ** 2), ("GB", 1024 ** 3)):
        if size < scale * 1024 or unit == "GB":
            return f"{size / scale:,.1f} {unit}"
    raise AssertionError("unreachable")


def _format_limit(size: int) -> str:
    text = format_size(size)
    return text.replace(".0 ", " ")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _archive_kind(data: bytes) -> str | None:
    for magic, label in _ARCHIVES:
        if data.startswith(magic):
            return label
    if data[:3] == b"BZh" and data[3:4].isdigit() and data[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "a bzip2 archive"
    if data[257:262] == b"ustar":
        return "a tar archive"
    return None


def _decode(name: str, data: bytes) -> str:
    if b"\x00" in data:
        raise FileRefused(f"{name} is not a text file (it holds binary data); upload a CSV, TSV, TXT, Markdown "
                          "or JSON file saved as UTF-8 text, or a PDF.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileRefused(f"{name} is not a text file in UTF-8; save it as UTF-8 text (in Excel: "
                          "\"CSV UTF-8\") and upload it again.") from None
    if len(text) > MAX_TEXT_CHARS:
        raise FileRefused(f"{name} holds more than {MAX_TEXT_CHARS:,} characters of text; upload a shorter part.")
    return text


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _chunks(text: str) -> list[str]:
    """``text`` in pieces of at most MAX_PASSAGE_CHARS, split at whitespace where there is some."""
    pieces = []
    while len(text) > MAX_PASSAGE_CHARS:
        cut = text.rfind(" ", MAX_PASSAGE_CHARS * 3 // 4, MAX_PASSAGE_CHARS)
        cut = cut if cut > 0 else MAX_PASSAGE_CHARS
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text] if text else pieces


def _passages(location: str, text: str) -> list[Passage]:
    return [Passage(location, piece) for piece in _chunks(text.strip())]


def _line_passages(text: str) -> list[Passage]:
    return [p for number, line in enumerate(_lines(text), 1) if line.strip() for p in _passages(f"line {number}", line)]


def _read_json(name: str, text: str) -> tuple[str, list[Passage]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileRefused(f"{name} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                          "fix it, or upload it as a .txt file.") from None
    except (ValueError, RecursionError):
        raise FileRefused(f"{name} is JSON nested too deeply or with numbers too long to read; "
                          "upload it as a .txt file instead.") from None
    if isinstance(value, dict):
        summary = f"JSON object with {_count(len(value), 'key')}"
    elif isinstance(value, list):
        summary = f"JSON array with {_count(len(value), 'item')}"
    else:
        summary = "JSON " + {str: "string", bool: "true/false value", type(None): "null"}.get(type(value), "number")
    return summary, _line_passages(text)


# -- tables ------------------------------------------------------------------------------------------
def _separator(text: str, media_type: str) -> str:
    if media_type == "text/tab-separated-values":
        return "\t"
    header = text.split("\n", 1)[0]
    return ";" if "," not in header and ";" in header else ","


def load_table(data: bytes, media_type: str):
    """CSV or TSV bytes (UTF-8) as a pandas DataFrame; raises ValueError (pandas' errors) when unreadable."""
    import pandas as pd

    text = data.decode("utf-8-sig")
    return pd.read_csv(io.StringIO(text), sep=_separator(text, media_type), low_memory=False)


def _read_table(name: str, text: str, media_type: str) -> tuple[str, list[Passage]]:
    import pandas as pd

    header = next(csv.reader([text.split("\n", 1)[0]], delimiter=_separator(text, media_type)), [])
    if len(header) > MAX_COLUMNS:
        raise FileRefused(f"{name} has {len(header):,} columns; the limit is {MAX_COLUMNS}, so upload a table "
                          "with fewer columns (keep the ones you need, or split it).")
    try:
        df = load_table(text.encode("utf-8"), media_type)
    except pd.errors.EmptyDataError:
        raise FileRefused(f"{name} is empty; upload a table with a header line and at least one row.") from None
    except Exception as error:  # pandas' parser errors are many; any of them means "not a readable table"
        detail = " ".join(str(error).split())[:160]
        raise FileRefused(f"{name} could not be read as a table ({detail}); check that every row has the same "
                          "number of columns, or upload it as a .txt file.") from None
    if len(df.columns) > MAX_COLUMNS:
        raise FileRefused(f"{name} has {len(df.columns):,} columns; the limit is {MAX_COLUMNS}, so upload a table "
                          "with fewer columns (keep the ones you need, or split it).")
    if len(df) == 0:
        raise FileRefused(f"{name} is empty (a header but no rows); upload a table with at least one row.")
    cells = df.astype(object).where(df.notna(), "")
    passages = [p for number, row in enumerate(cells.itertuples(index=False, name=None), 1)
                for p in _passages(f"row {number}", ", ".join(str(c) for c in row))]
    return f"{_count(len(df), 'row')} × {_count(len(df.columns), 'column')}", passages


def describe_table(df, name: str) -> str:
    """Size, columns with their types, and the first 5 rows as a small markdown table."""
    columns = [f"{c} ({_type_label(df[c].dtype)})" for c in df.columns[:50]]
    more = f", and {len(df.columns) - 50:,} more" if len(df.columns) > 50 else ""
    return (f"{name}: {_count(len(df), 'row')} × {_count(len(df.columns), 'column')}.\n"
            f"Columns: {', '.join(columns)}{more}.\n\nFirst rows:\n\n{_markdown(df.head(5))}")


def _type_label(dtype) -> str:
    return {"i": "whole number", "u": "whole number", "f": "number", "b": "true/false",
            "M": "date/time", "m": "duration"}.get(getattr(dtype, "kind", "O"), "text")


def _markdown(df, max_columns: int = 12) -> str:
    shown = df.iloc[:, :max_columns]
    cell = lambda v: "" if _missing(v) else " ".join(str(v).split()).replace("|", "\\|")[:40]  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in shown.columns) + " |", "|" + " --- |" * len(shown.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False, name=None)]
    if len(df.columns) > max_columns:
        lines.append(f"({len(df.columns) - max_columns} more columns not shown)")
    return "\n".join(lines)


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # NaN, NaT, pd.NA
    except (TypeError, ValueError):
        return False


def query_table(df, name: str, operation: str, column: str | None = None, where_column: str | None = None,
                where_value: str | None = None, n: int = 5) -> str:
    """Answer count/sum/mean/min/max/top over one column, optionally filtered by ``where_column ==
    where_value`` (case-insensitive text compare, or equal numbers). Raises :class:`TableQueryError`."""
    op = str(operation or "").strip().lower()
    if op not in QUERY_OPERATIONS:
        raise TableQueryError(f"I can't do {operation!r} on {name}; the operations are {', '.join(QUERY_OPERATIONS)}.")
    label = none_left = ""
    if where_column not in (None, ""):
        where = _column(df, name, where_column)
        if where_value is None:
            raise TableQueryError(f"Say which value of {where} to keep in {name}.")
        df = df[_equals(df[where], where_value)]
        label = f' where {where} is "{where_value}"'
        none_left = f'No rows of {name} have {where} equal to "{where_value}"'
    if op == "count" and column in (None, ""):
        return f"{name} has {_count(len(df), 'row')}{label}."
    if column in (None, ""):
        raise TableQueryError(f"Say which column of {name} to {op}; its columns are: {_listing(df)}.")
    col = _column(df, name, column)
    values = df[col]
    if op == "count":
        return f"{name} has {_count(int(values.notna().sum()), 'row')} with a value in {col}{label}."
    if len(df) == 0:
        return f"{none_left or f'{name} has no rows'}, so there is nothing to {op}."
    if op == "top":
        return _top(df, name, col, label, n)
    return _aggregate(values, name, op, col, label)


def _column(df, name: str, wanted: str) -> str:
    key = str(wanted).strip()
    exact = [c for c in df.columns if str(c) == key]
    folded = [c for c in df.columns if str(c).strip().casefold() == key.casefold()]
    if len(exact) == 1 or len(folded) == 1:
        return (exact or folded)[0]
    raise TableQueryError(f'{name} has no column named "{key}"; its columns are: {_listing(df)}.')


def _listing(df) -> str:
    names = [str(c) for c in df.columns[:60]]
    return ", ".join(names) + (f", and {len(df.columns) - 60:,} more" if len(df.columns) > 60 else "")


def _equals(series, value):
    target = str(value).strip().casefold()
    mask = series.astype(str).str.strip().str.casefold() == target
    number = _as_float(value)
    if number is not None and series.dtype.kind in "iuf":
        mask = mask | (series == number)
    return mask.fillna(False).astype(bool)


def _as_float(value: Any) -> float | None:
    try:
        number = float(str(value).strip().replace(",", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _aggregate(values, name: str, op: str, col: str, label: str) -> str:
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    present = int(values.notna().sum())
    counted = int(numbers.notna().sum())
    if counted == 0 and op in ("min", "max") and present:
        text = values.dropna().astype(str)
        result = text.min() if op == "min" else text.max()
        noun = "smallest" if op == "min" else "largest"
        return f'The {noun} {col} in {name}{label} is "{result}" (compared as text).'
    if counted == 0:
        raise TableQueryError(f"{col} in {name} holds no numbers{label}, so I can't take its {op}.")
    result = {"sum": numbers.sum, "mean": numbers.mean, "min": numbers.min, "max": numbers.max}[op]()
    noun = {"sum": "sum", "mean": "mean", "min": "smallest", "max": "largest"}[op]
    subject = f"The {noun} of {col}" if op in ("sum", "mean") else f"The {noun} {col}"
    skipped = present - counted
    note = f" ({_count(skipped, 'value')} that are not numbers skipped)" if skipped else ""
    return f"{subject} in {name}{label} is {format_number(result)}{note}."


def _top(df, name: str, col: str, label: str, n: int) -> str:
    import pandas as pd

    n = max(1, min(int(n or 5), MAX_TOP_ROWS))
    df = df.reset_index(drop=True)
    numbers = pd.to_numeric(df[col], errors="coerce")
    key = numbers if numbers.notna().any() else df[col].astype(str).where(df[col].notna())
    order = key.sort_values(ascending=False, na_position="last", kind="stable").index[:n]
    top = df.iloc[list(order)]
    return f"The {_count(len(top), 'row')} of {name}{label} with the largest {col}:\n\n{_markdown(top)}"


def format_number(value: Any) -> str:
    """``12,345``, ``12,345.5``, ``0.000123``."""
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    if 0 < abs(number) < 0.001:
        return f"{number:.3g}"
    return f"{number:,.6f}".rstrip("0").rstrip(".")


# -- PDF ---------------------------------------------------------------------------------------------
def _read_pdf(name: str, data: bytes) -> tuple[str, list[Passage]]:
    import pypdf

    damaged = FileRefused(f"{name} could not be read as a PDF (it looks damaged or is not a PDF); export or save "
                          "it as PDF again, or upload its text as a .txt file.")
    if not data.startswith(b"%PDF-"):
        raise damaged
    try:
        pages = _pdf_pages(name, data)
    except FileRefused:
        raise
    except pypdf.errors.LimitReachedError:
        raise _pdf_too_big(name) from None
    except Exception:  # pypdf raises many kinds (PdfReadError, KeyError, RecursionError, ...) on bad input
        raise damaged from None
    passages = [p for number, text in enumerate(pages, 1) for p in _passages(f"page {number}", text)]
    summary = _count(len(pages), "page") + ("" if passages else ", no text found (a scanned PDF?)")
    return summary, passages


def _pdf_too_big(name: str) -> FileRefused:
    return FileRefused(f"{name} unpacks to more than I can read (its compressed content is too large or too "
                       "complex); upload a shorter part of it, or its text as a .txt file.")


def _pdf_pages(name: str, data: bytes) -> list[str]:
    """Each page's text, within the page, text, content and time budgets above."""
    import pypdf

    deadline = time.monotonic() + MAX_PDF_SECONDS
    with pypdf.apply_configuration(**dict(_PDF_LIMITS)):
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileRefused(f"{name} is protected with a password; remove the protection and upload it again.")
        count = len(reader.pages)
        if count == 0:
            raise FileRefused(f"{name} has no pages; upload a PDF with some content.")
        if count > MAX_PDF_PAGES:
            raise FileRefused(f"{name} has {count:,} pages; the limit is {MAX_PDF_PAGES:,}, so upload a shorter "
                              "part of it.")
        pages, chars, content = [], 0, 0
        for page in reader.pages:
            stream = page.get_contents()
            content += len(stream.get_data()) if stream is not None else 0
            if content > MAX_PDF_CONTENT_BYTES or time.monotonic() > deadline:
                raise _pdf_too_big(name)
            text = (page.extract_text() or "").replace("\x00", "")
            text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates reach the database
            chars += len(text)
            if chars > MAX_TEXT_CHARS:
                raise FileRefused(f"{name} holds more than {MAX_TEXT_CHARS:,} characters of text; upload a shorter "
                                  "part of it.")
            pages.append(text)
    return pages
