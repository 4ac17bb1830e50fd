"""``rnnlab-bench --heads``: a well-formed table at tiny sizes, hand-counted head parameters, bad arguments refused.

Speed-ups are not asserted (they depend on the machine and its load); the bench output reports them.
"""

from __future__ import annotations

import json

import pytest

from rnnlab.bench.cli import main
from rnnlab.bench.heads import HeadSizes, run_head_bench, zipf_counts
from rnnlab.tasks.heads import HEADS, frequency_classes

TINY_ARGS = ["--batch", "2", "--length", "3", "--hidden", "8", "--vocab", "50", "--samples", "4"]
TINY = HeadSizes(batch=2, length=3, hidden=8, vocab=50, samples=4)


def head_params(name: str, hidden: int, vocab: int) -> int:
    """Weights and biases: full, nce, sampled one [V, H] output embedding; class_softmax adds the class layer
    [C', H] (C' classes of frequency binning, sqrt(V) asked); hierarchical_softmax one vector per inner node (V - 1)."""
    if name == "hierarchical_softmax":
        return (vocab - 1) * (hidden + 1)
    if name == "class_softmax":
        classes = int(frequency_classes(zipf_counts(vocab) + 1, round(vocab**0.5)).max()) + 1
        return (classes + vocab) * (hidden + 1)
    return vocab * (hidden + 1)


def test_heads_cli_writes_one_timed_row_per_head(tmp_path, capsys):
    path = tmp_path / "heads.json"
    status = main(["--heads", *TINY_ARGS, "--repeats", "2", "--warmup", "1", "--json", str(path)])
    assert status == 0
    result = json.loads(path.read_text())
    assert result["sizes"] == vars(TINY)
    assert result["repeats"] == 2 and result["warmup"] == 1 and result["clock"] == "wall"
    rows = {row["head"]: row for row in result["rows"]}
    assert list(rows) == list(HEADS)  # the full softmax first: every other head is paired with it
    for name, row in rows.items():
        assert row["status"] == "ok" and row["reason"] is None, row
        assert row["params"] == head_params(name, 8, 50)
        for kind in ("head", "step", "eval"):
            assert row[f"{kind}_ms"] > 0 and row[f"{kind}_speedup"] > 0
    assert all(rows["full"][f"{kind}_speedup"] == 1.0 for kind in ("head", "step", "eval"))
    printed = capsys.readouterr().out
    assert "vocabulary 50" in printed and "x faster" in printed
    assert all(name in printed for name in HEADS)


def test_heads_subset_keeps_the_full_softmax_reference():
    rows = run_head_bench(TINY, ["nce"], repeats=1, warmup=0)
    assert [row.head for row in rows] == ["full", "nce"]
    assert rows[1].head_speedup > 0


def test_zipf_counts():
    assert zipf_counts(4).tolist() == [1_000_000, 500_000, 333_333, 250_000]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vocab", "1"], "--vocab must be at least 2"),
        (["--samples", "0"], "--samples must be positive"),
        (["--names", "full,softmax"], "unknown head softmax"),
    ],
)
def test_heads_cli_refuses_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--heads", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
