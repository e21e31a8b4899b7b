"""User-editable variables: the four value types and how typed text becomes a stored value (docs/spec.md "Database: user-editable variables")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

NAME_PATTERN = re.compile(r"[A-Za-z_]\w*\Z")


class ValueType:
    """A user-variable type: its name, help text for the UI, and parsing of typed text."""

    type_name: ClassVar[str]
    description: ClassVar[str]
    examples: ClassVar[list[str]]

    def __str__(self) -> str:
        return self.type_name

    def parse(self, text: str) -> Any:
        """Convert user input to the value to store; raises ValueError with a readable message."""
        raise NotImplementedError

    def from_db_value(self, value: Any) -> Any:
        return value


class BooleanValueType(ValueType):
    type_name = "boolean"
    description = "A yes/no flag, e.g. whether a run is good. Accepts true/false, yes/no or 1/0."
    examples = ["true", "yes", "1", "false", "no", "0"]
    _words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def parse(self, text: str) -> bool:
        try:
            return self._words[text.strip().lower()]
        except KeyError:
            raise ValueError(f"{text!r} is not a boolean: use one of true/false, yes/no, 1/0") from None

    def from_db_value(self, value: Any) -> bool | None:
        return None if value is None else bool(value)


class IntegerValueType(ValueType):
    type_name = "integer"
    description = "A whole number, e.g. a count or a class label."
    examples = ["-7", "0", "10", "34"]

    def parse(self, text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number (examples: -7, 0, 34)") from None


class NumberValueType(ValueType):
    type_name = "number"
    description = "A decimal number, e.g. a measured position or energy."
    examples = ["-34.1e10", "-7.1", "0.0", "3.141592653589793", "85.4E7"]

    def parse(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number (examples: -7.1, 0.0, 85.4E7)") from None


class StringValueType(ValueType):
    type_name = "string"
    description = "Free text, e.g. a sample name or a note."
    examples = ["Broken", "Dark frame", "test_frame"]

    def parse(self, text: str) -> str:
        return text


value_types_by_name: dict[str, ValueType] = {
    t.type_name: t for t in (BooleanValueType(), IntegerValueType(), NumberValueType(), StringValueType())
}


@dataclass
class UserEditableVariable:
    """A column whose values users type in (stored in `variables` with a non-NULL type)."""

    name: str
    title: str
    variable_type: str
    description: str | None = ""
    attributes: str | None = ""

    def check(self) -> None:
        """Raise ValueError naming the problem if this definition can't be stored."""
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise ValueError(f"User variable name {self.name!r} is not valid: use letters, digits and "
                             "underscores, not starting with a digit")
        if self.variable_type not in value_types_by_name:
            raise ValueError(f"User variable {self.name!r} has unknown type {self.variable_type!r}; "
                             f"choose one of {', '.join(value_types_by_name)}")
        if not self.title or not str(self.title).strip():
            raise ValueError(f"User variable {self.name!r} needs a non-empty title")

    def get_type_class(self) -> ValueType:
        return value_types_by_name[self.variable_type]

    def parse(self, text: str | None) -> Any:
        """Typed text → stored value; empty input means 'no value' (None)."""
        if text is None or (isinstance(text, str) and not text.strip()):
            return None
        if not isinstance(text, str):
            text = str(text)
        try:
            return self.get_type_class().parse(text)
        except ValueError as e:
            raise ValueError(f"Invalid value for {self.title!r} ({self.variable_type}): {e}") from None
