"""The one exception type for bad user input, and how a command line reports it."""

import os
import sys
from contextlib import contextmanager

EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """Bad configuration or input data, reported to the user as one line (exit code 2).

    ``key`` names the offending config key relative to its group (``hidden_size``); the caller that knows the group
    (``model``) prefixes it, so the user reads ``model.hidden_size``. ``full=True`` says ``key`` is already the key the
    user types (``training``: a refusal of the learning rule, raised while the task is built), so no caller prefixes
    it.
    """

    def __init__(self, key: str, message: str, *, full: bool = False):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
        self.full = full

    def with_prefix(self, prefix: str) -> "ConfigError":
        return self if self.full else ConfigError(f"{prefix}.{self.key}", self.message)


def require_positive(**values: int | float) -> None:
    """Raise ConfigError for the first value that is not > 0."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(key, f"must be a positive number, got {value!r}")


def require_choice(key: str, value: object, allowed: tuple | list) -> None:
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; allowed: {', '.join(map(str, allowed))}")


@contextmanager
def exit_on_bad_input(program: str):
    """A ConfigError raised inside becomes one line on stderr, ``<program>: error: <key>: <message>``, and exit
    status 2; under ``HYDRA_FULL_ERROR`` it propagates with its traceback."""
    try:
        yield
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR"):
            raise
        print(f"{program}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
