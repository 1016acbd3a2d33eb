"""Write docs/configuration.md from the settings object, so the page can never miss a setting.

Run: .venv/bin/python scripts/config-docs.py  (tests/unit/test_configuration_docs.py fails when it is stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hangar.config import Settings  # noqa: E402

HEADER = """# Configuration

Every setting is read from the environment variable `HANGAR_<NAME>`; `hangar serve` flags override a few of them
(`--host`, `--port`, `--data-dir`, `--region`, `--account-id`, `--sandbox`, `--warm-pool`, `--log-level`).
This page is generated from `src/hangar/config.py` by `scripts/config-docs.py`; a test fails when it is stale.

| variable | default | what it does |
|---|---|---|
"""


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `HANGAR_{name.upper()}` | {shown} | {field.description} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    target.write_text(render())
    print(f"wrote {target}")
