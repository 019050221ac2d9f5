"""Stage `judge`: pairwise win rates against Standard SFT, the refusal rate, task accuracy.

The pairwise judge (evaluation.judge) and the refusal detector (evaluation.refusal_judge) come from
seal_ray/judges.py. A comparison the judge could not decide (None) is counted in `judge/errors` and
left out of the win rate; past evaluation.max_error_fraction the stage fails rather than cache a
figure built on too few verdicts. Each test set's verdicts are kept in `checkpoints/` (which the store
keeps when a failed stage is retried), so a rerun after a judge outage asks the (paid) judge only about
the prompts still without a verdict.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.errors import StageFailed
from seal_ray.judges import judge_cache_key, judges_for
from seal_ray.metrics import win_rate
from seal_ray.results import PROMPTS_FILE
from seal_ray.stages.common import load_world
from seal_ray.stages.generate import GENERATIONS_FILE, MARGINS_FILE
from seal_ray.world import rule_score

METRICS_FILE = "judgement.json"
VERDICTS_DIR = "checkpoints"  # the stage store keeps this folder when a failed stage is retried


def key(config: CellConfig, generate_hash: str, baseline_hash: str) -> dict:
    # Judge names and verdict-changing options only: never the API key (it is not in the config at all).
    return {"generations": generate_hash, "baseline": baseline_hash,
            "judge": judge_cache_key(config.evaluation, config.data.template)}


def _saved(work_dir: Path, name: str, n_rows: int) -> list:
    """Verdicts an earlier, failed attempt of this stage kept; None where none is known yet."""
    saved = work_dir / VERDICTS_DIR / f"{name}.json"
    verdicts = json.loads(saved.read_text()) if saved.is_file() else None
    return verdicts if isinstance(verdicts, list) and len(verdicts) == n_rows else [None] * n_rows


def _judge_missing(judge, name: str, rows: list[dict], ours: list[str], theirs: list[str], verdicts: list, work_dir: Path) -> list:
    """Ask the judge about the prompts without a verdict, and keep every verdict for a retry."""
    todo = [i for i, v in enumerate(verdicts) if v is None]
    if todo:
        fresh = judge.compare([rows[i] for i in todo], [ours[i] for i in todo], [theirs[i] for i in todo])
        for i, verdict in zip(todo, fresh):
            verdicts[i] = verdict
        saved = work_dir / VERDICTS_DIR / f"{name}.json"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(verdicts))
    return verdicts


def run(config: CellConfig, data_dir: Path, generate_dir: Path, baseline_dir: Path, work_dir: Path) -> dict:
    pairwise, refusal = judges_for(config.evaluation, config.data.template)
    world = load_world(data_dir)
    ours = json.loads((generate_dir / GENERATIONS_FILE).read_text())
    theirs = json.loads((baseline_dir / GENERATIONS_FILE).read_text())
    # xstest (the mini world's benign look-alikes) is only checked for refusals, never judged pairwise
    known = {name: _saved(work_dir, name, len(ours[name])) for name in ours if name != "xstest"}
    pairwise.reserve(sum(v is None for verdicts in known.values() for v in verdicts))
    metrics: dict[str, float | str] = {"judge/name": config.evaluation.judge, "judge/refusal_name": config.evaluation.refusal_judge}
    errors = total = 0
    outcomes: dict[str, list[dict]] = {}
    for name in sorted(ours):
        rows = world[name]
        answers = [g["answer"] for g in ours[name]]
        if name == "xstest":
            # Benign look-alikes: refusing them is over-refusal (a model that refuses everything cannot look safe).
            refused = refusal.refusals(rows, answers)
            metrics["safety/over_refusal_rate"] = sum(refused) / len(rows)
            outcomes[name] = _with_refusals(prompt_outcomes(rows, [None] * len(rows)), refused)
            continue
        verdicts = _judge_missing(pairwise, name, rows, answers, [g["answer"] for g in theirs[name]], known[name], work_dir)
        valid = [v for v in verdicts if v is not None]
        errors, total = errors + len(verdicts) - len(valid), total + len(verdicts)
        metrics[f"winrate/{name}"] = win_rate(valid)
        outcomes[name] = prompt_outcomes(rows, verdicts)
        if name == "hexphi":
            refused = refusal.refusals(rows, answers)
            metrics["safety/refusal_rate"] = sum(refused) / len(refused)
            _with_refusals(outcomes[name], refused)
        if name == "orca" and config.data.source == "mini":
            metrics["task/orca_accuracy"] = sum(rule_score(r, a) for r, a in zip(rows, answers)) / len(rows)
        if name == "hh" and config.data.source == "mini":
            helpful = [(r, a) for r, a in zip(rows, answers) if r["kind"] == "helpful"]
            metrics["task/hh_helpful_accuracy"] = sum(rule_score(r, a) for r, a in helpful) / max(len(helpful), 1)
    margins_path = generate_dir / MARGINS_FILE
    if margins_path.is_file():
        margins = json.loads(margins_path.read_text())
        metrics["safety/refusal_logprob_margin"] = sum(margins.values()) / len(margins)
    metrics["judge/errors"] = errors
    if errors > config.evaluation.max_error_fraction * total:
        raise StageFailed(
            f"[judge] {errors} of {total} comparisons got no verdict from judge '{config.evaluation.judge}' (malformed "
            f"replies or server errors after retries), more than evaluation.max_error_fraction = "
            f"{config.evaluation.max_error_fraction}; nothing is cached: rerun when the judge answers properly")
    (work_dir / METRICS_FILE).write_text(json.dumps(metrics))
    (work_dir / PROMPTS_FILE).write_text(json.dumps(outcomes))
    return {"metrics": metrics}


def _with_refusals(outcomes: list[dict], refused: list[bool]) -> list[dict]:
    """The per-prompt records with the refusal judge's verdict added (hexphi and xstest)."""
    for outcome, was_refused in zip(outcomes, refused):
        outcome["refused"] = bool(was_refused)
    return outcomes


def prompt_outcomes(rows: list[dict], verdicts: list) -> list[dict]:
    """One record per prompt; `key` (a hash of the prompt) pairs the same prompt across cells of a seed."""
    return [{"id": row.get("id", i), "key": hashlib.sha1(str(row.get("prompt", "")).encode()).hexdigest()[:12],
             "category": row.get("category"), "win": verdict} for i, (row, verdict) in enumerate(zip(rows, verdicts))]
