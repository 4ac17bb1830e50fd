"""The ``rnnlab-bench`` console entry point: ``--heads`` runs :mod:`rnnlab.bench.heads`, ``--loop``
:mod:`rnnlab.bench.loop`, anything else the models bench (:mod:`rnnlab.bench.models_cli`). Each mode is imported
only when it runs."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the bench; exit status 1 when a model failed (its row says why; skips and timeouts are not failures),
    2 for bad arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--heads" in argv:  # the output-layer bench
        from rnnlab.bench.heads import main as heads_main

        return heads_main([arg for arg in argv if arg != "--heads"])
    if "--loop" in argv:  # the training loop against a bare PyTorch loop
        from rnnlab.bench.loop import main as loop_main

        return loop_main([arg for arg in argv if arg != "--loop"])
    from rnnlab.bench.models_cli import main as models_main

    return models_main(argv)


if __name__ == "__main__":
    sys.exit(main())
