"""The docs users read must not drift from the code: every config field documented, README commands real."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_field_is_documented():
    from llc_service.config import MeasureConfig, WatchConfig

    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    fields = {f.name for cls in (MeasureConfig, WatchConfig) for f in dataclasses.fields(cls)}
    assert fields - documented == set(), "fields missing from docs/configuration.md"
    assert documented - fields == set(), "docs/configuration.md documents fields that do not exist"
    # the "in hash" column is what the fields declare (and what config_hash uses)
    hashed = set(re.findall(r"^\| `(\w+)` \| [^|]+ \| [^|]+ \| ✓ \|", text, flags=re.M))
    # (components is hashed only when set, so the hashes of configs without it did not change)
    assert hashed == set(MeasureConfig(components=["all"]).identity()), \
        "docs/configuration.md's ✓ column disagrees with the code"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in readme and (ROOT / script).exists()
    assert "scripts/test.sh --slow" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
    for doc in re.findall(r"\((docs/[\w./-]+\.md)\)", readme):
        assert (ROOT / doc).exists(), doc
