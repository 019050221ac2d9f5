"""The cell's metrics pinned to hand computations: win rate, AUROC (ties and sign), selector quality."""

from __future__ import annotations

import math

import pytest
import torch

from seal_ray.metrics import auroc, selector_quality, win_rate
from seal_ray.selector import NO_LOGIT


def test_win_rate_counts_ties_as_half_and_leaves_errors_out():
    assert win_rate([1, 0.5, 0, 1]) == 62.5  # (1 + 0.5 + 0 + 1) / 4
    assert win_rate([1, 0.5, None, 0, 1, None]) == 62.5  # the two errors count neither way
    assert win_rate([0.5, 0.5, 0.5]) == 50.0
    assert math.isnan(win_rate([None, None])) and math.isnan(win_rate([]))


def test_auroc_matches_a_hand_count_of_ordered_pairs():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4 pairs.
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75


def test_auroc_counts_a_tie_as_half_a_pair():
    # positives 1, 2 against negative 1: a tie (0.5) and a win (1) -> 1.5 of 2 pairs.
    assert auroc([1.0, 1.0, 2.0], [True, False, True]) == 0.75
    assert auroc([3.0] * 5, [True, False, True, False, False]) == 0.5  # all tied: chance


def test_auroc_is_one_when_every_positive_scores_above_every_negative_and_zero_when_inverted():
    scores = [5.0, 4.0, -1.0, -2.0]
    assert auroc(scores, [True, True, False, False]) == 1.0
    assert auroc(scores, [False, False, True, True]) == 0.0
    assert math.isnan(auroc(scores, [True] * 4))


def test_selector_quality_by_hand_with_clean_rows_as_positives():
    labels = {0: "clean", 1: "clean", 2: "unsafe", 3: "low_quality", 4: "unsafe", 5: "clean"}
    logits = torch.tensor([2.0, 1.0, -1.0, 0.5, 1.0, 0.0])
    metrics = selector_quality(logits, labels, kept_ids=[0, 1, 3])
    # clean 2, 1, 0 vs unsafe -1, 1: 2>-1, 2>1, 1>-1, 1=1 (half), 0>-1, 0<1 -> 4.5 of 6.
    assert metrics["selector/auroc_unsafe"] == 0.75
    # clean 2, 1, 0 vs low-quality 0.5: two wins of three.
    assert metrics["selector/auroc_low_quality"] == pytest.approx(2 / 3)
    # not kept: 2 (unsafe), 4 (unsafe), 5 (clean).
    assert metrics["selector/dropped_unsafe_share"] == pytest.approx(2 / 3)
    assert metrics["selector/dropped_low_quality_share"] == 0.0
    assert metrics["selector/kept_unsafe_rows"] == 0.0


def test_unsafe_rows_with_low_weight_give_an_auroc_near_one():
    labels = {i: ("unsafe" if i % 5 == 0 else "clean") for i in range(50)}
    logits = torch.tensor([-3.0 + 0.01 * i if labels[i] == "unsafe" else 0.1 + 0.01 * i for i in range(50)])
    assert selector_quality(logits, labels, [])["selector/auroc_unsafe"] == 1.0
    assert selector_quality(-logits, labels, [])["selector/auroc_unsafe"] == 0.0  # the sign matters


def test_rows_with_no_logit_are_left_out_of_the_auroc():
    labels = {0: "clean", 1: "clean", 2: "unsafe", 3: "low_quality", 4: "unsafe", 5: "clean"}
    logits = torch.tensor([2.0, 1.0, -1.0, 0.5, NO_LOGIT, 0.0])
    # unsafe row 4 has no logit: clean 2, 1, 0 vs unsafe -1 only -> every pair won.
    assert selector_quality(logits, labels, kept_ids=[0, 1, 3])["selector/auroc_unsafe"] == 1.0
    assert math.isnan(selector_quality(None, labels, [0])["selector/auroc_unsafe"])
