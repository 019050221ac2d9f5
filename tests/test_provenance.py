"""Provenance that survives `ray job submit --working-dir` (no .git): the launcher's commit, the source fingerprint."""

from pathlib import Path

from seal_ray import provenance as prov


def test_the_commit_comes_from_the_checkout_else_the_launcher_else_unknown(monkeypatch):
    monkeypatch.setattr(prov, "checkout_commit", lambda: "abc123")
    monkeypatch.setenv(prov.COMMIT_ENV, "from-launcher")
    assert prov.git_commit() == "abc123"
    monkeypatch.setattr(prov, "checkout_commit", lambda: None)  # an uploaded copy: no .git
    assert prov.git_commit() == "from-launcher" and prov.launch_env() == {prov.COMMIT_ENV: "from-launcher"}
    monkeypatch.delenv(prov.COMMIT_ENV)
    assert prov.git_commit() == "unknown" and prov.launch_env() == {}


def test_every_row_carries_the_fingerprint_and_library_versions_even_without_a_commit(monkeypatch):
    monkeypatch.setattr(prov, "checkout_commit", lambda: None)
    monkeypatch.delenv(prov.COMMIT_ENV, raising=False)
    row = prov.provenance("hash", 0, "cpu", 1)
    assert row["prov/git_commit"] == "unknown"
    assert len(row["prov/source_fingerprint"]) == 16 and row["prov/source_fingerprint"] == prov.fingerprint_of(prov.PACKAGE_DIR)
    assert row["prov/ray"].startswith("2.60") and row["prov/torch"] and row["prov/transformers"] and row["prov/peft"]


def test_the_fingerprint_changes_with_any_source_file_and_ignores_bytecode(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    before = prov.fingerprint_of(package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-311.py").write_text("junk")
    assert prov.fingerprint_of(package) == before
    (package / "sub" / "b.py").write_text("y = 3\n")
    assert prov.fingerprint_of(package) != before
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "sub" / "b.py").rename(package / "b2.py")  # same bytes, another file: another fingerprint
    assert prov.fingerprint_of(Path(package)) != before
