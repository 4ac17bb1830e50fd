"""``rnnlab-sweep STUDY --scale smoke|laptop|full``: run one study of ``sweeps/`` and build its report.

A study file (``sweeps/<study>.yaml``) fixes what every arm shares and names what is swept (CONTRIBUTING.md,
'Identical conditions' and 'Add a study'):

    description: one line
    baseline: model=lstm              # the arm the report tests the others against (optional)
    groups:                           # one Hydra multirun each; a group's runs form one table of the report
      <group>:
        decides: what decides its claims     # the criterion, lengths, seeds and why the budget suffices (text)
        baseline: model.variant=vanilla      # optional: the group's own baseline (else the file's)
        fixed: [data=adding, optimizer=adam, ...]      # overrides every arm of the group shares
        swept: {model: [elman, lstm], seed: [0, 1, 2]}  # the factors under study (and the seeds)
        arms: {stacked: [model=lstm, model.num_layers=2], ...}  # optional: arms that differ in several overrides,
                                                              # one multirun each (swept keys still apply)
    scales:                           # the budget knob
      smoke:  {fixed: [...], swept: {seed: [0]}, groups: {<group>: {fixed: [...], swept: {...}}}}
      laptop: {...}
      full:   {...}

A scale's ``fixed`` overrides are appended to every group's (later wins) and its ``swept`` lists replace (or add
to) the group's; ``groups`` adjusts single groups the same way. Each group runs as

    rnnlab-train -m name=<study>-<group> hydra.sweep.dir=<log_dir>/sweeps/<study>/<scale>/<group>[/<arm>] \
        <fixed> [<arm overrides>] k=v1,v2 ...

in a fixed directory, so running the same command again skips completed jobs and resumes interrupted ones
(``resume: true``). Every group runs, whatever an earlier group's fate; then ``rnnlab-report`` writes
``<log_dir>/sweeps/<study>/<scale>/report``, and the jobs that diverged or failed are listed last on stderr. The exit
code is non-zero when a job failed (1) or a group could not run (2: bad input).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rnnlab.config_check import CONF_DIR
from rnnlab.launch import outcome_lines, record_stamps, records_since

log = logging.getLogger(__name__)

SWEEPS_DIR = CONF_DIR.parent / "sweeps"
SCALES = ("smoke", "laptop", "full")


class SweepError(ValueError):
    """A study file or command line that cannot run; the message names the file and key."""


def study_names() -> list[str]:
    return sorted(path.stem for path in SWEEPS_DIR.glob("*.yaml"))


def load_study(study: str) -> dict[str, Any]:
    path = SWEEPS_DIR / f"{study}.yaml"
    if not path.is_file():
        raise SweepError(f"no study '{study}' in {SWEEPS_DIR}; studies: {', '.join(study_names())}")
    spec = OmegaConf.to_container(OmegaConf.load(path))
    for key in ("groups", "scales"):
        if not isinstance(spec.get(key), dict) or not spec[key]:
            raise SweepError(f"{path}: '{key}' must be a non-empty mapping")
    unknown = set(spec["scales"]) - set(SCALES)
    if unknown:
        raise SweepError(f"{path}: scales {sorted(unknown)} unknown; allowed: {', '.join(SCALES)}")
    return spec


def group_commands(study: str, scale: str, log_dir: Path, extra: list[str] = ()) -> dict[str, list[str]]:
    """The ``rnnlab-train -m`` argument list of every group of ``study`` at ``scale``, by group name."""
    spec = load_study(study)
    if scale not in spec["scales"]:
        raise SweepError(f"sweeps/{study}.yaml has no scale '{scale}'; it has {', '.join(spec['scales'])}")
    scaled = spec["scales"][scale] or {}
    commands = {}
    for group, body in spec["groups"].items():
        per_group = (scaled.get("groups") or {}).get(group) or {}
        fixed = [*body.get("fixed", []), *scaled.get("fixed", []), *per_group.get("fixed", []), *extra]
        swept = dict(body.get("swept", {}))
        swept.update(scaled.get("swept", {}))
        swept.update(per_group.get("swept", {}))
        arms = {**body.get("arms", {}), **per_group.get("arms", {})} or {None: []}
        for arm, arm_overrides in arms.items():
            sweep_dir = log_dir / "sweeps" / study / scale / group
            commands[group if arm is None else f"{group}/{arm}"] = [
                "-m", f"name={study}-{group}", f"hydra.sweep.dir={sweep_dir if arm is None else sweep_dir / arm}",
                *fixed, *arm_overrides, *(f"{key}={','.join(map(str, values))}" for key, values in swept.items()),
            ]
    return commands


def wandb_sweeps(study: str, scale: str = "laptop") -> dict[str, dict[str, Any]]:
    """W&B sweep configs (``wandb sweep <file>``) of the study's groups that have no arms, by group name: a grid over
    the swept keys whose agent runs ``rnnlab-train`` with the group's fixed overrides and ``logger=wandb``. A group of
    arms (several overrides per arm) has no W&B grid form; run it with ``rnnlab-sweep``."""
    configs = {}
    for group, command in group_commands(study, scale, Path("logs")).items():
        if "/" in group:  # group/arm
            continue
        overrides = command[3:]  # after -m, name=..., hydra.sweep.dir=...
        swept = [o for o in overrides if "," in o.partition("=")[2] and not o.partition("=")[2].startswith("[")]
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
        return 2
    train = str(Path(sys.executable).parent / "rnnlab-train")
    if args.dry_run:
        for group, command in commands.items():
            log.info("%s: rnnlab-train %s", group, " ".join(command))
        return 0
    exits: dict[str, int] = {}
    ran: list[dict[str, Any]] = []
    for group, command in commands.items():  # every group runs, whatever an earlier one's fate
        log.info("%s: rnnlab-train %s", group, " ".join(command))
        sweep_dir = Path(next(arg for arg in command if arg.startswith("hydra.sweep.dir=")).partition("=")[2])
        stamps = record_stamps(sweep_dir)
        exits[group] = subprocess.run([train, *command]).returncode
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
