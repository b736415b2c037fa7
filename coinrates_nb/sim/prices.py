"""Pure, seeded price model behind the simulator: every asset's USD level as a random walk.

Crypto assets follow a geometric random walk with a common market factor (crypto moves
together), stablecoins a tight mean-reverting walk around 1 USD, and fiat currencies a slow
geometric walk. Every price is expressed in USD, the reference asset of the Exchange Rates API,
so a cross such as ``BTC/EUR`` is always ``BTC/USD * USD/EUR`` of the same instant
(``../shared/protocol/exrates-websocket.md`` §4.1, ``BASE_AND_QUOTE_TO_REF``).

No I/O and no clock reads: time advances only through :meth:`PriceModel.step`, and randomness
comes only from the model's own ``numpy.random.Generator``, so the same seed and the same
sequence of steps give the same prices on every machine.

A model can keep a :class:`PriceTape` of every instant it priced (:meth:`PriceModel.keep_tape`):
the simulator's REST history builds its bars from it, so a bar of any period the WebSocket
stream covered is made of exactly the prices the stream sent.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from .._types import SECONDS_PER_YEAR, AssetId
from ..exceptions import ConfigError, UnknownAssetError

__all__ = ["DEFAULT_ASSETS", "REFERENCE", "AssetSpec", "PriceModel", "PriceTape", "UnknownAssetError"]

REFERENCE: Final = "USD"
"""The reference asset every level is quoted in; its price is 1 by definition (§4.1)."""

CRYPTO_CORRELATION: Final = 0.6
"""Share of a crypto asset's variance that comes from the common market factor."""

STABLECOIN_REVERSION: Final = math.log(2) * SECONDS_PER_YEAR / 3600
"""Mean-reversion speed of stablecoins per year: a depeg halves every hour."""

DEFAULT_CRYPTO_VOLATILITY: Final = 0.7
"""Annualised volatility given to a caller-supplied asset the model does not know."""

AssetKind = Literal["crypto", "stablecoin", "fiat"]


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """How one asset moves: its starting USD level, annualised volatility and kind.

    ``kind`` decides the dynamics: ``"crypto"`` and ``"fiat"`` walk geometrically, a
    ``"stablecoin"`` reverts to 1 USD. Only crypto assets share the market factor.
    """

    level: float
    volatility: float
    kind: AssetKind = "crypto"

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and math.isfinite(self.level) and self.level > 0):
            raise ConfigError(f"an asset level must be a positive finite USD price, got {self.level!r}")
        if not (isinstance(self.volatility, (int, float)) and math.isfinite(self.volatility) and self.volatility >= 0):
            raise ConfigError(f"a volatility must be a non-negative finite number, got {self.volatility!r}")
        if self.kind not in ("crypto", "stablecoin", "fiat"):
            raise ConfigError(f"kind must be 'crypto', 'stablecoin' or 'fiat', got {self.kind!r}")


DEFAULT_ASSETS: Final[Mapping[AssetId, AssetSpec]] = MappingProxyType({
    # crypto: plausible late-2026 USD levels, 60-80 %/yr volatility
    "BTC": AssetSpec(95_000.0, 0.60),
    "ETH": AssetSpec(3_400.0, 0.70),
    "SOL": AssetSpec(190.0, 0.80),
    "XRP": AssetSpec(2.3, 0.80),
    "ADA": AssetSpec(0.9, 0.80),
    "DOGE": AssetSpec(0.32, 0.80),
    "LTC": AssetSpec(105.0, 0.70),
    "DOT": AssetSpec(7.0, 0.80),
    "LINK": AssetSpec(22.0, 0.75),
    "AVAX": AssetSpec(38.0, 0.80),
    # stablecoins: tiny noise, pulled back to 1 USD
    "USDT": AssetSpec(1.0, 0.01, "stablecoin"),
    "USDC": AssetSpec(0.9999, 0.01, "stablecoin"),
    # fiat, in USD per unit: ~8 %/yr
    "EUR": AssetSpec(1.08, 0.08, "fiat"),
    "GBP": AssetSpec(1.27, 0.08, "fiat"),
    "JPY": AssetSpec(0.0066, 0.08, "fiat"),
    "CNY": AssetSpec(0.138, 0.08, "fiat"),
    "CHF": AssetSpec(1.13, 0.08, "fiat"),
    "AUD": AssetSpec(0.66, 0.08, "fiat"),
    "CAD": AssetSpec(0.73, 0.08, "fiat"),
})
"""The assets a default :class:`PriceModel` knows, in the order it lists them."""

TAPE_CHUNK: Final = 4096
"""Instants per block of a :class:`PriceTape`; the oldest block is dropped whole when the tape is full."""


class PriceTape:
    """Every instant a model priced, as (elapsed ns, USD prices), the newest ``size`` of them in full.

    Appended by :meth:`PriceModel.step` (and once when the tape starts), read by the simulator's
    REST history. Blocks of :data:`TAPE_CHUNK` instants are preallocated as the tape fills, so a
    short run costs kilobytes. When more than ``size`` instants are held, the oldest block is
    dropped and its last instant kept as a *waypoint*, so the path there can still be drawn as a
    bridge through known points. The first instant (the model's starting prices) is always kept.

    Args:
        assets: the model's asset ids in column order (the reference ``USD`` is not a column).
        size: instants kept in full (at least one block).
    """

    def __init__(self, assets: Sequence[AssetId], size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"a price tape's size must be an int >= 1, got {size!r}")
        self.assets: tuple[AssetId, ...] = tuple(assets)
        self.size = max(size, TAPE_CHUNK)
        self._columns = {asset: i for i, asset in enumerate(self.assets)}
        self._width = len(self.assets)
        self._times: list[npt.NDArray[np.int64]] = []
        self._prices: list[npt.NDArray[np.float64]] = []
        self._firsts: list[int] = []
        self._fill = TAPE_CHUNK  # rows used in the newest block: "full" until the first append
        self._way_times: list[int] = []
        self._way_prices: list[npt.NDArray[np.float64]] = []
        self._count = 0
        self.first: tuple[int, npt.NDArray[np.float64]] | None = None
        """The first instant ever appended (never dropped): the model's origin on the tape."""
        self.last_ns: int | None = None
        """Elapsed ns of the newest instant."""

    def column(self, asset: AssetId) -> int:
        """The column of ``asset`` (``-1`` for the reference ``USD``, whose price is 1)."""
        if asset == REFERENCE:
            return -1
        i = self._columns.get(asset)
        if i is None:
            raise UnknownAssetError(asset, (*self.assets, REFERENCE))
        return i

    def __len__(self) -> int:
        """Instants held in full (waypoints not counted)."""
        return self._count

    def append(self, elapsed_ns: int, prices: npt.NDArray[np.float64]) -> None:
        """Record the prices of one instant; times must not decrease."""
        if self.first is None:
            self.first = (elapsed_ns, np.array(prices, np.float64))
        if self._fill == TAPE_CHUNK:
            self._times.append(np.empty(TAPE_CHUNK, np.int64))
            self._prices.append(np.empty((TAPE_CHUNK, self._width), np.float64))
            self._firsts.append(elapsed_ns)
            self._fill = 0
            if self._count + TAPE_CHUNK > self.size and len(self._times) > 1:
                self._drop_oldest()
        i = self._fill
        self._times[-1][i] = elapsed_ns
        self._prices[-1][i] = prices
        self._fill = i + 1
        self._count += 1
        self.last_ns = elapsed_ns

    def _drop_oldest(self) -> None:
        times, prices = self._times.pop(0), self._prices.pop(0)
        self._firsts.pop(0)
        self._way_times.append(int(times[-1]))
        self._way_prices.append(prices[-1].copy())
        self._count -= TAPE_CHUNK

    def window(self, lo_ns: int, hi_ns: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Known instants with ``lo_ns <= t < hi_ns``, plus the nearest one on each side of the range.

        Waypoints and the first instant count as known. The neighbours let a caller bridge a
        hole that crosses the edge of the range. Times are elapsed ns, ascending.
        """
        times: list[npt.NDArray[np.int64]] = []
        prices: list[npt.NDArray[np.float64]] = []
        if self.first is not None and (not self._firsts or self.first[0] < (self._way_times or self._firsts)[0]):
            times.append(np.array([self.first[0]], np.int64))
            prices.append(self.first[1][None, :])
        if self._way_times:
            wt = np.array(self._way_times, np.int64)
            a = max(0, int(np.searchsorted(wt, lo_ns, "left")) - 1)
            b = min(len(wt), int(np.searchsorted(wt, hi_ns, "left")) + 1)
            times.append(wt[a:b])
            prices.append(np.array(self._way_prices[a:b], np.float64).reshape(b - a, self._width))
        if self._firsts:
            k = bisect.bisect_right(self._firsts, lo_ns) - 1
            m = bisect.bisect_left(self._firsts, hi_ns) - 1
            last = len(self._firsts) - 1
            for c in range(max(0, k - 1), min(last, m + 1) + 1):
                n = self._fill if c == last else TAPE_CHUNK
                times.append(self._times[c][:n])
                prices.append(self._prices[c][:n])
        if not times:
            return np.empty(0, np.int64), np.empty((0, self._width), np.float64)
        t = np.concatenate(times)
        p = np.concatenate(prices)
        a = max(0, int(np.searchsorted(t, lo_ns, "left")) - 1)
        b = min(len(t), int(np.searchsorted(t, hi_ns, "left")) + 1)
        return t[a:b], p[a:b]

    def __repr__(self) -> str:
        return f"<PriceTape {self._count:,} instants + {len(self._way_times):,} waypoints | {self._width} assets>"


class PriceModel:
    """A seeded random walk of USD levels, advanced explicitly by :meth:`step`.

    Args:
        seed: seed of the model's own ``numpy.random.Generator`` (the global RNG is never used).
        assets: the assets to model, as USD levels (known assets keep their volatility and kind;
            unknown ones are treated as crypto with 70 %/yr) or full :class:`AssetSpec` values.
            ``None`` models :data:`DEFAULT_ASSETS`. ``USD`` is the reference and always 1.

    Example:
        >>> model = PriceModel(seed=7)
        >>> model.step(0.1)
        >>> model.rate("BTC", "EUR") == model.usd("BTC") / model.usd("EUR")
        True
    """

    def __init__(self, seed: int = 0, assets: Mapping[str, float | AssetSpec] | None = None) -> None:
        specs = dict(DEFAULT_ASSETS) if assets is None else _resolve_specs(assets)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._ids: tuple[AssetId, ...] = tuple(specs)
        self._specs: Mapping[AssetId, AssetSpec] = MappingProxyType(specs)
        self._index = {asset: i for i, asset in enumerate(self._ids)}
        self._index_with_ref = {**self._index, REFERENCE: -1}
        kinds = [specs[a].kind for a in self._ids]
        levels = np.array([specs[a].level for a in self._ids], dtype=np.float64)
        self._log = np.log(levels)
        self._sigma = np.array([specs[a].volatility for a in self._ids], dtype=np.float64)
        self._stable = np.array([k == "stablecoin" for k in kinds], dtype=bool)
        self._crypto = np.array([k == "crypto" for k in kinds], dtype=bool)
        self._prices: npt.NDArray[np.float64] = levels  # exact starting levels, not exp(log(level))
        self._elapsed = 0.0
        self._elapsed_ns = 0
        self._steps = 0
        self._tape: PriceTape | None = None

    # ------------------------------------------------------------------ what it knows

    @property
    def assets(self) -> tuple[AssetId, ...]:
        """Every asset the model prices, the reference ``USD`` last."""
        return (*self._ids, REFERENCE)

    @property
    def crypto(self) -> tuple[AssetId, ...]:
        """Crypto assets, stablecoins included: the simulator's unfiltered stream is these vs USD."""
        return tuple(a for a in self._ids if self._specs[a].kind != "fiat")

    @property
    def fiat(self) -> tuple[AssetId, ...]:
        """Fiat currencies other than the reference."""
        return tuple(a for a in self._ids if self._specs[a].kind == "fiat")

    @property
    def specs(self) -> Mapping[AssetId, AssetSpec]:
        """Read-only starting level, volatility and kind per asset."""
        return self._specs

    @property
    def elapsed(self) -> float:
        """Model seconds advanced so far (the sum of every ``step``)."""
        return self._elapsed

    @property
    def elapsed_ns(self) -> int:
        """Model time advanced so far in integer nanoseconds (each step rounded to 1 ns), exact over any run."""
        return self._elapsed_ns

    @property
    def tape(self) -> PriceTape | None:
        """The tape of every instant priced, if :meth:`keep_tape` started one."""
        return self._tape

    def keep_tape(self, size: int = 200_000) -> PriceTape:
        """Record every instant from now on (and the current one) in a :class:`PriceTape`; return it.

        Idempotent: a model keeps one tape. ``size`` instants are kept in full (200,000 by
        default: about 32 MB for 20 assets once full, ~2.8 h at 20 updates per second).
        """
        if self._tape is None:
            self._tape = PriceTape(self._ids, size)
            self._tape.append(self._elapsed_ns, self._prices)
        return self._tape

    @property
    def steps(self) -> int:
        """How many non-zero steps were taken."""
        return self._steps

    def __contains__(self, asset: object) -> bool:
        return asset in self._index_with_ref

    # ------------------------------------------------------------------ prices

    def usd(self, asset: AssetId) -> float:
        """The USD price of one unit of ``asset``; ``USD`` itself is exactly 1.0."""
        i = self._index_with_ref.get(asset)
        if i is None:
            raise UnknownAssetError(asset, self.assets)
        return 1.0 if i < 0 else float(self._prices[i])

    def rate(self, base: AssetId, quote: AssetId) -> float:
        """Units of ``quote`` per unit of ``base``: ``usd(base) / usd(quote)``.

        Composing through USD keeps every cross consistent with the USD legs of the same
        instant, as the server composes ``BASE_AND_QUOTE_TO_REF`` rates (§4.1).
        """
        return self.usd(base) / self.usd(quote)

    def prices(self) -> dict[AssetId, float]:
        """A snapshot of every USD price, ``USD`` included."""
        out = {a: float(p) for a, p in zip(self._ids, self._prices, strict=True)}
        out[REFERENCE] = 1.0
        return out

    # ------------------------------------------------------------------ time

    def step(self, dt_seconds: float) -> None:
        """Advance every price by ``dt_seconds`` of model time.

        The draws are exact for any ``dt`` (geometric Brownian motion for crypto and fiat,
        an Ornstein-Uhlenbeck process on the log price for stablecoins), so one step of 2 s
        and two of 1 s follow the same distribution. A zero step changes nothing and draws
        nothing. Volatilities are per :data:`~coinrates_nb._types.SECONDS_PER_YEAR`.

        Raises:
            ConfigError: ``dt_seconds`` is negative or not finite.
        """
        try:
            dt = float(dt_seconds)
        except (TypeError, ValueError):
            dt = math.nan
        if not math.isfinite(dt) or dt < 0:
            raise ConfigError(f"dt_seconds must be a non-negative finite number, got {dt_seconds!r}")
        if dt == 0.0:
            return
        tau = dt / SECONDS_PER_YEAR
        draws = self._rng.standard_normal(len(self._ids) + 1)
        market, own = draws[0], draws[1:]
        rho = CRYPTO_CORRELATION
        shocks = np.where(self._crypto, math.sqrt(rho) * market + math.sqrt(1.0 - rho) * own, own)
        sigma = self._sigma
        walked = self._log + sigma * math.sqrt(tau) * shocks - 0.5 * sigma * sigma * tau
        theta = STABLECOIN_REVERSION
        decay = math.exp(-theta * tau)
        reverted = self._log * decay + sigma * math.sqrt((1.0 - decay * decay) / (2.0 * theta)) * shocks
        self._log = np.where(self._stable, reverted, walked)
        self._prices = np.exp(self._log)
        self._elapsed += dt
        self._elapsed_ns += round(dt * 1e9)
        self._steps += 1
        if self._tape is not None:
            self._tape.append(self._elapsed_ns, self._prices)

    def __repr__(self) -> str:
        lead = self._ids[0] if self._ids else None
        shown = f" | {lead} {self.usd(lead):,.2f}" if lead is not None else ""
        return f"<PriceModel seed={self.seed} | {len(self._ids)} assets | t={self._elapsed:,.1f} s{shown}>"


def _resolve_specs(assets: Mapping[str, float | AssetSpec]) -> dict[AssetId, AssetSpec]:
    """Turn the caller's levels or specs into specs, borrowing known assets' dynamics."""
    specs: dict[AssetId, AssetSpec] = {}
    for raw, value in assets.items():
        if not isinstance(raw, str) or not raw.strip() or "/" in raw:
            raise ConfigError(f"asset ids must be non-empty strings without '/', got {raw!r}")
        asset = raw.strip().upper()
        if asset == REFERENCE:
            raise ConfigError(f"{REFERENCE} is the reference asset and is always 1; do not list it")
        if isinstance(value, AssetSpec):
            spec = value
        else:
            known = DEFAULT_ASSETS.get(asset)
            if known is not None:
                spec = AssetSpec(value, known.volatility, known.kind)
            else:
                spec = AssetSpec(value, DEFAULT_CRYPTO_VOLATILITY)
        specs[asset] = spec
    if not specs:
        raise ConfigError("a price model needs at least one asset besides USD")
    return specs
