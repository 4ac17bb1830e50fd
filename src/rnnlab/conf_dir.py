"""Where the configs are: the Hydra config directory, the primary config's name, and the options of a config group."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = next(
    path for path in (Path(__file__).parent / "conf", Path(__file__).parents[2] / "conf") if path.is_dir()
).resolve()
PRIMARY_CONFIG = "train"


def group_options(group: str) -> list[str]:
    """The config names of a group: the Hydra config group is the registry (CONTRIBUTING.md, 'Conventions')."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
