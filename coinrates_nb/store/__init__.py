"""Storage: the Parquet dataset format and ``load``, the recorder, and replay.

Loaded on first use (``cr.load``, ``cr.replay``, ``rates.record``), so pyarrow is imported only
by code that records or reads recordings.
"""

from __future__ import annotations

from ._all import SCHEMA, RateSource, Recorder, Replay, load, record, replay

__all__ = ["SCHEMA", "RateSource", "Recorder", "Replay", "load", "record", "replay"]
