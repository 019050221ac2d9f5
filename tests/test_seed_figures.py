"""analysis.seed_figures: Student-t intervals over per-seed values, checked against a hand computation."""

import math

import pytest

from analysis.ablations import METHOD
from analysis.report import write_report
from analysis.seed_figures import seed_figures
from analysis.synthetic import frame, result_row

T_975_2DF = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def rows(seal_refusal, sft_refusal, hexphi):
    out = []
    for seed, (a, b, w) in enumerate(zip(seal_refusal, sft_refusal, hexphi)):
        metrics = {"safety/refusal_rate": a, "winrate/hh": 55.0, "winrate/orca": 50.0, "winrate/hexphi": w}
        out.append(result_row(seed=seed, metrics=metrics))  # label 'reference', method seal
        out.append(result_row({METHOD: "sft"}, seed=seed, label="method=sft",
                              metrics={"safety/refusal_rate": b, "winrate/hexphi": 50.0}))
    return out


def test_paired_refusal_and_win_rate_half_widths_equal_a_hand_computation():
    figures = {f.name: f for f in seed_figures(frame(rows([0.40, 0.50, 0.30], [0.10, 0.15, 0.20], [60.0, 64.0, 68.0])))}
    paired = figures["SEAL - Standard SFT, HEx-PHI refusal (points, paired by seed)"]
    diffs = [30.0, 35.0, 10.0]  # points
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert paired.seeds == 3 and paired.mean == pytest.approx(mean)
    assert paired.half_width == pytest.approx(T_975_2DF * sd / math.sqrt(3))
    assert paired.met is False  # 4.30 x 13.2 / 1.73 = 32.9 points > 10
    hexphi = figures["SEAL's HEx-PHI win rate (%)"]
    assert hexphi.half_width == pytest.approx(T_975_2DF * 4.0 / math.sqrt(3)) and hexphi.met is False
    hh = figures["SEAL's HH win rate (%)"]
    assert hh.half_width == 0.0 and hh.met is True


def test_only_seeds_where_both_are_done_are_paired_and_two_seeds_give_no_interval():
    data = rows([0.4, 0.5, 0.3], [0.1, 0.15, 0.2], [60.0, 64.0, 68.0])
    data[5]["status"] = "failed"  # seed 2's Standard SFT row
    figures = seed_figures(frame(data))
    assert figures[0].seeds == 2 and figures[0].half_width is None and figures[0].met is None
    assert figures[0].mean == pytest.approx(32.5)
    assert figures[1].seeds == 3  # SEAL's own win rates keep seed 2


def test_the_report_shows_the_figures(tmp_path):
    report = write_report(frame(rows([0.40, 0.50, 0.30], [0.10, 0.15, 0.20], [60.0, 64.0, 68.0])), tmp_path)
    text = report.read_text()
    assert "## Seed-level figures" in text
    assert "| SEAL - Standard SFT, HEx-PHI refusal (points, paired by seed) | 3 | 25.0 | 32.9 | <= 10 | not met |" in text
