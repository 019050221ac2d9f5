"""seal-ray calibrate: the criteria per seed and over seeds, and over draws of the base model."""

import pytest

from conftest import TINY  # tests/ is on sys.path (pytest rootdir conftest, no package)
from seal_ray.calibrate import CRITERIA, Draw, render, render_draws, required_passes
from seal_ray.cli import main


def point(base=0.97, sft=0.2, oracle=0.85, seal=0.4, sft_orca=1.0, base_orca=0.0, oracle_orca=1.0) -> dict:
    return {"base/refusal": base, "sft/refusal": sft, "oracle/refusal": oracle, "seal/refusal": seal,
            "sft/orca": sft_orca, "base/orca": base_orca, "oracle/orca": oracle_orca}


def test_a_criterion_may_fail_in_one_seed_of_eight_not_two():
    assert required_passes(8) == 7 and required_passes(3) == 3
    one_off = [point(oracle=0.79)] + [point(oracle=0.81 + i / 100) for i in range(7)]
    ok, table = render(one_off, list(range(100, 108)))
    assert ok and "| oracle refusal rate | >= 0.80 | 0.790 (x) |" in table and "7/8 | PASS" in table
    two_off = [point(oracle=0.79), point(oracle=0.78)] + [point(oracle=0.81 + i / 100) for i in range(6)]
    ok, table = render(two_off, list(range(100, 108)))
    assert not ok and "6/8 | FAIL" in table


def test_a_value_on_its_bound_passes_despite_float_error():
    # 95 of 100 orca prompts against 100 of 100: a gap of exactly 0.05 (1.0 - 0.95 > 0.05 in floats)
    ok, table = render([point(oracle_orca=0.95, sft_orca=1.0)] * 3, [100, 101, 102])
    assert ok and "| <= 0.05 | 0.050 | 0.050 | 0.050 | 3/3 | PASS |" in table
    ok, table = render([point(oracle_orca=0.94, sft_orca=1.0)] * 3, [100, 101, 102])
    assert not ok and "0.060 (x)" in table


def test_a_spread_over_seeds_too_wide_fails_though_every_seed_passes():
    points = [point(sft=v) for v in (0.0, 0.45, 0.0, 0.45, 0.0, 0.45, 0.0, 0.45)]  # every seed <= 0.5, SD 0.241
    ok, table = render(points, list(range(8)))
    assert not ok and "| SD of sft/refusal | <= 0.10 | 0.241 | FAIL |" in table


def test_the_summary_over_base_draws_names_what_failed_in_each_draw():
    good = [point(oracle=0.85 + i / 100) for i in range(3)]
    weak = [point(base=0.88, oracle=0.52 + i / 100) for i in range(3)]
    draws = [Draw(0, good, render(good, [0, 1, 2])[0], ""), Draw(1, weak, render(weak, [0, 1, 2])[0], "")]
    summary = render_draws(draws)
    assert "| 0 | 0.970 | 0.200 | 0.860 | 0.400 | none | PASS |" in summary
    failed = [c.name for c in CRITERIA[:1]] + [CRITERIA[2].name]
    assert f"| 1 | 0.880 | 0.200 | 0.530 | 0.400 | {'; '.join(failed)} | FAIL |" in summary


@pytest.mark.parametrize("value", ["0,x", "", "0,0", "-1"])
def test_bad_base_seeds_are_refused_before_any_work(tmp_path, capsys, value):
    assert main(["calibrate", "--base-seeds", value, "--storage", str(tmp_path / "s")]) == 2
    assert "--base-seeds" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_calibrate_over_two_base_draws_trains_two_base_models(tmp_path, capsys):
    from seal_ray.cli import CALIBRATION_HISTORY

    out = tmp_path / "cal.md"
    history = f"{CALIBRATION_HISTORY}: a record)\n\nan earlier table\n"
    out.write_text("# Mini-world calibration\n\nthe previous run's tables\n\n" + history)
    args = ["calibrate", "--seeds", "1", "--first-seed", "0", "--base-seeds", "0,1", "--storage", str(tmp_path / "s"),
            "--markdown", str(out), "--quiet"]
    for override in TINY:
        args += ["--set", override]
    code = main(args)
    text = out.read_text()
    assert code in (0, 1) and ("every criterion passes" if code == 0 else "some criteria FAIL") in capsys.readouterr().out
    assert "--base-seeds 0,1" in text and "## base.seed 0" in text and "## base.seed 1" in text
    assert text.endswith(history) and "the previous run's tables" not in text  # the new tables, then the record
    assert len([d for d in (tmp_path / "s" / "stages" / "base").iterdir() if d.is_dir()]) == 2
