"""sweeps/paper_llama3.yaml: the paper's setup, validated (never run: it needs GPUs, weights and data)."""

from __future__ import annotations

from pathlib import Path

from seal_ray.cli import main
from seal_ray.sweep_spec import load_sweep

PAPER = Path(__file__).resolve().parents[1] / "sweeps" / "paper_llama3.yaml"


def test_the_paper_sweep_validates_on_the_command_line(capsys):
    assert main(["validate", str(PAPER)]) == 0
    assert "paper_llama3" in capsys.readouterr().out


def test_the_paper_sweep_holds_seal_md_hyper_parameters_and_every_method_and_ablation():
    spec = load_sweep(PAPER)
    methods = {cell.config.selection.method for cell in spec.cells}
    assert methods == {"sft", "random", "dsir", "safeinstr", "seal", "seal_safeinstr"}  # SEAL.md's Llama-3 table
    seal = [c.config for c in spec.cells if c.config.selection.method == "seal"]
    assert {c.selector.activation for c in seal} == {"softmax", "sigmoid", "relu"}
    assert {c.data.safe_fraction for c in seal} == {0.1, 0.2, 0.5, 1.0}
    assert {(c.penalty.kind, c.penalty.decay if c.penalty.kind == "ramp" else c.penalty.gamma) for c in seal} == {
        ("ramp", 0.03), ("fixed", 0.1), ("fixed", 0.5), ("ramp", 0.1)}
    assert {c.selector.algorithm for c in seal} == {1, 2}
    assert {c.selector.epoch for c in seal} == {"cycle_safe"}  # stated in the file, equal to zip_shortest at 1.0
    for config in (c.config for c in spec.cells):
        assert config.model.name_or_path == "meta-llama/Meta-Llama-3-8B-Instruct" and config.model.dtype == "bfloat16"
        lora = config.model.lora
        assert lora.enabled and (lora.r, lora.alpha) == (16, 16) and lora.target_modules == ["q_proj", "v_proj"]
        assert config.data.max_len == 2048 and config.selector.epochs == 3 and config.finetune.epochs == 2
        # The withheld safe set at the paper's size: the reference's --max_samples 112000 for both sets, the
        # safe-set size a fraction of that pool (1.0 in the base cell), never of D_ft.
        assert config.data.ft.limit == config.data.safe.limit == 112_000
        assert config.data.safe_fraction_unit == "safe_pool"
        assert config.finetune.lr == config.selector.model_lr == 1e-5
        assert config.finetune.batch_size == config.selector.batch_size == 64
        assert config.selection.topp == 0.8 or config.selection.method in ("sft", "safeinstr")
        generation = config.generation
        assert generation.do_sample and (generation.top_p, generation.temperature, generation.repetition_penalty) == (0.9, 1.0, 1.2)
        assert config.evaluation.judge == "openai" and config.evaluation.openai.api_key_env == "OPENAI_API_KEY"
        assert config.resources.use_gpu
