"""`seal-ray results`: --out is honoured for every format, and what is printed holds no object repr."""

import json

import pandas as pd
import pytest

from seal_ray.cli import main
from seal_ray.config import CellConfig, to_dict
from seal_ray.results import sweep_folder, write_record


@pytest.fixture
def sweep_storage(tmp_path):
    storage = tmp_path / "storage"
    folder = sweep_folder(storage, "tiny")
    manifest = {"name": "tiny", "cells": {"c1": {"label": "SEAL", "studies": ["main"], "config": to_dict(CellConfig())}},
                "entries": [{"cell_id": "c1", "seed": 0}, {"cell_id": "c1", "seed": 1}]}
    folder.write_text("manifest.json", json.dumps(manifest))
    write_record(folder, "c1", 0, status="done", metrics={"winrate/hh": 0.625, "prov/git_commit": "abc"})
    return storage


def test_the_results_table_names_the_sweep_folder_not_an_object_repr(sweep_storage, capsys):
    assert main(["results", "tiny", "--storage", str(sweep_storage)]) == 0
    out = capsys.readouterr().out
    assert "done 1" in out and "missing 1" in out
    assert str(sweep_storage / "sweeps" / "tiny") in out
    assert " object at 0x" not in out and "<seal_ray" not in out


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "parquet"])
def test_results_out_writes_the_file_for_every_format_and_prints_no_data(sweep_storage, tmp_path, capsys, fmt):
    out = tmp_path / "export" / f"results.{fmt}"
    assert main(["results", "tiny", "--storage", str(sweep_storage), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and f"2 rows written to {out}" in printed and "0.625" not in printed
    if fmt == "csv":
        frame = pd.read_csv(out)
    elif fmt == "json":
        frame = pd.DataFrame(json.loads(out.read_text()))
    elif fmt == "parquet":
        frame = pd.read_parquet(out)
    else:
        assert "done 1" in out.read_text()
        return
    assert len(frame) == 2 and sorted(frame["status"]) == ["done", "missing"]
    assert frame["winrate/hh"].max() == 0.625


def test_results_parquet_without_out_is_refused_with_exit_2(sweep_storage, capsys):
    assert main(["results", "tiny", "--storage", str(sweep_storage), "--format", "parquet"]) == 2
    assert "--format parquet needs --out" in capsys.readouterr().err
