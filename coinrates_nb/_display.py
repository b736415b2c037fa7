"""How rates, times, ages and statuses look to a person: the one formatting shared by reprs and the dashboard.

A DataFrame printed as pandas prints it is hard to read at a glance: times at nanosecond precision
with ``+00:00`` wrap onto two lines, ages print as ``0 days 00:00:00.034432787`` and ``.6g`` makes
decimals jump between rows (``95,039`` then ``94,984.5``). Here every view uses one set of rules:

* times in UTC to the millisecond (``22:14:05.123``; the date once, in the header, when it is
  the same for every row);
* ages in human units (``34 ms``, ``2.1 s``, ``4 min 05 s``);
* rates with a fixed number of decimals per pair, chosen from the pair's magnitude so that every
  pair shows :data:`SIGNIFICANT` significant digits and trailing zeros are kept (``95,039.0``,
  ``1.08234``): a column of one pair never changes width as the price moves;
* numbers right-aligned in tabular figures, headers aligned with their values, no wrapping.

Only the display changes: :class:`LatestFrame` is a DataFrame with the data at full precision and
a styled ``_repr_html_``. Pure: no plotly, no ipywidgets, no clock (callers pass ``now``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._badge import pill_html, simulated_html

__all__ = ["SIGNIFICANT", "STATE_COLORS", "LatestFrame", "decimals_for", "format_age", "format_clock",
           "format_rate", "format_timestamp", "in_scope", "latest_html", "scoped", "shown_msgs_per_s",
           "status_html", "status_line"]

SIGNIFICANT: Final = 6
"""Significant digits a rate shows: 95,039.1 / 3,398.94 / 1.08234 / 190.123."""

STATE_COLORS: Final[dict[str, str]] = {
    "connected": "#15803d",
    "connecting": "#2563eb",
    "idle": "#64748b",
    "reconnecting": "#d97706",
    "stale": "#ea580c",
    "stopped": "#64748b",
    "error": "#b91c1c",
}
"""Badge colour per collector state."""

RUNNING_STATES: Final = frozenset({"connected", "stale", "connecting", "reconnecting"})
"""States in which messages can arrive; in any other the rate shown is 0."""

_FONT: Final = ("font-family:var(--jp-ui-font-family, system-ui, sans-serif);font-size:13px;"
                "font-variant-numeric:tabular-nums")
_CELL: Final = "padding:2px 10px;white-space:nowrap;border-bottom:1px solid rgba(128,128,128,0.2)"
_NUMERIC: Final = "text-align:right"
_TEXT: Final = "text-align:left"
_MUTED: Final = "#64748b"
_WARN: Final = "#b45309"
_ERROR: Final = "#b91c1c"
_STALE: Final = "#ea580c"


# --------------------------------------------------------------------------------------- values


def decimals_for(value: float, significant: int = SIGNIFICANT) -> int:
    """Decimals that show ``value`` with ``significant`` significant digits (0 for large values, at most 12).

    Chosen once per pair (from its magnitude) so that all of that pair's rates line up.
    """
    if not math.isfinite(value) or value == 0:
        return 2
    magnitude = math.floor(math.log10(abs(value)))
    return max(0, min(12, significant - 1 - magnitude))


def format_rate(value: float, decimals: int) -> str:
    """``value`` with thousands separators and exactly ``decimals`` decimals (``"95,039.0"``); ``"–"`` if missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{decimals}f}"


def _ns(value: Any) -> int | None:
    """Epoch nanoseconds of a Timestamp, datetime64 or int; ``None`` for NaT/None."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.as_unit("ns").value)


def format_clock(value: Any) -> str:
    """The time of day in UTC to the millisecond: ``"22:14:05.123"`` (``"–"`` for a missing time)."""
    ns = _ns(value)
    if ns is None:
        return "–"
    stamp = pd.Timestamp(ns, unit="ns", tz="UTC")
    return f"{stamp:%H:%M:%S}.{stamp.microsecond // 1000:03d}"


def format_timestamp(value: Any) -> str:
    """Date and time in UTC to the millisecond: ``"2026-12-01 22:14:05.123"``."""
    ns = _ns(value)
    if ns is None:
        return "–"
    stamp = pd.Timestamp(ns, unit="ns", tz="UTC")
    return f"{stamp:%Y-%m-%d} {format_clock(ns)}"


def _seconds(value: Any) -> float | None:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timedelta, np.timedelta64)):
        td = pd.Timedelta(value)
        return None if td is pd.NaT else td.value / 1e9
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    number = float(value)
    return None if math.isnan(number) else number


def format_age(value: Any) -> str:
    """A duration as a person says it: ``"34 ms"``, ``"2.1 s"``, ``"48 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``, ``"3 d 4 h"``.

    Takes a Timedelta, a ``timedelta``, a ``numpy.timedelta64`` or a number of seconds.
    """
    seconds = _seconds(value)
    if seconds is None:
        return "–"
    sign, s = ("-" if seconds < 0 else ""), abs(seconds)
    if s < 1:
        text = f"{s * 1000:.0f} ms"
    elif s < 10:
        text = f"{s:.1f} s"
    elif s < 60:
        text = f"{s:.0f} s"
    elif s < 3600:
        minutes, rest = divmod(int(round(s)), 60)
        text = f"{minutes} min {rest:02d} s"
    elif s < 86_400:
        hours, rest = divmod(int(round(s)) // 60, 60)
        text = f"{hours} h {rest:02d} min"
    else:
        days, rest = divmod(int(round(s)) // 3600, 24)
        text = f"{days} d {rest} h"
    return sign + text


def in_scope(pair: str, scope: Sequence[str] | None) -> bool:
    """True if ``pair`` is in a subscription ``scope``: named, or one of its assets is (``None``: everything)."""
    if scope is None:
        return True
    if pair in scope:
        return True
    base, _, quote = pair.partition("/")
    return base in scope or quote in scope


def scoped(pairs: Iterable[str], scope: Sequence[str] | None) -> tuple[str, ...]:
    """The ``pairs`` that are in ``scope``, in their order (``None``: all of them)."""
    return tuple(p for p in pairs if in_scope(p, scope))


def shown_msgs_per_s(status: Any) -> float:
    """The message rate to show: ``status.msgs_per_s`` while messages can arrive, else 0 (a stopped stream shows 0)."""
    return float(status.msgs_per_s) if status.state in RUNNING_STATES else 0.0


# --------------------------------------------------------------------------------------- tables


def _one_date(values: Sequence[int | None]) -> str | None:
    """The UTC date every time shares (``"2026-12-01"``), or ``None`` if they differ or there are none."""
    days = {v // 86_400_000_000_000 for v in values if v is not None}
    if len(days) != 1:
        return None
    return f"{pd.Timestamp(days.pop() * 86_400_000_000_000, unit='ns', tz='UTC'):%Y-%m-%d}"


def _cell(text: str, align: str, extra: str = "") -> str:
    return f'<td style="{_CELL};{align}{extra}">{escape(text)}</td>'


def _head(text: str, align: str) -> str:
    return f'<th style="{_CELL};{align};font-weight:600">{escape(text)}</th>'


def _is_rate(name: str, series: pd.Series) -> bool:
    return pd.api.types.is_float_dtype(series.dtype) and name in ("rate", "open", "high", "low", "close")


def _rate_rows(frame: pd.DataFrame) -> list[np.ndarray[Any, Any]]:
    """Per row, its rate-like values (for the row's decimals): one pair per row in the tables shown here."""
    names = [c for c in frame.columns if _is_rate(str(c), frame[c])]
    if not names:
        return [np.array([np.nan])] * len(frame)
    values = frame[names].to_numpy(np.float64)
    return list(values)


def latest_html(latest: pd.DataFrame, *, scope: Sequence[str] | None = None, colors: Mapping[str, str] | None = None,
                stale: Iterable[str] = ()) -> str:
    """The newest rate per pair (``latest()``-shaped) as the dashboard's table: pair, rate, time (UTC), age.

    Built straight from the columns' arrays: the dashboard
    redraws it every second.

    Args:
        latest: One row per pair, as ``rates.latest()`` returns (``rate``, ``time``, ``age``).
        scope: Show only pairs in this subscription scope (``None``: every pair): a pair the user
            removed leaves the table at once, although its rows stay in the buffer.
        colors: Pair -> line colour, shown as a dot so the table reads with the chart.
        stale: Pairs to mark ``stale``.
    """
    pairs = [str(p) for p in latest.index]
    keep = [i for i, p in enumerate(pairs) if in_scope(p, scope)]
    if not keep:
        return f'<div class="coinrates-latest" style="{_FONT};color:{_MUTED}">no rates yet</div>'
    rates = latest["rate"].to_numpy(np.float64)[keep]
    times = [int(v) for v in np.asarray(pd.DatetimeIndex(latest["time"]).as_unit("ns").asi8)[keep]]
    ages = latest["age"].to_numpy()[keep] if "age" in latest.columns else [None] * len(keep)
    day = _one_date(times)
    clock = format_clock if day is not None else format_timestamp
    marks = set(stale)
    body = []
    for row, i in enumerate(keep):
        pair = pairs[i]
        dot = ""
        if colors and pair in colors:
            dot = (f'<span style="display:inline-block;width:9px;height:9px;border-radius:50%;'
                   f'background:{escape(colors[pair])};margin-right:6px"></span>')
        mark = (f' <span class="coinrates-mark" style="color:{_STALE};font-size:11px">stale</span>'
                if pair in marks else "")
        rate = float(rates[row])
        cells = (f'<td class="coinrates-pair" style="{_CELL};{_TEXT}">{dot}{escape(pair)}{mark}</td>'
                 + _cell(format_rate(rate, decimals_for(rate)), _NUMERIC) + _cell(clock(times[row]), _NUMERIC)
                 + _cell(format_age(ages[row]), _NUMERIC))
        body.append(f'<tr data-pair="{escape(pair)}">{cells}</tr>')
    head = (_head("pair", _TEXT) + _head("rate", _NUMERIC)
            + _head(f"time (UTC{', ' + day if day else ''})", _NUMERIC) + _head("age", _NUMERIC))
    return (f'<table class="coinrates-latest" style="{_FONT};border-collapse:collapse;margin:4px 0">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


class LatestFrame(pd.DataFrame):  # type: ignore[misc, unused-ignore]  # pandas is untyped here
    """What ``latest()`` returns: a plain DataFrame (full precision, every pandas operation) that a
    notebook shows as the dashboard's table (ms times, human ages, per-pair decimals).

    Only the display differs (``_repr_html_`` and ``repr``): anything derived from it (a selection,
    arithmetic, ``copy()``) is a plain ``DataFrame``.
    """

    @property
    def _constructor(self) -> Any:
        return pd.DataFrame

    def _repr_html_(self) -> str:
        return latest_html(self)

    def __repr__(self) -> str:
        if self.empty:
            return str(pd.DataFrame.__repr__(self))
        text = pd.DataFrame(index=self.index)
        rows = _rate_rows(pd.DataFrame(self))
        for name in self.columns:
            series = self[name]
            if pd.api.types.is_datetime64_any_dtype(series.dtype):
                text[name] = [format_timestamp(v) for v in series]
            elif pd.api.types.is_timedelta64_dtype(series.dtype):
                text[name] = [format_age(v) for v in series]
            elif _is_rate(str(name), series):
                text[name] = [format_rate(float(v), decimals_for(float(np.nanmax(np.abs(r)))) if np.isfinite(r).any()
                                          else 2) for v, r in zip(series.to_numpy(np.float64), rows, strict=True)]
            else:
                text[name] = series.astype(str)
        return str(text.to_string())


# --------------------------------------------------------------------------------------- status


def _lag(status: Any) -> str:
    return "n/a" if status.lag_ms is None else format_age(status.lag_ms / 1000)


def status_line(status: Any, *, scope: Sequence[str] | None = None) -> str:
    """The one-line status bar: state, SIMULATED badge, msgs/s (0 when stopped), lag, reconnects, stale, errors.

    Args:
        status: A :class:`~coinrates_nb.status.Status`.
        scope: Show stale flags only for pairs in this scope (by default the status's own
            ``scope``), so a pair the user removed is never flagged stale.
    """
    scope = status.scope if scope is None else scope
    color = STATE_COLORS.get(status.state, _MUTED)
    parts = [pill_html(status.state, color, "coinrates-state"), simulated_html(status.simulated)]
    if getattr(status, "replay", False):
        parts.append(pill_html("REPLAY", "#475569", "coinrates-replay"))
    n_pairs = "all" if status.scope is None else str(len(status.scope))
    facts = [
        f"{shown_msgs_per_s(status):,.1f} msgs/s",
        f"lag {_lag(status)}",
        f"{status.reconnects} reconnect{'s' if status.reconnects != 1 else ''}",
        f"{status.rates:,} msgs",
        f"{status.rows:,} rows",
        f"{n_pairs} pairs",
        *cost_facts(status),
    ]
    parts.append(f'<span class="coinrates-facts">{escape(" · ".join(facts))}</span>')
    stale = scoped(status.stale_pairs, scope)
    if stale:
        parts.append(f'<span class="coinrates-stale" style="color:{_STALE};margin-left:6px">'
                     f'stale: {escape(", ".join(stale))}</span>')
    if status.last_error:
        parts.append(f'<span class="coinrates-last-error" style="color:{_ERROR};margin-left:6px">'
                     f'last error: {escape(status.last_error[:300])}</span>')
    return f'<div class="coinrates-status" style="{_FONT}">{"".join(parts)}</div>'


def cost_facts(status: Any) -> list[str]:
    """What today costs, as CoinAPI bills it: rates received over the WebSocket, REST credits; a hub consumer's upstream."""
    facts = []
    upstream = getattr(status, "upstream", None)
    if upstream is not None:  # a hub consumer pays nothing; the hub's link is what matters
        facts.append(f"hub upstream {upstream.get('state', 'unknown')}, {int(upstream.get('rates_billed') or 0):,} "
                     "rates billed to the hub")
    elif not getattr(status, "replay", False):  # a replay bills nothing
        facts.append(f"{int(getattr(status, 'rates_today', 0)):,} rates billed today")
    if getattr(status, "rest_requests", 0):
        credits = int(status.rest_credits_today)
        facts.append(f"REST {credits:,} credit{'' if credits == 1 else 's'} today")
    return facts


def _row(label: str, value: str, color: str | None = None) -> str:
    style = f";color:{color}" if color else ""
    return (f'<tr><th style="{_CELL};{_TEXT};font-weight:600;color:{_MUTED}">{escape(label)}</th>'
            f'<td style="{_CELL};{_TEXT}{style}">{escape(value)}</td></tr>')


def status_html(status: Any) -> str:
    """A :class:`~coinrates_nb.status.Status` as a small readable card (its ``_repr_html_``)."""
    color = STATE_COLORS.get(status.state, _MUTED)
    head = [pill_html(status.state, color, "coinrates-state"), simulated_html(status.simulated)]
    if getattr(status, "replay", False):
        head.append(pill_html("REPLAY", "#475569", "coinrates-replay"))
    rows = [
        _row("source", f"{status.source}" + (f" ({status.url})" if status.url else "")),
        _row("pairs", "all (unfiltered)" if status.scope is None else ", ".join(status.scope) or "none"),
        _row("throughput", f"{shown_msgs_per_s(status):,.1f} msgs/s · {status.rates:,} rates · "
                           f"{status.messages:,} frames · {status.rows:,} rows"),
        _row("lag", _lag(status)),
        _row("connections", f"{status.connections} · {status.reconnects} reconnect"
                            f"{'s' if status.reconnects != 1 else ''}"),
        _row("uptime", format_age(status.uptime_s)),
    ]
    cost = cost_facts(status)
    if cost:
        rows.append(_row("cost", " · ".join(cost)))
    stale = scoped(status.stale_pairs, status.scope)
    if stale:
        rows.append(_row("stale", ", ".join(stale), _STALE))
    notes = status.no_data_notes() if hasattr(status, "no_data_notes") else []
    if notes:
        rows.append(_row("no data", "; ".join(notes), _WARN))
    rejected = {k: v for k, v in (status.rejected or {}).items() if v}
    if rejected or status.duplicates:
        parts = [f"{k} {v:,}" for k, v in sorted(rejected.items())]
        if status.duplicates:
            parts.append(f"duplicates {status.duplicates:,}")
        rows.append(_row("dropped", ", ".join(parts)))
    if getattr(status, "internal_errors", 0):
        rows.append(_row("internal errors", f"{status.internal_errors:,}", _ERROR))
    if status.last_error:
        rows.append(_row("last error", status.last_error[:500], _ERROR))
    for recorder in getattr(status, "recorders", ()):
        state = getattr(recorder, "state", "?")
        error = getattr(recorder, "last_error", None)
        rows.append(_row("recorder", f"{state}" + (f": {error}" if error else ""),
                         None if getattr(recorder, "ok", True) else _ERROR))
    return (f'<div class="coinrates-status-card" style="{_FONT}"><div style="margin-bottom:4px">{"".join(head)}</div>'
            f'<table style="border-collapse:collapse">{"".join(rows)}</table></div>')
