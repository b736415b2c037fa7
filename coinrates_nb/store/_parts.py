"""The part files a recorder owns: filling, rewriting and publishing them, and sweeping dead writers' temporaries.

Private to :mod:`coinrates_nb.store.recorder`. :func:`publish` is the seam the crash and
full-disk tests replace (``monkeypatch.setattr(_parts, "publish", ...)``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import PARTITION, _host_name

logger = logging.getLogger("coinrates_nb.store")

MAX_CHUNKS: Final = 64
"""Tables an open file collects before they are combined into one (each small flush adds one)."""


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written temporary file visible under its final name, atomically."""
    os.replace(tmp, final)


def fsync_dir(directory: Path) -> None:
    """Persist a rename by syncing its directory (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists on this host (or we cannot tell)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM), or unknown: leave its files alone
        return True
    return True


def sweep_temp(root: Path) -> int:
    """Delete temporaries left by dead writers on this host; return how many were removed.

    Readers ignore them anyway; this only reclaims space. Files of live or remote writers are
    never touched, because their pid cannot be checked from here.
    """
    pattern = re.compile(rf"^\.part-{re.escape(_host_name())}-(\d+)-[0-9a-f]{{8}}-\d+\.parquet\.tmp$")
    removed = 0
    for tmp in root.glob(f"{PARTITION}=*/.part-*.tmp"):
        match = pattern.match(tmp.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:  # another sweeper won, or no permission: harmless
            continue
    if removed:
        logger.info("removed %d temporary file(s) left by crashed writers under %s", removed, root)
    return removed


@dataclass
class OpenFile:
    """The file currently being filled for one date partition, with all its rows in memory.

    Rows ``[0, written_rows)`` are on disk; the rest wait for the next successful write.
    """

    final: Path
    tmp: Path
    opened_at: float
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    written_rows: int = 0
    size: int = 0

    @property
    def unwritten(self) -> int:
        """Rows not on disk yet."""
        return self.rows - self.written_rows

    def add(self, table: pa.Table) -> None:
        """Append rows (in memory; :meth:`write` puts them on disk)."""
        self.tables.append(table)
        self.rows += table.num_rows
        if len(self.tables) > MAX_CHUNKS:  # many small flushes: keep one contiguous table
            self.tables = [pa.concat_tables(self.tables).combine_chunks()]

    def drop_oldest_unwritten(self, k: int) -> int:
        """Forget up to ``k`` of the oldest rows not yet on disk; return how many were dropped."""
        k = min(k, self.unwritten)
        if k > 0:
            table = pa.concat_tables(self.tables)
            head, tail = table.slice(0, self.written_rows), table.slice(self.written_rows + k)
            self.tables = [t for t in (head, tail) if t.num_rows]
            self.rows -= k
        return k

    def write(self, compression: str | None, fsync: bool) -> int:
        """Rewrite the file in full under its temporary name, publish it atomically; return the rows it added.

        Raises:
            OSError, pyarrow.ArrowException: The write or the rename failed; nothing changes
                in memory, so the next attempt writes the same rows.
        """
        table = pa.concat_tables(self.tables)
        if table.column(0).num_chunks > MAX_CHUNKS:
            table = table.combine_chunks()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        with open(self.tmp, "wb") as sink:
            pq.write_table(table, sink, compression=compression)
            if fsync:
                sink.flush()
                os.fsync(sink.fileno())
        publish(self.tmp, self.final)
        if fsync:
            fsync_dir(self.final.parent)
        self.tables = [table]
        self.size = self.final.stat().st_size
        added = self.unwritten
        self.written_rows = self.rows
        return added
