"""The notebooks of notebooks/: committed without outputs, and run top to bottom on a real smoke sweep.

The slow tests run ``rnnlab-sweep table4_architectures --scale smoke`` once (as a subprocess) on a subset of the
study's models: the same groups, settings and directory layout (sequence, reach, and the image group's arms), three
sequence models instead of 27, plus one job that fails (``model.hidden_size=0``) so that failed runs are on show. Set
``RNNLAB_NOTEBOOK_SWEEP`` to an existing sweep directory (e.g. a full ``table4_architectures`` smoke sweep) to run the
notebooks on that instead.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("explore_sweep.ipynb", "rebuild_table4.ipynb")
STUDY = "table4_architectures"


# ---------------------------------------------------------------------------------------------------------------
# Committed state (fast)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    """Outputs are stripped before commit: no outputs, no execution counts (the diff shows code, not results)."""
    raw = json.loads((NOTEBOOKS / name).read_text())
    code = [cell for cell in raw["cells"] if cell["cell_type"] == "code"]
    assert code
    for index, cell in enumerate(code):
        assert cell["outputs"] == [], f"{name}: code cell {index} has outputs"
        assert cell["execution_count"] is None, f"{name}: code cell {index} has an execution count"
    assert "widgets" not in raw["metadata"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_and_reads_the_sweep_dir_from_the_environment(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    assert 'SWEEP_DIR = os.environ.get("RNNLAB_SWEEP_DIR", SWEEP_DIR)' in first.source
    assert nb.metadata.kernelspec.name == "python3"


# ---------------------------------------------------------------------------------------------------------------
# Executed on a sweep (slow)


@pytest.fixture(scope="module")
def sweep_dir(smoke_sweep) -> Path:
    """The table4_architectures smoke sweep of this test session (shared with tests/test_sweep.py), or the directory
    in RNNLAB_NOTEBOOK_SWEEP."""
    given = os.environ.get("RNNLAB_NOTEBOOK_SWEEP")
    return Path(given).resolve() if given else smoke_sweep(STUDY)


def execute(name: str, sweep: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel (cwd notebooks/, as Jupyter opens it); a cell that raises fails here."""
    monkeypatch.setenv("RNNLAB_SWEEP_DIR", str(sweep))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    return nb


def outputs(nb: nbformat.NotebookNode, kind: str) -> list[str]:
    """Every output of one MIME type (``text/markdown``, ``image/png``) or every stream text (``stream``)."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.output_type == "stream":
                found.append(out.text)
            elif kind in out.get("data", {}):
                found.append(out.data[kind])
    return found


def records_on_disk(sweep: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(sweep.rglob("summary.json"))]


def sequence_run(records: list[dict], model: str) -> dict:
    """The completed run of ``model`` in the sweep's sequence group (the adding problem)."""
    return next(r for r in records if r["model"] == model and r["status"] == "completed"
                and r["config"]["name"] == f"{STUDY}-sequence")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_explore_sweep_counts_every_run_and_draws(sweep_dir, monkeypatch):
    records = records_on_disk(sweep_dir)
    nb = execute("explore_sweep.ipynb", sweep_dir, monkeypatch)
    printed = "".join(outputs(nb, "stream"))
    counted = re.search(r"^(\d+) runs: (\d+) completed, (\d+) diverged, (\d+) failed$", printed, re.M)
    statuses = [record["status"] for record in records]
    assert counted and [int(n) for n in counted.groups()] == [
        len(records), statuses.count("completed"), statuses.count("diverged"), statuses.count("failed")]
    assert len(records) > 0
    markdown = "\n".join(outputs(nb, "text/markdown"))
    for record in records:
        if record["status"] != "completed":  # listed with its error, not hidden
            assert (record.get("error") or "").replace("|", "\\|") in markdown
    arms = next(text for text in outputs(nb, "text/markdown") if text.startswith(f"### {STUDY}-sequence\n"))
    for model in ("elman", "lstm", "gru"):  # the sequence group's arms: parameter count and test/mse of one seed
        run = sequence_run(records, model)
        row = next(line for line in arms.splitlines() if line.startswith(f"| model={model} |"))
        assert f"| {run['params']:,} | {run['metrics']['test/mse']:.4g} | 1 |" in row
    assert len(outputs(nb, "image/png")) == 2  # learning curves, metric vs parameters


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_rebuild_table4_shows_the_table_with_measured_rows(sweep_dir, monkeypatch):
    records = records_on_disk(sweep_dir)
    nb = execute("rebuild_table4.ipynb", sweep_dir, monkeypatch)
    markdown = outputs(nb, "text/markdown")
    table = next(text for text in markdown if text.startswith("### Table IV"))
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| ")}
    for name, model in (("LSTM", "lstm"), ("GRU", "gru"), ("Simple RNN (Elman)", "elman")):
        assert "completed)" in rows[name]  # measured: "N (k completed) [study]" in the runs column
        assert f"{sequence_run(records, model)['params']:,} [{STUDY}-sequence]" in rows[name]
    assert "completed)" in rows["Memory networks"]  # the memory group's runs fill its row
    claims = "\n".join(markdown)
    assert f"| GRU has fewer parameters than LSTM | survey | {STUDY}-sequence | supported |" in claims
    assert outputs(nb, "image/png")  # the studies' figures
