"""Check a command line before Hydra runs it, so bad input fails at start with one line (CONTRIBUTING.md,
'Conventions').

Every job of a sweep is composed up front: an unknown config name, an unknown key, or a value whose type differs
from the key's default raises :class:`ConfigError` naming the key and what is allowed. Then
:func:`rnnlab.config_values.check_values` judges the composed config, before any data is read.
"""

from __future__ import annotations

import copy
import functools

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from rnnlab.conf_dir import CONF_DIR, PRIMARY_CONFIG, group_options
from rnnlab.config_values import VALUE_RULES, _raw_node, check_values
from rnnlab.errors import ConfigError


def check_command_line(argv: list[str], config_name: str = PRIMARY_CONFIG) -> None:
    """Raise ConfigError for the first bad override of any job the command line would run (``config_name``: the
    app's primary config in conf/, ``train`` or ``eval``)."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return  # Hydra answers these itself
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(args.overrides)
    except OverrideParseException as error:
        raise ConfigError("command line", str(error).splitlines()[0]) from None
    if any(o.key_or_group.startswith("hydra/sweeper") for o in overrides):
        jobs = [[o.input_line for o in overrides if not o.is_sweep_override()]]  # the sweeper owns the search space
    elif args.multirun:
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    else:
        jobs = [args.overrides]
    composed_choices.cache_clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            check_job(job, parser, config_name)


def check_job(job: list[str], parser: OverridesParser, config_name: str = PRIMARY_CONFIG) -> None:
    overrides = parser.parse_overrides(job)
    for override in overrides:
        group = override.key_or_group
        if is_group(group) and not override.is_delete():
            options = group_options(group)
            if group.startswith("hydra/"):  # also the plugins' configs (joblib, submitit_slurm)
                options = sorted(GlobalHydra.instance().config_loader().get_group_options(group))
            for choice in override_choices(override):
                if choice not in options:
                    raise ConfigError(group, f"unknown config {choice!r}; allowed: {', '.join(options)}")
    try:
        defaults = composed_choices(config_name, tuple(o.input_line for o in overrides if is_group(o.key_or_group)))
        for override in overrides:
            if is_key_override(override) and override.input_line[0] not in "+~":
                check_key_exists(defaults, override.key_or_group)
        config = with_key_overrides(defaults, [o for o in overrides if not is_group(o.key_or_group)])
    except (ConfigCompositionException, MissingConfigException) as error:
        raise ConfigError(_failing_key(job, error), str(error).strip().splitlines()[0]) from None
    for override in overrides:
        key = override.key_or_group
        if is_key_override(override) and not getattr(VALUE_RULES.get(key), "judges_type", False):
            check_type(key, _raw_node(defaults, key), _raw_node(config, key))
    remote = any(o.key_or_group == "hydra/launcher" and "slurm" in str(o.value()) for o in overrides)
    check_values(config, typed={o.key_or_group for o in overrides}, gpu_here=not remote)


@functools.lru_cache(maxsize=256)
def composed_choices(config_name: str, group_overrides: tuple[str, ...]) -> DictConfig:
    """The config of these group choices before any key override, Hydra's node included: composed once for all
    the jobs of a sweep that differ only in keys (``seed``, ``model.hidden_size``). Read-only: copy to change it."""
    config = compose(config_name, overrides=list(group_overrides), return_hydra_config=True)
    OmegaConf.set_readonly(config, True)
    return config


def with_key_overrides(composed: DictConfig, overrides: list[Override]) -> DictConfig:
    """What ``compose(config_name, overrides=job)`` returns for the job whose group choices gave ``composed`` and
    whose key overrides are ``overrides``: Hydra's own step after composing the defaults list (struct mode, then
    ``ConfigLoaderImpl._apply_overrides_to_config``), without the Hydra node (tests/test_config_check.py checks the
    equality on whole sweeps)."""
    config = copy.deepcopy(composed)
    OmegaConf.set_readonly(config, False)
    OmegaConf.set_struct(config, True)
    ConfigLoaderImpl._apply_overrides_to_config(overrides, config)
    with read_write(config), open_dict(config):
        del config["hydra"]
    return config


def is_key_override(override: Override) -> bool:
    key = override.key_or_group
    return not (is_group(key) or key.startswith("hydra.") or override.is_delete())


def check_key_exists(config: DictConfig, key: str) -> None:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key) if parent_key else config
    if isinstance(parent, DictConfig) and leaf not in parent.keys():  # keys(): a required ``???`` one too
        allowed = ", ".join(
            f"{parent_key}.{k}" if parent_key else str(k) for k in parent.keys() if not str(k).startswith("_")
        )
        having = [f"{parent_key}={name}" for name in options_with_key(parent_key, leaf)]
        hint = f"{' or '.join(having)} has it" if having else f"add a new key with +{key}=..."
        raise ConfigError(key, f"unknown key; allowed: {allowed or 'none'} ({hint})")


def options_with_key(group: str, key: str) -> list[str]:
    """The options of config group ``group`` (a folder of conf/) whose file sets ``key``: ``training.k1`` on
    ``training=bptt`` is a key of ``training=tbptt``."""
    if not group or not (CONF_DIR / group).is_dir():
        return []
    return [name for name in group_options(group) if key in OmegaConf.load(CONF_DIR / group / f"{name}.yaml")]


def is_group(name: str) -> bool:
    return name.startswith("hydra/") or (CONF_DIR / name).is_dir()


def override_choices(override: Override) -> list[str]:
    value = override.value()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in values if v is not None]


def check_type(key: str, default, value) -> None:
    """The override must have the type of the key's default (ints are accepted where floats are)."""
    if default is None or value is None or default._is_interpolation() or default._is_missing():
        return
    expected, got = default._value(), value._value()
    if got is None or isinstance(default, (DictConfig, ListConfig)):
        return
    for kind, accepted in ((bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,))):
        if isinstance(expected, kind):
            if not isinstance(got, accepted) or (kind is not bool and isinstance(got, bool)):
                raise ConfigError(key, f"expected {kind.__name__} (like the default {expected!r}), got {got!r}")
            return


def _failing_key(job: list[str], error: Exception) -> str:
    text = str(error)
    for line in job:
        key = line.split("=", 1)[0].lstrip("+~")
        if f"'{key}'" in text:
            return key
    return "config"
