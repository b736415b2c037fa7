"""Gap- and staleness-aware analysis of rate DataFrames, and the ``df.rates`` pandas accessor.

Every function takes a DataFrame shaped like ``collector.df``, ``replay.df`` or
``cr.load(...)`` (a UTC ``DatetimeIndex`` named ``time`` and ``pair``/``rate`` columns; a
``time`` column works too), or any object with such a ``.df``. Importing the package
registers the accessor, so the same calls read naturally on any such frame::

    df = cr.load("data/rates")
    df.rates.ohlc("1min"); df.rates.returns("1s"); df.rates.volatility("1min")
    df.rates.cross("BTC", "EUR", via="USD")     # BTC/USD / EUR/USD vs the streamed BTC/EUR
    df.rates.gaps("5s"); df.rates.age(); df.rates.wide()

Why "gap- and staleness-aware": a streamed rate is a last-known value, not a continuous
series. Silences are reported (:func:`gaps`, :func:`age`), bars are never invented for
buckets with no update (:func:`ohlc`), and cross rates only combine legs whose last update
is recent enough (``tolerance`` in :func:`cross`), with the age of the oldest leg reported
next to each value.

Inputs follow the package rules (``_inputs``): a duration (``threshold``, ``stale_after``,
``tolerance``, ``window``) is ``"5s"``, a ``timedelta`` or a bare number of **seconds**; a
frequency (``freq``) is a pandas offset (``"1min"``, ``"7min"``, ``"W"``) or a duration; a time
(``now``, ``until``) is anything ``pd.Timestamp`` reads, naive meaning UTC. Anything else is a
``ConfigError`` that says what to write.

Bars share one grid: every pair is bucketed from the same origin (the Unix epoch, UTC), so a
``"7min"`` bar starts at the same instant for every pair whatever day each first appeared,
and the same data always gives the same bars, however much of it a window still holds.

The module is pure and imports only pandas and NumPy, so registering the accessor costs
nothing at package import.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._inputs import filter_item, pair_list, span_ns, utc, utc_ns
from ._types import SECONDS_PER_YEAR, AssetId, Pair
from .exceptions import ConfigError

__all__ = ["SECONDS_PER_YEAR", "RatesAccessor", "age", "cross", "gaps", "ohlc", "returns", "volatility", "wide"]


AGGREGATIONS: Final = frozenset({"last", "first", "mean", "median", "min", "max"})

_UTC_NS: Final = pd.DatetimeTZDtype("ns", "UTC")


# --------------------------------------------------------------------------- input


def _frame(data: Any) -> pd.DataFrame:
    """Return ``data`` (or ``data.df``) as a rate frame with a UTC ``DatetimeIndex``.

    Raises:
        ConfigError: If there is no time index/column or no ``pair``/``rate`` column.
    """
    if not isinstance(data, pd.DataFrame):
        inner = getattr(data, "df", None)
        if not isinstance(inner, pd.DataFrame):
            raise ConfigError(f"expected a rate DataFrame or an object with .df, not {type(data).__name__}")
        data = inner
    if "time" in data.columns and not isinstance(data.index, pd.DatetimeIndex):
        data = data.set_index("time")
    missing = sorted({"pair", "rate"} - set(data.columns))
    if missing or not isinstance(data.index, pd.DatetimeIndex):
        raise ConfigError("a rate frame needs a DatetimeIndex (or 'time' column) and 'pair' and 'rate' columns"
                          f"{'; missing ' + ', '.join(missing) if missing else ''}")
    if not pd.api.types.is_numeric_dtype(data["rate"]) or pd.api.types.is_bool_dtype(data["rate"]):
        raise ConfigError(f"a rate frame's 'rate' column must be numeric, not {data['rate'].dtype}")
    index = data.index
    if index.tz is None or str(index.tz) != "UTC" or index.unit != "ns":
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        data = data.set_axis(index.as_unit("ns").rename(data.index.name or "time"), axis=0)
    return data


def _by_pair(data: Any) -> dict[Pair, pd.Series]:
    """Each pair's rate series, time-sorted (ties keep arrival order), keyed by pair name in sorted order."""
    df = _frame(data)
    out: dict[Pair, pd.Series] = {}
    for name, rates in df["rate"].groupby(df["pair"], observed=True, sort=True):
        if len(rates):
            out[str(name)] = rates if rates.index.is_monotonic_increasing else rates.sort_index(kind="stable")
    return out


def _unique_times(rates: pd.Series) -> pd.Series:
    """One value per distinct time: the last to arrive, as a stream would have shown it."""
    if rates.index.is_unique:
        return rates
    return rates.groupby(level=0, sort=True).last()


def _empty_index() -> pd.DatetimeIndex:
    return pd.DatetimeIndex([], dtype=_UTC_NS, name="time")


def _freq(value: Any, name: str = "freq") -> pd.offsets.BaseOffset:
    """A positive bucket frequency: a pandas offset (``"1min"``, ``"W"``, ``"MS"``) or a duration (``5`` = 5 s).

    Whole days become hours (UTC has no daylight saving, so a day is 24 h): pandas ignores
    ``origin`` for a ``Day`` offset on a tz-aware index and would anchor ``"2D"`` bars on each
    pair's own first day.
    """
    hint = f"{name} must be a frequency like '1min', '7min', '1h' or 'W', or a number of seconds, not {value!r}"
    if isinstance(value, pd.offsets.BaseOffset):
        offset = value
    elif isinstance(value, str) and not value.strip().replace(".", "", 1).isdigit():
        try:
            offset = pd.tseries.frequencies.to_offset(value.strip())
        except (TypeError, ValueError) as exc:
            raise ConfigError(hint) from exc
    else:
        offset = pd.tseries.frequencies.to_offset(pd.Timedelta(span_ns(value, name, allow_none=False)))
    if offset is None or offset.n <= 0:
        raise ConfigError(hint)
    if isinstance(offset, pd.offsets.Day):
        offset = pd.offsets.Hour(24 * offset.n)
    return offset


def _resample(rates: pd.Series, offset: pd.offsets.BaseOffset) -> Any:
    """``rates.resample(offset)`` on the package-wide grid: fixed spans count from the epoch, calendar ones are calendar."""
    if isinstance(offset, pd.offsets.Tick):
        return rates.resample(offset, origin="epoch")
    return rates.resample(offset)


def _pair(value: Any, name: str = "pair") -> Pair:
    """One ``BASE/QUOTE`` pair, upper-cased (``ConfigError`` with a suggestion otherwise)."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be one pair like 'BTC/USD', not {type(value).__name__} {value!r}")
    return pair_list(value, name)[0]


def _asset(value: Any, name: str) -> AssetId:
    """One asset id such as ``"BTC"``, upper-cased."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be an asset id like 'BTC', not {type(value).__name__} {value!r}")
    item = filter_item(value, name)
    if "/" in item:
        raise ConfigError(f"{name} must be an asset id like 'BTC', not the pair {item!r}")
    return item


# --------------------------------------------------------------------------- freshness


def age(data: Any, now: Any = None, stale_after: Any = None) -> pd.DataFrame:
    """Per pair: the newest update, its rate, and how old it is at ``now``.

    Why: a rate table that looks complete can hide a pair that stopped updating; the age
    column makes the silence visible.

    Args:
        data: A rate frame (or an object with ``.df``).
        now: The instant ages are measured from; the current UTC time by default (pass
            ``df.index.max()`` to compare pairs of a recording with each other).
        stale_after: If given (``"15s"``, a ``timedelta`` or seconds), add a boolean ``stale``
            column (``age > stale_after``).

    Returns:
        A DataFrame indexed by ``pair`` with ``time``, ``rate``, ``age`` (Timedelta) and
        optionally ``stale``.
    """
    stamp = pd.Timestamp.now(tz="UTC") if now is None else utc(now, "now")
    limit = span_ns(stale_after, "stale_after")
    parts = _by_pair(data)
    times = pd.DatetimeIndex([s.index[-1] for s in parts.values()], dtype=_UTC_NS)
    out = pd.DataFrame(
        {"time": times, "rate": np.array([s.iloc[-1] for s in parts.values()], dtype=np.float64)},
        index=pd.Index(list(parts), dtype="str", name="pair"),
    )
    out["age"] = stamp - out["time"]
    if limit is not None:
        out["stale"] = out["age"] > pd.Timedelta(limit)
    return out


def gaps(data: Any, threshold: Any = "5s", until: Any = None) -> pd.DataFrame:
    """Silences longer than ``threshold`` between consecutive updates of each pair.

    Why: a feed that pauses (a disconnect, a throttled pair, a recorder that was stopped)
    looks like a flat price in a forward-filled table; listing the gaps lets analysis skip or
    flag them.

    Args:
        data: A rate frame (or an object with ``.df``).
        threshold: Minimum silence to report (strictly longer), e.g. ``"5s"`` or ``5`` (seconds).
        until: If given, also report each pair's trailing silence from its last update to
            ``until`` (marked ``open=True``).

    Returns:
        A DataFrame with ``pair``, ``start`` (last update before), ``end`` (first update
        after, or ``until``), ``duration`` and ``open``, ordered by ``start`` then ``pair``.
    """
    limit_ns = span_ns(threshold, "threshold", allow_none=False)
    assert limit_ns is not None
    until_ns = None if until is None else utc_ns(until, "until")
    pairs: list[str] = []
    starts: list[np.ndarray[Any, Any]] = []
    ends: list[np.ndarray[Any, Any]] = []
    opens: list[np.ndarray[Any, Any]] = []
    for pair, rates in _by_pair(data).items():
        t = np.unique(rates.index.as_unit("ns").asi8)
        hit = np.flatnonzero(np.diff(t) > limit_ns)
        start, end = t[hit], t[hit + 1]
        is_open = np.zeros(len(hit), dtype=bool)
        if until_ns is not None and until_ns - t[-1] > limit_ns:
            start = np.append(start, t[-1])
            end = np.append(end, until_ns)
            is_open = np.append(is_open, True)
        pairs.extend([pair] * len(start))
        starts.append(start)
        ends.append(end)
        opens.append(is_open)
    start_ns = np.concatenate(starts) if starts else np.empty(0, dtype=np.int64)
    end_ns = np.concatenate(ends) if ends else np.empty(0, dtype=np.int64)
    out = pd.DataFrame({
        "pair": pd.array(pairs, dtype="str"),
        "start": pd.DatetimeIndex(start_ns.astype("datetime64[ns]"), dtype=_UTC_NS),
        "end": pd.DatetimeIndex(end_ns.astype("datetime64[ns]"), dtype=_UTC_NS),
        "open": np.concatenate(opens) if opens else np.empty(0, dtype=bool),
    })
    out.insert(3, "duration", out["end"] - out["start"])
    return out.sort_values(["start", "pair"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- prices


def wide(data: Any, freq: Any = None, how: str = "last") -> pd.DataFrame:
    """Rates as time x pair, one column per pair, forward-filled (like ``collector.wide()``).

    With ``freq=None`` the index is every distinct update time; with ``freq`` each pair is
    resampled into left-labelled buckets of the shared grid (see the module docstring),
    aggregated with ``how``.

    Raises:
        ConfigError: If ``how`` is not ``last``/``first``/``mean``/``median``/``min``/``max``,
            or ``freq`` is not a frequency.
    """
    if not isinstance(how, str) or how not in AGGREGATIONS:
        raise ConfigError(f"how must be one of {sorted(AGGREGATIONS)}, not {how!r}")
    offset = None if freq is None else _freq(freq)
    parts = {
        pair: rates.groupby(level=0, sort=True).agg(how) if offset is None else _resample(rates, offset).agg(how)
        for pair, rates in _by_pair(data).items()
    }
    if not parts:
        return pd.DataFrame(index=_empty_index(), columns=pd.Index([], dtype="str", name="pair"), dtype=np.float64)
    out = pd.concat(parts, axis=1, names=["pair"], sort=True).sort_index()
    if offset is not None:
        out = out.asfreq(offset)
    out.index.name = "time"
    return out.ffill()


def ohlc(data: Any, freq: Any = "1min", pair: Pair | None = None) -> pd.DataFrame:
    """Open/high/low/close of each pair per ``freq`` bucket (UTC, left-labelled), like ``collector.ohlc()``.

    With ``pair=None`` the columns are ``(pair, field)``; with a pair they are flat ``open,
    high, low, close, count``. A bucket without an update has NaN prices (``count`` 0): a bar
    is never invented from the previous close. Every pair's bars lie on one grid counted from
    the epoch, so a ``"7min"`` table keeps every pair whatever day each first appeared.
    """
    offset = _freq(freq)
    chosen = None if pair is None else _pair(pair)
    parts = _by_pair(data)
    if chosen is not None:
        rates = parts.get(chosen, pd.Series([], index=_empty_index(), dtype=np.float64, name="rate"))
        bars = _resample(rates, offset)
        out = bars.ohlc()
        out["count"] = bars.count().astype(np.int64)
        return out
    if not parts:
        columns = pd.MultiIndex.from_arrays([[], []], names=["pair", "field"])
        return pd.DataFrame(index=_empty_index(), columns=columns, dtype=np.float64)
    bars = {name: _resample(rates, offset).ohlc() for name, rates in parts.items()}
    return pd.concat(bars, axis=1, names=["pair", "field"], sort=True).sort_index().asfreq(offset)


def returns(data: Any, freq: Any = None, pair: Pair | None = None) -> pd.DataFrame | pd.Series:
    """Log returns ``ln(r_t / r_{t-1})`` per pair, as time x pair.

    Args:
        data: A rate frame (or an object with ``.df``).
        freq: ``None`` for update-to-update returns (NaN where a pair did not update at that
            time); a frequency such as ``"1s"`` for returns between the last rates of
            consecutive buckets (0 across a bucket without an update, since the last known
            rate carried over).
        pair: Return one pair's Series instead of the whole table.
    """
    chosen = None if pair is None else _pair(pair)
    if freq is None:
        parts = {name: np.log(_unique_times(rates)).diff() for name, rates in _by_pair(data).items()}
        if parts:
            out = pd.concat(parts, axis=1, names=["pair"], sort=True).sort_index()
        else:
            out = pd.DataFrame(index=_empty_index(), columns=pd.Index([], dtype="str", name="pair"), dtype=np.float64)
        out.index.name = "time"
    else:
        out = np.log(wide(data, freq=freq)).diff()
    if chosen is not None:
        if chosen not in out.columns:
            raise ConfigError(f"no {chosen} in the data; pairs: {sorted(map(str, out.columns))}")
        return out[chosen]
    return out


def volatility(
    data: Any,
    window: Any = "1min",
    freq: Any = "1s",
    *,
    annualize: bool = False,
    min_periods: int = 2,
) -> pd.DataFrame:
    """Rolling standard deviation of log returns per pair, over a trailing time ``window``.

    Args:
        data: A rate frame (or an object with ``.df``).
        window: Trailing time span, e.g. ``"1min"`` or ``60`` (seconds).
        freq: Return interval (see :func:`returns`); ``None`` uses update-to-update returns.
        annualize: Scale by ``sqrt(SECONDS_PER_YEAR / freq)``, i.e. per year of 24/7 trading
            (365.25 days, the package's one constant in ``_types``).
        min_periods: Returns needed in the window for a value (sample std, ``ddof=1``).

    Raises:
        ConfigError: If ``annualize`` is asked for without a fixed ``freq``, or an argument is
            not what it should be.
    """
    span = pd.Timedelta(span_ns(window, "window", allow_none=False))
    if isinstance(min_periods, (bool, np.bool_)) or not isinstance(min_periods, (int, np.integer)) or min_periods < 1:
        raise ConfigError(f"min_periods must be an integer >= 1, not {min_periods!r}")
    offset = None if freq is None else _freq(freq)
    if annualize and not isinstance(offset, pd.offsets.Tick):
        raise ConfigError("annualize needs a fixed freq such as '1s' or '1h': update-to-update returns "
                          "and calendar frequencies have no common interval")
    out = returns(data, freq=offset).rolling(span, min_periods=int(min_periods)).std()
    if annualize and isinstance(offset, pd.offsets.Tick):
        out = out * math.sqrt(SECONDS_PER_YEAR / pd.Timedelta(offset).total_seconds())
    return out


# --------------------------------------------------------------------------- cross rates


def _leg(parts: dict[Pair, pd.Series], base: AssetId, quote: AssetId) -> tuple[pd.Series, str] | None:
    """The ``base/quote`` series, from the pair itself or by inverting ``quote/base``."""
    direct = parts.get(f"{base}/{quote}")
    if direct is not None:
        return _unique_times(direct), f"{base}/{quote}"
    inverse = parts.get(f"{quote}/{base}")
    if inverse is not None:
        return 1.0 / _unique_times(inverse), f"1/({quote}/{base})"
    return None


def _asof(timeline: pd.DatetimeIndex, rates: pd.Series) -> pd.DataFrame:
    """The last value of ``rates`` at or before each instant of ``timeline``, and its time ``at``."""
    right = pd.DataFrame({"value": rates.to_numpy(), "at": rates.index}, index=rates.index.rename("time"))
    left = pd.DataFrame(index=timeline)
    return pd.merge_asof(left, right, left_index=True, right_index=True, direction="backward")


def cross(
    data: Any,
    base: AssetId,
    quote: AssetId,
    via: AssetId = "USD",
    *,
    tolerance: Any = None,
) -> pd.DataFrame:
    """The ``base/quote`` rate implied through ``via``, and its divergence from the streamed pair.

    ``cross("BTC", "EUR", via="USD")`` is BTC/USD ÷ EUR/USD; a leg quoted the other way
    (USD/EUR) is inverted. Legs are aligned with as-of joins: at every instant any input
    updated, each leg contributes its last value at or before it, and none older than
    ``tolerance`` (else NaN), so a stale leg never silently drives the result.

    Args:
        data: A rate frame (or an object with ``.df``).
        base, quote: The pair to compute, e.g. ``"BTC"``, ``"EUR"``.
        via: The common leg currency.
        tolerance: Oldest a leg value may be, e.g. ``"5s"`` or ``5`` (seconds); ``None`` accepts any age.

    Returns:
        A DataFrame indexed by ``time`` with ``base_leg``, ``quote_leg``, ``cross``,
        ``direct`` (the streamed ``base/quote``, NaN if absent), ``divergence_bps``
        (``(cross / direct - 1) * 1e4``) and ``staleness`` (age of the older of the two
        legs at that instant, reported even when ``tolerance`` blanked the cross).
        ``attrs["legs"]`` names the pairs each column came from.

    Raises:
        ConfigError: If the assets are not distinct or a leg is missing from the data.
    """
    base, quote, via = _asset(base, "base"), _asset(quote, "quote"), _asset(via, "via")
    if len({base, quote, via}) != 3:
        raise ConfigError(f"base, quote and via must be three different assets, not {base}, {quote}, {via}")
    tolerance_ns = span_ns(tolerance, "tolerance")
    limit = None if tolerance_ns is None else pd.Timedelta(tolerance_ns)
    parts = _by_pair(data)
    legs: dict[str, tuple[pd.Series, str] | None] = {
        "base_leg": _leg(parts, base, via),
        "quote_leg": _leg(parts, quote, via),
        "direct": _leg(parts, base, quote),
    }
    for column, (a, b) in (("base_leg", (base, via)), ("quote_leg", (quote, via))):
        if legs[column] is None:
            raise ConfigError(f"cross {base}/{quote} via {via} needs {a}/{b} or {b}/{a}; the data has "
                              f"{sorted(parts) or 'no pairs'}")
    present = {column: leg for column, leg in legs.items() if leg is not None}
    timeline = pd.DatetimeIndex(
        np.unique(np.concatenate([leg[0].index.as_unit("ns").asi8 for leg in present.values()])).astype(
            "datetime64[ns]"), dtype=_UTC_NS, name="time")
    out = pd.DataFrame(index=timeline)
    now = timeline.to_series(index=timeline)
    ages: dict[str, pd.Series] = {}
    for column in ("base_leg", "quote_leg", "direct"):
        leg = present.get(column)
        if leg is None:
            out[column] = np.nan
            continue
        joined = _asof(timeline, leg[0])
        ages[column] = now - joined["at"]
        value = joined["value"]
        if limit is not None:
            value = value.where(ages[column] <= limit)
        out[column] = value.to_numpy(dtype=np.float64)
    out.insert(2, "cross", out["base_leg"] / out["quote_leg"])
    out["divergence_bps"] = (out["cross"] / out["direct"] - 1.0) * 1e4
    out["staleness"] = pd.concat([ages["base_leg"], ages["quote_leg"]], axis=1).max(axis=1, skipna=False)
    out.attrs["legs"] = {column: None if leg is None else leg[1] for column, leg in legs.items()}
    return out


# --------------------------------------------------------------------------- accessor


class RatesAccessor:
    """``df.rates``: the analysis functions as methods on any rate DataFrame.

    Registered on import of :mod:`coinrates_nb`; it needs ``pair`` and ``rate`` columns and a
    ``DatetimeIndex`` (or ``time`` column), as ``collector.df`` and ``cr.load(...)`` have.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        try:
            self._frame = _frame(frame)
        except ConfigError as exc:
            raise AttributeError(f"df.rates: {exc}") from exc

    @property
    def pairs(self) -> list[Pair]:
        """The pairs present, sorted."""
        return sorted(str(p) for p in self._frame["pair"].unique())

    def age(self, now: Any = None, stale_after: Any = None) -> pd.DataFrame:
        """Per pair: newest update, rate and age at ``now``; see :func:`age`."""
        return age(self._frame, now=now, stale_after=stale_after)

    def gaps(self, threshold: Any = "5s", until: Any = None) -> pd.DataFrame:
        """Silences longer than ``threshold`` per pair; see :func:`gaps`."""
        return gaps(self._frame, threshold, until=until)

    def wide(self, freq: Any = None, how: str = "last") -> pd.DataFrame:
        """Time x pair, forward-filled; see :func:`wide`."""
        return wide(self._frame, freq=freq, how=how)

    def ohlc(self, freq: Any = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """OHLC bars per pair; see :func:`ohlc`."""
        return ohlc(self._frame, freq, pair=pair)

    def returns(self, freq: Any = None, pair: Pair | None = None) -> pd.DataFrame | pd.Series:
        """Log returns per pair; see :func:`returns`."""
        return returns(self._frame, freq=freq, pair=pair)

    def volatility(self, window: Any = "1min", freq: Any = "1s", *, annualize: bool = False,
                   min_periods: int = 2) -> pd.DataFrame:
        """Rolling volatility of log returns; see :func:`volatility`."""
        return volatility(self._frame, window, freq, annualize=annualize, min_periods=min_periods)

    def cross(self, base: AssetId, quote: AssetId, via: AssetId = "USD", *, tolerance: Any = None) -> pd.DataFrame:
        """Cross rate through ``via`` and its divergence from the streamed pair; see :func:`cross`."""
        return cross(self._frame, base, quote, via, tolerance=tolerance)


pd.api.extensions.register_dataframe_accessor("rates")(RatesAccessor)
