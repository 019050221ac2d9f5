"""The `seal-ray` command line. Bad input prints one clear message and exits with code 2."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from seal_ray import __version__
from seal_ray.errors import StageFailed, UserError
from seal_ray.kernels import kernel_env


def _print(message: str) -> None:
    print(message, flush=True)


# --- commands ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from seal_ray.config import load_cell_config, to_dict
    from seal_ray.executor import LocalExecutor
    from seal_ray.pipeline import CellPipeline
    from seal_ray.preflight import check_cell_inputs
    from seal_ray.store import StageStore, write_json_atomic

    config = load_cell_config(args.config, args.set or [])
    check_cell_inputs(config, args.config or "--set")
    out = Path(args.out)
    store = StageStore(args.storage or out)
    start = time.perf_counter()
    with LocalExecutor(isolate=config.resources.isolate_stages) as executor:
        pipeline = CellPipeline(config, store, executor, log=_print)
        outcome = pipeline.run()
    out.mkdir(parents=True, exist_ok=True)
    for name, path in pipeline.artifacts(outcome).items():
        shutil.copyfile(path, out / path.name)
    (out / "config.json").write_text(json.dumps(to_dict(config), indent=1))
    write_json_atomic(out / "metrics.json", outcome.metrics)
    _print(f"cell finished in {time.perf_counter() - start:.1f}s; metrics in {out / 'metrics.json'}")
    _print(format_metrics(outcome.metrics))
    return 0


def format_metrics(metrics: dict) -> str:
    lines = []
    for name in sorted(metrics):
        value = metrics[name]
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"  {name:<38} {text}")
    return "\n".join(lines)


def _base_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--base-seeds: '{text}' is not a comma-separated list of distinct seeds >= 0 (e.g. 0,1,2)")
    return seeds


# A --markdown file keeps everything from this heading on: the record of earlier calibrations.
CALIBRATION_HISTORY = "## Earlier calibrations (kept by `seal-ray calibrate --markdown`"


def cmd_calibrate(args: argparse.Namespace) -> int:
    from seal_ray.calibrate import calibrate
    from seal_ray.config import load_cell_config

    config = load_cell_config(args.config, args.set or [])
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.base_seeds is None:
        _, ok, table = calibrate(config, seeds, args.storage, jobs=args.jobs, quiet=args.quiet)
    else:
        from seal_ray.calibrate import over_base_draws

        draws, ok, summary = over_base_draws(config, _base_seeds(args.base_seeds), seeds, args.storage, jobs=args.jobs,
                                             quiet=args.quiet)
        table = "\n\n".join([summary, *(f"## base.seed {d.base_seed}\n\n{d.table}" for d in draws)])
    _print(table)
    if args.markdown:
        from seal_ray.provenance import git_commit

        commit = git_commit()
        if commit.endswith("-dirty"):
            _print(f"warning: the working tree has uncommitted changes; {args.markdown} names commit {commit}")
        target = Path(args.markdown)
        text = ("# Mini-world calibration\n\n"
                f"Produced by `seal-ray calibrate --seeds {args.seeds} --first-seed {args.first_seed}"
                + (f" --base-seeds {args.base_seeds}" if args.base_seeds else "") + "` at commit "
                f"`{commit}` (seal_ray {__version__}), on the built-in defaults"
                + (f" with {' '.join(args.set)}" if args.set else "") + f".\n\n{table}\n")
        earlier = target.read_text() if target.is_file() else ""
        if CALIBRATION_HISTORY in earlier:  # earlier calibrations and their reading stay below the new tables
            text += "\n" + earlier[earlier.index(CALIBRATION_HISTORY):]
        target.write_text(text)
        _print(f"written to {args.markdown}")
    _print("calibration: " + ("every criterion passes" if ok else "some criteria FAIL"))
    return 0 if ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from seal_ray.config import cell_from_dict, read_yaml
    from seal_ray.sweep_spec import is_sweep_file, parse_sweep

    for path in args.files:
        raw = read_yaml(path)
        if is_sweep_file(raw):
            spec = parse_sweep(raw, path)
            _print(f"{path}: ok (sweep '{spec.name}': {spec.size()}"
                   + (f", Optuna {spec.search.samples} samples" if spec.search else "") + ")")
        else:
            cell_from_dict(raw, source=path)
            _print(f"{path}: ok (cell)")
    return 0


def _results_text(frame, storage_note: str = "") -> str:
    """The status counts and, when analysis/ is importable, the paper's tables, as markdown text."""
    from seal_ray.results import status_counts

    counts = status_counts(frame)
    text = "cells x seeds: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + storage_note
    try:
        from analysis.report import render_tables_markdown
    except ImportError:
        return text
    return text + "\n" + render_tables_markdown(frame)


def _print_results(frame, storage_note: str = "") -> None:
    _print(_results_text(frame, storage_note))


SWEEP_EXIT_CODES = {"done": 0, "failed": 1, "interrupted": 3}


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from seal_ray.sweep import run_sweep
    from seal_ray.sweep_spec import load_sweep
    from seal_ray.tracking import check_available

    spec = load_sweep(args.file, name=args.name, seeds=args.seeds)
    check_available(args.tracking_uri or spec.tracking_uri)
    frame = run_sweep(spec, args.storage, address=args.address, max_concurrent=args.max_concurrent, log=_print,
                      tracking_uri=args.tracking_uri)
    return _sweep_summary(frame, args.storage)


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    from seal_ray.sweep import resume_sweep
    from seal_ray.tracking import check_available

    check_available(args.tracking_uri)
    frame = resume_sweep(args.name, args.storage, address=args.address, max_concurrent=args.max_concurrent, log=_print,
                         tracking_uri=args.tracking_uri)
    return _sweep_summary(frame, args.storage)


def _sweep_summary(frame, storage: str) -> int:
    """The tables, one line saying how the sweep ended, and its exit code (SWEEP_EXIT_CODES)."""
    from seal_ray.results import UNFINISHED, status_counts, sweep_outcome

    _print_results(frame)
    outcome, counts, total = sweep_outcome(frame), status_counts(frame), len(frame)
    name = frame["sweep"].iloc[0] if total else "?"
    if outcome == "done":
        line = f"all {total} cells x seeds done"
    elif outcome == "failed":
        line = f"some failed: {counts['failed']} of {total} cells x seeds failed (the error column says why), the others are done"
    else:
        unfinished = sum(counts[s] for s in UNFINISHED)
        line = (f"interrupted: {unfinished} of {total} cells x seeds did not finish; run "
                f"`seal-ray sweep resume {name} --storage {storage}` to finish them")
    _print(f"sweep '{name}': {line}")
    return SWEEP_EXIT_CODES[outcome]


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    from seal_ray.results import UNFINISHED, load, load_curves, load_prompts, resolve, status_counts

    frame = load(args.sweep, args.storage)
    counts = status_counts(frame)
    partial = sum(counts[s] for s in UNFINISHED) > 0
    path = write_report(frame, Path(args.out), title=f"SEAL ablations: sweep '{frame['sweep'].iloc[0]}'", partial=partial,
                        prompts=load_prompts(args.sweep, args.storage),
                        curves=load_curves(args.sweep, args.storage, stages=["selector"]))
    _print(f"report written to {path} ({len(frame)} cells x seeds from {resolve(args.sweep, args.storage).uri}"
           + ("; PARTIAL: the sweep is not finished" if partial else "") + ")")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from seal_ray.plan import plan_sweep

    plan_sweep(args.file, storage=args.storage, source=args.source, detect=args.detect, seeds=args.seeds, log=_print)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from seal_ray.results import load, load_curves, resolve

    frame = (load_curves(args.sweep, args.storage) if args.curves
             else load(args.sweep, args.storage, include_retired=args.include_retired))
    if args.format == "table" and args.curves:
        text = frame.to_string(index=False, max_rows=40)
    elif args.format == "table":
        text = _results_text(frame, f" ({resolve(args.sweep, args.storage).uri})")
    elif args.format == "csv":
        text = frame.to_csv(index=False)
    elif args.format == "json":
        text = frame.to_json(orient="records", indent=1) + "\n"
    elif not args.out:
        raise UserError("--format parquet needs --out FILE (parquet is binary: it is never printed)")
    else:
        text = None
    if not args.out:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        frame.to_parquet(out)
    else:
        out.write_text(text)
    _print(f"{len(frame)} rows written to {out} ({args.format})")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from seal_ray.results import resolve
    from seal_ray.tracking import experiment_name, upload

    folder = resolve(args.sweep, args.storage)
    count = upload(args.tracking_uri, folder, log=_print)
    _print(f"MLflow: {count} cell x seed runs logged to {args.tracking_uri} (experiment "
           f"{experiment_name(Path(folder.uri).name)}); runs already there were kept")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from seal_ray.selector import has_logit, keep_count, length_warning, load_selector, top_p_of_file

    if not 0 < args.topp <= 1:
        raise UserError(f"--topp: {args.topp} is out of range; it must be in (0, 1]")
    if (args.dataset is None) != (args.tokenizer is None):
        raise UserError("--dataset and --tokenizer go together: the reference's filter needs both to map positions to row ids")
    if (args.input_key is None) != (args.output_key is None):
        raise UserError("--input-key and --output-key go together (the reference reads both or neither)")
    logits = load_selector(args.selector)
    if args.dataset is None:
        if args.dataset_size is not None:
            warning = length_warning(logits.numel(), args.dataset_size)
            if warning:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
        row_ids, what = list(range(logits.numel())), "positions"
    else:
        row_ids, what = _reference_row_ids(args, logits.numel()), "row ids"
    kept = top_p_of_file(logits, row_ids, args.topp)
    n_logits = int(has_logit(logits).sum())  # entries of rows with no logit (NO_LOGIT) take no part
    Path(args.out).write_text(json.dumps(kept))
    _print(f"kept {len(kept)} of {n_logits} {what} (k = floor({args.topp} * {n_logits}) = "
           f"{keep_count(n_logits, args.topp)}); written to {args.out}")
    if what == "positions":
        _print("these are positions in the selector file, not row ids: a selector written by the reference code has "
               "no logit for the rows its filter dropped; give --dataset and --tokenizer to map them to row ids")
    return 0


def _reference_row_ids(args: argparse.Namespace, n_logits: int) -> list[int]:
    """Row id of each logit: the reference's filter rebuilt over --dataset with --tokenizer (official_selector.py)."""
    from seal_ray.config import RecipeSource
    from seal_ray.official_selector import check_mapping, load_reference_tokenizer, reference_mapping
    from seal_ray.recipes import read_records

    _, records = read_records(RecipeSource(path=args.dataset, limit=args.max_samples), "--dataset")
    tokenizer = load_reference_tokenizer(args.tokenizer, "--tokenizer")
    mapping = reference_mapping(records, tokenizer, max_len=args.max_len, template=args.template,
                                input_key=args.input_key, output_key=args.output_key)
    _print(mapping.describe())
    check_mapping(mapping, n_logits, args.selector, "the dataset file and its first --max-samples rows, the tokenizer, "
                  "--max-len and --template of the run that wrote it")
    return mapping.ids


def cmd_doctor(args: argparse.Namespace) -> int:
    from seal_ray.doctor import run_doctor

    return run_doctor(args.address, args.storage, args.sweep, out=_print)


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seal-ray", description="SEAL ablation studies as distributed sweeps.")
    parser.add_argument("--version", action="version", version=f"seal-ray {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run one cell end to end in this process (no Ray)")
    run.add_argument("config", nargs="?", help="cell YAML file (default: the built-in defaults)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. selector.activation=sigmoid")
    run.add_argument("--out", required=True, help="folder for metrics.json and the artifacts")
    run.add_argument("--storage", help="stage cache root shared between runs (default: --out)")
    run.set_defaults(handler=cmd_run)

    cal = commands.add_parser("calibrate", help="check the mini world on its reference points (base, SFT, oracle)")
    cal.add_argument("config", nargs="?", help="cell YAML file (default: the built-in defaults)")
    cal.add_argument("--set", action="append", metavar="KEY=VALUE")
    cal.add_argument("--seeds", type=int, default=8, help="how many seeds (default 8)")
    cal.add_argument("--first-seed", type=int, default=100,
                     help="seeds FIRST..FIRST+N-1 (default 100: disjoint from the demo's seeds 0..N-1)")
    cal.add_argument("--storage", default="runs/calibration", help="stage cache root (default runs/calibration)")
    cal.add_argument("--jobs", type=int, default=1, help="seeds measured at once, one process each (default 1)")
    cal.add_argument("--base-seeds", metavar="K,K,...",
                     help="repeat the calibration on these draws of the base model (base.seed), e.g. 0,1,2; it "
                          "passes only if every draw passes (default: the config's base.seed alone)")
    cal.add_argument("--markdown", help="also write the table to this markdown file")
    cal.add_argument("--quiet", action="store_true", help="print only the table")
    cal.set_defaults(handler=cmd_calibrate)

    val = commands.add_parser("validate", help="check cell or sweep files without running anything")
    val.add_argument("files", nargs="+")
    val.set_defaults(handler=cmd_validate)

    sweep = commands.add_parser("sweep", help="run or resume a sweep with Ray Tune")
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")
    srun = sweep_commands.add_parser(
        "run", help="run the missing cells of a sweep file (exit 0: all done, 1: some failed, 3: interrupted)")
    srun.add_argument("file", help="sweep YAML file (see sweeps/)")
    srun.add_argument("--name", help="sweep name (default: the file's name field)")
    for p in (srun,):
        p.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the file's seeds")
    sres = sweep_commands.add_parser("resume", help="finish a sweep after a crash or kill")
    sres.add_argument("name")
    for p in (srun, sres):
        p.add_argument("--storage", default="runs", help="storage root: stage cache and results (default runs)")
        p.add_argument("--address", help="Ray address: auto, or HOST:PORT (default: start a local Ray)")
        p.add_argument("--max-concurrent", type=int, help="cells running at once (default: what the cluster can place)")
        p.add_argument("--tracking-uri", metavar="URI",
                       help="log the sweep to MLflow: http://HOST:PORT, or a folder such as ./mlruns (no server); "
                            "default: the sweep file's tracking_uri, else off")
    srun.set_defaults(handler=cmd_sweep_run)
    sres.set_defaults(handler=cmd_sweep_resume)

    res = commands.add_parser("results", help="the results DataFrame of a sweep (no Ray needed)")
    res.add_argument("sweep", help="sweep name (under --storage) or the sweep's folder")
    res.add_argument("--storage", default="runs")
    res.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    res.add_argument("--out", help="write to this file instead of printing (any format; parquet needs it)")
    res.add_argument("--curves", action="store_true",
                     help="the training curves instead: one row per (cell, seed, stage, step, metric, value)")
    res.add_argument("--include-retired", action="store_true",
                     help="also the cells x seeds an earlier version of the sweep file asked for (status retired)")
    res.set_defaults(handler=cmd_results)

    rep = commands.add_parser("report", help="write report.md, tables.tex, tables.csv and plots for a sweep")
    rep.add_argument("sweep", help="sweep name (under --storage) or the sweep's folder")
    rep.add_argument("--storage", default="runs")
    rep.add_argument("--out", required=True, help="output folder")
    rep.set_defaults(handler=cmd_report)

    trk = commands.add_parser("track", help="log a sweep from storage to MLflow (e.g. after the server was down)")
    trk.add_argument("sweep", help="sweep name (under --storage) or the sweep's folder")
    trk.add_argument("--storage", default="runs")
    trk.add_argument("--tracking-uri", metavar="URI", required=True, help="http://HOST:PORT, or a folder such as ./mlruns")
    trk.set_defaults(handler=cmd_track)
    pln = commands.add_parser("plan", help="before a run: cells x seeds, estimated compute, seeds needed to detect a difference")
    pln.add_argument("file", help="sweep YAML file (see sweeps/)")
    pln.add_argument("--storage", default="runs", help="stage cache (timings) and earlier results (default runs)")
    pln.add_argument("--from", dest="source", metavar="RESULTS",
                     help="earlier results to take the noise from: a sweep name under --storage or a sweep folder "
                          "(default: this sweep's own earlier results)")
    pln.add_argument("--detect", type=float, metavar="D", help="target difference in points of a rate, e.g. 5")
    pln.add_argument("--seeds", type=int, help="plan seeds 0..N-1 instead of the file's seeds")
    pln.set_defaults(handler=cmd_plan)

    from seal_ray.official_selector import REFERENCE_MAX_LEN, REFERENCE_TEMPLATE
    doc = commands.add_parser("doctor", help="what a sweep here would meet: Ray, nodes, storage on every node, GPUs, disk")
    doc.add_argument("sweep", nargs="?", help="also check this sweep file: its cells fit, its judge's API key is set")
    doc.add_argument("--address", help="Ray address: auto, or HOST:PORT (default: start a local Ray)")
    doc.add_argument("--storage", default="runs", help="storage root the sweep would use (default runs)")
    doc.set_defaults(handler=cmd_doctor)

    sel = commands.add_parser("select", help="keep the top-p ids of a selector file (official format)")
    sel.add_argument("--selector", required=True, help="1-D float32 tensor file written with torch.save")
    sel.add_argument("--topp", type=float, required=True, help="share of ids kept, in (0, 1]")
    sel.add_argument("--out", required=True, help="JSON list of kept ids")
    sel.add_argument("--dataset-size", type=int, help="rows of the dataset; warns when the selector's length differs")
    ref = sel.add_argument_group("row ids", "map the file's positions to row ids (a row's index in --dataset) by "
                                 "rebuilding the reference code's filter: over-long prompts and empty rows have no logit")
    ref.add_argument("--dataset", help="the dataset the selector was trained on: jsonl/json/csv/parquet file or hub id")
    ref.add_argument("--tokenizer", help="the tokenizer it used: a local directory or a hub id (AutoTokenizer)")
    ref.add_argument("--max-len", type=int, default=REFERENCE_MAX_LEN,
                     help=f"the run's --max_len (default {REFERENCE_MAX_LEN}, the Llama-3 script)")
    ref.add_argument("--template", default=REFERENCE_TEMPLATE, help="the run's --input_template (default %(default)r)")
    ref.add_argument("--max-samples", type=int, help="the run's --max_samples: only the first N rows (default all)")
    ref.add_argument("--input-key", help="the run's --input_key (a prompt column); default: the schema decides")
    ref.add_argument("--output-key", help="the run's --output_key (a response column)")
    sel.set_defaults(handler=cmd_select)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        kernel_env()  # a bad SEAL_RAY_KERNELS is refused before anything runs
        return args.handler(args)
    except UserError as err:
        print(f"seal-ray: error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except StageFailed as err:
        print(f"seal-ray: the cell failed: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("seal-ray: interrupted; completed stages are kept and will be reused", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
