"""``rnnlab-train``: the Hydra app. It only instantiates and wires (CONTRIBUTING.md, 'One path for every run') and
writes the run record."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from rnnlab.config_check import CONF_DIR, PRIMARY_CONFIG, check_command_line
from rnnlab.errors import ConfigError
from rnnlab.loggers import ResumableCSVLogger, finish_loggers
from rnnlab.models.budget import count_parameters, hidden_size_for_budget
from rnnlab.models.compile import compile_cells
from rnnlab.models.initialization import initialize
from rnnlab.record import RECORD_NAME, RecordError, RunStats, environment, one_line, read_record, write_record
from rnnlab.run_dir import claim, locked
from rnnlab.tasks.heads import head_wiring
from rnnlab.training import TrainingSettings
from rnnlab.training.resume import ResumePoint

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
FINAL_STATUSES = ("completed", "diverged")  # a re-run sweep skips jobs that reached these; it re-runs failed ones
INIT_KEYS = ("init", "init_std", "forget_bias")  # model keys read by rnnlab.models.initialization, not the model


def ensure_dir(path: str) -> str:
    """``${ensure_dir:...}`` in a config: the folder, created if missing (for files a sweeper opens before any job)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


OmegaConf.register_new_resolver("ensure_dir", ensure_dir, replace=True)


def cli() -> None:
    """Console entry point: check the whole command line (every job of a sweep), then run it with Hydra."""
    if not os.environ.get("HYDRA_FULL_ERROR"):
        try:
            check_command_line(sys.argv[1:])
        except ConfigError as error:
            print(f"rnnlab-train: error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    main()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=PRIMARY_CONFIG)
def main(cfg: DictConfig) -> float | None:
    try:
        record = train(cfg)
    except ConfigError as error:  # the run directory refused this run (busy, or another config's): nothing written
        if os.environ.get("HYDRA_FULL_ERROR"):
            raise
        print(f"rnnlab-train: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    if HydraConfig.get().mode == RunMode.RUN and record["status"] == "failed":
        print(f"rnnlab-train: error: {record['error']}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT if record.get("error_kind") == "config" else 1)
    return record["metrics"].get(cfg.optimized_metric)


@contextmanager
def config_errors(group: str):
    """Re-raise a ConfigError from building ``group`` with the key's full name (``model.hidden_size``)."""
    try:
        yield
    except ConfigError as error:
        raise error.with_prefix(group) from None
    except hydra.errors.InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__.with_prefix(group) from None
        raise


def make(cfg: DictConfig, group: str, **kwargs):
    with config_errors(group):
        return instantiate(OmegaConf.select(cfg, group), **kwargs)


def build_model(model_cfg: DictConfig, input_size: int, output_size: int, compile: bool = False):
    """The model for the data's dims; ``param_budget`` (when set) picks its hidden_size, ``init`` its weights, and
    ``compile`` compiles its hand-written cells' steps (``rnnlab.models.compile``)."""
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        budget = model_cfg.pop("param_budget", None)
        init = {key: model_cfg.pop(key) for key in INIT_KEYS if key in model_cfg}
    factory = partial(instantiate(model_cfg), input_size=input_size, output_size=output_size)
    if budget is not None:
        factory = partial(factory, hidden_size=hidden_size_for_budget(factory, budget))
    model = initialize(factory(), **init)
    if compile:
        compile_cells(model)
    return model


def build(cfg: DictConfig, stats: RunStats):
    """Instantiate datamodule, model, task module, loggers and trainer, in that order."""
    check_task_honours_training(cfg)
    datamodule = make(cfg, "data")
    with config_errors("data"):
        datamodule.prepare_data()
        datamodule.setup("fit")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # token-id inputs are embedded by the task first, so the model reads embedding_dim features per step
    input_size = cfg.task.embedding_dim if datamodule.task.input_vocab else datamodule.input_size
    with config_errors("task"):  # a factorised output layer (task.head) reads features and owns the word embedding
        output_size, head_data = head_wiring(cfg.task, datamodule)
    with config_errors("model"):
        model = build_model(cfg.model, input_size, output_size, compile=cfg.compile)
    scheduler = make(cfg, "scheduler") if cfg.get("scheduler") else None
    optimizer = make(cfg, "optimizer")
    with config_errors("task"):
        module = instantiate(cfg.task)(
            model=model, spec=datamodule.task, optimizer=optimizer, scheduler=scheduler, **head_data
        )
    loggers = [make(cfg, "logger." + name) for name, node in (cfg.get("logger") or {}).items() if node]
    callbacks = [make(cfg, "callbacks." + name) for name, node in (cfg.get("callbacks") or {}).items() if node]
    trainer = make(cfg, "trainer", logger=loggers or False, callbacks=[*callbacks, stats])
    return datamodule, module, loggers, trainer


def check_task_honours_training(cfg: DictConfig) -> None:
    """``training.*`` is valid, and a learning rule other than BPTT or a regularizer goes to a task that honours it
    (esn fits its readout in closed form)."""
    training = cfg.get("training")
    with config_errors("training"):
        TrainingSettings.from_config(training)
    task = HydraConfig.get().runtime.choices.get("task")
    if training is not None and training.rule != "bptt" and "training" not in cfg.task:
        raise ConfigError("training.rule", f"is {training.rule}, but task {task} trains its own way; use bptt")
    if cfg.get("regularizer") and "regularizers" not in cfg.task:
        raise ConfigError("regularizer", f"task {task} trains its own way and takes no regularizers; use none")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one job and return its record (also written to ``summary.json`` in the Hydra output directory).

    The run directory is locked and claimed for this config (``rnnlab.run_dir``); with ``resume=true`` a job whose
    directory holds a completed or diverged record is skipped, and an interrupted one resumes from its resume point.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    key = "hydra.sweep.dir" if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir"
    share_machine_between_parallel_jobs(cfg)
    with run_dir_lock(run_dir, key):
        run_dir = claim(run_dir, resolved_config(cfg), list(hydra_cfg.overrides.task), cfg.resume, key)
        if run_dir != Path(hydra_cfg.runtime.output_dir):
            with open_dict(cfg):
                cfg.paths.output_dir = str(run_dir)
        earlier = read_earlier_record(run_dir)
        if earlier is not None and earlier["status"] in FINAL_STATUSES:
            log.info("run already %s, skipped (resume=true): %s", earlier["status"], run_dir / RECORD_NAME)
            print(run_dir, flush=True)
            return earlier
        return run(cfg, run_dir, start_over=earlier is not None)


def run(cfg: DictConfig, run_dir: Path, start_over: bool) -> dict[str, Any]:
    """Build, fit, validate and test; record the outcome, whatever it is."""
    stats = RunStats()
    record: dict[str, Any] = new_record(cfg)
    loggers: list = []
    failure: Exception | None = None
    try:
        datamodule, module, loggers, trainer = build(cfg, stats)
        head = getattr(module, "output_head", None)  # a factorised softmax owns the output word embedding
        record["params"] = count_parameters(module.model) + (count_parameters(head) if head is not None else 0)
        record["hidden_size"] = getattr(module.model, "hidden_size", None)
        record["data_note"] = getattr(datamodule, "note", None)  # e.g. a substitute split used offline
        record["baseline"] = datamodule.task.baseline  # the data's trivial-predictor loss, for "solved" verdicts
        record["metric"] = f"test/{datamodule.task.metric}"  # the data's primary metric (reports rank by it)
        record["resumed_from"] = resume_point(trainer, start_over)
        for logger in loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.continues = record["resumed_from"] is not None
            logger.log_hyperparams(record["config"])
        trainer.fit(module, datamodule=datamodule, ckpt_path=record["resumed_from"])
        record.update(steps=trainer.global_step, epochs=trainer.current_epoch)
        record["metrics"] = epoch_metrics(trainer)
        if module.diverged:
            record.update(status="diverged", error=f"non-finite training loss at step {module.diverged_at_step}")
        else:
            best = best_checkpoint(trainer)
            trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            trainer.test(module, datamodule=datamodule, ckpt_path=best)
            record["metrics"].update(epoch_metrics(trainer))
            record["checkpoint"] = best
            record.update(status="completed", error=None)
    except ConfigError as error:
        failure = error
        record.update(status="failed", error=str(error), error_kind="config")
        log.error("%s", error)
    except Exception as error:  # a failed job is recorded, and a sweep goes on with the next one
        failure = error
        record.update(status="failed", error=one_line(error))
        log.exception("run failed: %s", record["error"])
    finally:
        finish_loggers(loggers, record["status"])
    record.update(timing=stats.timing(), memory=stats.memory())
    record["peak_memory_mb"] = record["memory"]["process_peak_mb"]
    if rank_zero_only.rank == 0:
        path = write_record(run_dir, record)
        log.info("run %s: %s", record["status"], path)
        print(run_dir, flush=True)
    if failure is not None and os.environ.get("HYDRA_FULL_ERROR") and HydraConfig.get().mode == RunMode.RUN:
        raise failure
    return record


@contextmanager
def run_dir_lock(run_dir: Path, key: str):
    """The run directory's lock, taken by the process that writes the record (rank 0 of a distributed run)."""
    if rank_zero_only.rank != 0:
        yield
        return
    with locked(run_dir, key):
        yield


def new_record(cfg: DictConfig) -> dict[str, Any]:
    choices = HydraConfig.get().runtime.choices
    return {
        "status": "failed",
        "error": "interrupted before the run finished",
        "model": choices.get("model"),
        "data": choices.get("data"),
        "optimizer": choices.get("optimizer"),
        "regularizers": sorted(cfg.get("regularizer") or {}),
        "seed": cfg.seed,
        "params": None,
        "steps": 0,
        "epochs": 0,
        "metrics": {},
        "timing": {},
        "peak_memory_mb": None,
        "memory": {},
        "env": environment(),
        "config": resolved_config(cfg),
        "overrides": list(HydraConfig.get().overrides.task),
    }


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve is itself the failure; keep the raw config
        return OmegaConf.to_container(cfg, resolve=False)


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The epoch-level ``<stage>/<name>`` metrics Lightning holds now, as plain floats."""
    metrics = {}
    for name, value in trainer.callback_metrics.items():
        if name.endswith("_step"):
            continue
        metrics[name.removesuffix("_epoch")] = float(value)
    return metrics


def read_earlier_record(run_dir: Path) -> dict[str, Any] | None:
    """The record an earlier attempt of this run (same config: ``rnnlab.run_dir.claim``) left in ``run_dir``, or None.

    A record that will be replaced (a failed attempt) or cannot be read is kept aside as ``summary.attempt-N.json``.
    """
    path = run_dir / RECORD_NAME
    if not path.exists():
        return None
    try:
        earlier = read_record(path)
    except RecordError as error:
        log.warning("%s; kept as %s, the run goes on", error, keep_aside(path).name)
        return None
    if earlier["status"] not in FINAL_STATUSES:
        keep_aside(path)
    return earlier


def keep_aside(path: Path) -> Path:
    aside = next(path.with_name(f"summary.attempt-{n}.json") for n in range(1, 10**6)
                 if not path.with_name(f"summary.attempt-{n}.json").exists())
    path.replace(aside)
    return aside


def resume_point(trainer: pl.Trainer, start_over: bool) -> str | None:
    """The resume point (``last.ckpt`` of ``rnnlab.training.resume.ResumePoint``) an interrupted attempt left, or
    None to start afresh. After a failed attempt (``start_over``) the checkpoints are removed and the run starts afresh.
    """
    points = [callback for callback in trainer.callbacks if isinstance(callback, ResumePoint)]
    if not points:
        return None
    if start_over:
        shutil.rmtree(points[0].dirpath, ignore_errors=True)
        return None
    if points[0].path.exists():
        log.info("resuming the interrupted run from %s", points[0].path)
        return str(points[0].path)
    return None


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint chosen by validation (the first ModelCheckpoint's best), which test metrics are computed on."""
    chosen = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    return (chosen.best_model_path or None) if chosen is not None else None


def share_machine_between_parallel_jobs(cfg: DictConfig) -> None:
    """Parallel joblib jobs share the machine: each of N jobs gets cpu_count / N torch threads, and on a machine
    with G GPUs job i trains on GPU i mod G (the Trainer's ``devices``; a reused worker process cannot change
    CUDA_VISIBLE_DEVICES once CUDA is initialised)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in str(hydra_cfg.launcher.get("_target_", "")):
        return
    cpus = os.cpu_count() or 1
    n_jobs = int(hydra_cfg.launcher.n_jobs)
    n_jobs = cpus + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib's convention: -1 is every CPU
    torch.set_num_threads(max(1, cpus // max(1, n_jobs)))
    gpus = torch.cuda.device_count()
    if gpus > 1 and cfg.trainer.accelerator in ("gpu", "cuda", "auto") and cfg.trainer.devices == 1:
        with open_dict(cfg):
            cfg.trainer.devices = [hydra_cfg.job.num % gpus]
