"""reference_seeds: the base cell and Standard SFT run more seeds than the rest of a sweep (no Ray)."""

from pathlib import Path

import pytest
import yaml

from seal_ray.cli import main
from seal_ray.errors import ConfigError
from seal_ray.sweep import follow_sweep_file
from seal_ray.sweep_spec import parse_sweep

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"


def smoke(**changes) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(changes)
    return raw


def test_the_reference_and_standard_sft_run_their_own_seeds():
    spec = parse_sweep(smoke(seeds=2, reference_seeds=4), "smoke.yaml")
    seeds = {cell.label: [s for c, s in spec.runs() if c is cell] for cell in spec.cells}
    assert seeds == {"reference": [0, 1, 2, 3], "method=sft": [0, 1, 2, 3], "activation=sigmoid": [0, 1]}
    assert spec.size() == "3 cells x 2 seeds (the reference cell and Standard SFT: 4 seeds)"
    plan = follow_sweep_file({}, spec, "day 1")
    assert plan.added == 10 and len(plan.table) == 10


def test_seeds_on_the_command_line_ask_every_cell_for_that_many_and_retire_the_rest():
    first = follow_sweep_file({}, parse_sweep(smoke(seeds=2, reference_seeds=4), "smoke.yaml"), "day 1")
    quick = parse_sweep(smoke(seeds=2, reference_seeds=4), "smoke.yaml", seeds=3)
    assert all(c.seeds is None for c in quick.cells) and len(quick.runs()) == 9
    second = follow_sweep_file(first.manifest, quick, "day 2")
    assert (second.retired, second.added) == (2, 1)  # seed 3 of the reference and SFT; seed 2 of sigmoid


@pytest.mark.parametrize("changes", [{"seeds": 3, "reference_seeds": 2}, {"seeds": [0, 5], "reference_seeds": 8},
                                     {"seeds": 2, "reference_seeds": "8"}, {"seeds": 2, "reference_seeds": True}])
def test_reference_seeds_fewer_than_seeds_or_not_a_number_is_refused(changes):
    with pytest.raises(ConfigError, match="reference_seeds"):
        parse_sweep(smoke(**changes), "smoke.yaml")


def test_validate_names_the_file_the_field_and_a_typo(tmp_path, capsys):
    bad = tmp_path / "sweep.yaml"
    bad.write_text(yaml.safe_dump(smoke(seeds=2, reference_seed=4)))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "reference_seed" in err and "did you mean 'reference_seeds'" in err, err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(smoke(seeds=2, reference_seeds=4)))
    assert main(["validate", str(good)]) == 0
    assert "3 cells x 2 seeds (the reference cell and Standard SFT: 4 seeds)" in capsys.readouterr().out
