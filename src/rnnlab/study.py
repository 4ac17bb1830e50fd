"""Study files, ``sweeps/<study>.yaml``: what every arm of a comparison shares and what is swept (CONTRIBUTING.md,
'Identical conditions' and 'Add a study'). ``rnnlab-sweep`` runs them; ``rnnlab-report`` reads their baselines:

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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rnnlab.conf_dir import CONF_DIR

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
