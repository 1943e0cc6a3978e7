"""The parameter counts the README reports are the real ones."""

import re
from pathlib import Path

import pytest

from bmz_cosdd.methods.registry import get_method

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_counts() -> dict[str, int]:
    text = README.read_text()
    table = text.split("<!-- preset-table -->")[1].split("<!-- /preset-table -->")[0]
    counts = {}
    for line in table.splitlines():
        match = re.match(r"\|\s*`(\w+)`.*\|\s*([\d,]+)\s*\|\s*$", line)
        if match:
            counts[match.group(1)] = int(match.group(2).replace(",", ""))
    return counts


@pytest.mark.parametrize("preset", ["tiny", "small", "large"])
def test_readme_parameter_counts(preset):
    method = get_method("cosdd")
    # The table counts the paper's 8-layer noise decoder (the automatic field is often shorter).
    model = method.build(method.config_from_dict({"preset": preset, "direction": "x", "ar_layers": 8}), 1)
    assert readme_counts()[preset] == sum(p.numel() for p in model.parameters())
