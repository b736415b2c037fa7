"""The one place that turns what a user types into canonical values, or a ``ConfigError`` that says what to write.

Every public argument that is a time, a duration or a list of pairs goes through here, so the
rules are written once and documented once (README, "Input rules"):

* **Times**: anything ``pd.Timestamp`` accepts; a naive time means UTC.
* **Durations**: a pandas span (``"15min"``, ``"5s"``), a ``timedelta``/``pd.Timedelta``, or a
  bare number of **seconds** (``15``, ``2.5``). Never nanoseconds.
* **Pairs and asset ids**: ``"BTC/USD"`` (a pair) or ``"BTC"`` (an asset id: every pair with it),
  case-insensitive, surrounding spaces ignored. Pair-shaped mistakes (``"BTCUSD"``,
  ``"BTC-USD"``, ``"BTC USD"``, ``"BTC / USD"``) are refused with the pair they probably meant.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import re
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._types import FilterItem, Pair, TimeNs
from .exceptions import ConfigError

__all__ = ["filter_items", "pair_list", "span_ns", "utc", "utc_ns"]

_ASSET_RE: Final = re.compile(r"[A-Z0-9][A-Z0-9._]{0,31}")
"""CoinAPI asset ids: upper-case letters and digits, occasionally ``.`` or ``_`` (``USDC.E``)."""

_SEPARATORS: Final = re.compile(r"\s*[-:_\\|,\s]\s*|\s*/\s*")
"""What people type between base and quote instead of a bare ``/``."""

COMMON_QUOTES: Final = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "BTC", "ETH")
"""Quote assets recognised at the end of a run-together pair like ``BTCUSD``, longest first."""

COMMON_BASES: Final = frozenset({*COMMON_QUOTES, "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "BNB", "TRX", "AVAX",
                                 "LINK", "MATIC", "XLM", "BCH", "ATOM", "UNI", "XMR", "ETC", "FIL", "NEAR", "APT"})
"""Bases recognised at the start of a run-together pair: ``BTCUSD`` is refused, ``WSTETH`` (an asset) is not."""


def utc(value: Any, name: str = "time") -> pd.Timestamp:
    """A UTC ``pd.Timestamp`` from anything pandas reads as a time; naive means UTC.

    ``"now"`` and ``"today"`` are the current UTC instant and UTC midnight (pandas alone would
    read them as local wall time, then "naive means UTC" would shift them). A bare number is
    refused: pandas would read ``1732438800`` as nanoseconds, i.e. January 1970.
    """
    hint = f"{name} must be a time like '2026-11-24 09:00' (naive means UTC), not {value!r}"
    number = isinstance(value, numbers.Number) and not isinstance(value, (np.datetime64, np.timedelta64))
    if value is None or isinstance(value, (bool, np.bool_)) or number:
        if number and not isinstance(value, (bool, np.bool_)):
            hint += "; for seconds since the epoch write pd.Timestamp(x, unit='s', tz='UTC')"
        raise ConfigError(hint)
    if isinstance(value, str) and value.strip().lower() in ("now", "today"):
        now = pd.Timestamp.now(tz="UTC")
        return now if value.strip().lower() == "now" else now.normalize()
    try:
        stamp = pd.Timestamp(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(hint) from exc
    if stamp is pd.NaT or pd.isna(stamp):
        raise ConfigError(f"{name} must be a time, not {value!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc_ns(value: Any, name: str = "time") -> TimeNs:
    """:func:`utc` as integer nanoseconds since the epoch (years 1677 to 2262, what int64 ns can hold)."""
    stamp = utc(value, name)
    try:
        return int(stamp.as_unit("ns").value)
    except (ValueError, OverflowError) as exc:  # OutOfBoundsDatetime is a ValueError
        raise ConfigError(f"{name} {stamp} is outside the years 1677-2262 that nanosecond times can hold") from exc


_MAX_SPAN_NS: Final = int(pd.Timedelta.max.value)
"""The longest span a ``pd.Timedelta`` holds (about 292 years)."""

_NUMBER: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A duration written as a bare number in a string (``"15"``): seconds, like a bare number."""


def span_ns(value: Any, name: str = "window", *, allow_none: bool = True) -> int | None:
    """A positive duration as integer nanoseconds: ``"15min"``, a ``timedelta``, or a number of seconds.

    A bare number means seconds, also written as a string (``15``, ``2.5``, ``"15"``; pandas
    alone would read ``"15"`` as 15 ns). ``None`` passes through when ``allow_none``. Zero,
    negative, NaN, spans longer than ``pd.Timedelta`` holds and anything else raise a
    ``ConfigError`` naming ``name`` and what to write.
    """
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{name} is required: a duration like '5s' or a number of seconds")
    hint = f"{name} must be a positive duration like '15min', '5s' or a number of seconds, not {value!r}"
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(hint)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (np.timedelta64, np.datetime64)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0 or seconds * 1e9 > _MAX_SPAN_NS:
            raise ConfigError(hint)
        ns = round(seconds * 1e9)
        if ns <= 0:
            raise ConfigError(hint + " (shorter than a nanosecond)")
        return ns
    if not isinstance(value, (str, _dt.timedelta, np.timedelta64, pd.offsets.Tick)):
        raise ConfigError(hint)
    try:
        delta = pd.Timedelta(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(hint) from exc
    if delta is pd.NaT or pd.isna(delta) or delta <= pd.Timedelta(0):
        raise ConfigError(hint)
    return int(delta.value)


def _suggest(text: str, *, known_only: bool = False) -> str | None:
    """The pair a pair-shaped mistake probably meant (``"btc-usd"`` -> ``"BTC/USD"``), or ``None``.

    ``known_only`` is for text that is itself a well-formed asset id (``"BTC_USD"``, ``"BTCUSD"``):
    it is only taken for a pair when both halves are common assets, so a real id with ``_``
    in it is not refused.
    """
    parts = [p for p in _SEPARATORS.split(text.strip().upper()) if p]
    if len(parts) == 2 and all(_ASSET_RE.fullmatch(p) for p in parts):
        if not known_only or (parts[0] in COMMON_BASES and parts[1] in COMMON_QUOTES):
            return f"{parts[0]}/{parts[1]}"
        return None
    if len(parts) == 1 and _ASSET_RE.fullmatch(parts[0]):
        word = parts[0]
        for quote in COMMON_QUOTES:
            if word.endswith(quote) and word[: -len(quote)] in COMMON_BASES:
                return f"{word[: -len(quote)]}/{quote}"
    return None


def filter_item(item: Any, name: str = "pairs") -> FilterItem:
    """One pair ``BASE/QUOTE`` or asset id, upper-cased; pair-shaped mistakes raise with a suggestion."""
    if not isinstance(item, str):
        raise ConfigError(f"{name} entries must be strings like 'BTC/USD' or 'BTC', not {type(item).__name__} {item!r}")
    text = item.strip().upper()
    if not text:
        raise ConfigError(f"{name} entries must not be empty; write a pair like 'BTC/USD' or an asset id like 'BTC'")
    base, sep, quote = text.partition("/")
    if sep and _ASSET_RE.fullmatch(base) and _ASSET_RE.fullmatch(quote):
        return text
    if not sep and _ASSET_RE.fullmatch(text):
        guess = _suggest(text, known_only=True)
        if guess is None:
            return text  # an asset id: every pair with it
        raise ConfigError(f"{item!r} is not a CoinAPI asset id; did you mean {guess!r}? "
                          "(pairs are written BASE/QUOTE; a lone id like 'BTC' streams every pair with it)")
    guess = _suggest(text)
    did = f"; did you mean {guess!r}?" if guess else ""
    raise ConfigError(f"{item!r} is neither a pair 'BASE/QUOTE' nor an asset id{did}")


def filter_items(items: Any, name: str = "pairs") -> tuple[FilterItem, ...]:
    """Pairs or asset ids from a string or an iterable of strings: validated, upper-cased, deduplicated.

    An empty iterable gives an empty tuple (the caller decides what "nothing" means); an
    empty string is refused.

    Raises:
        ConfigError: ``items`` is not a string or an iterable of strings, holds an empty or
            non-string entry, or a pair-shaped mistake (the message names the pair it probably meant).
    """
    if isinstance(items, str):
        items = [items]
    elif isinstance(items, (bytes, bytearray, dict)) or not isinstance(items, Iterable):
        raise ConfigError(f"{name} must be a pair like 'BTC/USD', an asset id, or a list of them, "
                          f"not {type(items).__name__} {items!r}")
    out: dict[FilterItem, None] = {}
    for item in items:
        out.setdefault(filter_item(item, name))
    return tuple(out)


def pair_list(items: Any, name: str = "pairs") -> list[Pair]:
    """Like :func:`filter_items`, but every entry must be a ``BASE/QUOTE`` pair (charts, cross rates)."""
    out = filter_items(items, name)
    ids = [i for i in out if "/" not in i]
    if ids:
        raise ConfigError(f"{name} must be BASE/QUOTE pairs here, not asset ids {ids}")
    return list(out)
