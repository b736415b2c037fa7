"""PriceModel: realistic levels, determinism, volatility by kind, consistent crosses, no global RNG."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrates_nb._types import SECONDS_PER_YEAR
from coinrates_nb.exceptions import ConfigError
from coinrates_nb.sim.prices import DEFAULT_ASSETS, AssetSpec, PriceModel, UnknownAssetError

LEVELS = {
    "BTC": 95_000, "ETH": 3_400, "SOL": 190, "XRP": 2.3, "ADA": 0.9, "DOGE": 0.32, "LTC": 105, "DOT": 7,
    "LINK": 22, "AVAX": 38, "USDT": 1.0, "USDC": 0.9999, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0066,
    "CNY": 0.138, "CHF": 1.13, "AUD": 0.66, "CAD": 0.73,
}


def log_returns(model: PriceModel, asset: str, steps: int, dt: float) -> np.ndarray:
    """Log returns of ``asset`` over ``steps`` steps of ``dt`` seconds."""
    out = np.empty(steps)
    prev = math.log(model.usd(asset))
    for i in range(steps):
        model.step(dt)
        cur = math.log(model.usd(asset))
        out[i] = cur - prev
        prev = cur
    return out


def test_starting_levels_are_realistic() -> None:
    """A fresh model starts at the documented late-2026 USD levels, with USD exactly 1."""
    model = PriceModel()
    for asset, level in LEVELS.items():
        assert model.usd(asset) == pytest.approx(level, rel=1e-12)
    assert model.usd("USD") == 1.0
    assert model.assets[-1] == "USD" and set(model.assets) == set(LEVELS) | {"USD"}


def test_kinds_partition_assets() -> None:
    """Crypto (stablecoins included) and fiat split the non-USD assets."""
    model = PriceModel()
    assert set(model.crypto) == {"BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "LINK", "AVAX", "USDT", "USDC"}
    assert set(model.fiat) == {"EUR", "GBP", "JPY", "CNY", "CHF", "AUD", "CAD"}


def test_same_seed_same_steps_same_prices() -> None:
    """Two models with one seed, stepped alike, agree exactly; another seed differs."""
    a, b, c = PriceModel(seed=42), PriceModel(seed=42), PriceModel(seed=43)
    for dt in (0.1, 1.0, 0.05, 60.0, 0.0, 3.5):
        a.step(dt)
        b.step(dt)
        c.step(dt)
    assert a.prices() == b.prices()
    assert a.prices() != c.prices()
    assert a.elapsed == pytest.approx(64.65) and a.steps == 5


def test_global_rng_untouched() -> None:
    """The model uses its own generator: the global numpy and random states do not move."""
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    model = PriceModel(seed=5)
    for _ in range(10):
        model.step(1.0)
    assert (np.random.random(), random.random()) == expected


def test_zero_step_changes_nothing() -> None:
    """A zero step leaves prices and the random stream where they were."""
    a, b = PriceModel(seed=9), PriceModel(seed=9)
    a.step(0.0)
    assert a.prices() == b.prices()
    a.step(1.0)
    b.step(1.0)
    assert a.prices() == b.prices()


@pytest.mark.parametrize("dt", [-1.0, math.nan, math.inf, "soon", None])
def test_bad_step_rejected(dt: object) -> None:
    """Negative, non-finite or non-numeric steps raise ConfigError naming dt_seconds, and change nothing."""
    model = PriceModel()
    before = model.prices()
    with pytest.raises(ConfigError, match="dt_seconds"):
        model.step(dt)  # type: ignore[arg-type]
    assert model.prices() == before and model.steps == 0


def test_one_year_constant_is_shared() -> None:
    """The model annualises with the package's one SECONDS_PER_YEAR (a Julian year), defined in _types."""
    import coinrates_nb.sim.prices as prices

    assert SECONDS_PER_YEAR == 31_557_600.0
    assert prices.SECONDS_PER_YEAR is SECONDS_PER_YEAR  # imported, not a second definition of the same value
    assert prices.STABLECOIN_REVERSION == pytest.approx(math.log(2) * 8766)  # a depeg halves every hour


def test_crypto_volatility_is_annualised_as_specified() -> None:
    """BTC's realised volatility over hourly steps is close to its 60 %/yr spec."""
    model = PriceModel(seed=11)
    returns = log_returns(model, "BTC", 4000, 3600.0)
    realised = returns.std() * math.sqrt(SECONDS_PER_YEAR / 3600.0)
    assert realised == pytest.approx(DEFAULT_ASSETS["BTC"].volatility, rel=0.08)


def test_fiat_volatility_is_low() -> None:
    """EUR moves about 8 %/yr, an order of magnitude less than crypto."""
    model = PriceModel(seed=12)
    returns = log_returns(model, "EUR", 4000, 3600.0)
    realised = returns.std() * math.sqrt(SECONDS_PER_YEAR / 3600.0)
    assert realised == pytest.approx(0.08, rel=0.08)


def test_crypto_assets_move_together() -> None:
    """BTC and ETH returns share the market factor (correlation around 0.6)."""
    model = PriceModel(seed=13)
    btc, eth = np.empty(3000), np.empty(3000)
    for i in range(3000):
        b0, e0 = model.usd("BTC"), model.usd("ETH")
        model.step(60.0)
        btc[i], eth[i] = math.log(model.usd("BTC") / b0), math.log(model.usd("ETH") / e0)
    assert 0.5 < np.corrcoef(btc, eth)[0, 1] < 0.7


def test_stablecoins_stay_pegged() -> None:
    """Over a simulated month of minute steps, USDT and USDC never leave 1 +- 0.5 %; USDC reverts to 1."""
    model = PriceModel(seed=14)
    worst = 0.0
    for _ in range(30 * 24 * 60 // 10):
        model.step(600.0)
        worst = max(worst, abs(model.usd("USDT") - 1.0), abs(model.usd("USDC") - 1.0))
    assert worst < 0.005
    assert model.usd("USDC") == pytest.approx(1.0, abs=0.002)


def test_rate_is_consistent_with_usd_legs() -> None:
    """rate(base, quote) is usd(base)/usd(quote); inverses and chains agree."""
    model = PriceModel(seed=3)
    model.step(10.0)
    assert model.rate("BTC", "EUR") == model.usd("BTC") / model.usd("EUR")
    assert model.rate("BTC", "USD") == model.usd("BTC")
    assert model.rate("USD", "JPY") == pytest.approx(1 / model.usd("JPY"))
    assert model.rate("ETH", "ETH") == 1.0


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(st.floats(0.0, 86_400.0), max_size=20),
    a=st.sampled_from(sorted(LEVELS) + ["USD"]),
    b=st.sampled_from(sorted(LEVELS) + ["USD"]),
    c=st.sampled_from(sorted(LEVELS) + ["USD"]),
)
def test_crosses_compose_property(seed: int, steps: list[float], a: str, b: str, c: str) -> None:
    """For any seed and steps, prices stay positive and finite and crosses compose: a/b * b/c = a/c."""
    model = PriceModel(seed=seed)
    for dt in steps:
        model.step(dt)
    assert all(math.isfinite(p) and p > 0 for p in model.prices().values())
    assert model.rate(a, b) * model.rate(b, c) == pytest.approx(model.rate(a, c), rel=1e-12)
    assert model.rate(a, b) * model.rate(b, a) == pytest.approx(1.0, rel=1e-12)


def test_unknown_asset_error_lists_known_assets() -> None:
    """An unknown asset raises a KeyError (and ConfigError) that names it and lists the known ones."""
    model = PriceModel()
    with pytest.raises(UnknownAssetError) as info:
        model.usd("XYZ")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ConfigError)
    assert "'XYZ'" in str(err) and "BTC" in str(err) and err.asset == "XYZ"
    assert "XYZ" not in model and "BTC" in model and "USD" in model


def test_custom_assets() -> None:
    """Custom levels keep known dynamics; unknown ids become crypto; specs are taken as given."""
    model = PriceModel(seed=1, assets={"btc": 50_000.0, "NEW": 3.0, "STBL": AssetSpec(1.0, 0.01, "stablecoin")})
    assert model.assets == ("BTC", "NEW", "STBL", "USD")
    assert model.usd("BTC") == 50_000.0 and model.specs["BTC"].volatility == DEFAULT_ASSETS["BTC"].volatility
    assert model.specs["NEW"].kind == "crypto" and model.specs["STBL"].kind == "stablecoin"
    with pytest.raises(UnknownAssetError):
        model.usd("ETH")


@pytest.mark.parametrize("assets", [{"USD": 1.0}, {"BTC": -1.0}, {"BTC": math.nan}, {}, {"BTC/USD": 1.0}])
def test_bad_assets_rejected(assets: dict[str, float]) -> None:
    """USD as an asset, non-positive or NaN levels, no assets, or a pair as an id raise ConfigError."""
    with pytest.raises(ConfigError):
        PriceModel(assets=assets)


def test_repr_is_cheap_and_informative() -> None:
    """The repr shows seed, asset count, model time and the lead price."""
    model = PriceModel(seed=4)
    model.step(2.0)
    assert repr(model).startswith("<PriceModel seed=4 | 19 assets | t=2.0 s | BTC ")
