"""``cr.history()``: CoinAPI's historical bars as a DataFrame shaped like ``rates.ohlc()``, priced before fetching.

CoinAPI bills every rate, WebSocket or REST, and a history request costs ``ceil(items / 100)``
credits (``../shared/protocol/exrates-rest.md``, "Rate limits and cost"), so :func:`history`
says what a fetch will cost before it starts (:func:`estimate`, logged at INFO, or returned
alone with ``estimate_only=True``), shows a progress bar for long fetches, and with ``store=``
keeps what it fetched in a Parquet dataset so nobody pays twice for the same bars.

**The bars dataset** (``store=``) is its own folder, apart from rate recordings (a rates
dataset's root holds only ``date=`` folders, so bars cannot live inside one), hive-partitioned
like them (``coinrates_nb.store`` conventions: unique writer names, hidden temporaries
published with an atomic rename)::

    data/bars/
      period=1MIN/
        date=2026-11-24/                         # UTC date of the period start
          part-<host>-<pid>-<uuid>-00000.parquet

Columns (:func:`bars_schema`): ``time`` (period start, ``timestamp[ns, UTC]``), ``pair``,
``base``, ``quote``, ``open``/``high``/``low``/``close`` (float64, NaN for a period without a
rate), ``time_open``/``time_close`` (nullable timestamps) and ``source`` (``simulated`` or
``live``). Each file's metadata (``coinrates_nb.covered``) lists the ranges it covers per pair
and source, so a range fetched and found empty is not fetched again either; only complete
periods are stored (the current one is always fetched afresh). DuckDB reads it directly:
``read_parquet('data/bars/**/*.parquet', hive_partitioning = true)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._inputs import pair_list, utc_ns
from ._secrets import SecretKey, resolve_key
from ._types import Pair, split_pair
from .exceptions import ConfigError, RecordingError
from .rest import (
    COINAPI_HISTORY_URL,
    MAX_LIMIT,
    NAT,
    Bars,
    RestUsage,
    SyncRestClient,
    credits_for,
    normalize_period,
    period_ns,
    rest_url_for,
)
from .times import format_time

if TYPE_CHECKING:
    import pyarrow as pa

    from .sim import Simulator

__all__ = ["FIELDS", "BarStore", "HistoryEstimate", "bars_schema", "estimate", "history"]

logger = logging.getLogger("coinrates_nb.historical")

T = TypeVar("T")

FIELDS: Final = ("open", "high", "low", "close")
"""The columns per pair, as in ``rates.ohlc()``."""

PROGRESS_MIN_BARS: Final = 10_000
"""A fetch of at least this many bars (or of more than one page per pair) shows a progress bar."""

COVERED_KEY: Final = b"coinrates_nb.covered"
"""Parquet metadata key of a bars file: JSON ``[[pair, source, start_ns, end_ns], ...]`` it covers."""

_NS_PER_DAY: Final = 86_400 * 1_000_000_000
_POLL: Final = 0.2
"""Seconds between progress-bar updates while a fetch runs."""

_SOURCES: dict[str, str] = {}
"""REST base URL -> ``"simulated"``/``"live"``, learnt once per process (a periods request) when a store needs it."""


def bars_schema() -> pa.Schema:
    """The columns of a bars dataset file (built on call: importing this module does not import pyarrow)."""
    import pyarrow as pa

    ts = pa.timestamp("ns", tz="UTC")
    return pa.schema(
        [
            pa.field("time", ts, nullable=False),
            pa.field("pair", pa.string(), nullable=False),
            pa.field("base", pa.string(), nullable=False),
            pa.field("quote", pa.string(), nullable=False),
            pa.field("open", pa.float64()),
            pa.field("high", pa.float64()),
            pa.field("low", pa.float64()),
            pa.field("close", pa.float64()),
            pa.field("time_open", ts),
            pa.field("time_close", ts),
            pa.field("source", pa.string(), nullable=False),
        ],
        metadata={"coinrates_nb.format": "bars-1"},
    )


# --------------------------------------------------------------------------- the estimate (pure)


@dataclass(frozen=True, slots=True)
class HistoryEstimate:
    """What a :func:`history` call will fetch and cost, worked out before any request is sent."""

    pairs: tuple[Pair, ...]
    period: str
    start: pd.Timestamp
    """Start of the first period (periods are aligned to the epoch)."""
    end: pd.Timestamp
    """End of the last period asked for (capped at the current one)."""
    bars: int
    """Bars to fetch (those already in the store excluded)."""
    requests: int
    """History requests (pages of up to ``limit`` bars)."""
    credits: int
    """Credits: ``ceil(bars_in_page / 100)`` per page, at least 1 (CoinAPI bills per rate)."""
    cached_bars: int = 0
    """Bars of the range already in the store (``store=``): not fetched, not paid again."""

    def __str__(self) -> str:
        cached = f"; {self.cached_bars:,} already stored" if self.cached_bars else ""
        return (f"~{self.credits:,} credits: {self.bars:,} {self.period} bars of {len(self.pairs)} pair(s) in "
                f"{self.requests:,} request(s), {self.start:%Y-%m-%d %H:%M:%S} to {self.end:%Y-%m-%d %H:%M:%S} UTC"
                f"{cached}")


def _periods_in(lo: int, hi: int, step: int) -> int:
    """Periods starting in ``[lo, hi)`` (both aligned to ``step``)."""
    return max(0, -(-(hi - lo) // step))


def _cost(bars: int, limit: int) -> tuple[int, int]:
    """(requests, credits) of one paged fetch of ``bars`` bars: full pages of ``limit``, then the rest."""
    if bars <= 0:
        return 1, credits_for(0)  # still one request: it answers 550 "no data"
    full, rest = divmod(bars, limit)
    requests = full + (1 if rest else 0)
    return requests, full * credits_for(limit) + (credits_for(rest) if rest else 0)


def estimate(pairs: str | Iterable[str], start: Any, end: Any = None, period: Any = "1MIN", *,
             limit: int = MAX_LIMIT, now: Any = None) -> HistoryEstimate:
    """What :func:`history` would fetch and cost with an empty store, without sending anything.

    Every period overlapping ``[start, end)`` that has started by ``now`` is one bar;
    each page of up to ``limit`` bars is one request costing ``ceil(bars / 100)`` credits.

    Raises:
        ConfigError: a pair, time or period is invalid, or ``end`` is not after ``start``.
    """
    names, pid, lo, hi, step, now_ns = _inputs(pairs, start, end, period, now)
    plan = {pair: [(lo, hi)] for pair in names}
    return _estimate(names, pid, step, lo, hi, plan, limit, 0)


def _inputs(pairs: Any, start: Any, end: Any, period: Any, now: Any) -> tuple[list[Pair], str, int, int, int, int]:
    """Validated pairs, period, the aligned range ``[lo, hi)`` (capped after the current period), step and now."""
    names = pair_list(pairs, "pairs")
    if not names:
        raise ConfigError("no pairs given: pass pairs like 'BTC/USD' or ['BTC/USD', 'ETH/USD']")
    pid = normalize_period(period)
    step = period_ns(pid)
    now_ns = time.time_ns() if now is None else utc_ns(now, "now")
    start_ns = utc_ns(start, "start")
    end_ns = now_ns if end is None else utc_ns(end, "end")
    if start_ns >= now_ns:
        raise ConfigError(f"start ({format_time(start_ns)}) is in the future: there is no history yet")
    if end_ns <= start_ns:
        raise ConfigError(f"end ({format_time(end_ns)}) must be after start ({format_time(start_ns)})")
    lo = start_ns // step * step
    hi = min(-(-end_ns // step) * step, (now_ns // step + 1) * step)
    return names, pid, lo, hi, step, now_ns


def _estimate(names: Sequence[Pair], pid: str, step: int, lo: int, hi: int, plan: Mapping[Pair, list[tuple[int, int]]],
              limit: int, cached: int) -> HistoryEstimate:
    bars = requests = credits = 0
    for ranges in plan.values():
        for a, b in ranges:
            n = _periods_in(a, b, step)
            r, c = _cost(n, limit)
            bars, requests, credits = bars + n, requests + r, credits + c
    stamp = pd.Timestamp
    return HistoryEstimate(tuple(names), pid, stamp(lo, unit="ns", tz="UTC"), stamp(hi, unit="ns", tz="UTC"),
                           bars, requests, credits, cached)


# --------------------------------------------------------------------------- the bars dataset


def _date(day: int) -> str:
    return str(np.datetime64(day, "D"))


class BarStore:
    """A bars dataset (see the module docstring): what is covered, reading bars back, writing new ones."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RecordingError(f"store={self.root} is a file; bars go in a folder (e.g. data/bars)")
        if self.root.is_dir() and any(p.is_dir() and p.name.startswith("date=") for p in self.root.iterdir()):
            raise RecordingError(f"store={self.root} is a rate recording (it holds date= folders); keep bars in "
                                 f"a folder of their own, e.g. {self.root.parent / 'bars'}")
        self._writer: str | None = None
        self._seq = 0

    def _files(self, period: str, lo: int, hi: int) -> list[Path]:
        from .store.dataset import _hidden

        base = self.root / f"period={period}"
        if not base.is_dir():
            return []
        first, last = _date(lo // _NS_PER_DAY), _date((hi - 1) // _NS_PER_DAY)
        found: list[Path] = []
        for part in sorted(base.iterdir()):
            if not part.is_dir() or not part.name.startswith("date=") or not first <= part.name[5:] <= last:
                continue
            found.extend(f for f in sorted(part.iterdir()) if f.suffix == ".parquet" and not _hidden(f.name))
        return found

    def covered(self, pair: Pair, period: str, source: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Merged ranges of ``[lo, hi)`` the store covers for ``pair`` and ``source``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        spans = []
        try:
            for file in self._files(period, lo, hi):
                meta = pq.read_schema(file).metadata or {}
                for p, s, a, b in json.loads(meta.get(COVERED_KEY, b"[]")):
                    if p == pair and s == source and b > lo and a < hi:
                        spans.append((max(int(a), lo), min(int(b), hi)))
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise RecordingError(f"cannot read the bars store at {self.root}: {exc}") from exc
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def read(self, pairs: Sequence[Pair], period: str, source: str, lo: int, hi: int) -> dict[Pair, Bars]:
        """Stored bars of ``pairs`` starting in ``[lo, hi)``, one copy per period, oldest first."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        files = self._files(period, lo, hi)
        out = {pair: Bars.empty(*split_pair(pair), period) for pair in pairs}
        if not files:
            return out
        ts = pa.timestamp("ns", tz="UTC")
        expr = ((ds.field("pair").isin(pa.array(list(pairs), pa.string()))) & (ds.field("source") == source)
                & (ds.field("time") >= pa.scalar(lo, ts)) & (ds.field("time") < pa.scalar(hi, ts)))
        try:
            table = ds.dataset([str(f) for f in files], schema=bars_schema(), format="parquet").to_table(filter=expr)
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"cannot read the bars store at {self.root}: {exc}") from exc
        table = table.sort_by([("pair", "ascending"), ("time", "ascending")])
        pair_col = table["pair"].to_numpy(zero_copy_only=False)

        def ns(name: str) -> npt.NDArray[np.int64]:
            col = pc.cast(table[name], pa.int64()).fill_null(NAT)
            return np.asarray(col.to_numpy(zero_copy_only=False), np.int64)

        def floats(name: str) -> npt.NDArray[np.float64]:
            return np.asarray(table[name].fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)

        start, t_open, t_close = ns("time"), ns("time_open"), ns("time_close")
        o, h, low, c = floats("open"), floats("high"), floats("low"), floats("close")
        step = period_ns(period)
        for pair in pairs:
            rows = np.flatnonzero(pair_col == pair)
            if not len(rows):
                continue
            keep = rows[np.concatenate([[True], np.diff(start[rows]) != 0])]  # two writers of one range: one copy
            base, quote = split_pair(pair)
            out[pair] = Bars(base, quote, period, start[keep], start[keep] + step, t_open[keep], t_close[keep],
                             o[keep], h[keep], low[keep], c[keep])
        return out

    def write(self, fetched: Sequence[tuple[Bars, int, int]], period: str, source: str) -> int:
        """Store bars and the ranges ``[lo, hi)`` they cover, one file per date partition; return rows written.

        Each file is written under a hidden temporary name and published with an atomic rename
        (``coinrates_nb.store`` conventions), so readers never see a partial file.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .store._parts import fsync_dir, publish
        from .store.dataset import _part_name, _temp_name, _writer_id

        if self._writer is None:
            self._writer = _writer_id()
        days: dict[int, tuple[list[Bars], list[list[Any]]]] = {}
        for bars, lo, hi in fetched:
            if hi <= lo:
                continue
            for day in range(lo // _NS_PER_DAY, (hi - 1) // _NS_PER_DAY + 1):
                a, b = max(lo, day * _NS_PER_DAY), min(hi, (day + 1) * _NS_PER_DAY)
                rows = bars.take((bars.start_ns >= a) & (bars.start_ns < b))
                entry = days.setdefault(day, ([], []))
                entry[0].append(rows)
                entry[1].append([bars.pair, source, a, b])
        schema = bars_schema()
        ts = pa.timestamp("ns", tz="UTC")
        written = 0
        try:
            for day, (parts, covered) in sorted(days.items()):
                n = sum(len(p) for p in parts)
                cat: dict[str, npt.NDArray[Any]] = {
                    name: np.concatenate([getattr(p, name) for p in parts]) if n else np.empty(0, np.int64)
                    for name in ("start_ns", "time_open_ns", "time_close_ns")}
                prices = {f: np.concatenate([getattr(p, f) for p in parts]) if n else np.empty(0) for f in FIELDS}
                names = [p.pair for p in parts for _ in range(len(p))]
                bases = [p.base for p in parts for _ in range(len(p))]
                quotes = [p.quote for p in parts for _ in range(len(p))]

                def stamps(values: npt.NDArray[np.int64]) -> pa.Array:
                    return pa.array(values, pa.int64(), mask=values == NAT).cast(ts)

                table = pa.Table.from_arrays(
                    [pa.array(cat["start_ns"], ts), pa.array(names, pa.string()), pa.array(bases, pa.string()),
                     pa.array(quotes, pa.string()), *(pa.array(prices[f], pa.float64()) for f in FIELDS),
                     stamps(cat["time_open_ns"]), stamps(cat["time_close_ns"]), pa.array([source] * n, pa.string())],
                    schema=schema.with_metadata({**schema.metadata, COVERED_KEY: json.dumps(covered).encode()}),
                )
                folder = self.root / f"period={period}" / f"date={_date(day)}"
                folder.mkdir(parents=True, exist_ok=True)
                name = _part_name(self._writer, self._seq)
                self._seq += 1
                tmp = folder / _temp_name(name)
                pq.write_table(table, tmp)
                publish(tmp, folder / name)
                fsync_dir(folder)
                written += n
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"cannot write bars to {self.root}: {exc}") from exc
        return written


def _missing(covered: list[tuple[int, int]], lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` minus ``covered``, each piece widened to whole periods."""
    out, cursor = [], lo
    for a, b in covered:
        if a > cursor:
            out.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < hi:
        out.append((cursor, hi))
    return [(a // step * step, -(-b // step) * step) for a, b in out if b > a]


# --------------------------------------------------------------------------- history()


@overload
def history(pairs: str | Iterable[str], start: Any, end: Any = ..., period: Any = ..., *, url: str | None = ...,
            api_key: str | SecretKey | None = ..., progress: bool = ..., estimate_only: Literal[False] = ...,
            store: str | os.PathLike[str] | None = ...) -> pd.DataFrame: ...


@overload
def history(pairs: str | Iterable[str], start: Any, end: Any = ..., period: Any = ..., *, url: str | None = ...,
            api_key: str | SecretKey | None = ..., progress: bool = ..., estimate_only: Literal[True],
            store: str | os.PathLike[str] | None = ...) -> HistoryEstimate: ...


def history(
    pairs: str | Iterable[str],
    start: Any,
    end: Any = None,
    period: Any = "1MIN",
    *,
    url: str | None = None,
    api_key: str | SecretKey | None = None,
    progress: bool = True,
    estimate_only: bool = False,
    store: str | os.PathLike[str] | None = None,
) -> pd.DataFrame | HistoryEstimate:
    """Historical OHLC bars of ``pairs`` from CoinAPI's REST history, as a DataFrame shaped like ``rates.ohlc()``.

    The index is the UTC period start (``DatetimeIndex`` ``time``, one row per period); the
    columns are ``(pair, field)`` with fields ``open, high, low, close`` (NaN where a period had
    no rate), or flat ``open, high, low, close`` when ``pairs`` is one pair given as a string.
    ``df.attrs`` holds ``source`` (``"simulated"``/``"live"``), ``period``, ``requests``,
    ``credits`` and ``rates`` spent by this call, and the ``estimate``.

    Before the first request the cost is worked out and logged at INFO (CoinAPI bills
    ``ceil(items / 100)`` credits per page); ``estimate_only=True`` returns that
    :class:`HistoryEstimate` and sends nothing (with ``store=`` and a custom ``url``, one
    periods request first tells whether the server is simulated).

    Args:
        pairs: ``"BTC/USD"`` or a list of pairs.
        start, end: the range (anything pandas reads as a time; naive is UTC); ``end`` defaults
            to now. Every period overlapping it that has started is returned.
        period: a CoinAPI period (``"1SEC"``, ``"1MIN"``, ``"1HRS"``, ``"1DAY"``, ...) or a span of
            that length (``"1min"``, ``"1h"``, ``60``).
        url: the REST base URL, or a WebSocket URL whose host serves REST too (a simulator's
            ``url``/``rest_url``, a proxy). Default: CoinAPI's historical host with a key;
            without a key, an embedded simulator (the result is labelled simulated).
        api_key: the key (default ``COINAPI_KEY``); sent only over https or to loopback.
        progress: show a progress bar for long fetches (at least 10,000 bars or several pages).
        estimate_only: return the :class:`HistoryEstimate` instead of fetching.
        store: a bars dataset folder (see the module docstring): bars found there are not
            fetched again; fetched complete bars are added to it.

    Raises:
        ConfigError: a bad pair, time, period or URL (or a 400 naming the parameter).
        AuthenticationError: the key was refused. QuotaExceededError: the quota is spent.
        TransportError: the server could not be reached after the retries.
        RecordingError: ``store`` cannot be read or written.
    """
    names, pid, lo, hi, step, now_ns = _inputs(pairs, start, end, period, None)
    single = names[0] if isinstance(pairs, str) else None
    key = _key(api_key)
    embedded = url is None and key is None
    base_url = rest_url_for(url) if url is not None else (COINAPI_HISTORY_URL if key is not None else None)
    complete = now_ns // step * step  # periods before this one are over: only they are stored
    bar_store = BarStore(store) if store is not None else None
    sim: Simulator | None = None
    client: SyncRestClient | None = None
    try:
        source = "simulated" if embedded else ("live" if base_url == COINAPI_HISTORY_URL else
                                               _SOURCES.get(base_url or ""))
        if bar_store is not None and source is None and base_url is not None:  # which stored bars count depends on it
            client = _client(base_url, key)
            client.periods()
            source = _SOURCES[base_url] = "simulated" if client.simulated else "live"
        plan: dict[Pair, list[tuple[int, int]]] = {}
        cached = 0
        for pair in names:
            covered = bar_store.covered(pair, pid, source or "live", lo, min(hi, complete)) if bar_store else []
            cached += sum(_periods_in(a, b, step) for a, b in covered)
            plan[pair] = _missing(covered, lo, hi, step)
        guess = _estimate(names, pid, step, lo, hi, plan, MAX_LIMIT, cached)
        logger.info("history: %s", guess)
        if estimate_only:
            return guess
        fetched: list[tuple[Bars, int, int]] = []
        if any(plan.values()):
            if embedded:
                from .sim import Simulator

                sim = Simulator(port=0, seed=0).start()
                logger.info("history: no COINAPI_KEY: fetching SIMULATED history from an embedded simulator")
                base_url = sim.rest_url
            if client is None:
                client = _client(base_url, key)
            show = progress and (guess.bars >= PROGRESS_MIN_BARS or guess.requests > len(names))
            fetched = _fetch(client, plan, pid, show, guess.bars)
            if client.simulated:
                source = "simulated"
        source = source or "live"
        spent = client.usage if client is not None else RestUsage()  # a client per call: all of it is this call's
        result: dict[Pair, Bars]
        if bar_store is not None:
            bar_store.write([(bars, a, min(b, complete)) for bars, a, b in fetched if min(b, complete) > a], pid,
                            source)
            result = bar_store.read(names, pid, source, lo, hi)
            for bars, _, _ in fetched:  # the current period is never stored: add it from what was fetched
                tail = bars.take(bars.start_ns >= complete)
                if len(tail):
                    result[bars.pair] = _merge([result[bars.pair], tail])
        else:
            grouped: dict[Pair, list[Bars]] = {pair: [] for pair in names}
            for bars, _, _ in fetched:
                grouped[bars.pair].append(bars)
            result = {pair: _merge(parts) if parts else Bars.empty(*split_pair(pair), pid)
                      for pair, parts in grouped.items()}
    finally:
        if client is not None:
            client.stop()
        if sim is not None:
            sim.stop()
    frame = _frame(result, names, step, single)
    frame.attrs.update(source=source, period=pid, requests=spent.requests, credits=spent.credits, rates=spent.rates,
                       estimate=guess)
    logger.info("history: %d bars of %d pair(s) (%s), %d request(s), %d credit(s)", sum(map(len, result.values())),
                len(names), source, spent.requests, spent.credits)
    return frame


def _key(api_key: str | SecretKey | None) -> SecretKey | None:
    return resolve_key(api_key, os.environ)


def _client(base_url: str | None, key: SecretKey | None) -> SyncRestClient:
    assert base_url is not None
    return SyncRestClient(base_url, key).start()


def _merge(parts: Sequence[Bars]) -> Bars:
    """Bars of one pair from several fetches, sorted, one per period."""
    first = parts[0]
    bars = Bars.concat(parts, first.base, first.quote, first.period)
    if len(bars) < 2:
        return bars
    order = np.argsort(bars.start_ns, kind="stable")
    bars = bars.take(order)
    keep = np.concatenate([[True], np.diff(bars.start_ns) != 0])
    return bars if keep.all() else bars.take(keep)


def _fetch(client: SyncRestClient, plan: Mapping[Pair, list[tuple[int, int]]], period: str, show: bool,
           total: int) -> list[tuple[Bars, int, int]]:
    """Fetch every planned range (pairs concurrently, pages in order), with a progress bar on this thread."""
    done = [0]

    def on_page(n: int) -> None:  # on the loop thread, the only writer
        done[0] += n

    jobs = [(pair, a, b) for pair, ranges in plan.items() for a, b in ranges]

    async def run() -> list[tuple[Bars, int, int]]:
        async def one(pair: Pair, a: int, b: int) -> tuple[Bars, int, int]:
            base, quote = split_pair(pair)
            return await client.client.history(base, quote, period, a, b, on_page=on_page), a, b

        return await _all_or_nothing([one(*job) for job in jobs])

    future = client.submit(run())
    bar = _progress(total, period) if show else None
    try:
        while True:
            try:
                return future.result(timeout=_POLL)
            except concurrent.futures.TimeoutError:
                if bar is not None:
                    bar.update(done[0] - bar.n)
    except BaseException:
        future.cancel()
        raise
    finally:
        if bar is not None:
            bar.update(done[0] - bar.n)
            bar.close()


async def _all_or_nothing(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coros`` concurrently; on the first error cancel the rest and raise it (not an ExceptionGroup)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _progress(total: int, period: str) -> Any:
    """A notebook-aware progress bar (tqdm.auto), made on the caller's thread so it shows in the caller's cell."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="bars", desc=f"history {period}", leave=True, mininterval=_POLL)


def _frame(result: Mapping[Pair, Bars], names: Sequence[Pair], step: int, single: Pair | None) -> pd.DataFrame:
    """The bars of every pair on one regular grid of periods, like ``rates.ohlc()``."""
    starts = [bars.start_ns for bars in result.values() if len(bars)]
    if starts:
        lo = min(int(s[0]) for s in starts)
        hi = max(int(s[-1]) for s in starts)
        grid = np.arange(lo, hi + 1, step, dtype=np.int64)
    else:
        grid = np.empty(0, np.int64)
    data = np.full((len(grid), len(FIELDS) * len(names)), np.nan)
    for j, pair in enumerate(names):
        bars = result[pair]
        if len(bars):
            rows = (bars.start_ns - grid[0]) // step
            data[rows, 4 * j:4 * j + 4] = np.column_stack([bars.open, bars.high, bars.low, bars.close])
    index = pd.DatetimeIndex(grid.view("datetime64[ns]"), name="time").tz_localize("UTC")
    if single is not None:
        return pd.DataFrame(data, index=index, columns=pd.Index(list(FIELDS)))
    columns = pd.MultiIndex.from_product([list(names), list(FIELDS)], names=["pair", "field"])
    return pd.DataFrame(data, index=index, columns=columns)

