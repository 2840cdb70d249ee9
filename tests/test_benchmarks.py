"""benchmarks/run_all: the prose under each table survives a rewrite of docs/benchmarks.md,
and a busy machine does not get to write the docs. (The benchmarks themselves are not tests.)"""

import pytest

from benchmarks import run_all

OLD = """# Benchmarks

Old header, regenerated.

<!-- benchmark: moe -->
## MoE: old title

| case | speed-up |
|------|----------|
| prefill | 2.0 |

(d = 512: what the figures mean, written by hand.)

Second paragraph.

<!-- benchmark: attention -->
## Attention: old title

| T | speed-up |
|---|----------|
| 2048 | 1.0 |
"""


def test_rewrite_replaces_tables_and_keeps_prose():
    assert run_all.sections(OLD) == {
        "moe": "(d = 512: what the figures mean, written by hand.)\n\nSecond paragraph.",
        "attention": "",
    }
    new = run_all.report(
        {
            "moe": "## MoE\n\n| case | speed-up |\n|---|---|\n| prefill | 6.1 |",
            "attention": "## Attention\n\n| T |\n|---|\n| 2048 |",
        },
        ["moe: load average 0.20", "attention: load average 0.30"],
        OLD,
    )
    assert "| prefill | 6.1 |" in new and "| prefill | 2.0 |" not in new
    assert "written by hand.)\n\nSecond paragraph.\n" in new
    assert "Old header" not in new and "- moe: load average 0.20" in new
    assert run_all.sections(new) == run_all.sections(OLD)  # stable over rewrites


def test_busy_machine_does_not_write_the_docs(monkeypatch, tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(OLD)
    monkeypatch.setattr(run_all, "DOC", doc)
    monkeypatch.setattr(run_all, "load_average", lambda: 1.7)
    monkeypatch.setattr(
        run_all,
        "run",
        lambda names: ({n: f"## {n}\n\n| x |\n|---|\n| 1 |" for n in names}, [f"{names[0]}: BUSY"]),
    )
    assert run_all.main([]) == 1
    assert doc.read_text() == OLD
    assert "--allow-busy" in capsys.readouterr().err
    assert run_all.main(["--allow-busy"]) == 0
    assert "| 1 |" in doc.read_text() and "Second paragraph." in doc.read_text()
    with pytest.raises(SystemExit):
        run_all.main(["nonsense"])
