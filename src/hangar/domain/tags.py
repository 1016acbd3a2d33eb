"""Tags on runtimes and endpoints (TagResource, UntagResource, ListTagsForResource and ``tags`` on create)."""

from __future__ import annotations

from typing import Any

from hangar.domain.validation import Checker

TAG_TEXT = r"[a-zA-Z0-9\s._:/=+@-]*"
MAX_TAGS = 50


def check_tags(check: Checker, value: Any, path: str = "tags") -> dict[str, str] | None:
    tags = check.mapping(value, path, max_len=MAX_TAGS)
    if tags is None:
        return None
    out: dict[str, str] = {}
    for key, item in tags.items():
        key_ok = check.string(key, f"{path}.key", min_len=1, max_len=128, pattern=TAG_TEXT)
        if item is None:
            check.fail_null(f"{path}.{key}")
            continue
        value_ok = check.string(item, f"{path}.{key}", min_len=0, max_len=256, pattern=TAG_TEXT)
        if key_ok is not None and value_ok is not None:
            out[key] = value_ok
    return out


def check_tag_keys(check: Checker, keys: list[str], path: str = "tagKeys") -> list[str] | None:
    if not keys:
        check.fail(path, "Member must have length greater than or equal to 1", quote=False)
        return None
    if len(keys) > MAX_TAGS:
        check.fail(path, f"Member must have length less than or equal to {MAX_TAGS}", quote=False)
        return None
    return check.strings(keys, path, min_items=1, max_items=MAX_TAGS, min_len=1, max_len=128, pattern=TAG_TEXT)
