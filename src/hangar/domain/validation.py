"""Field checks that collect every problem of a request and report them the way AWS does.

AWS answers a bad request with one ValidationException whose message reads
``2 validation errors detected: Value 'x' at 'a.b' failed to satisfy constraint: Member must ...`` and whose
``fieldList`` names each field. ``Checker`` gathers problems while a parser walks the JSON body, then
``raise_if_any()`` raises that one error. Parsers keep going after a problem so the caller sees them all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hangar.domain.errors import FieldProblem, ValidationError

# Longest value quoted back in a message; keeps echoes of hostile input short.
_ECHO_LIMIT = 64


def _echo(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."


def cannot_parse(message: str) -> ValidationError:
    return ValidationError(message, reason="CannotParse")


def parse_json_object(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a CannotParse ValidationException."""
    if not body.strip():
        if allow_empty:
            return {}
        raise cannot_parse("The request body is empty; a JSON object was expected")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise cannot_parse(f"The request body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise cannot_parse("The request body must be a JSON object")
    return document


class Checker:
    """Collects field problems; each check returns the value when it is fine, None when it is not."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []
        self._messages: list[str] = []

    def fail(self, path: str, constraint: str, value: Any = None, *, quote: bool = True) -> None:
        if quote and value is not None:
            text = f"Value '{_echo(value)}' at '{path}' failed to satisfy constraint: {constraint}"
        else:
            text = f"Value at '{path}' failed to satisfy constraint: {constraint}"
        self._messages.append(text)
        self.problems.append(FieldProblem(name=path, message=constraint))

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        count = len(self.problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(
            f"{count} validation {noun} detected: " + "; ".join(self._messages),
            reason="FieldValidationFailed",
            fields=list(self.problems),
        )

    # -- presence ---------------------------------------------------------------------------------------------
    def required(self, document: dict[str, Any], key: str, path: str) -> Any:
        value = document.get(key)
        if value is None:
            self.fail_null(path)
        return value

    def fail_null(self, path: str) -> None:
        self._messages.append(f"Value null at '{path}' failed to satisfy constraint: Member must not be null")
        self.problems.append(FieldProblem(name=path, message="Member must not be null"))

    # -- scalars ----------------------------------------------------------------------------------------------
    def string(
        self,
        value: Any,
        path: str,
        *,
        min_len: int = 0,
        max_len: int | None = None,
        pattern: str | None = None,
        hint: str = "",
    ) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(path, "Member must be a string", value)
            return None
        ok = True
        if len(value) < min_len:
            self.fail(path, f"Member must have length greater than or equal to {min_len}", value)
            ok = False
        if max_len is not None and len(value) > max_len:
            self.fail(path, f"Member must have length less than or equal to {max_len}", value)
            ok = False
        if ok and pattern is not None and re.fullmatch(pattern, value) is None:
            self.fail(path, f"Member must satisfy regular expression pattern: {pattern}{hint}", value)
            ok = False
        return value if ok else None

    def integer(self, value: Any, path: str, *, minimum: int, maximum: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "Member must be an integer", value)
            return None
        if value < minimum:
            self.fail(path, f"Member must have value greater than or equal to {minimum}", value)
            return None
        if value > maximum:
            self.fail(path, f"Member must have value less than or equal to {maximum}", value)
            return None
        return int(value)  # an int (not a bool) by the check above

    def boolean(self, value: Any, path: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(path, "Member must be a boolean", value)
            return None
        return value

    def enum(self, value: Any, path: str, allowed: tuple[str, ...]) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value not in allowed:
            self.fail(path, f"Member must satisfy enum value set: [{', '.join(allowed)}]", value)
            return None
        return value

    # -- containers -------------------------------------------------------------------------------------------
    def struct(self, value: Any, path: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(path, "Member must be a structure (JSON object)", value)
            return None
        return value

    def array(self, value: Any, path: str, *, min_len: int = 0, max_len: int | None = None) -> list[Any] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(path, "Member must be a list", value)
            return None
        if len(value) < min_len:
            self.fail(path, f"Member must have length greater than or equal to {min_len}", quote=False)
            return None
        if max_len is not None and len(value) > max_len:
            self.fail(path, f"Member must have length less than or equal to {max_len}", quote=False)
            return None
        return value

    def mapping(self, value: Any, path: str, *, max_len: int) -> dict[str, Any] | None:
        found = self.struct(value, path)
        if found is not None and len(found) > max_len:
            self.fail(path, f"Member must have length less than or equal to {max_len}", quote=False)
            return None
        return found

    def union(self, value: dict[str, Any], path: str, members: tuple[str, ...]) -> str | None:
        """Exactly one member of a union structure must be set; returns its name."""
        present = [m for m in members if value.get(m) is not None]
        if len(present) != 1:
            self.fail(path, f"Member must set exactly one of: {', '.join(members)}", quote=False)
            return None
        return present[0]

    def strings(
        self, value: Any, path: str, *, min_items: int, max_items: int | None, **string_rules: Any
    ) -> list[str] | None:
        """A list of strings, each checked with ``string`` rules."""
        items = self.array(value, path, min_len=min_items, max_len=max_items)
        if items is None:
            return None
        checked: list[str] = []
        for index, item in enumerate(items):
            member_path = f"{path}.{index + 1}.member"
            if item is None:
                self.fail_null(member_path)
                continue
            found = self.string(item, member_path, **string_rules)
            if found is not None:
                checked.append(found)
        return checked if len(checked) == len(items) else None
