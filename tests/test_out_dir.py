"""--out safety, table-driven through the CLI: one `error:` line, exit 2, and the file system as it was."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli import app
from compress.errors import EnvironmentFault
from compress.fsutil import atomic_dir

runner = CliRunner()
RECIPE = "passes:\n  - rtn: {bits: 8}\n"


def tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(d)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def ws(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article} years of work")
    (tmp_path / "afile").write_text("x")
    return tmp_path


CASES = [  # (--out, extra args, expected words in the error)
    ("thesis", ["--force"], "not a compress checkpoint"),
    ("thesis", [], "exists; pass --force"),
    (".", ["--force"], "working directory"),
    ("", ["--force"], "working directory"),
    ("..", ["--force"], "working directory"),
    ("afile", ["--force"], "not a directory"),
    ("{model}", ["--force"], "the input"),
    ("{model_parent}", ["--force"], "working directory"),
    ("afile/sub/ck", [], "is a file, so nothing can be made under it"),
]


@pytest.mark.parametrize("out, extra, words", CASES)
def test_refused_outs_delete_nothing(ws, tiny_dir, out, extra, words):
    out = out.format(model=tiny_dir, model_parent=tiny_dir.parent)
    before = (tree_hash(ws / "thesis"), tree_hash(tiny_dir), sorted(p.name for p in ws.iterdir()))
    res = runner.invoke(app, ["run", "r.yaml", "--model", str(tiny_dir), "--out", out, *extra, "--device", "cpu", "-q"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0] and "Traceback" not in res.output
    assert (tree_hash(ws / "thesis"), tree_hash(tiny_dir), sorted(p.name for p in ws.iterdir())) == before


def test_force_replaces_a_checkpoint_and_keeps_it_when_the_write_fails(ws, tiny_dir):
    args = ["run", "r.yaml", "--model", str(tiny_dir), "--out", "ck", "--device", "cpu", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    (ws / "ck" / "mark").write_text("first run")
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0  # a checkpoint of ours: replaced
    assert not (ws / "ck" / "mark").exists()
    first = tree_hash(ws / "ck")
    with pytest.raises(EnvironmentFault, match=r"ENOSPC.*the previous one there is unchanged"):  # one line, exit 1
        with atomic_dir(ws / "ck", force=True) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device")  # a full disk mid-write
    assert tree_hash(ws / "ck") == first and not list(ws.glob(".ck.*"))


def test_a_stale_temp_dir_from_a_killed_run_is_reported_and_removed(ws, capsys):
    stale = ws / f".ck.tmp-{2**22 + 12345}"  # a pid beyond pid_max: that process is gone
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    with atomic_dir(ws / "ck") as tmp:
        (tmp / "compress.json").write_text("{}")
    assert not stale.exists() and (ws / "ck" / "compress.json").is_file()
    assert "left by an interrupted run" in capsys.readouterr().err


def test_a_run_that_finds_out_written_meanwhile_fails_and_leaves_it(ws):
    with pytest.raises(Exception, match="output directory exists"):
        with atomic_dir(ws / "ck") as tmp:
            (tmp / "compress.json").write_text('{"mine": 1}')
            (ws / "ck").mkdir()
            (ws / "ck" / "compress.json").write_text('{"theirs": 1}')  # the other run finished first
    assert (ws / "ck" / "compress.json").read_text() == '{"theirs": 1}' and not list(ws.glob(".ck.*"))


def test_a_nan_weight_is_refused_by_name_and_nothing_is_written(ws, tiny_dir, tokenizer):
    import torch

    import compress
    from compress.errors import CompressError
    from tests.conftest import make_model

    model = make_model()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    for recipe in ({"passes": [{"rtn": {"bits": 4, "group_size": 32}}]}, {"passes": [{"magnitude": {"sparsity": 0.5}}]}):
        with pytest.raises(CompressError, match=r"model\.layers\.1\.mlp\.up_proj\.weight holds 1 NaN/inf"):
            compress.run(recipe, model, tokenizer=tokenizer, out=ws / "ck", progress=False)
        assert not (ws / "ck").exists() and not list(ws.glob(".ck.*"))


def test_a_pass_that_produces_nan_is_named_and_nothing_is_written(ws, tokenizer, monkeypatch):
    import dataclasses

    import torch

    import compress
    from compress import registry
    from compress.errors import CompressError
    from tests.conftest import make_model

    real = registry._PASSES["magnitude"]

    def poisoned(model, cfg, ctx):
        model = real.fn(model, cfg, ctx) or model
        with torch.no_grad():
            model.model.norm.weight[0] = float("inf")  # as a diverged distillation would leave it
        return model

    monkeypatch.setitem(registry._PASSES, "magnitude", dataclasses.replace(real, fn=poisoned))
    with pytest.raises(CompressError, match=r"pass 'magnitude' \(#1\): produced tensor model\.norm\.weight holds 1 NaN/inf"):
        compress.run({"passes": [{"magnitude": {"sparsity": 0.5}}]}, make_model(), tokenizer=tokenizer, out=ws / "ck",
                     progress=False)
    assert not (ws / "ck").exists() and not list(ws.glob(".ck.*"))


def test_an_unwritable_parent_is_refused_before_any_work(ws, tiny_dir, monkeypatch):
    """(Root ignores permission bits, so the refusal of the OS is simulated; a read-only mount answers the same.)"""
    import compress.fsutil as fsutil

    ro = ws / "ro"
    ro.mkdir()
    real = fsutil.os.access
    monkeypatch.setattr(fsutil.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    res = runner.invoke(app, ["run", "r.yaml", "--model", str(tiny_dir), "--out", "ro/ck", "--device", "cpu", "-q"])
    assert res.exit_code == 2 and "is not writable" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not list(ro.iterdir())


def test_a_checkpoint_moved_aside_by_a_killed_replace_is_put_back(ws, capsys):
    """kill -9 between renaming the old checkpoint aside and moving the new one in: the next run restores it."""
    old = ws / f".ck.old-{2**22 + 12345}"  # a pid beyond pid_max: that process is gone
    old.mkdir()
    (old / "compress.json").write_text('{"previous": 1}')
    with pytest.raises(Exception, match="output directory exists; pass --force"):
        with atomic_dir(ws / "ck") as tmp:  # no --force: the restored checkpoint is not replaced
            (tmp / "compress.json").write_text('{"new": 1}')
    assert (ws / "ck" / "compress.json").read_text() == '{"previous": 1}' and not list(ws.glob(".ck.*"))
    assert "restoring" in capsys.readouterr().err


def test_a_stale_moved_aside_copy_is_removed_when_the_checkpoint_is_there(ws, capsys):
    old = ws / f".ck.old-{2**22 + 12345}"
    old.mkdir()
    (old / "compress.json").write_text('{"older": 1}')
    (ws / "ck").mkdir()
    (ws / "ck" / "compress.json").write_text('{"current": 1}')
    with atomic_dir(ws / "ck", force=True) as tmp:
        (tmp / "compress.json").write_text('{"new": 1}')
    assert (ws / "ck" / "compress.json").read_text() == '{"new": 1}' and not list(ws.glob(".ck.*"))
    assert "removing" in capsys.readouterr().err
