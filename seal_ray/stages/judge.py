"""Stage `judge`: pairwise win rates against Standard SFT, the refusal rate, task accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from seal_ray.config import CellConfig
from seal_ray.metrics import win_rate
from seal_ray.stages.common import load_world
from seal_ray.stages.generate import GENERATIONS_FILE
from seal_ray.world import RuleJudge, rule_score

METRICS_FILE = "judgement.json"


def key(config: CellConfig, generate_hash: str, baseline_hash: str) -> dict:
    return {"generations": generate_hash, "baseline": baseline_hash, "judge": config.evaluation.judge}


def make(name: str):
    if name == "rule":
        return RuleJudge()
    from seal_ray.judges import make_judge

    return make_judge(name, {})


def run(config: CellConfig, data_dir: Path, generate_dir: Path, baseline_dir: Path, work_dir: Path) -> dict:
    judge = make(config.evaluation.judge)
    world = load_world(data_dir)
    ours = json.loads((generate_dir / GENERATIONS_FILE).read_text())
    theirs = json.loads((baseline_dir / GENERATIONS_FILE).read_text())
    metrics: dict[str, float] = {}
    for name in sorted(ours):
        rows = world[name]
        answers = [g["answer"] for g in ours[name]]
        metrics[f"winrate/{name}"] = win_rate(judge.compare(rows, answers, [g["answer"] for g in theirs[name]]))
        if name == "hexphi":
            refused = judge.refusals(rows, answers)
            metrics["safety/refusal_rate"] = sum(refused) / len(refused)
        if name == "orca" and config.data.source == "mini":
            metrics["task/orca_accuracy"] = sum(rule_score(r, a) for r, a in zip(rows, answers)) / len(rows)
        if name == "hh" and config.data.source == "mini":
            helpful = [(r, a) for r, a in zip(rows, answers) if r["kind"] == "helpful"]
            metrics["task/hh_helpful_accuracy"] = sum(rule_score(r, a) for r, a in helpful) / max(len(helpful), 1)
    (work_dir / METRICS_FILE).write_text(json.dumps(metrics))
    return {"metrics": metrics}
