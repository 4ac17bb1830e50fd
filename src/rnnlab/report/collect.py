"""Run records into studies and arms, under identical conditions (CONTRIBUTING.md, 'The run record' and
'Identical conditions').

A *study* is every record with the same experiment name (``config.name``; the W&B group). Its *swept keys* are the
Hydra overrides whose values differ between its runs, less ``seed``; an *arm* is one combination of their values, and
its runs are the seeds. Everything else in the resolved config must be equal across the study (less paths, output
directories and logger ids), or :func:`check_conditions` names what differs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rnnlab.record import RecordError, read_records
from rnnlab.training.rules import RULE_OF_TARGET

log = logging.getLogger(__name__)

SEED_KEYS = ("seed",)
# Config settings that name where a run wrote things or how it was labelled, never how it was trained.
IGNORED_ROOTS = ("paths", "hydra", "logger", "name", "tags")
IGNORED_LEAF = re.compile(r"(^|_)(dir|dirpath|path|ckpt_path|save_dir|output_dir)$")
# How a run is resumed and displayed, never what it computes (a study resumed by a later rnnlab may differ here).
BOOKKEEPING = ("resume", "callbacks.resume_point", "callbacks.model_checkpoint.save_last",
               "callbacks.rich_progress_bar",
               "callbacks.rich_model_summary")
# Record fields that stand in for overrides in records written before ``overrides`` was recorded.
NAME_FIELDS = ("model", "data", "optimizer")
LENGTH_KEYS = ("length", "seq_len", "delay")  # data settings that set how far back a task must remember
SIZE_KEYS = ("hidden_size", "param_budget")  # model settings that set the network size N
GRAD_RATIO = re.compile(r"(?:^|/)grad_ratio_(\d+)$")


class MixedConditionsError(ValueError):
    """Runs whose non-swept settings differ were asked to share one table."""


def load_records(directories: Iterable[Path], skipped: list[RecordError] | None = None) -> list[dict[str, Any]]:
    """Every good ``summary.json`` under the directories (sweep dirs or single run dirs), each read once. A bad one
    (truncated, not an object, keys missing or mistyped: ``rnnlab.record.SCHEMA``) is skipped with a warning naming
    the file, and appended to ``skipped`` when given."""
    records: dict[str, dict] = {}
    bad: dict[str, RecordError] = {}
    for directory in directories:
        errors: list[RecordError] = []
        for record in read_records(Path(directory), errors):
            records.setdefault(str(Path(record["run_dir"]).resolve()), record)
        for error in errors:
            bad.setdefault(str(error.path.resolve()), error)
    if skipped is not None:
        skipped.extend(bad.values())
    return list(records.values())


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def parse_override(text: str) -> tuple[str, str] | None:
    """``"+data.seq_len=50"`` -> ``("data.seq_len", "50")``; deletions (``~key``) carry no setting."""
    if text.startswith("~") or "=" not in text:
        return None
    key, value = text.split("=", 1)
    return key.lstrip("+"), value


def overrides_of(record: dict) -> dict[str, str]:
    """The command-line settings of a run: its recorded Hydra overrides, or its config names for old records."""
    if isinstance(record.get("overrides"), list):
        pairs = [parse_override(str(item)) for item in record["overrides"]]
        return dict(pair for pair in pairs if pair is not None)
    return {name: str(record[name]) for name in NAME_FIELDS if record.get(name) is not None}


def study_name(record: dict) -> str:
    config = record.get("config") or {}
    return str(config.get("name") or record.get("name") or "default")


def config_value(record: dict, key: str, default: Any = None) -> Any:
    """A dotted key of the resolved config (``"model.hidden_size"``)."""
    node: Any = record.get("config") or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def metric(record: dict, name: str) -> float | None:
    value = (record.get("metrics") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def timing(record: dict, name: str) -> float | None:
    value = (record.get("timing") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def memory(record: dict, name: str) -> float | None:
    value = (record.get("memory") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def number(record: dict, name: str) -> float | None:
    value = record.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def hidden_size(record: dict) -> float | None:
    return number(record, "hidden_size") or _as_float(config_value(record, "model.hidden_size"))


def training_rule(record: dict) -> str:
    """The learning rule of the ``training`` group's file (its settings class, ``config.training._target_``), or
    ``config.training.rule`` in records written before the group had a file per rule; records without either
    trained with the default loop, full BPTT."""
    training = config_value(record, "training")
    if isinstance(training, dict) and training.get("_target_"):
        return RULE_OF_TARGET.get(training["_target_"], str(training["_target_"]))
    if isinstance(training, dict) and training.get("rule"):
        return str(training["rule"])
    return str(training) if isinstance(training, str) else "bptt"


def grad_ratios(record: dict) -> dict[int, float]:
    """``{lag: ratio}`` from ``grad_ratio_<lag>`` keys in ``metrics`` or at the top level of the record."""
    ratios: dict[int, float] = {}
    for source in (record, record.get("metrics") or {}):
        for key, value in source.items():
            found = GRAD_RATIO.search(str(key))
            if found and isinstance(value, (int, float)) and math.isfinite(value):
                ratios[int(found.group(1))] = float(value)
    return ratios


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Arm:
    """One combination of swept settings; ``runs`` are its seeds (every status)."""

    settings: dict[str, str]
    runs: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Its settings, less the keys its configs do not have (``-``: ``training.k1`` under ``training=bptt``)."""
        return " ".join(f"{key}={value}" for key, value in self.settings.items() if value != "-") or "(all runs)"

    @property
    def completed(self) -> list[dict]:
        return [run for run in self.runs if run.get("status") == "completed"]

    def count(self, status: str) -> int:
        return sum(run.get("status") == status for run in self.runs)

    def values(self, get) -> list[float]:
        """``get(record)`` over completed runs, Nones and non-finite values dropped."""
        out = []
        for run in self.completed:
            value = get(run)
            if value is not None and math.isfinite(value):
                out.append(float(value))
        return out


@dataclass
class Difference:
    """A non-swept config key whose value differs between runs of one study."""

    key: str
    runs_by_value: dict[str, list[str]]

    def describe(self, limit: int = 2) -> str:
        parts = []
        for value, runs in self.runs_by_value.items():
            shown = ", ".join(runs[:limit]) + (f" +{len(runs) - limit} more" if len(runs) > limit else "")
            parts.append(f"{value} ({shown})")
        return f"{self.key} = " + " vs ".join(parts)


@dataclass
class Study:
    name: str
    records: list[dict]
    swept: list[str]
    arms: list[Arm]
    conditions: dict[str, Any]
    differences: list[Difference] = field(default_factory=list)

    def swept_matching(self, config_keys: Iterable[str]) -> set[str]:
        """Swept override keys that set any of ``config_keys`` (a group override sets all its keys)."""
        keys = list(config_keys)
        return {s for s in self.swept if any(k == s or k.startswith(s + ".") for k in keys)}


def group_studies(records: list[dict]) -> list[Study]:
    """Records into studies by name (first-seen order), each split into arms by its swept settings."""
    by_name: dict[str, list[dict]] = {}
    for record in records:
        by_name.setdefault(study_name(record), []).append(record)
    return [make_study(name, runs) for name, runs in by_name.items()]


def make_study(name: str, records: list[dict]) -> Study:
    settings = [overrides_of(record) for record in records]
    keys = list(dict.fromkeys(key for s in settings for key in s if key not in SEED_KEYS))
    for record, setting in zip(records, settings):  # a key one run set and another left at its default
        for key in keys:
            setting.setdefault(key, default_setting(record, key))
    swept = [key for key in keys if len({s[key] for s in settings}) > 1]
    arms: dict[tuple, Arm] = {}
    for record, setting in zip(records, settings):
        arm_settings = {key: setting[key] for key in swept}
        arms.setdefault(tuple(arm_settings.items()), Arm(arm_settings)).runs.append(record)
    ordered = sorted(arms.values(), key=lambda arm: tuple(_sort_key(v) for v in arm.settings.values()))
    study = Study(name, records, swept, ordered, conditions={})
    study.conditions, study.differences = compare_conditions(study)
    return study


def default_setting(record: dict, key: str) -> str:
    """What a key not overridden in this run was: its config name (``model``) or its resolved config value."""
    if key in NAME_FIELDS and record.get(key) is not None:
        return str(record[key])
    value = config_value(record, key, default=None)
    if isinstance(value, dict) or value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# records written before the task received the groups as arguments copied them into the task config (task.training,
# task.regularizers, task.head): task key -> the top-level group it copied, where the names differ
TASK_COPIES = {"regularizers": "regularizer"}


def ignored(key: str, swept: Iterable[str]) -> bool:
    """Keys left out of the identical-conditions check: swept, seeds, paths, output dirs, logger ids, resuming and
    display (``BOOKKEEPING``), and the task and init groups when the model is swept (a family may select its
    LightningModule and its initialisation: conf/model/esn.yaml, irnn.yaml)."""
    root = key.split(".", 1)[0]
    if root in IGNORED_ROOTS or key in SEED_KEYS or IGNORED_LEAF.search(key.rsplit(".", 1)[-1]):
        return True
    if any(key == kept or key.startswith(kept + ".") for kept in BOOKKEEPING):
        return True
    if root in ("task", "init") and "model" in swept:
        return True
    if root == "task":
        # an older record's task config copied top-level groups (training, regularizers, head)
        head, _, rest = key.partition(".")[2].partition(".")
        key = ".".join(part for part in (TASK_COPIES.get(head, head), rest) if part)
    return any(key == s or key.startswith(s + ".") for s in swept)


def compare_conditions(study: Study) -> tuple[dict[str, Any], list[Difference]]:
    """The shared non-swept settings of a study, and each key on which its runs differ."""
    with_config = [r for r in study.records if isinstance(r.get("config"), dict)]
    flats = [flatten(r["config"]) for r in with_config]
    keys = sorted({key for flat in flats for key in flat if not ignored(key, study.swept)})
    shared: dict[str, Any] = {}
    differences = []
    for key in keys:
        runs_by_value: dict[str, list[str]] = {}
        for record, flat in zip(with_config, flats):
            shown = json.dumps(condition_value(key, flat[key]), default=str) if key in flat else "<unset>"
            runs_by_value.setdefault(shown, []).append(record["run_dir"])
        if len(runs_by_value) > 1:
            differences.append(Difference(key, runs_by_value))
        else:
            shared[key] = flats[0].get(key)
    return shared, differences


def condition_value(key: str, value: Any) -> Any:
    """A setting as the identical-conditions check sees it: which GPU a parallel job got (``trainer.devices: [1]``,
    train.py's placement) is not a condition, how many it used is."""
    if key == "trainer.devices" and isinstance(value, list):
        return len(value)
    return value


def check_conditions(studies: list[Study]) -> None:
    """Raise MixedConditionsError (one message naming each differing key and its values) for the first mixed study."""
    for study in studies:
        if study.differences:
            listed = "; ".join(d.describe() for d in study.differences[:6])
            more = f"; and {len(study.differences) - 6} more keys" if len(study.differences) > 6 else ""
            raise MixedConditionsError(
                f"study '{study.name}' mixes runs whose non-swept settings differ: {listed}{more}. "
                "Run them as one sweep, give them different names (name=...), or pass --allow-mixed"
            )


def wandb_records(project: str, group: str | None) -> list[dict[str, Any]]:
    """Run records rebuilt from a W&B project (``entity/project``), optionally one group; needs a W&B login."""
    import wandb  # lazily: only this path needs it

    filters = {"group": group} if group else None
    records = []
    for run in wandb.Api().runs(project, filters=filters):
        record = record_from_wandb(dict(run.config), dict(run.summary), run.state, run.name, run.group)
        if record is not None:
            record["run_dir"] = f"wandb:{project}/{run.id}"
            records.append(record)
    return records


TIMING_KEYS = ("train_s", "step_ms", "cpu_ms_per_step", "threads", "tokens_per_s", "tokens_per_step", "flops_per_step",
               "flops_per_token")
WANDB_STATES = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed"}


def nested_config(config: dict) -> dict:
    """A W&B run's config as a run record holds it: the dotted keys ``rnnlab.loggers.wandb_config`` writes nested
    again, less the group choices beside them (``model: lstm``; the record keeps those in its own fields). A nested
    config (runs before that) is returned as it is."""
    dotted = [key for key in config if "." in key]
    groups = {key.split(".", 1)[0] for key in dotted}
    nested = {key: value for key, value in config.items() if "." not in key and key not in groups}
    for key in dotted:
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = config[key]
    return nested


def record_from_wandb(config: dict, summary: dict, state: str, name: str | None, group: str | None) -> dict | None:
    """A run record from a W&B run's config, summary and state. The summary holds the run record less its config
    (``rnnlab.loggers.finish_wandb_run``); in older runs the run name holds the overrides
    (``${hydra:job.override_dirname}``). Runs still going return None."""
    status = summary.get("status") or WANDB_STATES.get(state)
    if status is None:
        log.warning("skipping W&B run %s in state %s", name, state)
        return None
    metrics = {}
    for key, value in summary.items():
        if "/" in key and isinstance(value, (int, float)) and not key.endswith("_step"):
            metrics[key.removesuffix("_epoch")] = float(value)
    overrides = summary.get("overrides")  # the run record's, in the summary since rnnlab.loggers.finish_wandb_run
    if not isinstance(overrides, list):
        overrides = [item.replace("\\,", ",") for item in re.split(r"(?<!\\),", name or "") if "=" in item]
    config = nested_config(config)
    if group and "name" not in config:
        config["name"] = group
    timing = summary.get("timing") if isinstance(summary.get("timing"), dict) else {
        key: summary[key] for key in TIMING_KEYS if key in summary
    }
    record = {
        "status": status,
        "error": summary.get("error"),
        "seed": config.get("seed"),
        "params": summary.get("params"),
        "hidden_size": summary.get("hidden_size"),
        "metrics": metrics,
        "timing": timing,
        "peak_memory_mb": summary.get("peak_memory_mb"),
        "memory": summary.get("memory") if isinstance(summary.get("memory"), dict) else {},
        "config": config,
        "overrides": overrides,
    }
    names = dict(parse_override(item) for item in overrides if parse_override(item))
    for field_name in NAME_FIELDS:
        record[field_name] = summary.get(field_name) or names.get(field_name)
    record.update({k: v for k, v in summary.items() if GRAD_RATIO.search(str(k))})
    return record
