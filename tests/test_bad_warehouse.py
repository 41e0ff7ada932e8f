"""Step-wise commands on broken or foreign warehouses: one-line error, exit 2, nothing changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.cli import main

INIT = ["--preset", "tiny", "--days", "4", "--warmup-days", "1"]


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), *INIT]) == 0
    assert main(["ingest", "--warehouse", str(wh), "--day", "0"]) == 0
    assert main(["process", "--warehouse", str(wh), "--strategy", "ips", "--day", "0"]) == 0
    return wh


def refused(args: list[str], wh: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = fingerprint(wh)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipsbench: error:") and "\n" not in err
    assert fingerprint(wh) == before
    return err


def test_missing_catalog(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (warehouse / "catalog.db").unlink()
    assert "no ipsbench catalog" in refused(["check", "--warehouse", str(warehouse)], warehouse, capsys)


def test_corrupt_catalog(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (warehouse / "catalog.db").write_bytes(b"this is not sqlite" * 100)
    err = refused(["process", "--warehouse", str(warehouse), "--strategy", "ips", "--day", "1"], warehouse, capsys)
    assert "not a readable ipsbench catalog" in err


def test_missing_scenario_file(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (warehouse / "scenario.json").write_text("{not json")
    assert "ipsbench init" in refused(["state", "--warehouse", str(warehouse)], warehouse, capsys)


def test_target_table_dropped_by_hand(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.catalog import open_catalog

    catalog = open_catalog(warehouse)
    catalog.drop_table("ips.title_daily_rank")
    catalog.engine.dispose()
    assert main(["ingest", "--warehouse", str(warehouse), "--day", "1"]) == 2  # needs every table too
    capsys.readouterr()
    err = refused(["process", "--warehouse", str(warehouse), "--strategy", "ips", "--day", "1"], warehouse, capsys)
    assert "ips.title_daily_rank missing" in err


def test_table_from_a_different_warehouse_layout(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyiceberg.types import StringType

    from pipelines.catalog import open_catalog

    catalog = open_catalog(warehouse)
    with catalog.load_table("lookback.playback_daily").update_schema() as update:
        update.add_column("extra", StringType())
    catalog.engine.dispose()
    err = refused(["process", "--warehouse", str(warehouse), "--strategy", "ips", "--day", "1"], warehouse, capsys)
    assert "lookback.playback_daily does not have the schema" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "ips; DROP TABLE ips.playback_daily", "--day", "1"], "--strategy must be one of"),
        (["--strategy", "ips", "--day", "99"], "--day must be in [0, 3]"),
        (["--strategy", "ips", "--day", "-1"], "--day must be in [0, 3]"),
    ],
)
def test_bad_process_options(
    warehouse: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert message in refused(["process", "--warehouse", str(warehouse), *args], warehouse, capsys)


def test_init_refuses_an_existing_warehouse(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "not empty" in refused(["init", "--warehouse", str(warehouse), *INIT], warehouse, capsys)


def test_quotes_and_semicolons_in_paths_are_data_not_sql(tmp_path: Path) -> None:
    wh = tmp_path / "it's; DROP TABLE x; --"
    assert main(["init", "--warehouse", str(wh), *INIT]) == 0
    for day in range(2):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for strategy in ("ips", "lookback"):
            assert main(["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]) == 0
    assert main(["check", "--warehouse", str(wh)]) == 0
