"""Labelled data in batches: CSV, Parquet and JSONL at any fsspec URI, the column checks, and the
deterministic holdout split shared by evaluation and adaptation.

The public API (stable; ``modelreuse adapt`` and ``modelreuse evaluate`` both build on it):

- ``is_holdout(row_index, holdout)`` / ``holdout_mask(row_indices, holdout)``: whether a row is held out.
  The split is a pure function of (row index, fraction, seed): a splitmix64 hash of the 0-based row
  position in the file (header excluded) mixed with the seed, mapped to [0, 1) and compared with the
  fraction. No state, no shuffling, no row count needed, so a stream can decide row by row, and the
  evaluator and the trainer always agree. Appending rows to a file keeps the old rows' assignment.
- ``DataReader(spec, ...)``: reads the file once in batches of at most ``batch_rows`` rows; memory does not
  grow with the file. ``reader.batches(part)`` yields ``Batch`` objects; after a full pass
  ``reader.digest`` is ``sha256:<hex>`` of the file's bytes and ``reader.rows_read`` the rows seen.
- ``iter_batches(spec, part="holdout"|"train"|"all", batch_rows=..., labels=...)``: the same in one call.

Target values are compared as text: integer-valued numbers are written without a decimal point (``1.0``
becomes ``"1"``), so a label set ``["0", "1"]`` matches a numeric 0/1 column in any format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelreuse.api.spec import DataSpec, Holdout
from modelreuse.runtime.errors import WorkloadError

Part = Literal["holdout", "train", "all"]
DataFormat = Literal["csv", "parquet", "jsonl"]

DEFAULT_BATCH_ROWS = 65536
# Bytes pyarrow parses per block; bounds memory and sets how often progress moves.
_BLOCK_BYTES = 8 << 20

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".snappy")


# ---------------------------------------------------------------------------------------------------------
# The holdout split


def _unit_scalar(row_index: int, seed: int) -> float:
    z = (row_index + (seed + 1) * _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def holdout_unit(row_indices: np.ndarray, seed: int) -> np.ndarray:
    """The split's uniform number in [0, 1) for each row index (vectorised splitmix64)."""
    z = np.asarray(row_indices, dtype=np.uint64) + np.uint64(((seed + 1) * _GOLDEN) & _MASK64)
    # uint64 arithmetic wraps modulo 2**64, exactly as the scalar version masks.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def is_holdout(row_index: int, holdout: Holdout) -> bool:
    """Whether the row at this 0-based position is held out for evaluation (never trained on)."""
    if holdout.fraction >= 1.0:
        return True
    return _unit_scalar(int(row_index), holdout.seed) < holdout.fraction


def holdout_mask(row_indices: np.ndarray, holdout: Holdout) -> np.ndarray:
    """Boolean mask over row indices: True where the row is held out. Same answer as ``is_holdout``."""
    if holdout.fraction >= 1.0:
        return np.ones(len(row_indices), dtype=bool)
    return holdout_unit(row_indices, holdout.seed) < holdout.fraction


def part_mask(row_indices: np.ndarray, holdout: Holdout, part: Part) -> np.ndarray | None:
    """Mask of the rows in ``part``; None means every row."""
    if part == "all" or (part == "holdout" and holdout.fraction >= 1.0):
        return None
    mask = holdout_mask(row_indices, holdout)
    return mask if part == "holdout" else ~mask


# ---------------------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """Rows of one part of the data.

    ``row_index``: 0-based positions in the file. ``features``: float32 (rows, len(features)) for numeric
    data, else None. ``texts``: the text column for text data, else None. ``targets``: the target values
    as text (see the module docstring). ``y``: class indices into the label set when one was given.
    """

    row_index: np.ndarray
    targets: pa.Array
    features: np.ndarray | None = None
    texts: list[str] | None = None
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row_index)

    def target_values(self) -> np.ndarray:
        """The target values as a numpy array of str."""
        return np.asarray(self.targets.to_pylist(), dtype=object)


def infer_format(uri: str, explicit: str | None = None) -> DataFormat:
    """The data format from the spec, else from the URI's suffix (compression suffixes ignored)."""
    if explicit:
        return explicit  # type: ignore[return-value]
    name = uri.split("?", 1)[0].lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise WorkloadError(
        "InvalidData",
        f"Cannot tell the format of {uri} from its name; set data.format to csv, parquet or jsonl.",
    )


class _HashingReader:
    """A read-only file wrapper that hashes every byte read, so a sequential pass yields the digest."""

    def __init__(self, raw: Any):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.sha256.update(chunk)
        self.bytes_read += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._raw.close()


def _open(uri: str, compression: str | None = "infer") -> Any:
    try:
        return fsspec.open(uri, "rb", compression=compression).open()
    except FileNotFoundError as exc:
        raise WorkloadError("UnreadableUri", f"There is no data at {uri}; check data.uri.") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise WorkloadError(
            "UnreadableUri", f"Cannot open the data at {uri} ({exc}); check data.uri and its credentials."
        ) from exc


def _size_of(uri: str) -> int | None:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        return int(fs.size(path))
    except Exception:  # a size is only for progress; any failure just means "unknown"
        return None


def _missing(uri: str, wanted: Sequence[str], present: Sequence[str]) -> WorkloadError:
    absent = [c for c in wanted if c not in set(present)]
    shown = ", ".join(list(present)[:20]) + (", ..." if len(present) > 20 else "")
    return WorkloadError(
        "MissingColumns",
        f"The data at {uri} has no column {', '.join(repr(c) for c in absent)}; its columns are: {shown}. "
        "Fix data.features, data.textColumn or data.target.",
    )


_CSV_CONVERSION = re.compile(r"In CSV column #(\d+): .*?conversion error to (\w+): invalid value '(.*?)'", re.S)


def _record_boundary(data: bytes, quoted: bool, first: bool = False) -> int:
    """Offset just past the last (or, with ``first``, the first) newline that ends a record; 0 if none.

    With ``quoted`` (CSV whose values may hold newlines) a newline ends a record only outside quotes: where
    the count of quote characters before it is even, since RFC 4180 escapes a quote by doubling it.
    """
    if first:
        pos = data.find(b"\n")
        while pos >= 0 and quoted and data.count(b'"', 0, pos) % 2:
            pos = data.find(b"\n", pos + 1)
        return pos + 1 if pos >= 0 else len(data)
    pos = data.rfind(b"\n")
    if not quoted:
        return pos + 1
    while pos >= 0 and data.count(b'"', 0, pos) % 2:
        pos = data.rfind(b"\n", 0, pos)
    return pos + 1


class DataReader:
    """One streaming pass over a labelled data file; see the module docstring."""

    def __init__(
        self,
        spec: DataSpec,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        labels: Sequence[str] | None = None,
        block_bytes: int = _BLOCK_BYTES,
    ):
        self.spec = spec
        self.uri = spec.uri
        self.format: DataFormat = infer_format(spec.uri, spec.format)
        self.batch_rows = max(1, int(batch_rows))
        self.labels = list(labels) if labels is not None else None
        self._label_array = pa.array(self.labels, type=pa.string()) if self.labels is not None else None
        self.block_bytes = block_bytes
        self.feature_columns: list[str] = list(spec.features or [])
        self.text_column: str | None = spec.text_column
        self.columns = (self.feature_columns or [self.text_column]) + [spec.target]
        self.digest: str | None = None
        self.rows_read = 0
        self.bytes_total: int | None = _size_of(spec.uri)
        self._hasher: _HashingReader | None = None

    # -- progress -------------------------------------------------------------------------------------
    @property
    def bytes_read(self) -> int | None:
        return self._hasher.bytes_read if self._hasher is not None else None

    # -- readers: each yields pyarrow RecordBatches holding only the needed columns ---------------------
    # pyarrow's streaming readers pull from a Python file object on their own I/O thread, which can abort
    # the interpreter at exit. Instead this class reads the bytes itself (hashing them on the way), cuts
    # them at record boundaries and hands each piece to pyarrow's native, multi-threaded parser.
    def _chunks(self, quoted: bool) -> Iterator[bytes]:
        """The file's bytes in pieces of about ``block_bytes`` that end on a record boundary."""
        raw = _open(self.uri)
        self._hasher = _HashingReader(raw)
        carry = b""
        try:
            while True:
                block = self._hasher.read(self.block_bytes)
                if not block:
                    break
                data = carry + block if carry else block
                cut = _record_boundary(data, quoted)
                if cut <= 0:
                    carry = data
                    continue
                carry = data[cut:]
                yield data[:cut]
            if carry.strip():
                yield carry if carry.endswith(b"\n") else carry + b"\n"
            self.digest = f"sha256:{self._hasher.sha256.hexdigest()}"
        finally:
            self._hasher.close()

    def _csv_batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pcsv

        delimiter = "\t" if ".tsv" in self.uri.split("?", 1)[0].lower() else ","
        quoted = bool(self.text_column)
        types: dict[str, pa.DataType] = {c: pa.float32() for c in self.feature_columns}
        if self.text_column:
            types[self.text_column] = pa.string()
        types[self.spec.target] = pa.string()
        parse = pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted)
        convert = pcsv.ConvertOptions(
            include_columns=self.columns,
            column_types=types,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        names: list[str] | None = None
        for chunk in self._chunks(quoted):
            if names is None:
                header_end = _record_boundary(chunk, quoted, first=True)
                header = chunk[:header_end]
                try:
                    names = pcsv.read_csv(pa.BufferReader(header + b"\n"), parse_options=parse).schema.names
                except pa.ArrowInvalid as exc:
                    raise self._csv_error(exc, []) from exc
                missing = [c for c in self.columns if c not in names]
                if missing:
                    raise _missing(self.uri, self.columns, names)
                chunk = chunk[header_end:]
                if not chunk.strip():
                    continue
            try:
                table = pcsv.read_csv(
                    pa.BufferReader(chunk),
                    read_options=pcsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 20),
                    parse_options=parse,
                    convert_options=convert,
                )
            except pa.ArrowInvalid as exc:
                raise self._csv_error(exc, names) from exc
            for batch in table.combine_chunks().to_batches():
                yield batch
        if names is None:
            raise WorkloadError("EmptyData", f"The data at {self.uri} is empty; it needs a header and labelled rows.")

    def _csv_error(self, exc: Exception, names: list[str]) -> WorkloadError:
        text = str(exc)
        if text.startswith("Empty CSV file"):
            return WorkloadError("EmptyData", f"The data at {self.uri} is empty; it needs a header and labelled rows.")
        match = _CSV_CONVERSION.search(text)
        if match:
            index = int(match.group(1))
            column = names[index] if index < len(names) else "?"
            return WorkloadError(
                "InvalidFeatures",
                f"Feature column {column!r} of {self.uri} holds the non-numeric value {match.group(3)!r}; "
                "feature columns must be numbers: clean the data or drop the column from data.features.",
            )
        return WorkloadError("InvalidData", f"Cannot parse {self.uri} as CSV: {text.splitlines()[0]}. Fix the file.")

    def _parquet_batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        fs, path = fsspec.core.url_to_fs(self.uri)
        # A local file goes to pyarrow by path: its native reader needs no Python file object (see _chunks).
        local = type(fs).__name__ == "LocalFileSystem"
        fh = None if local else _open(self.uri, compression=None)
        if local and not fs.exists(path):
            raise WorkloadError("UnreadableUri", f"There is no data at {self.uri}; check data.uri.")
        try:
            try:
                pf = pq.ParquetFile(path if local else fh, pre_buffer=False)
            except (pa.ArrowInvalid, OSError) as exc:
                raise WorkloadError(
                    "InvalidData", f"{self.uri} is not a readable Parquet file ({exc}); fix data.uri or data.format."
                ) from exc
            names = pf.schema_arrow.names
            if any(c not in names for c in self.columns):
                raise _missing(self.uri, self.columns, names)
            for column in self.feature_columns:
                kind = pf.schema_arrow.field(column).type
                if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                        or pa.types.is_decimal(kind)):
                    raise WorkloadError(
                        "InvalidFeatures",
                        f"Feature column {column!r} of {self.uri} has type {kind}, not a number; "
                        "feature columns must be numeric: convert it or drop it from data.features.",
                    )
            # One row group at a time: asked for all, pyarrow may buffer several ahead and memory grows with
            # the file.
            for group in range(pf.num_row_groups):
                yield from pf.iter_batches(
                    batch_size=self.batch_rows, row_groups=[group], columns=self.columns, use_threads=local
                )
        finally:
            if fh is not None:
                fh.close()
        from modelreuse.runtime.storage import sha256_of

        self.digest = f"sha256:{sha256_of(self.uri)}"

    def _jsonl_batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.json as pjson

        first = self._first_json_record()
        if first is None:
            raise WorkloadError("EmptyData", f"The data at {self.uri} is empty; it needs labelled rows.")
        if any(c not in first for c in self.columns):
            raise _missing(self.uri, self.columns, list(first))
        fields = [pa.field(c, pa.float32()) for c in self.feature_columns]
        if self.text_column:
            fields.append(pa.field(self.text_column, pa.string()))
        value = first[self.spec.target]
        target_type = (
            pa.bool_() if isinstance(value, bool)
            else pa.float64() if isinstance(value, (int, float))
            else pa.string()
        )
        fields.append(pa.field(self.spec.target, target_type))
        parse = pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")
        for chunk in self._chunks(quoted=False):
            try:
                table = pjson.read_json(pa.BufferReader(chunk), read_options=pjson.ReadOptions(use_threads=True),
                                        parse_options=parse)
            except pa.ArrowInvalid as exc:
                text = str(exc).splitlines()[0]
                reason = "InvalidFeatures" if any(f"/{c})" in text for c in self.feature_columns) else "InvalidData"
                raise WorkloadError(
                    reason,
                    f"Cannot read {self.uri} as JSON lines ({text}); every line must be one object and feature "
                    "values must be numbers.",
                ) from exc
            yield from table.combine_chunks().to_batches()

    def _first_json_record(self) -> dict[str, Any] | None:
        with _open(self.uri) as fh:
            for line in fh:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise WorkloadError(
                            "InvalidData", f"The first line of {self.uri} is not JSON ({exc}); write one object a line."
                        ) from exc
                    if not isinstance(record, dict):
                        raise WorkloadError("InvalidData", f"The lines of {self.uri} must be JSON objects.")
                    return record
        return None

    def _record_batches(self) -> Iterator[pa.RecordBatch]:
        if self.format == "csv":
            return self._csv_batches()
        if self.format == "parquet":
            return self._parquet_batches()
        return self._jsonl_batches()

    # -- conversion -----------------------------------------------------------------------------------
    def _targets(self, column: pa.Array, row_index: np.ndarray) -> pa.Array:
        if column.null_count:
            bad = int(row_index[np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0]])
            raise WorkloadError(
                "InvalidData",
                f"Row {bad} of {self.uri} has no value in the target column {self.spec.target!r}; "
                "label every row or drop the unlabelled ones.",
            )
        kind = column.type
        if pa.types.is_floating(kind):
            values = column.to_numpy(zero_copy_only=False)
            if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
                return pc.cast(pc.cast(column, pa.int64()), pa.string())
        if pa.types.is_dictionary(kind):
            column = column.dictionary_decode()
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        if pa.types.is_string(kind) and not pa.types.is_dictionary(kind):
            column = pc.utf8_trim_whitespace(column)
        return column

    def _features(self, batch: pa.RecordBatch, row_index: np.ndarray) -> np.ndarray:
        out = np.empty((batch.num_rows, len(self.feature_columns)), dtype=np.float32)
        for j, name in enumerate(self.feature_columns):
            column = batch.column(name)
            if not pa.types.is_floating(column.type):
                column = pc.cast(column, pa.float32(), safe=False)
            out[:, j] = column.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(out)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            what = "empty or NaN" if np.isnan(out[row, col]) else "infinite"
            raise WorkloadError(
                "InvalidFeatures",
                f"Row {int(row_index[row])} of {self.uri} has an {what} value in feature column "
                f"{self.feature_columns[col]!r}; fill or drop such rows before evaluating.",
            )
        return out

    def _texts(self, column: pa.Array, row_index: np.ndarray) -> list[str]:
        if column.null_count:
            bad = int(row_index[np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0]])
            raise WorkloadError(
                "InvalidFeatures",
                f"Row {bad} of {self.uri} has no text in column {self.text_column!r}; fill or drop such rows.",
            )
        return [str(t) for t in column.to_pylist()]

    def _encode(self, targets: pa.Array, row_index: np.ndarray) -> np.ndarray:
        assert self._label_array is not None
        index = pc.index_in(targets, value_set=self._label_array)
        if index.null_count:
            unknown = pc.unique(pc.filter(targets, pc.is_null(index))).to_pylist()
            shown = ", ".join(repr(v) for v in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise WorkloadError(
                "UnknownLabels",
                f"The target column {self.spec.target!r} of {self.uri} holds {shown}, not among the model's "
                f"labels {self.labels}; fix source.labels or map the target values to them.",
            )
        return index.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def batches(self, part: Part = "holdout") -> Iterator[Batch]:
        """Yield the rows of ``part`` in batches of at most ``batch_rows``; one pass per reader."""
        start = 0
        for record_batch in self._record_batches():
            n = record_batch.num_rows
            if n == 0:
                continue
            row_index = np.arange(start, start + n, dtype=np.int64)
            start += n
            self.rows_read = start
            mask = part_mask(row_index, self.spec.holdout, part)
            if mask is not None:
                if not mask.any():
                    continue
                record_batch = record_batch.filter(pa.array(mask))
                row_index = row_index[mask]
            for offset in range(0, record_batch.num_rows, self.batch_rows):
                piece = record_batch.slice(offset, self.batch_rows)
                rows = row_index[offset : offset + self.batch_rows]
                targets = self._targets(piece.column(self.spec.target), rows)
                out = Batch(row_index=rows, targets=targets)
                if self.feature_columns:
                    out.features = self._features(piece, rows)
                else:
                    out.texts = self._texts(piece.column(self.text_column), rows)
                if self._label_array is not None:
                    out.y = self._encode(targets, rows)
                yield out


def prefetch(batches: Iterator[Batch], depth: int = 2) -> Iterator[Batch]:
    """Produce ``batches`` in a background thread, at most ``depth`` ahead of the consumer.

    Parsing (pyarrow) and inference (onnxruntime, torch) both release the GIL, so reading the next batch
    while the model scores this one uses a second core. Errors from the reader are raised to the consumer;
    a consumer that stops early stops the thread.
    """
    import queue
    import threading

    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put((batch, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: tuple[Any, BaseException | None] = (end, None)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            item = (end, exc)
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="modelreuse-data", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = slots.get()
            if batch is end:
                if error is not None:
                    raise error
                return
            yield batch
    finally:
        stop.set()
        thread.join(timeout=5)


def iter_batches(
    spec: DataSpec,
    part: Part = "holdout",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    labels: Sequence[str] | None = None,
) -> Iterator[Batch]:
    """Yield the rows of ``part`` ("holdout", "train" or "all") of the data in ``spec`` in batches.

    With ``labels`` (the model's class labels by index), each batch's ``y`` holds class indices and a target
    value outside the labels raises WorkloadError(UnknownLabels).
    """
    yield from DataReader(spec, batch_rows=batch_rows, labels=labels).batches(part)


__all__ = [
    "Batch",
    "DataReader",
    "DEFAULT_BATCH_ROWS",
    "holdout_mask",
    "holdout_unit",
    "infer_format",
    "is_holdout",
    "iter_batches",
    "part_mask",
    "prefetch",
]
