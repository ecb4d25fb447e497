"""A damaged compress checkpoint: `eval`, `inspect`, `run --model` and `compress.load` each give one `error:` line
naming the directory, exit 2, no traceback (the same damage to a plain HF directory already did)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.errors import CompressError

runner = CliRunner()


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_dir) -> Path:
    out = tmp_path_factory.mktemp("good") / "ck"
    compress.run({"passes": [{"rtn": {"bits": 4, "group_size": 32}}]}, str(tiny_dir), out=out, device="cpu", progress=False)
    return out


def truncate(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def edit_manifest(fn):
    def damage(d: Path) -> None:
        m = json.loads((d / "compress.json").read_text())
        (d / "compress.json").write_text(json.dumps(fn(m)))
    return damage


def wrong_scales(d: Path) -> None:
    state = load_file(str(d / "model.safetensors"))
    key = next(k for k in state if k.endswith("mlp.up_proj.scales"))
    state[key] = state[key][:, :1].contiguous()
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def first_module(m: dict) -> str:
    return next(iter(m["formats"]))


DAMAGE = {
    "truncated weights": truncate,
    "manifest names a missing module": edit_manifest(lambda m: {**m, "formats": {**m["formats"], "model.layers.7.mlp.up_proj": m["formats"][first_module(m)]}}),
    "manifest is a list": edit_manifest(lambda m: [m]),
    "entry without spec": edit_manifest(lambda m: {**m, "formats": {first_module(m): {"format": "int"}}}),
    "no formats": edit_manifest(lambda m: {k: v for k, v in m.items() if k != "formats"}),
    "spec with a bad value": edit_manifest(lambda m: {**m, "formats": {k: {"format": "int", "spec": {"bits": "four"}} for k in m["formats"]}}),
    "wrong scales shape": wrong_scales,
}


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_checkpoint_is_one_line_everywhere(good, tmp_path, text_file, how):
    d = tmp_path / "ck"
    shutil.copytree(good, d)
    DAMAGE[how](d)
    with pytest.raises(CompressError, match=str(d)):
        compress.load(d, device="cpu")
    (tmp_path / "r.yaml").write_text("passes:\n  - rtn: {bits: 8}\n")
    for args in (["eval", str(d), "--data", str(text_file), "--seq-len", "32", "--max-windows", "1", "--device", "cpu"],
                 ["inspect", str(d)], ["run", str(tmp_path / "r.yaml"), "--model", str(d), "--device", "cpu", "-q"]):
        if args[0] == "inspect" and how in ("wrong scales shape", "spec with a bad value", "entry without spec",
                                            "manifest names a missing module"):
            continue  # inspect reads the header and manifest only: these it shows, not loads
        res = runner.invoke(app, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args[0], res.output[-800:])
        assert str(d) in lines[0] and "Traceback" not in res.output
