"""Pure, seeded price model behind the simulator: every asset's USD level as a random walk.

Crypto assets follow a geometric random walk with a common market factor (crypto moves
together), stablecoins a tight mean-reverting walk around 1 USD, and fiat currencies a slow
geometric walk. Every price is expressed in USD, the reference asset of the Exchange Rates API,
so a cross such as ``BTC/EUR`` is always ``BTC/USD * USD/EUR`` of the same instant
(``../shared/protocol/exrates-websocket.md`` §4.1, ``BASE_AND_QUOTE_TO_REF``).

No I/O and no clock reads: time advances only through :meth:`PriceModel.step`, and randomness
comes only from the model's own ``numpy.random.Generator``, so the same seed and the same
sequence of steps give the same prices on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from .._types import SECONDS_PER_YEAR, AssetId
from ..exceptions import ConfigError, UnknownAssetError

__all__ = ["DEFAULT_ASSETS", "REFERENCE", "AssetSpec", "PriceModel", "UnknownAssetError"]

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
        self._steps = 0

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
        self._steps += 1

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
