"""Every setting is documented: docs/configuration.md is generated from Settings and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hangar.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _render() -> str:
    spec = importlib.util.spec_from_file_location("config_docs", ROOT / "scripts" / "config-docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.render()


def test_configuration_page_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == _render(), "run scripts/config-docs.py"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_account_id_must_be_twelve_digits() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        Settings(account_id="1234")
