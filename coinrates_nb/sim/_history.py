"""The simulator's price path at any time: a deterministic past, the tape of what it priced, bridges between.

Pure NumPy: no I/O, no clock reads, no global RNG. Three pieces make one path per asset:

* **The tape** (:class:`~coinrates_nb.sim.prices.PriceTape`): every instant the model priced
  since it started, the exact prices the WebSocket sent. A REST bar of a period the stream
  covered is built from these instants only, so it equals the OHLC of the streamed ticks.
* **The past**, before the model's first instant ``T0``: deterministic Brownian paths, drawn
  from counter-based noise keyed by ``(seed, asset, time)``, so the same seed gives the same
  moves at every absolute time, whatever the query (range, period, paging). The level is
  anchored so the past ends exactly at the model's starting prices at ``T0``: the WebSocket
  continues that path.
* **Bridges** over holes of the tape longer than ``hole_ns`` (nobody was connected, so the
  ticker slept; or old instants were dropped from the tape): Brownian bridges from the same
  noise, pinned to the known instants on both sides.

The noise lives on a mixed-radix grid (days, then hours, minutes, seconds, 100 ms): each level
refines the one above with Brownian bridges, so a coarse grid point has the same value at every
resolution. A bar of length ``P`` is drawn from samples at the coarsest level step that still
gives at least :data:`SAMPLES_PER_BAR` samples per bar (100 ms for ``1SEC`` bars, 1 s for
``1MIN``, 1 h for ``1DAY``); its open always agrees with finer bars, its high/low/close may
differ slightly from those of the finer bars inside it (they are sampled more coarsely).

Choices the protocol notes leave open (``../shared/protocol/exrates-rest.md``): periods are
aligned to the Unix epoch (multi-day periods too); a period with no instant has null fields.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from .._types import SECONDS_PER_YEAR, AssetId
from ..rest.wire import NAT  # the client's missing time: one constant for both sides
from .prices import CRYPTO_CORRELATION, REFERENCE, STABLECOIN_REVERSION, AssetSpec, PriceTape

__all__ = ["HOLE_NS", "LEVEL_STEPS_NS", "NAT", "BarColumns", "PricePath", "level_for"]

NS: Final = 1_000_000_000
LEVEL_STEPS_NS: Final = (86_400 * NS, 3_600 * NS, 60 * NS, NS, NS // 10)
"""Grid steps of the noise levels: days, hours, minutes, seconds, 100 ms."""
_RADIX: Final = (0, 24, 60, 60, 10)
"""Children per parent step at each level (level 0, the days, is a plain random walk)."""
FINEST: Final = len(LEVEL_STEPS_NS) - 1

SAMPLES_PER_BAR: Final = 10
"""A bar is sampled at the coarsest level step ``s`` with ``period / s >= 10``."""

HOLE_NS: Final = NS
"""Gaps between known instants longer than this are bridged (a 1 s gap cannot empty a 1 s period)."""

STABLE_WINDOW_NS: Final = 3_600 * NS
"""Stablecoins' past is ``E(t) - E(t - 1 h)`` scaled to the model's stationary spread: stationary, like a peg."""


_DAY_CHUNK: Final = 4096
_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_TWO32: Final = float(2**32)


def level_for(period_ns: int) -> int:
    """The noise level a bar of ``period_ns`` is sampled at: the coarsest with >= 10 samples per bar."""
    for level in range(1, FINEST + 1):
        if period_ns // LEVEL_STEPS_NS[level] >= SAMPLES_PER_BAR:
            return level
    return FINEST


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The splitmix64 finaliser: a bijective 64-bit hash (wrapping uint64 arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class Noise:
    """Standard Brownian paths (variance = time in years) per series, at any grid point, deterministically.

    A path is a random walk over days from 1970-01-01 (index 0, value 0), refined level by
    level with Brownian bridges; every normal draw is a hash of ``(seed, series, level,
    index)``, so any range of any level is computed on its own, in O(points), with the same
    values every time. Thread-safe (the day walks are cached under a lock).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._days: dict[int, npt.NDArray[np.float64]] = {}
        self._lock = threading.Lock()

    def _key(self, series: int, level: int) -> np.uint64:
        base = np.array([(self.seed * 1_000_003 + series * 131 + level) & (2**64 - 1)], np.uint64)
        return np.uint64(_mix(base)[0])

    def normals(self, series: int, level: int, index: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Standard normal draws for grid ``index`` values of one series and level (Box-Muller on a hash)."""
        with np.errstate(over="ignore"):
            h = _mix(index.astype(np.uint64) * _GOLDEN + self._key(series, level))
        u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / _TWO32
        u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / _TWO32
        out: npt.NDArray[np.float64] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)
        return out

    def _day_walk(self, series: int, upto: int) -> npt.NDArray[np.float64]:
        with self._lock:
            walk = self._days.get(series)
            if walk is None or len(walk) <= upto:
                have = 0 if walk is None else len(walk)
                size = (upto // _DAY_CHUNK + 1) * _DAY_CHUNK + 1
                step = math.sqrt(LEVEL_STEPS_NS[0] / NS / SECONDS_PER_YEAR)
                fresh = self.normals(series, 0, np.arange(max(have, 1), size, dtype=np.int64)) * step
                start = 0.0 if walk is None else float(walk[-1])
                ext = start + np.cumsum(fresh)
                walk = np.concatenate([np.zeros(1) if walk is None else walk, ext])
                self._days[series] = walk
            return walk

    def values(self, series: int, level: int, i0: int, i1: int) -> npt.NDArray[np.float64]:
        """The path at grid indices ``i0..i1`` (inclusive, both >= 0) of ``level``."""
        if level == 0:
            return self._day_walk(series, i1)[i0:i1 + 1].copy()
        n = _RADIX[level]
        p0, p1 = i0 // n, -(-i1 // n)
        parent = self.values(series, level - 1, p0, p1)
        spans = p1 - p0
        if spans == 0:
            return parent[:1].copy()
        children = (np.arange(p0, p1, dtype=np.int64)[:, None] * n + np.arange(1, n + 1, dtype=np.int64)).ravel()
        step = math.sqrt(LEVEL_STEPS_NS[level] / NS / SECONDS_PER_YEAR)
        walk = np.cumsum(self.normals(series, level, children).reshape(spans, n) * step, axis=1)
        frac = np.arange(1, n + 1, dtype=np.float64) / n
        left, right = parent[:-1, None], parent[1:, None]
        inner = left + frac * (right - left) + walk - frac * walk[:, -1:]
        inner[:, -1] = parent[1:]  # exact at the coarse points: every resolution agrees there
        full = np.concatenate([parent[:1], inner.ravel()])
        return full[i0 - p0 * n:i1 - p0 * n + 1]


def _series(asset: AssetId) -> int:
    """A stable noise series id per asset (0 is the crypto market factor)."""
    return zlib.crc32(asset.encode()) + 1


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Bars of one pair as columns: NaN prices and NaT times where a period has no instant."""

    start_ns: npt.NDArray[np.int64]
    time_open_ns: npt.NDArray[np.int64]
    time_close_ns: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]


class PricePath:
    """Every asset's USD price at any time: the deterministic past, then the tape, bridged over holes.

    Args:
        specs: the model's assets and how they move.
        seed: the simulator's seed (the noise's).
        tape: the model's tape (elapsed ns since its first instant).
        hole_ns: gaps between known instants longer than this are bridged.
    """

    def __init__(self, specs: Mapping[AssetId, AssetSpec], seed: int, tape: PriceTape, hole_ns: int = HOLE_NS) -> None:
        self.specs = specs
        self.tape = tape
        self.hole_ns = hole_ns
        self.noise = Noise(seed)

    def known(self, lo_ns: int, hi_ns: int, origin_ns: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """A copy of the tape's instants for ``[lo_ns, hi_ns)`` (absolute times) and their neighbours.

        Read it on the thread that appends to the tape (the simulator loop); what it returns can
        be handed to :meth:`samples`/:meth:`bars` on any thread.
        """
        return self.tape.window(lo_ns - origin_ns, hi_ns - origin_ns)  # concatenated: a copy already

    # ------------------------------------------------------------------ the driving noise

    def drive(self, asset: AssetId, level: int, i0: int, i1: int) -> npt.NDArray[np.float64]:
        """The log-price driver ``D`` of ``asset`` at grid indices ``i0..i1`` of ``level``.

        Crypto: ``sigma * (sqrt(rho) M + sqrt(1 - rho) E) - sigma^2 t / 2`` (the model's market
        factor and correlation); fiat: ``sigma * E - sigma^2 t / 2``; stablecoins a stationary
        ``E(t) - E(t - 1 h)`` scaled to the model's stationary spread around the peg.
        """
        spec = self.specs[asset]
        sigma = spec.volatility
        own = _series(asset)
        if spec.kind == "stablecoin":
            lag = STABLE_WINDOW_NS // LEVEL_STEPS_NS[level] if STABLE_WINDOW_NS >= LEVEL_STEPS_NS[level] else 1
            lo = max(0, i0 - lag)
            e = self.noise.values(own, level, lo, i1)
            now = e[i0 - lo:]
            idx = np.arange(i0, i1 + 1) - lag
            before = np.where(idx >= lo, e[np.clip(idx - lo, 0, None)], 0.0)
            window_years = lag * LEVEL_STEPS_NS[level] / NS / SECONDS_PER_YEAR
            spread = sigma / math.sqrt(2.0 * STABLECOIN_REVERSION)
            out: npt.NDArray[np.float64] = spread * (now - before) / math.sqrt(window_years)
            return out
        # From integer ns, so a time has the same drift at every level (coarse and fine bars agree exactly).
        t_years = (np.arange(i0, i1 + 1, dtype=np.int64) * LEVEL_STEPS_NS[level]).astype(np.float64) / (NS * SECONDS_PER_YEAR)
        e = self.noise.values(own, level, i0, i1)
        if spec.kind == "crypto":
            m = self.noise.values(0, level, i0, i1)
            z = math.sqrt(CRYPTO_CORRELATION) * m + math.sqrt(1.0 - CRYPTO_CORRELATION) * e
        else:
            z = e
        drift: npt.NDArray[np.float64] = sigma * z - 0.5 * sigma * sigma * t_years
        return drift

    # ------------------------------------------------------------------ samples and bars

    def samples(self, assets: Sequence[AssetId], lo_ns: int, hi_ns: int, level: int, origin_ns: int,
                known: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None,
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Every known or drawn instant with ``lo_ns <= t < hi_ns`` and each asset's USD price there.

        ``origin_ns`` is the absolute time of the model's elapsed 0; the tape's first instant is
        at ``T0 = origin_ns + tape.first[0]``. Before ``T0``, the past on the ``level`` grid; from
        it, the tape's instants plus bridges (on the same grid) over holes longer than
        ``hole_ns``. Times ascending; ``USD`` is 1. ``known`` is :meth:`known` for a range
        covering this one, read earlier on the tape's thread (``None`` reads the tape now).
        """
        tape = self.tape
        cols = [tape.column(a) for a in assets]
        first = tape.first
        assert first is not None, "the tape has no instant yet"
        t0 = origin_ns + first[0]
        step = LEVEL_STEPS_NS[level]
        lo_ns = max(lo_ns, 0)
        times: list[npt.NDArray[np.int64]] = []
        prices: list[npt.NDArray[np.float64]] = []
        if lo_ns < t0 and lo_ns < hi_ns:
            i0 = -(-lo_ns // step)
            i1 = (min(hi_ns, t0) - 1) // step
            if i1 >= i0:
                g0 = t0 // LEVEL_STEPS_NS[FINEST]
                out = np.ones((i1 - i0 + 1, len(assets)), np.float64)
                for j, (asset, col) in enumerate(zip(assets, cols, strict=True)):
                    if col < 0:
                        continue
                    anchor = float(self.drive(asset, FINEST, g0, g0)[0])
                    out[:, j] = first[1][col] * np.exp(self.drive(asset, level, i0, i1) - anchor)
                times.append(np.arange(i0, i1 + 1, dtype=np.int64) * step)
                prices.append(out)
        if hi_ns > t0 and hi_ns > lo_ns:
            known_t, known_p = known if known is not None else tape.window(max(lo_ns, t0) - origin_ns,
                                                                            hi_ns - origin_ns)
            known_t = known_t + origin_ns
            full = np.ones((len(known_t), len(assets)), np.float64)
            for j, col in enumerate(cols):
                if col >= 0:
                    full[:, j] = known_p[:, col]
            fill_t, fill_p = self._bridges(assets, known_t, full, level, lo_ns, hi_ns)
            if len(fill_t):
                merged = np.concatenate([known_t, fill_t])
                order = np.argsort(merged, kind="stable")
                known_t, full = merged[order], np.concatenate([full, fill_p])[order]
            keep = (known_t >= lo_ns) & (known_t < hi_ns)
            times.append(known_t[keep])
            prices.append(full[keep])
        if not times:
            return np.empty(0, np.int64), np.empty((0, len(assets)), np.float64)
        return np.concatenate(times), np.concatenate(prices)

    def _bridges(self, assets: Sequence[AssetId], t: npt.NDArray[np.int64], p: npt.NDArray[np.float64],
                 level: int, lo_ns: int, hi_ns: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Grid points of ``level`` in ``[lo_ns, hi_ns)`` inside every gap of ``t`` longer than ``hole_ns``.

        Each is priced on a Brownian bridge between the known instants around it:
        ``x(t) = x_a + w (x_b - x_a) + D(t) - D(a) - w (D(b) - D(a))`` in log price, with ``D``
        the asset's driver and ``w`` the time fraction; the same gap gives the same values
        whatever range or period is asked.
        """
        empty = np.empty(0, np.int64), np.empty((0, len(assets)), np.float64)
        if len(t) < 2:
            return empty
        gaps = np.flatnonzero(np.diff(t) > self.hole_ns)
        if len(gaps) == 0:
            return empty
        step = LEVEL_STEPS_NS[level]
        out_t: list[npt.NDArray[np.int64]] = []
        out_p: list[npt.NDArray[np.float64]] = []
        for g in gaps.tolist():
            ta, tb = int(t[g]), int(t[g + 1])
            first = max(ta // step + 1, -(-lo_ns // step))
            last = min(-(-tb // step) - 1, (hi_ns - 1) // step)
            if last < first:
                continue
            grid = np.arange(first, last + 1, dtype=np.int64) * step
            ends = np.array([(ta // step) * step, -(-tb // step) * step], np.int64)
            w = (grid - ta) / (tb - ta)
            filled = np.ones((len(grid), len(assets)), np.float64)
            for j, asset in enumerate(assets):
                if asset == REFERENCE:
                    continue
                xa, xb = math.log(p[g, j]), math.log(p[g + 1, j])
                d = self.drive(asset, level, first, last)
                da, db = self._drive_at(asset, level, ends)
                filled[:, j] = np.exp(xa + w * (xb - xa) + (d - da - w * (db - da)))
            out_t.append(grid)
            out_p.append(filled)
        if not out_t:
            return empty
        return np.concatenate(out_t), np.concatenate(out_p)

    def _drive_at(self, asset: AssetId, level: int, times: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """``D`` at a few grid times of ``level``, each evaluated on its own."""
        step = LEVEL_STEPS_NS[level]
        return np.array([self.drive(asset, level, int(i), int(i))[0] for i in (times // step).tolist()])

    def bars(self, base: AssetId, quote: AssetId, starts: npt.NDArray[np.int64], period_ns: int, origin_ns: int,
             known: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None) -> BarColumns:
        """OHLC of ``base/quote`` for contiguous periods starting at ``starts``, from :meth:`samples`.

        The rate is ``usd(base) / usd(quote)`` of each instant, computed as the model computes
        it, so on the tape it is bit for bit the rate the stream sent.
        """
        n = len(starts)
        nat = np.full(n, NAT, np.int64)
        nan = np.full(n, np.nan)
        if n == 0:
            return BarColumns(starts, nat, nat.copy(), nan, nan.copy(), nan.copy(), nan.copy())
        legs = [a for a in (base, quote) if a != REFERENCE]
        t, p = self.samples(legs, int(starts[0]), int(starts[-1]) + period_ns, level_for(period_ns), origin_ns, known)
        pb = p[:, 0] if base != REFERENCE else None
        pq = p[:, -1] if quote != REFERENCE else None
        if pb is not None and pq is not None:
            rate = pb / pq
        elif pb is not None:
            rate = pb
        elif pq is not None:
            rate = 1.0 / pq
        else:
            rate = np.ones(len(t))
        first = np.searchsorted(t, starts, "left")
        after = np.searchsorted(t, starts + period_ns, "left")
        full = after > first
        opens, highs, lows, closes = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        t_open, t_close = nat.copy(), nat.copy()
        if full.any():
            heads = first[full]
            lo, hi = int(heads[0]), int(after[full][-1])
            segment = rate[lo:hi]
            highs[full] = np.maximum.reduceat(segment, heads - lo)
            lows[full] = np.minimum.reduceat(segment, heads - lo)
            opens[full] = rate[heads]
            closes[full] = rate[after[full] - 1]
            t_open[full] = t[heads]
            t_close[full] = t[after[full] - 1]
        return BarColumns(starts, t_open, t_close, opens, highs, lows, closes)

    def rate_at(self, base: AssetId, quote: AssetId, time_ns: int, origin_ns: int) -> tuple[int, float] | None:
        """The last known or drawn ``(time, rate)`` at or before ``time_ns`` (100 ms grid in the past), or None."""
        legs = [a for a in (base, quote) if a != REFERENCE]
        t, p = self.samples(legs, time_ns - 2 * self.hole_ns, time_ns + 1, FINEST, origin_ns)
        if len(t) == 0:
            return None
        row = p[-1]
        b = row[0] if base != REFERENCE else 1.0
        q = row[-1] if quote != REFERENCE else 1.0
        return int(t[-1]), float(b) / float(q)
