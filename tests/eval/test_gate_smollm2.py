"""The planted regression on the real model: int4 group 64 → per channel must fail the gate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_group64_to_per_channel_is_caught(tmp_path):
    recipe = tmp_path / "int4.yaml"
    recipe.write_text((REPO / "recipes" / "int4-rtn.yaml").read_text())
    assert "group_size: 64" in recipe.read_text()
    base = invoke("bench", "smollm2", recipe, "--device", "cpu", "--max-windows", "1", "--prefill", "32",
                  "--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--threads", "1", "--tol-latency", "100",
                  "--save-baseline", tmp_path / "base.json", "-q")
    assert base.exit_code == 0, base.output
    same = invoke("regress", "--baseline", tmp_path / "base.json", "--json", tmp_path / "same.json", "-q")
    assert same.exit_code == 0, same.output
    recipe.write_text(recipe.read_text().replace("group_size: 64", "group_size: -1"))
    bad = invoke("regress", "--baseline", tmp_path / "base.json", "--json", tmp_path / "bad.json", "-q")
    assert bad.exit_code == 1, bad.output
    checks = json.loads((tmp_path / "bad.json").read_text())["checks"]
    failed = {(c["entry"], c["metric"]): c for c in checks if not c["ok"]}
    assert (str(recipe), "perplexity") in failed and failed[(str(recipe), "perplexity")]["change"] > 0.15
