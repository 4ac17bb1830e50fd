"""``rnnlab-sweep STUDY --scale smoke|laptop|full``: run one study of ``sweeps/`` and build its report.

The study file's format is in ``rnnlab.study``. Each group runs as ``rnnlab-train -m`` (:func:`group_commands`)
in a fixed directory, so running the same command again skips completed jobs and resumes interrupted ones
(``resume: true``). Every group runs, whatever an earlier group's fate; then ``rnnlab-report`` writes
``<log_dir>/sweeps/<study>/<scale>/report``, and the jobs that diverged or failed are listed last on stderr. The exit
code is non-zero when a job failed (1) or a group could not run (2: bad input).
"""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rnnlab.errors import EXIT_BAD_INPUT
from rnnlab.launch import outcome_lines, record_stamps, records_since
from rnnlab.study import SCALES, SweepError, group_commands, load_study

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5  # how often the sweep counts its jobs' records


def wandb_sweeps(study: str, scale: str = "laptop") -> dict[str, dict[str, Any]]:
    """W&B sweep configs (``wandb sweep <file>``) of the study's groups that have no arms, by group name: a grid over
    the swept keys whose agent runs ``rnnlab-train`` with the group's fixed overrides and ``logger=wandb``. A group of
    arms (several overrides per arm) has no W&B grid form; run it with ``rnnlab-sweep``."""
    configs = {}
    for group, command in group_commands(study, scale, Path("logs")).items():
        if "/" in group:  # group/arm
            continue
        overrides = command[3:]  # after -m, name=..., hydra.sweep.dir=...
        swept = [o for o in overrides if len(swept_values(o)) > 1]
        configs[group] = {
            "program": "rnnlab-train",
            "name": f"{study}-{group}",
            "method": "grid",
            "metric": {"name": "val/loss", "goal": "minimize"},
            "parameters": {
                key: {"values": [yaml_scalar(v) for v in values.split(",")]}
                for key, _, values in (o.partition("=") for o in swept)
            },
            "command": ["${env}", "rnnlab-train", "${args_no_hyphens}", command[1], "logger=wandb",
                        *[o for o in overrides if o not in swept]],
        }
    return configs


def swept_values(override: str) -> list[str]:
    """The values of a ``key=v1,v2`` sweep override (one for a plain override; a ``[list]`` is one value)."""
    value = override.partition("=")[2]
    return value.split(",") if "," in value and not value.startswith("[") else [value]


def job_total(commands: dict[str, list[str]]) -> int:
    """The jobs of a study's ``rnnlab-train -m`` commands: each command's swept lists multiplied."""
    return sum(math.prod(len(swept_values(arg)) for arg in command[3:]) for command in commands.values())


class Progress:
    """``job k of N`` across a study's groups, with the time left at the pace so far."""

    def __init__(self, total: int, started: float):
        self.total, self.started, self.done = total, started, 0

    def update(self, done: int, now: float) -> str | None:
        """The line to print when ``done`` jobs have finished by ``now`` (None when nothing changed)."""
        if done == self.done:
            return None
        self.done = done
        elapsed = now - self.started
        left = elapsed / done * (self.total - done)
        return f"job {done} of {self.total} done, {clock(elapsed)} so far, about {clock(left)} left"


def clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def yaml_scalar(text: str) -> Any:
    return OmegaConf.create({"v": text}).v if not text.lstrip("-").isdigit() else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnlab-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="a file of sweeps/ without .yaml")
    p.add_argument("--scale", default="smoke", choices=SCALES, help="smoke (CI, minutes), laptop (hours), full (GPUs)")
    p.add_argument("--log-dir", type=Path, default=Path("logs"), help="where sweeps/<study>/<scale>/ is written")
    p.add_argument("--dry-run", action="store_true", help="print the rnnlab-train commands, run nothing")
    p.add_argument("--no-report", action="store_true", help="run the sweeps only")
    p.add_argument("overrides", nargs="*", help="more overrides for every job, e.g. hydra/launcher=local")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_intermixed_args(argv)
    try:
        commands = group_commands(args.study, args.scale, args.log_dir.resolve(), args.overrides)
    except SweepError as error:
        print(f"rnnlab-sweep: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    train = str(Path(sys.executable).parent / "rnnlab-train")
    if args.dry_run:
        for group, command in commands.items():
            log.info("%s: rnnlab-train %s", group, " ".join(command))
        return 0
    exits: dict[str, int] = {}
    ran: list[dict[str, Any]] = []
    progress = Progress(job_total(commands), time.monotonic())
    for group, command in commands.items():  # every group runs, whatever an earlier one's fate
        log.info("%s: rnnlab-train %s", group, " ".join(command))
        sweep_dir = Path(next(arg for arg in command if arg.startswith("hydra.sweep.dir=")).partition("=")[2])
        stamps = record_stamps(sweep_dir)
        process = subprocess.Popen([train, *command])
        while process.poll() is None:  # jobs of this run that wrote their record (skipped ones are not counted)
            time.sleep(PROGRESS_EVERY_S)
            line = progress.update(len(ran) + len(records_since(sweep_dir, stamps)), time.monotonic())
            if line:
                log.info("rnnlab-sweep: %s", line)
        exits[group] = process.returncode
        ran += records_since(sweep_dir, stamps)
    code = 0
    if not args.no_report:
        from rnnlab.report.cli import main as report

        root = args.log_dir.resolve() / "sweeps" / args.study / args.scale
        spec = load_study(args.study)
        baseline = ["--baseline", spec["baseline"]] if spec.get("baseline") else []
        code = report([*(str(root / directory) for directory in commands), "--out", str(root / "report"), *baseline])
    return failures(exits, ran) or code


def failures(exits: dict[str, int], ran: list[dict[str, Any]]) -> int:
    """Name the groups that exited non-zero and the jobs that diverged or failed on stderr, failed jobs last; return
    the exit code: the first such group's (1: jobs failed, 2: bad input), or 0."""
    failed = sum(record.get("status") == "failed" for record in ran)
    bad = {group: code for group, code in exits.items() if code != 0}
    lines = outcome_lines(ran)
    if bad or failed:
        groups = ", ".join(f"'{group}' exited {code}" for group, code in bad.items())
        lines.insert(0, f"error: {failed} of {len(ran)} jobs failed" + (f"; groups {groups}" if groups else ""))
    sys.stderr.write("".join(f"rnnlab-sweep: {line}\n" for line in lines))
    return next(iter(bad.values()), 1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
