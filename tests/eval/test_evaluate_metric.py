"""The `evaluate` metric (compress/eval/metrics/perplexity_protocol) and `compress eval --metric`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.eval.metrics import PERPLEXITY_PROTOCOL
from tests.conftest import TEXT

ROOT = Path(__file__).resolve().parents[2]
# In a fresh interpreter, so the offline switches are read at import as a user's shell would set them; the
# hub endpoint points at a closed port, so any attempt to reach it would fail rather than pass unnoticed.
SCRIPT = """
import json, sys, evaluate
assert evaluate.config.HF_EVALUATE_OFFLINE, "offline mode not in effect"
metric = evaluate.load(sys.argv[1])
model, text, raw = sys.argv[2], open(sys.argv[3]).read(), open(sys.argv[4]).read()
rows = [line if line.strip() else "" for line in raw.splitlines(keepends=True)]  # WikiText-2's rows, as HF has them
kw = dict(model=model, seq_len=64, device="cpu")
print(json.dumps({"name": metric.name, "one_row": metric.compute(predictions=[text], **kw),
                  "rows": metric.compute(predictions=rows, **kw)}))
"""


@pytest.fixture(scope="module")
def wiki_raw(tmp_path_factory) -> Path:
    """A file read the way wiki.test.raw is (blank lines as a lone space, rows joined with blank lines)."""
    p = tmp_path_factory.mktemp("wiki") / "wiki.test.raw"
    lines = [" = Tiny = \n", " \n"] + [s.strip() + " . \n" for s in TEXT.split(".") if s.strip()][:60] + [" \n"]
    p.write_text("".join(lines))
    return p


def test_local_metric_loads_offline_and_matches_compress_evaluate(tmp_path, tiny_dir, text_file, wiki_raw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", SCRIPT, PERPLEXITY_PROTOCOL, str(tiny_dir), str(text_file), str(wiki_raw)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["name"] == "perplexity_protocol"
    for key, source in (("one_row", text_file), ("rows", wiki_raw)):
        ours = compress.evaluate(str(tiny_dir), data=str(source), seq_len=64, device="cpu", progress=False)
        assert got[key]["perplexity"] == pytest.approx(ours["perplexity"], rel=1e-9), key
        assert (got[key]["tokens"], got[key]["windows"]) == (ours["tokens"], ours["windows"]) and ours["windows"] > 1


def test_eval_metric_through_evaluate_matches_the_default(tiny_dir, text_file):
    args = ["eval", str(tiny_dir), "--data", str(text_file), "--seq-len", "64", "--max-windows", "3", "--device", "cpu", "--json"]
    default = CliRunner().invoke(app, args)
    via = CliRunner().invoke(app, args + ["--metric", "perplexity_protocol"])
    assert default.exit_code == 0 and via.exit_code == 0, via.output
    a, b = json.loads(default.stdout.splitlines()[-1]), json.loads(via.stdout.splitlines()[-1])
    assert b["perplexity"] == pytest.approx(a["perplexity"], rel=1e-9) and b["windows"] == a["windows"] == 3


@pytest.mark.parametrize("metric, expected", [
    ("/nonexistent/metric", "--metric '/nonexistent/metric': not a local evaluate metric (a folder holding metric.py, "
                            "or a .py file) nor a built-in one (perplexity_protocol); metrics are not fetched from the hub"),
    ("broken", "evaluate could not load"),
    ("wrong_api", "compute failed: TypeError"),
])
def test_bad_metric_is_one_line_exit_2(metric, expected, tmp_path, tiny_dir, text_file):
    scripts = {"broken": "import evaluate\nthis is not python\n",
               "wrong_api": ("import datasets\nimport evaluate\n\n\nclass WrongApi(evaluate.Metric):\n    def _info(self):\n"
                             "        return evaluate.MetricInfo(description='', citation='', features=datasets.Features("
                             "{'predictions': datasets.Value('string')}))\n"
                             "    def _compute(self, predictions):\n        return {}\n")}
    if metric in scripts:
        (tmp_path / metric).mkdir()
        (tmp_path / metric / f"{metric}.py").write_text(scripts[metric])
        metric = str(tmp_path / metric)
    res = CliRunner().invoke(app, ["eval", str(tiny_dir), "--data", str(text_file), "--seq-len", "64", "--device", "cpu",
                                   "--metric", metric])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert "Traceback" not in res.output
