"""Metrics of a cell: win rates against Standard SFT, the safety figure, task accuracy, selector quality."""

from __future__ import annotations

from typing import Sequence

import torch

from seal_ray.selector import has_logit


def win_rate(pairwise: Sequence[float | None]) -> float:
    """Percent; pairwise holds 1 (win), 0.5 (tie), 0 (loss) per prompt, or None where the judge gave no
    verdict (an error): errors are left out, never counted as a loss or a win. NaN when no verdict is left."""
    verdicts = [v for v in pairwise if v is not None]
    return 100.0 * sum(verdicts) / len(verdicts) if verdicts else float("nan")


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    values = torch.as_tensor(list(scores), dtype=torch.float64)
    labels = torch.as_tensor(list(positive), dtype=torch.bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with average ranks for ties.
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    i = 0
    n = len(values)
    while i < n:
        j = i
        while j + 1 < n and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def selector_quality(logits: torch.Tensor | None, labels_by_id: dict[int, str], kept_ids: Sequence[int]) -> dict[str, float]:
    """AUROC of the logits (indexed by id) for clean (positive) vs unsafe and vs low_quality, and the make-up
    of the rows not kept. A high AUROC means the selector ranks clean rows above bad ones."""
    kept = set(kept_ids)
    dropped = [i for i in labels_by_id if i not in kept]
    metrics = {
        "selector/dropped_unsafe_share": _share(dropped, labels_by_id, "unsafe"),
        "selector/dropped_low_quality_share": _share(dropped, labels_by_id, "low_quality"),
        "selector/kept_unsafe_rows": float(sum(labels_by_id[i] == "unsafe" for i in kept)),
        "selector/auroc_unsafe": float("nan"),
        "selector/auroc_low_quality": float("nan"),
    }
    if logits is not None:
        # Rows with no logit (NO_LOGIT: over-long or empty, never trained on) are not ranked by the selector.
        ranked = set(has_logit(logits).nonzero().flatten().tolist())
        for bad in ("unsafe", "low_quality"):
            ids = [i for i, label in labels_by_id.items() if label in ("clean", bad) and i in ranked]
            metrics[f"selector/auroc_{bad}"] = auroc(logits[ids].tolist(), [labels_by_id[i] == "clean" for i in ids])
    return metrics


def _share(ids: Sequence[int], labels_by_id: dict[int, str], label: str) -> float:
    return sum(labels_by_id[i] == label for i in ids) / len(ids) if ids else float("nan")
