"""One CLI bench run on the tiny model (base + an int4 recipe): JSON schema, PNG, baseline, and the gate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli import app
from compress.models import cpu_has_bf16

runner = CliRunner()
ROW_KEYS = {"name", "kind", "random_weights", "perplexity", "perplexity_windows", "prefill_ms", "decode_tokens_per_s",
            "decode_mode", "peak_memory_bytes", "memory_bytes", "size_bytes", "weight_bytes_by_format", "ratios"}
ENV_KEYS = {"device", "device_name", "label", "dtype", "torch", "transformers", "python", "warmup", "repeats", "decode_mode", "date"}
INT4_G32 = "passes:\n  - rtn: {bits: 4, group_size: 32, symmetric: false}\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dir, text_file):
    """One `compress bench` of the tiny base and an int4 recipe, writing JSON, PNG and a baseline."""
    d = tmp_path_factory.mktemp("bench")
    recipe = d / "int4.yaml"
    recipe.write_text(INT4_G32)
    res = invoke("bench", tiny_dir, recipe, "--data", text_file, "--seq-len", "64", "--max-windows", "3",
                 "--prefill", "16,32", "--batch", "1,2", "--new-tokens", "4", "--prompt-len", "8", "--repeats", "2", "--threads", "1", "--interleave",
                 "--json", d / "r.json", "--plot", d / "p.png", "--save-baseline", d / "base.json", "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    return d, recipe, res.stdout, json.loads((d / "r.json").read_text())


def test_table_printed(run):
    _, recipe, out, _ = run
    assert "| model" in out and "(base)" in out and "decode b2 tok/s" in out and "CPU:" in out
    assert str(recipe) in out


def test_json_schema(run, tiny_dir):
    _, _, _, rep = run
    assert set(rep) >= {"results", "env", "settings", "entries", "schema"} and set(rep["env"]) >= ENV_KEYS
    base, q = rep["results"]
    for r in (base, q):
        assert set(r) >= ROW_KEYS
        assert set(r["prefill_ms"]) == {"16", "32"} and set(r["decode_tokens_per_s"]) == {"1", "2"}
        for v in list(r["prefill_ms"].values()) + list(r["decode_tokens_per_s"].values()):
            assert 0 < v["min"] <= v["median"] <= v["max"]
        assert r["perplexity_windows"] == 3 and r["peak_memory_bytes"] is None  # CPU: no allocator stats
    # dense in fp32; packed int in bf16 on a CPU that multiplies bf16 in hardware, else fp32 (checked on its own
    # in tests/test_models.py)
    packed = "bfloat16" if cpu_has_bf16() else "float32"
    assert (base["kind"], q["kind"], rep["env"]["label"]) == ("model", "recipe", "CPU")
    assert rep["env"]["dtype"] == ("bfloat16, float32" if cpu_has_bf16() else "float32")
    assert (base["dtype"], q["dtype"]) == ("float32", packed)
    assert base["size_bytes"] == (Path(tiny_dir) / "model.safetensors").stat().st_size
    assert set(base["ratios"].values()) == {1.0}
    assert q["ratios"]["decode_tokens_per_s:1"] == pytest.approx(q["decode_tokens_per_s"]["1"]["median"] / base["decode_tokens_per_s"]["1"]["median"])
    # int4 g32 of the 14 decoder linears, whatever the compute dtype: nibbles, a bf16
    # scale and zero per 32 weights (see test_speed for the shapes), and the CPU kernel's bf16 (scale, zero) table
    # (on a CPU without bf16 hardware the model stays fp32, and so do the tiny model's scales and zeros)
    weights = 2 * 43008
    beside = 0 if cpu_has_bf16() else weights // 32 * 4  # their fp32 half
    assert q["weight_bytes_by_format"]["int4/g32"] == weights // 2 + weights // 32 * 4 + weights // 32 * 4 + beside
    assert q["size_bytes"] < 0.4 * base["size_bytes"]


def test_plot_is_a_png(run):
    import matplotlib.image

    d = run[0]
    assert (d / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(d / "p.png").shape == (540, 840, 4)  # 7×4.5 in at 120 dpi, RGBA


def test_regress_synthetic_current(run, tmp_path):
    """--current compares a stored result: a planted perplexity regression exits 1, a small change 0."""
    d, recipe, _, rep = run
    for factor, code in ((1.01, 0), (1.3, 1)):
        cur = json.loads(json.dumps(rep))
        cur["results"][1]["perplexity"] *= factor
        (tmp_path / "cur.json").write_text(json.dumps(cur))
        res = invoke("regress", "--baseline", d / "base.json", "--current", tmp_path / "cur.json", "-q")
        assert res.exit_code == code, res.output
        assert ("FAIL" in res.stdout) == bool(code)


def test_regress_reruns_and_catches_a_changed_recipe(run):
    """The gate re-runs the recipe file the baseline names; int4 → int8 makes it bigger: exit 1."""
    d, recipe, _, _ = run
    ok = invoke("regress", "--baseline", d / "base.json", "--tol-latency", "100", "--tol-perplexity", "0.05", "-q")
    assert ok.exit_code == 0, ok.output
    recipe.write_text("passes:\n  - rtn: {bits: 8}\n")
    try:
        bad = invoke("regress", "--baseline", d / "base.json", "--tol-latency", "100", "--tol-perplexity", "0.05", "-q")
    finally:
        recipe.write_text(INT4_G32)
    assert bad.exit_code == 1, bad.output
    assert "size_bytes ÷ base" in bad.stdout and "REGRESSION" in bad.stdout


def test_bench_user_errors(tmp_path, tiny_dir):
    r = tmp_path / "x.yaml"
    r.write_text(INT4_G32)
    res = invoke("bench", r, tiny_dir)
    assert res.exit_code == 2 and "first entry is the base" in res.output
    res = invoke("bench", tiny_dir, "--prefill", "12,x")
    assert res.exit_code == 2 and "--prefill '12,x'" in res.output
    res = invoke("regress", "--baseline", tmp_path / "nope.json")
    assert res.exit_code == 2 and "file not found" in res.output


def test_an_output_path_that_is_a_directory_fails_before_measuring(tmp_path, monkeypatch):
    from compress.eval import bench

    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: pytest.fail("measured before checking its outputs"))
    res = CliRunner().invoke(app, ["bench", "smollm2", "--json", str(tmp_path), "--device", "cpu", "-q"])
    assert res.exit_code == 2 and "--json" in res.stderr and "is a directory" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
