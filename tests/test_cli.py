from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from compress.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_passes_lists_options_with_help():
    res = invoke("passes")
    assert res.exit_code == 0
    assert "rtn:" in res.stdout and "group_size: int = -1" in res.stdout and "allowed: 3, 4, 8" in res.stdout
    info = json.loads(invoke("passes", "--json").stdout)
    assert {o["name"] for o in info["rtn"]["options"]} >= {"bits", "group_size", "symmetric", "targets", "ignore"}


def test_run_eval_inspect(tmp_path, tiny_dir, text_file, recipe_file):
    recipe = recipe_file(f"passes:\n  - rtn: {{bits: 8}}\nevaluate: {{perplexity: {{source: '{text_file}', seq_len: 64}}}}\n")
    out = tmp_path / "out"
    res = invoke("run", recipe, "--model", tiny_dir, "--out", out, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert "| before" in res.stdout and "| after" in res.stdout and (out / "compress.json").exists()
    ev = invoke("eval", out, "--data", text_file, "--seq-len", "64", "--json", "--device", "cpu")
    assert ev.exit_code == 0, ev.output
    row = json.loads(ev.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert row["perplexity"] == pytest.approx(report["perplexity_after"]["perplexity"], rel=1e-6)
    assert row["windows"] == report["perplexity_after"]["windows"] > 1
    ins = invoke("inspect", out)
    assert ins.exit_code == 0 and "int:bits=8" in ins.stdout and "directory total" in ins.stdout


def test_set_overrides_from_cli(tmp_path, tiny_dir, recipe_file):
    out = tmp_path / "o"
    res = invoke("run", recipe_file("passes:\n  - rtn: {bits: 8}\n"), "--model", tiny_dir, "--out", out,
                 "--set", "rtn.bits=4", "--set", "rtn.group_size=32", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert "bits: 4" in (out / "recipe.yaml").read_text() and "group_size: 32" in (out / "recipe.yaml").read_text()


BAD = {
    "missing recipe": (None, {}, "recipe file not found"),
    "yaml syntax": ("passes:\n  - rtn: {bits: 8\n", {}, "YAML syntax error at line"),
    "unknown pass": ("passes:\n  - rtnn: {}\n", {}, "pass 'rtnn' is unknown; allowed: "),
    "unknown option": ("passes:\n  - rtn: {bitz: 8}\n", {}, "pass 'rtn' (#1): option 'bitz' is unknown; allowed: "),
    "wrong type": ("passes:\n  - rtn: {bits: eight}\n", {}, "option 'bits': expected int, got 'eight'"),
    "out of range": ("passes:\n  - rtn: {bits: 5}\n", {}, "option 'bits' = 5 is not allowed; allowed: 3, 4, 8"),
    "target matches nothing": ("passes:\n  - rtn: {targets: ['*.nosuch.*']}\n", {}, "pass 'rtn' (#1): targets pattern '*.nosuch.*' matches no module"),
    "missing model": ("passes:\n  - rtn: {}\n", {"model": "/nonexistent/model"}, "model '/nonexistent/model': path not found"),
    "unreadable data": ("passes:\n  - rtn: {}\nevaluate: {perplexity: {source: /nonexistent/data.txt}}\n", {}, "data source '/nonexistent/data.txt': no such file"),
    "bad --set": ("passes:\n  - rtn: {}\n", {"set": "rtn.bits=9"}, "--set rtn.bits=9: "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(case, tmp_path, tiny_dir, recipe_file):
    text, extra, expected = BAD[case]
    recipe = recipe_file(text) if text is not None else tmp_path / "missing.yaml"
    out = tmp_path / "out"
    args = ["run", recipe, "--model", extra.get("model", tiny_dir), "--out", out, "--device", "cpu", "-q"]
    if "set" in extra:
        args += ["--set", extra["set"]]
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_existing_out_needs_force(tmp_path, tiny_dir, recipe_file):
    out = tmp_path / "out"
    out.mkdir()
    res = invoke("run", recipe_file("passes: [rtn]\n"), "--model", tiny_dir, "--out", out, "--device", "cpu", "-q")
    assert res.exit_code == 2 and "exists; pass --force" in res.stderr


def test_eval_bad_data_and_fetch_unknown(tiny_dir, tmp_path):
    res = invoke("eval", tiny_dir, "--data", tmp_path / "nope.txt", "--device", "cpu")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "no such file" in res.stderr
    res = invoke("fetch", "gpt5")
    assert res.exit_code == 2 and "unknown model 'gpt5'; allowed: smollm2" in res.stderr
    res = invoke("inspect", tmp_path)
    assert res.exit_code == 2 and "not a checkpoint directory" in res.stderr


def test_bad_device_is_one_line(tiny_dir, recipe_file, tmp_path):
    for args in (["run", recipe_file("passes: [rtn]\n"), "--model", tiny_dir, "--out", tmp_path / "o"], ["eval", tiny_dir]):
        res = invoke(*args, "--device", "tpu")
        assert res.exit_code == 2 and res.stderr.strip() == "error: --device 'tpu': allowed: cpu, cuda, cuda:N", res.output
    assert not (tmp_path / "o").exists()


def test_eval_json_is_valid_json_when_perplexity_overflows(monkeypatch, tiny_dir, text_file):
    """A model whose loss overflows gives inf perplexity: --json prints null, never the non-JSON token Infinity."""
    import compress.api

    monkeypatch.setattr(compress.api, "evaluate", lambda *a, **k: {"perplexity": float("inf"), "tokens": 10, "windows": 1})
    res = invoke("eval", tiny_dir, "--data", text_file, "--json", "--device", "cpu")
    assert res.exit_code == 0
    assert json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))["perplexity"] is None


def test_windows_beyond_the_models_positions_are_refused(tiny_dir, text_file):
    """The tiny model has 512 positions: a longer perplexity window or prefill is one line, exit 2."""
    res = invoke("eval", tiny_dir, "--data", text_file, "--seq-len", "1024", "--device", "cpu")
    assert res.exit_code == 2 and "longer than the model's 512 positions" in res.stderr
    res = invoke("bench", tiny_dir, "--prefill", "600", "--device", "cpu", "-q", "--data", text_file, "--seq-len", "64",
                 "--decode-mode", "eager")
    assert res.exit_code == 2 and "bench --prefill 600: longer than the model's 512 positions" in res.stderr
