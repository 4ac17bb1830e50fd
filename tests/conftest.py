"""Shared test helpers: train in this process from composed configs, or run the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
QUIET = ["callbacks=minimal", "logger=csv"]


def compose_config(tmp_path: Path, overrides: list[str]):
    """The composed config rnnlab-train would run, with its Hydra config set as in a real run in ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(PRIMARY_CONFIG, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def train_in_process(tmp_path: Path, *overrides: str) -> dict:
    """Run ``rnnlab.train.train`` on the composed config; returns the run record (also in tmp_path/summary.json)."""
    from rnnlab.train import train

    cfg = compose_config(tmp_path, [*QUIET, *overrides])
    with open_dict(cfg):
        del cfg["hydra"]
    return train(cfg)


def run_cli(
    tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 600, program: str = "rnnlab-train"
) -> subprocess.CompletedProcess:
    """Run ``rnnlab-train`` (or ``program``) as a user would, writing under tmp_path; stdout's last line is the run
    directory."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), **(env or {})}
    full_env.pop("WANDB_SERVICE", None)  # its own wandb-core service, not this test process's
    command = [str(Path(sys.executable).parent / program), *args]  # a real script: DDP re-launches argv[0]
    return subprocess.run(command, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)


def read_record(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture
def one_thread():
    """One torch thread for the test: many tiny ops (step-by-step loops, small batches) are latency-bound, and on a
    shared 2-core machine a second thread's synchronisation costs up to a hundredfold the work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """``smoke_sweep(study)``: run ``rnnlab-sweep <study> --scale smoke`` once per test session (tests of the studies
    and the notebooks share it) and return its directory ``.../sweeps/<study>/smoke``."""
    made: dict[str, Path] = {}

    def run(study: str) -> Path:
        if study not in made:
            if not SHARED_DATA.is_dir() and os.environ.get("CI") == "true":
                pytest.fail(f"{SHARED_DATA} is missing; CI needs ../shared/data beside the checkout")
            tmp = tmp_path_factory.mktemp(f"smoke_{study}")
            env = {**os.environ, "RNNLAB_DATA": str(SHARED_DATA), "RNNLAB_CACHE": str(tmp / "cache"),
                   "WANDB_MODE": "offline"}
            command = [str(Path(sys.executable).parent / "rnnlab-sweep"), study, "--scale", "smoke",
                       "--log-dir", str(tmp)]
            done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
            assert done.returncode == 0, done.stderr[-3000:]
            made[study] = tmp / "sweeps" / study / "smoke"
        return made[study]

    return run


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; missing data fails (not skips) under CI=true (CONTRIBUTING.md, 'Conventions')."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing; CI needs ../shared/data beside the checkout")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
