"""The dataset format and ``load``: partitions, filters, input rules, and refusing what is not a coinrates dataset."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coinrates_nb as cr
from coinrates_nb.store import SCHEMA
from tests.test_store_recorder import SEC, T0, make_updates, published, record_rows


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset path inside the test's temporary directory."""
    return tmp_path / "rates"


def write_foreign(path: Path, table: pa.Table) -> Path:
    """Write ``table`` as a Parquet file at ``path`` (making its folders), as another tool would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --------------------------------------------------------------------------- reading what we wrote


def test_partitions_by_utc_date_and_load_prunes(dataset: Path) -> None:
    """Rows land in hive date=YYYY-MM-DD folders by wire time; start/end are a half-open range."""
    record_rows(dataset, make_updates(40, step_ns=SEC // 20))  # 2 s across midnight
    dirs = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    assert dirs == ["date=2026-11-30", "date=2026-12-01"]
    assert [pq.read_metadata(f).num_rows for f in published(dataset)] == [20, 20]
    midnight = pd.Timestamp("2026-12-01", tz="UTC")
    before, after = cr.load(dataset, end=midnight), cr.load(dataset, start=midnight)
    assert (len(before), len(after)) == (20, 20)
    assert (before.index < midnight).all() and (after.index >= midnight).all()
    assert len(cr.load(dataset, start="2026-12-02")) == 0
    naive = cr.load(dataset, start="2026-12-01 00:00:00")  # naive means UTC
    assert naive.index.equals(after.index)


def test_load_filters_pairs_and_assets(dataset: Path) -> None:
    """pairs= takes BASE/QUOTE pairs and asset ids (any pair containing the asset), case-insensitive."""
    record_rows(dataset, make_updates(30))
    assert cr.load(dataset, pairs=["BTC/USD"])["pair"].astype(str).tolist() == ["BTC/USD"] * 10
    assert set(cr.load(dataset, pairs="eth")["pair"]) == {"ETH/USD"}
    assert len(cr.load(dataset, pairs=["USD"])) == 30
    assert len(cr.load(dataset, pairs=["SOL/USD"])) == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pairs": 5}, "pairs must be"),
    ({"pairs": ["BTC/USD", 5]}, "strings"),
    ({"pairs": "BTCUSD"}, "did you mean 'BTC/USD'"),
    ({"pairs": ""}, "empty"),
    ({"start": "not a time"}, "start"),
    ({"end": object()}, "end"),
])
def test_load_rejects_bad_inputs_with_config_error(dataset: Path, kwargs: dict[str, object], match: str) -> None:
    """Malformed pairs and times are a ConfigError that says what to write, not a TypeError."""
    record_rows(dataset, make_updates(3))
    with pytest.raises(cr.ConfigError, match=match):
        cr.load(dataset, **kwargs)  # type: ignore[arg-type]


def test_duckdb_reads_the_dataset(dataset: Path) -> None:
    """DuckDB reads the hive-partitioned files directly, with the date column and ns timestamps."""
    duckdb = pytest.importorskip("duckdb")
    record_rows(dataset, make_updates(40, step_ns=SEC // 20))
    (dataset / "date=2026-12-01" / ".part-ghost-1-deadbeef-00009.parquet.tmp").write_bytes(b"half a file")
    rows = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR) AS date, pair, count(*) AS n, max(epoch_ns(time)) AS last "
        f"FROM read_parquet('{dataset}/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert sum(r[2] for r in rows) == 40
    assert {r[0] for r in rows} == {"2026-11-30", "2026-12-01"}
    df = cr.load(dataset)
    assert max(r[3] for r in rows) == int(df.index.asi8.max())
    assert len(df) == 40  # the temporary is invisible to both readers


def test_empty_dataset_folders_load_as_empty_frames(tmp_path: Path) -> None:
    """An empty folder, or partitions holding only temporaries and markers, is an empty dataset, not an error."""
    empty = tmp_path / "empty"
    empty.mkdir()
    frame = cr.load(empty)
    assert len(frame) == 0 and list(frame.columns) == ["pair", "base", "quote", "rate", "rate_type", "received_at",
                                                      "source", "origin"]
    pending = tmp_path / "pending" / "date=2026-11-30"
    pending.mkdir(parents=True)
    (pending / ".part-h-1-deadbeef-00000.parquet.tmp").write_bytes(b"being written")
    (pending.parent / "_SUCCESS").write_text("")
    assert len(cr.load(pending.parent)) == 0


def test_compatible_column_encodings_are_accepted(dataset: Path) -> None:
    """A file with our columns stored as dictionaries or large strings (another writer's choice) loads."""
    record_rows(dataset, make_updates(6, start_ns=T0 - 3600 * SEC))
    table = pq.read_table(published(dataset)[0])
    table = table.set_column(2, "pair", table["pair"].dictionary_encode())
    table = table.set_column(3, "base", table["base"].cast(pa.large_string()))
    write_foreign(dataset / "date=2026-11-30" / "part-other-tool.parquet", table.append_column("extra", pa.array([1] * 6)))
    assert len(cr.load(dataset)) == 12


# --------------------------------------------------------------------------- refusing what is not ours


def test_load_errors_are_recording_errors(tmp_path: Path) -> None:
    """A missing dataset or a corrupt file raises RecordingError naming the problem."""
    with pytest.raises(cr.RecordingError, match="no recording"):
        cr.load(tmp_path / "nowhere")
    bad = tmp_path / "bad" / "date=2026-11-24"
    bad.mkdir(parents=True)
    (bad / "part-x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(cr.RecordingError, match="cannot read"):
        cr.load(tmp_path / "bad")


def test_a_folder_without_date_partitions_is_refused(tmp_path: Path) -> None:
    """Other files, or our files moved out of their date=YYYY-MM-DD folder, are not a dataset."""
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("not rates")
    with pytest.raises(cr.RecordingError, match=r"no date=YYYY-MM-DD folders.*readme\.txt"):
        cr.load(other)
    flat = tmp_path / "flat"
    write_foreign(flat / "part-a.parquet", SCHEMA.empty_table())
    with pytest.raises(cr.RecordingError, match=r"part-a\.parquet is not inside a date=YYYY-MM-DD folder"):
        cr.load(flat)
    wrong = tmp_path / "wrong"
    write_foreign(wrong / "date=yesterday" / "part-a.parquet", SCHEMA.empty_table())
    with pytest.raises(cr.RecordingError, match="not inside a date=YYYY-MM-DD folder"):
        cr.load(wrong)


def test_a_foreign_parquet_file_is_refused(dataset: Path) -> None:
    """A Parquet file with other columns, even inside a date partition, is refused instead of loading null rows."""
    record_rows(dataset, make_updates(6, start_ns=T0 - 3600 * SEC))
    foreign = pa.table({"symbol": ["AAPL", "MSFT"], "price": [190.1, 410.2]})
    path = write_foreign(dataset / "date=2026-11-30" / "part-foreign.parquet", foreign)
    with pytest.raises(cr.RecordingError, match=r"part-foreign\.parquet is not a coinrates recording: no column 'time'"):
        cr.load(dataset)
    path.unlink()
    mistyped = pq.read_table(published(dataset)[0])
    mistyped = mistyped.set_column(5, "rate", mistyped["rate"].cast(pa.string()))
    write_foreign(dataset / "date=2026-11-30" / "part-mistyped.parquet", mistyped)
    with pytest.raises(cr.RecordingError, match="column 'rate' is string, not double"):
        cr.load(dataset)


def test_a_parent_of_datasets_is_refused(tmp_path: Path) -> None:
    """A folder holding datasets below it is refused with their names: unrelated recordings are never merged."""
    record_rows(tmp_path / "data" / "btc", make_updates(3))
    record_rows(tmp_path / "data" / "eth", make_updates(3), label="live")
    with pytest.raises(cr.RecordingError, match=r"holds 2 datasets below it \(btc, eth\)"):
        cr.load(tmp_path / "data")
    record_rows(tmp_path / "one" / "rates", make_updates(3))
    with pytest.raises(cr.RecordingError, match=r"holds one below it: load .*one/rates$"):
        cr.load(tmp_path / "one")
    record_rows(tmp_path / "data" / "btc" / "copy", make_updates(3))  # a dataset nested inside another
    with pytest.raises(cr.RecordingError, match=r"holds a dataset of its own and 1 more below it \(copy\)"):
        cr.load(tmp_path / "data" / "btc")
    assert len(cr.load(tmp_path / "data" / "eth")) == 3 and len(cr.load(tmp_path / "one" / "rates")) == 3


def test_recordings_without_an_origin_column_load_as_stream(tmp_path: Path) -> None:
    """A file written before the origin column existed still loads; its rows say they came from the stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coinrates_nb.store.dataset import SCHEMA

    old = pa.schema([f for f in SCHEMA if f.name != "origin"])
    part = tmp_path / "old" / "date=2026-11-30"
    part.mkdir(parents=True)
    t = pa.array([1_796_000_000_000_000_000], pa.timestamp("ns", tz="UTC"))
    table = pa.Table.from_arrays([t, t, pa.array(["BTC/USD"]), pa.array(["BTC"]), pa.array(["USD"]), pa.array([1.0]),
                                  pa.array(["BASE_ALL_CROSSES_TO_REF"]), pa.array(["live"])], schema=old)
    pq.write_table(table, part / "part-h-1-deadbeef-00000.parquet")
    frame = cr.load(part.parent)
    assert frame["origin"].tolist() == ["stream"] and frame["rate"].tolist() == [1.0]
