"""``rnnlab-bench``: speed benchmarks of rnnlab, one command with three modes.

* models (the default): forward+backward speed, parameters and model peak memory of every ``conf/model`` against
  ``nn.LSTM``; the measurement is :mod:`rnnlab.bench.models` (each row's time cap: :mod:`rnnlab.bench.timecap`),
  its command line :mod:`rnnlab.bench.models_cli`;
* ``--heads``: the training step of each output layer against the full softmax, :mod:`rnnlab.bench.heads`;
* ``--loop``: an ``rnnlab-train`` step against a bare PyTorch loop on the same job, :mod:`rnnlab.bench.loop`.

:mod:`rnnlab.bench.cli` is the console entry point (it picks the mode); :mod:`rnnlab.bench.common` holds what the
modes share (clocks, timing, environment, settings and caption, ``--json`` writing, value formatting) and imports
no other module of the package.
"""
