"""`make bench` (benchmarks/run_all.py): the figures table is rewritten, the notes below it are kept."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_report_is_rewritten_and_its_notes_are_kept(tmp_path, monkeypatch):
    run_all = _run_all()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "fake.py").write_text('print("RESULT fake_ratio=2.50 target>=2 met")\n')
    (tmp_path / "docs").mkdir()
    notes = run_all.NOTES + ": runs made alone, and what they say)\n\n### a run made alone\n\nwhy it matters\n"
    (tmp_path / "docs" / "benchmarks.md").write_text("# Benchmarks\n\n| old row | stale |\n\n" + notes)
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    monkeypatch.setattr(run_all, "BENCHMARKS", [("fake.py", "a fake benchmark"), ("missing.py", "a missing one")])
    assert run_all.main() == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "| a fake benchmark | `fake_ratio` = 2.50 | target>=2 | met |" in text
    assert "not run: benchmarks/missing.py is missing" in text and "stale" not in text
    assert text.endswith(notes) and text.count(run_all.NOTES) == 1
