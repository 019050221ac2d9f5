"""Training curves: recorded by every training stage, cached with it, read back by results.load_curves."""

import dataclasses
import json
import math

import pytest

from seal_ray.config import to_dict
from seal_ray.curves import CURVES_FILE, cell_curves_rel, copy_cell_curves
from seal_ray.executor import LocalExecutor
from seal_ray.pipeline import CellPipeline
from seal_ray.results import load_curves, record_rel
from seal_ray.schedules import PenaltySchedule
from seal_ray.storage import Storage
from seal_ray.store import StageStore

SFT_FIELDS = {"stage", "kind", "step", "epoch", "loss", "lr"}
SELECTOR_FIELDS = {"stage", "kind", "step", "epoch", "upper_loss", "ft_loss", "lower_loss", "selector_gap",
                   "selector_objective", "aux_loss", "upper_weight", "gamma", "lr_theta", "lr_omega", "lr_aux",
                   "weight/min", "weight/max", "weight/mean", "weight/entropy", "weight/ess_fraction",
                   "weight/share_clean", "weight/share_unsafe", "weight/share_low_quality"}


@pytest.fixture(scope="module")
def smoke_cell(tmp_path_factory):
    """One smoke cell with Algorithm 1 and a ramp steep enough that w changes visibly each epoch."""
    from tests.conftest import TINY
    from seal_ray.config import load_cell_config

    config = load_cell_config(None, [*TINY, "selector.algorithm=1", "selector.epochs=3", "penalty.decay=0.2"])
    store = StageStore(tmp_path_factory.mktemp("curves"))
    outcome = CellPipeline(config, store, LocalExecutor(), log=lambda s: None).run()
    return config, outcome


def _points(outcome, stage):
    return [json.loads(line) for line in (outcome.stages[stage].dir / CURVES_FILE).read_text().splitlines()]


def test_every_training_stage_records_its_curve_with_the_promised_fields(smoke_cell):
    config, outcome = smoke_cell
    for stage, epochs, fields in (("base", config.base.epochs, SFT_FIELDS), ("finetune", config.finetune.epochs, SFT_FIELDS),
                                  ("selector", config.selector.epochs, SELECTOR_FIELDS)):
        points = _points(outcome, stage)
        steps = [p for p in points if p["kind"] == "step"]
        ends = [p for p in points if p["kind"] == "epoch"]
        assert [p["epoch"] for p in ends] == list(range(epochs)), stage
        assert steps and all(fields <= set(p) for p in steps), (stage, fields - set(steps[0]))
        assert [p["step"] for p in steps] == sorted({p["step"] for p in steps}), stage  # increasing, no repeats
        assert all(p["stage"] == stage and all(math.isfinite(v) for k, v in p.items() if isinstance(v, float))
                   for p in points)
    selector_ends = [p for p in _points(outcome, "selector") if p["kind"] == "epoch"]
    for p in selector_ends:
        assert 0.0 <= p["auroc_unsafe"] <= 1.0 and 0.0 <= p["auroc_low_quality"] <= 1.0
        shares = p["weight/share_clean"] + p["weight/share_unsafe"] + p["weight/share_low_quality"]
        assert shares == pytest.approx(1.0)
        assert p["weight/min"] <= p["weight/mean"] <= p["weight/max"]
    # The selector moved omega: the weights are no longer all equal after training.
    assert selector_ends[-1]["weight/max"] > selector_ends[-1]["weight/min"]
    # The SFT loss is the mean per-sample loss of the batch: it matches the epoch's mean loss in size.
    base = _points(outcome, "base")
    assert base[-1]["epoch_loss"] == pytest.approx(outcome.stages["base"].meta["final_loss"])


def test_the_penalty_weight_in_the_curves_is_the_schedules_value_at_that_epoch(smoke_cell):
    config, outcome = smoke_cell
    schedule = PenaltySchedule.from_config(config.penalty)
    points = _points(outcome, "selector")
    weights = {p["epoch"]: p["upper_weight"] for p in points}
    assert len(set(weights.values())) == config.selector.epochs  # the ramp moves it every epoch
    for p in points:
        assert p["upper_weight"] == pytest.approx(schedule.upper_weight(p["epoch"]))
        assert p["gamma"] == pytest.approx(schedule.gamma_at(p["epoch"]))


def test_curve_interval_gives_about_a_hundred_points_or_the_configured_step(tmp_path, tiny_config):
    from seal_ray.curves import interval

    assert interval(1000, None) == 10 and interval(50, None) == 1 and interval(1000, 7) == 7
    config = dataclasses.replace(tiny_config, resources=dataclasses.replace(tiny_config.resources, curve_every=3))
    outcome = CellPipeline(config, StageStore(tmp_path), LocalExecutor(), log=lambda s: None).run()
    steps = [p["step"] for p in _points(outcome, "base") if p["kind"] == "step"]
    assert steps and all(s % 3 == 0 for s in steps)


def _write_sweep(folder: Storage, entries: list[tuple[str, int, str]], config: dict) -> None:
    manifest = {"name": "partial", "cells": {cid: {"label": f"cell {cid}", "studies": [], "config": config}
                                            for cid, _, _ in entries},
                "entries": [{"cell_id": cid, "seed": seed} for cid, seed, _ in entries]}
    folder.write_text("manifest.json", json.dumps(manifest))
    for cid, seed, status in entries:
        folder.write_text(record_rel(cid, seed), json.dumps({"cell_id": cid, "seed": seed, "status": status}))


def test_load_curves_reads_a_partially_written_sweep_without_ray(tmp_path, smoke_cell):
    import sys

    config, outcome = smoke_cell
    folder = Storage(tmp_path / "sweeps" / "partial")
    _write_sweep(folder, [("aaa", 0, "done"), ("aaa", 1, "running"), ("bbb", 0, "done")], to_dict(config))
    stage_dirs = {name: result.dir for name, result in outcome.stages.items()}
    points = copy_cell_curves(folder, "aaa", 0, stage_dirs)
    assert points == sum(len(_points(outcome, s)) for s in ("base", "selector", "finetune"))
    # bbb-s0's copy is cut short mid-line (a reader racing a writer on a plain folder): its whole lines count.
    text = folder.read_text(cell_curves_rel("aaa", 0))
    folder.write_text(cell_curves_rel("bbb", 0), text[: len(text) // 2])

    frame = load_curves(tmp_path / "sweeps" / "partial")
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
    assert list(frame.columns[:6]) == ["cell", "seed", "stage", "step", "metric", "value"]
    assert set(frame["cell"]) == {"aaa", "bbb"} and set(frame["seed"]) == {0}  # the running seed has no curves yet
    mine = frame[frame["cell"] == "aaa"]
    gap = mine[(mine["stage"] == "selector") & (mine["metric"] == "selector_gap")]
    assert len(gap) == sum(1 for p in _points(outcome, "selector") if "selector_gap" in p)
    assert set(mine["stage"]) == {"base", "selector", "finetune"}
    assert 0 < len(frame[frame["cell"] == "bbb"]) < len(mine)
    # Filters, by name through the storage root as the CLI does.
    only = load_curves("partial", storage=tmp_path, stages=["selector"], metrics=["upper_weight"])
    assert set(only["metric"]) == {"upper_weight"} and set(only["stage"]) == {"selector"}


def test_results_curves_flag_writes_the_long_frame(tmp_path, smoke_cell, capsys):
    import pandas as pd

    from seal_ray.cli import main

    config, outcome = smoke_cell
    folder = Storage(tmp_path / "sweeps" / "one")
    _write_sweep(folder, [("aaa", 0, "done")], to_dict(config))
    copy_cell_curves(folder, "aaa", 0, {name: result.dir for name, result in outcome.stages.items()})
    out = tmp_path / "curves.parquet"
    assert main(["results", "one", "--storage", str(tmp_path), "--curves", "--format", "parquet", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert {"cell", "seed", "stage", "step", "metric", "value"} <= set(frame.columns) and len(frame) > 100
    assert main(["results", "one", "--storage", str(tmp_path), "--curves", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].count(",") >= 5


def test_the_report_draws_each_ablations_selector_curves_mean_over_seeds(tmp_path, smoke_cell):
    from analysis.curves import mean_band
    from analysis.report import write_report
    from seal_ray.results import load

    config, outcome = smoke_cell
    folder = Storage(tmp_path / "sweeps" / "two")
    _write_sweep(folder, [("aaa", 0, "done"), ("aaa", 1, "done")], to_dict(config))
    stage_dirs = {name: result.dir for name, result in outcome.stages.items()}
    copy_cell_curves(folder, "aaa", 0, stage_dirs)
    # Seed 1: the same curve shifted by +1, so the mean is +0.5 and the band spans exactly 1.
    shifted = [{k: (v + 1.0 if k == "selector_gap" else v) for k, v in p.items()}
               for p in map(json.loads, folder.read_text(cell_curves_rel("aaa", 0)).splitlines())]
    folder.write_text(cell_curves_rel("aaa", 1), "".join(json.dumps(p) + "\n" for p in shifted))
    curves = load_curves(tmp_path / "sweeps" / "two")
    gap = curves[(curves["metric"] == "selector_gap") & (curves["kind"] == "step")]
    band = mean_band(gap, "step")
    seed0 = gap[gap["seed"] == 0].set_index("step")["value"].sort_index()
    assert (band["mean"] - seed0).to_numpy() == pytest.approx(0.5) and (band["max"] - band["min"]).to_numpy() == pytest.approx(1.0)

    report = write_report(load(tmp_path / "sweeps" / "two"), tmp_path / "report", curves=curves)
    text = report.read_text()
    # The smoke cell is every ablation's reference (Algorithm 1 row of the algorithm study): one figure each.
    for name in ("activation", "safe_fraction", "penalty", "algorithm"):
        assert f"(curves_{name}.png)" in text and (tmp_path / "report" / f"curves_{name}.png").stat().st_size > 10_000
