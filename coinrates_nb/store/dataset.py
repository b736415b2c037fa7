"""The on-disk dataset: its schema, its file names, the checks that recognise it, and :func:`load`.

**The dataset** is plain hive-partitioned Parquet, so DuckDB, Polars, Dask and Spark read it
directly (``read_parquet('data/rates/**/*.parquet', hive_partitioning=true)``)::

    data/rates/
      date=2026-11-24/                       # UTC date of the wire time
        part-<host>-<pid>-<uuid>-00000.parquet
        .part-<host>-<pid>-<uuid>-00001.parquet.tmp   # being written: every reader skips it

Columns (:data:`SCHEMA`): ``time`` (the wire time, ``timestamp[ns, UTC]``, all 7 digits),
``received_at`` (this machine's receive time, same type), ``pair``, ``base``, ``quote``,
``rate``, ``rate_type``, ``source`` (``"simulated"`` or ``"live"``) and ``origin`` (``"stream"``,
``"history"`` or ``"healed"``; older recordings without it read as ``"stream"``). Nothing else is
written: no URL, no settings, and never the API key.

:func:`load` reads only what has that shape: ``date=YYYY-MM-DD`` folders directly below the
root, holding Parquet files with these columns. Anything else (a folder of other files, a
foreign Parquet file, a parent folder holding several datasets) is refused with a
:class:`~coinrates_nb.exceptions.RecordingError` that says why, instead of loading null rows
or silently merging unrelated recordings.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .._inputs import filter_items, utc_ns
from ..batch import ORIGINS, RateBatch, RateKey
from ..exceptions import RecordingError

__all__ = ["PARTITION", "SCHEMA", "load"]

logger = logging.getLogger("coinrates_nb.store")

_UTC_NS: Final = pa.timestamp("ns", tz="UTC")

SCHEMA: Final = pa.schema(
    [
        pa.field("time", _UTC_NS, nullable=False),
        pa.field("received_at", _UTC_NS, nullable=False),
        pa.field("pair", pa.string(), nullable=False),
        pa.field("base", pa.string(), nullable=False),
        pa.field("quote", pa.string(), nullable=False),
        pa.field("rate", pa.float64(), nullable=False),
        pa.field("rate_type", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=True),  # stream/history/healed; absent in older recordings
    ],
    metadata={"coinrates_nb.format": "1"},
)
"""Columns of every recorded file; the hive ``date`` partition lives in the directory name."""

PARTITION: Final = "date"
"""Hive partition key: the UTC date of the wire ``time``, as ``date=YYYY-MM-DD``."""

_NS_PER_DAY: Final = 86_400 * 1_000_000_000

_PARTITION_RE: Final = re.compile(rf"{PARTITION}=(\d{{4}}-\d{{2}}-\d{{2}})")
"""A partition directory's name; the group is the date."""

_STRING_COLUMNS: Final = ("pair", "base", "quote", "rate_type", "source", "origin")
_OPTIONAL: Final = frozenset({"origin"})
"""Columns a recording may lack (written by an older version): ``origin`` then reads as ``stream``."""
_SHOWN: Final = 3
"""How many offending paths an error message names."""


# --------------------------------------------------------------------------- file naming


def _safe(text: str) -> str:
    """Keep a host name usable in a file name that every engine parses (no ``=``, ``/``, spaces)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._") or "host"


def _host_name() -> str:
    """This host's name as it appears in part file names."""
    return _safe(socket.gethostname())


def _writer_id() -> str:
    """A name no other writer uses: ``<host>-<pid>-<uuid8>``."""
    return f"{_host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _part_name(writer: str, seq: int) -> str:
    """The published name of a writer's ``seq``-th file: ``part-<writer>-<seq:05d>.parquet``."""
    return f"part-{writer}-{seq:05d}.parquet"


def _temp_name(name: str) -> str:
    """The hidden name a file is written under before it is published (every reader skips it)."""
    return f".{name}.tmp"


def _date_of(day: int) -> str:
    """``YYYY-MM-DD`` for a day number since the epoch."""
    return str(np.datetime64(day, "D"))


def _partition_dir(root: Path, day: int) -> Path:
    """The partition folder of ``day`` (days since the epoch) under ``root``."""
    return root / f"{PARTITION}={_date_of(day)}"


# --------------------------------------------------------------------------- encoding


def _to_table(items: Sequence[tuple[RateBatch, int]], label: str) -> tuple[pa.Table, npt.NDArray[np.int64]]:
    """Turn queued ``(batch, received_ns)`` pairs into one Arrow table of :data:`SCHEMA`, and its wire times.

    Reads the batches' columns: the strings are built once per distinct key and expanded by
    Arrow (``take``), never one Python object per row. Batches of one row (the common case
    at low rates) take a scalar path, since NumPy costs microseconds per call.
    """
    index: dict[RateKey, int] = {}
    codes: list[npt.NDArray[np.intp]] = []
    times: list[npt.NDArray[np.int64]] = []
    rates: list[npt.NDArray[np.float64]] = []
    received: list[npt.NDArray[np.int64]] = []
    origins: list[npt.NDArray[np.int8]] = []
    one_origin: list[int] = []
    one_code: list[int] = []
    one_time: list[int] = []
    one_rate: list[float] = []
    one_received: list[int] = []

    def close_run() -> None:
        if one_code:
            codes.append(np.array(one_code, np.intp))
            times.append(np.array(one_time, np.int64))
            rates.append(np.array(one_rate, np.float64))
            received.append(np.array(one_received, np.int64))
            origins.append(np.array(one_origin, np.int8))
            for run in (one_code, one_time, one_rate, one_received, one_origin):
                run.clear()

    for batch, received_ns in items:
        n = len(batch)
        if n == 1:
            one_code.append(index.setdefault(batch.keys[int(batch.code[0])], len(index)))
            one_time.append(int(batch.time_ns[0]))
            one_rate.append(float(batch.rate[0]))
            one_received.append(int(received_ns))
            one_origin.append(batch.origin)
        elif n:
            close_run()
            remap = np.array([index.setdefault(key, len(index)) for key in batch.keys], np.intp)
            codes.append(remap[batch.code])
            times.append(np.asarray(batch.time_ns, np.int64))
            rates.append(np.asarray(batch.rate, np.float64))
            received.append(np.full(n, received_ns, np.int64))
            origins.append(np.full(n, batch.origin, np.int8))
    close_run()
    if not codes:
        return SCHEMA.empty_table(), np.empty(0, np.int64)
    code = pa.array(np.concatenate(codes).astype(np.int32))
    keys = list(index)
    wire = np.concatenate(times)

    def column(values: list[str]) -> pa.Array:
        return pa.array(values, pa.string()).take(code)

    table = pa.Table.from_arrays(
        [
            pa.array(wire, _UTC_NS),
            pa.array(np.concatenate(received), _UTC_NS),
            column([f"{base}/{quote}" for base, quote, _ in keys]),
            column([base for base, _, _ in keys]),
            column([quote for _, quote, _ in keys]),
            pa.array(np.concatenate(rates), pa.float64()),
            column([rate_type for _, _, rate_type in keys]),
            pa.array([label], pa.string()).take(pa.array(np.zeros(len(wire), np.int32))),
            pa.array(list(ORIGINS), pa.string()).take(pa.array(np.concatenate(origins).astype(np.int32))),
        ],
        schema=SCHEMA,
    )
    return table, wire


# --------------------------------------------------------------------------- the dataset checks


def _hidden(name: str) -> bool:
    """Names every engine skips (Spark, Arrow, Hive): temporaries (``.``) and markers (``_SUCCESS``)."""
    return name.startswith((".", "_"))


def _visible_parquet(root: Path) -> list[Path]:
    """Every ``*.parquet`` below ``root`` that a reader would see (no hidden path component)."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        found.extend(Path(current) / f for f in sorted(files) if f.endswith(".parquet") and not _hidden(f))
    return found


def _dataset_roots(paths: Iterable[Path], root: Path) -> list[Path]:
    """The folders below ``root`` that look like datasets: parents of ``date=YYYY-MM-DD`` folders holding ``paths``."""
    roots = {p.parent.parent for p in paths if _PARTITION_RE.fullmatch(p.parent.name) and p.parent.parent != root}
    return sorted(roots)


def _names(paths: Sequence[Path], root: Path) -> str:
    """A few paths relative to ``root``, for an error message."""
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")


def _dataset_files(root: Path) -> dict[str, list[Path]]:
    """The published files of the dataset at ``root``, by partition date; refuse what is not one.

    A dataset is ``date=YYYY-MM-DD`` folders directly below ``root`` holding ``*.parquet``
    files. Hidden (``.``) and ``_``-prefixed names are skipped, as Spark, Arrow and Hive do, so
    temporaries and markers (``_SUCCESS``) never reach a reader. A folder with nothing visible
    in it is an empty dataset (a recorder that has not flushed yet).

    Raises:
        RecordingError: ``root`` is not a folder; it holds Parquet files outside date
            partitions (another tool's files, or further datasets below it); or it holds
            visible entries but no date partition at all.
    """
    if not root.is_dir():
        raise RecordingError(f"no recording at {root}: not a directory")
    try:
        entries = sorted(e for e in root.iterdir() if not _hidden(e.name))
        parquet = _visible_parquet(root)
    except OSError as exc:
        raise RecordingError(f"cannot read the recording at {root}: {exc}") from exc
    partitions = {e.name: e for e in entries if e.is_dir() and _PARTITION_RE.fullmatch(e.name)}
    by_date: dict[str, list[Path]] = {}
    strays: list[Path] = []
    for file in parquet:
        if file.parent.parent == root and file.parent.name in partitions:
            by_date.setdefault(file.parent.name.split("=", 1)[1], []).append(file)
        else:
            strays.append(file)
    if strays:
        nested = _dataset_roots(strays, root)
        if nested:
            if not by_date and len(nested) == 1:
                raise RecordingError(f"{root} is not a coinrates dataset, but it holds one below it: "
                                     f"load {nested[0]}")
            holds = f"a dataset of its own and {len(nested)} more" if by_date else f"{len(nested)} datasets"
            raise RecordingError(
                f"{root} is not one coinrates dataset: it holds {holds} below it ({_names(nested, root)}); "
                "load each by its own path, so unrelated recordings are never merged")
        raise RecordingError(
            f"{root} is not a coinrates dataset: {_names(strays, root)} "
            f"{'is' if len(strays) == 1 else 'are'} not inside a {PARTITION}=YYYY-MM-DD folder")
    if not partitions and entries:
        raise RecordingError(
            f"{root} is not a coinrates dataset: it has no {PARTITION}=YYYY-MM-DD folders of part-*.parquet "
            f"files (found {_names(entries, root)})")
    return by_date


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """True if a column of type ``actual`` reads losslessly as ``expected`` (strings may be large or dictionary)."""
    if actual == expected:
        return True
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if pa.types.is_string(expected):
        return bool(pa.types.is_string(actual) or pa.types.is_large_string(actual))
    if pa.types.is_timestamp(expected):
        return bool(pa.types.is_timestamp(actual) and actual.tz in ("UTC", "+00:00", "Etc/UTC", "Z"))
    return False


def _check_schema(file: Path, schema: pa.Schema) -> None:
    """Refuse a Parquet file whose columns are not :data:`SCHEMA`'s (it would load as null rows).

    Extra columns are allowed (readers ignore them); missing ones or other types are not.

    Raises:
        RecordingError: Naming the file and the first missing or mistyped columns.
    """
    problems = []
    for expected in SCHEMA:
        index = schema.get_field_index(expected.name)
        if index < 0 and expected.name in _OPTIONAL:
            continue
        if index < 0:
            problems.append(f"no column {expected.name!r}")
        elif not _compatible(schema.field(index).type, expected.type):
            problems.append(f"column {expected.name!r} is {schema.field(index).type}, not {expected.type}")
    if problems:
        raise RecordingError(f"{file} is not a coinrates recording: {'; '.join(problems[:_SHOWN])}"
                             f"{' ...' if len(problems) > _SHOWN else ''}")


# --------------------------------------------------------------------------- load


def _matches(items: Iterable[str], pairs: Iterable[str]) -> set[str]:
    """The ``pairs`` a filter selects: a ``BASE/QUOTE`` item matches that pair, an asset id any pair with it."""
    wanted = set(items)
    return {p for p in pairs if p in wanted or p.split("/", 1)[0] in wanted or p.split("/", 1)[-1] in wanted}


def load(
    path: str | os.PathLike[str],
    start: Any = None,
    end: Any = None,
    pairs: str | Iterable[str] | None = None,
    *,
    dedupe: bool = False,
) -> pd.DataFrame:
    """Read recorded history as a DataFrame shaped like ``collector.df``, plus a ``source`` column.

    The index is the wire time (``DatetimeIndex`` named ``time``, UTC, 100 ns precision),
    sorted, with ties in receive order; columns are ``pair``, ``base``, ``quote``,
    ``rate_type``, ``source`` (categorical), ``rate``, ``received_at`` and ``origin`` (``stream``,
    ``history`` or ``healed``; ``stream`` for recordings made before it existed). Date partitions
    outside the range are never opened, and the time and pair filters are pushed into the
    Parquet scan. Files being written (hidden ``.tmp`` names) are ignored, so it is safe to
    load while recorders are running.

    Args:
        path: Dataset root directory (the folder that holds the ``date=`` folders).
        start: Keep rows with ``time >= start`` (anything ``pd.Timestamp`` accepts; naive is UTC).
        end: Keep rows with ``time < end``: half-open, so consecutive ranges never overlap.
        pairs: Pairs (``"BTC/USD"``) or asset ids (``"BTC"``: any pair with it); ``None`` for all.
        dedupe: Drop repeated updates (same time, pair, rate and rate type), as two recorders
            of one pair produce; the first received is kept.

    Raises:
        RecordingError: If ``path`` is not a coinrates dataset (see :func:`_dataset_files`),
            a file's columns are not :data:`SCHEMA`'s, or a file cannot be read.
        ConfigError: If ``start``/``end`` are not times or ``pairs`` is malformed.
    """
    root = Path(path)
    start_ns = None if start is None else utc_ns(start, "start")
    end_ns = None if end is None else utc_ns(end, "end")
    items = None if pairs is None else filter_items(pairs, "pairs")
    first = None if start_ns is None else _date_of(start_ns // _NS_PER_DAY)
    last = None if end_ns is None else _date_of((end_ns - 1) // _NS_PER_DAY)
    files = [file for date, group in sorted(_dataset_files(root).items())
             if (first is None or date >= first) and (last is None or date <= last) for file in group]
    expr: Any = None

    def both(condition: Any) -> None:
        nonlocal expr
        expr = condition if expr is None else expr & condition

    if start_ns is not None:
        both(ds.field("time") >= pa.scalar(start_ns, _UTC_NS))
    if end_ns is not None:
        both(ds.field("time") < pa.scalar(end_ns, _UTC_NS))
    if items is not None:
        chosen = pa.array([i for i in items if "/" in i], pa.string())
        assets = pa.array([i for i in items if "/" not in i], pa.string())
        both(ds.field("pair").isin(chosen) | ds.field("base").isin(assets) | ds.field("quote").isin(assets))
    try:
        for file in files:
            _check_schema(file, pq.read_schema(file))
        if files:
            table = ds.dataset([str(f) for f in files], schema=SCHEMA, format="parquet").to_table(filter=expr)
        else:
            table = SCHEMA.empty_table()
    except (OSError, pa.ArrowException) as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"cannot read the recording at {root}: {exc}") from exc
    frame = _to_frame(table)
    if dedupe and len(frame):
        keys = pd.DataFrame({"time": frame.index.asi8, "pair": frame["pair"].cat.codes.to_numpy(),
                             "rate": frame["rate"].to_numpy(), "type": frame["rate_type"].cat.codes.to_numpy()})
        frame = frame[~keys.duplicated().to_numpy()]
    logger.debug("loaded %d rows from %d file(s) under %s", len(frame), len(files), root)
    return frame


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Sort an Arrow table of :data:`SCHEMA` and convert it to the snapshot-shaped DataFrame."""
    table = table.select(SCHEMA.names).sort_by([("time", "ascending"), ("received_at", "ascending")])
    table = table.set_column(table.schema.get_field_index("origin"), "origin",
                             pc.fill_null(table["origin"], ORIGINS[0]))
    for name in _STRING_COLUMNS:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.dictionary_encode(table[name]))
    frame = table.to_pandas()
    frame = frame.set_index("time")
    frame.index = pd.DatetimeIndex(frame.index).as_unit("ns")
    frame["received_at"] = pd.DatetimeIndex(frame["received_at"]).as_unit("ns")
    for name in _STRING_COLUMNS:
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):  # empty tables come back as object
            frame[name] = frame[name].astype("category")
    return frame[["pair", "base", "quote", "rate", "rate_type", "received_at", "source", "origin"]]

