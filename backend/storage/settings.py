"""Database settings (``damnit db-config``) that have a default when unset, and how they are read.

They live in the ``metameta`` table like every other setting; this module is the one place that knows
their defaults and checks their values, for the processing code that obeys them and for
``damnit db-config``, which lists the defaults in effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """A setting holds a value that cannot be used (the message names it and says how to fix it)."""


@dataclass(frozen=True)
class Setting:
    key: str
    default: float | int
    unit: str
    meaning: str
    integer: bool = False

    def parse(self, value: Any) -> float | int:
        """The effective value: the default when unset, else the stored value as a positive number."""
        if value is None or value == "":
            return self.default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise SettingError(
                f"the {self.key} setting is {value!r}, not a positive number of {self.unit}; fix it with "
                f"`damnit db-config --num {self.key} {self.default}` (or remove it with "
                f"`damnit db-config -d {self.key}` to use the default, {self.default} {self.unit})")
        return int(number) if self.integer else number


VARIABLE_TIMEOUT = Setting(
    "variable_timeout", 3600.0, "seconds",
    "longest time one variable may run for one run; a variable over it is stopped and recorded as a "
    "TimeoutError, the run's other variables are kept")
CONTEXT_LOAD_TIMEOUT = Setting(
    "context_load_timeout", 300.0, "seconds",
    "longest time loading the context file (its imports and module-level code) may take")
MAX_VARIABLE_BYTES = Setting(
    "max_variable_bytes", 4 * 1024**3, "bytes",
    "largest value one variable may return (larger values are recorded as a ValueTooLarge error)",
    integer=True)

SETTINGS_WITH_DEFAULTS: tuple[Setting, ...] = (VARIABLE_TIMEOUT, CONTEXT_LOAD_TIMEOUT, MAX_VARIABLE_BYTES)


def effective(settings: Mapping[str, Any], setting: Setting) -> float | int:
    """The value of ``setting`` in a database's ``metameta`` (or its default); SettingError if bad."""
    return setting.parse(settings.get(setting.key))


def find_setting(key: str) -> Setting | None:
    return next((s for s in SETTINGS_WITH_DEFAULTS if s.key == key), None)
