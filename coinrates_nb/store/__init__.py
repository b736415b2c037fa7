"""Storage: the Parquet dataset format and ``load``, the recorder, and replay.

Three verbs over one on-disk format::

    rec = rates.record("data/rates")                 # Recorder: appends while streaming; rec.stop()
    cr.load("data/rates", start=..., end=..., pairs=[...])   # DataFrame of recorded history
    replay = cr.replay("data/rates", speed=10)       # Replay: a Collector-like stream fed from disk

=================  ==========================================================================
module             what lives there
=================  ==========================================================================
``dataset``        :data:`SCHEMA`, file and partition names, the checks that recognise a
                   dataset, :func:`load`
``recorder``       :class:`Recorder` (writer thread, atomic publish, bounded backlog),
                   :class:`RecorderStatus`, :func:`record`, the :class:`RateSource` protocol
``replay``         :class:`Replay` (a recording played back like a collector), :func:`replay`
``_parts``         the recorder's part files: fill, rewrite, publish atomically, sweep dead temporaries
``_timeline``      a recording as arrays in arrival order, what the replay thread walks
=================  ==========================================================================

Loaded on first use (``cr.load``, ``cr.replay``, ``rates.record``), so pyarrow is imported only
by code that records or reads recordings.
"""

from __future__ import annotations

from .dataset import SCHEMA, load
from .recorder import RateSource, Recorder, RecorderStatus, record
from .replay import Replay, replay

__all__ = ["SCHEMA", "RateSource", "Recorder", "RecorderStatus", "Replay", "load", "record", "replay"]
