"""A/B timing (compress/eval/ab.py): one worker process per code tree, timed in alternating chunks.

The trees are copies of this package whose models sleep a known time every forward: one copy 4/3 as
long as the other (tokens/s × 0.75), one unchanged, so the right verdicts are known without trusting
the code under test."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from compress.errors import CompressError
from compress.eval.ab import REPO, ABRun, ab_checks, latency_checks, reference_tree, resolve_commit, worker_entries
from compress.eval.regress import DEFAULT_TOLERANCES

STEP_S = 0.04  # per forward; the tiny model's own eager step is a few ms
HOOK = """
import time as _time
_iter_entries = iter_entries


def iter_entries(*args, **kwargs):  # test hook: every forward sleeps {pause} s
    for spec, loaded in _iter_entries(*args, **kwargs):
        if hasattr(loaded, "model"):
            loaded.model.register_forward_pre_hook(lambda *_: _time.sleep({pause}))
        yield spec, loaded
"""


def tree(tmp_path: Path, name: str, pause: float) -> Path:
    root = tmp_path / name
    shutil.copytree(REPO / "compress", root / "compress", ignore=shutil.ignore_patterns("__pycache__"))
    with open(root / "compress" / "eval" / "entries.py", "a") as f:
        f.write(HOOK.format(pause=pause))
    return root


def timed(ref: Path, cur: Path, model: Path, logs: Path) -> dict:
    logs.mkdir()
    cfg = {"entries": [str(model)], "threads": 1, "prompt_len": 4, "new_tokens": 8, "prefill": [8], "mode": "eager"}
    run = ABRun(ref, cur, cfg, logs, chunk=2)
    try:
        run.decode(6)
        run.prefills(2)
        summary = run.summary()
    finally:
        run.close()
    assert [w.proc.returncode for w in run.workers.values()] == [0, 0]  # told to quit, both exit cleanly
    return summary


def test_a_25_percent_slower_tree_fails_and_an_unchanged_copy_passes(tmp_path, tiny_dir):
    ref = tree(tmp_path, "ref", STEP_S)
    slow = timed(ref, tree(tmp_path, "slow", STEP_S * 4 / 3), tiny_dir, tmp_path / "logs-slow")
    key = "decode_tokens_per_s:1"
    assert 0.68 < slow["cur"][0][key] / slow["ref"][0][key] < 0.82  # the slowdown really is ~25% in the numbers
    failed = {c.metric for c in latency_checks(["tiny"], slow, "vs ref", DEFAULT_TOLERANCES["latency"]) if not c.ok}
    assert failed == {f"{key} vs ref", "prefill_ms:8 vs ref"}

    same = timed(ref, tree(tmp_path, "same", STEP_S), tiny_dir, tmp_path / "logs-same")
    checks = latency_checks(["tiny"], same, "vs ref", DEFAULT_TOLERANCES["latency"])
    assert len(checks) == 2 and all(c.ok for c in checks), [c.to_dict() for c in checks]


def test_reference_tree_holds_that_commits_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    (repo / "f.txt").write_text("one")
    git("add", "f.txt")
    git("commit", "-qm", "one")
    first = resolve_commit("HEAD", repo)
    (repo / "f.txt").write_text("two")
    git("commit", "-qam", "two")
    with reference_tree(first[:8], repo) as t:
        assert (t / "f.txt").read_text() == "one"
    assert not t.exists()
    with pytest.raises(CompressError, match="--reference 0123abcd: no such commit"):
        resolve_commit("0123abcd", repo)


def test_worker_entries_name_repo_files_relative_and_other_paths_absolute(tiny_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    assert worker_entries(["smollm2@fp32", "recipes/int8.yaml", f"{tiny_dir}@bf16"]) == [
        "smollm2@fp32", "recipes/int8.yaml", f"{Path(tiny_dir).resolve()}@bf16"]


def test_a_worker_that_cannot_load_says_why_in_one_line(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = {"entries": [str(tmp_path / "no-such-model")], "threads": 1, "prompt_len": 4, "new_tokens": 8,
           "prefill": [8], "mode": "eager"}
    with pytest.raises(CompressError, match="reference worker failed .*no-such-model") as e:
        ABRun(REPO, REPO, cfg, logs)
    assert "\n" not in str(e.value)


def test_ab_checks_against_head_time_both_trees(tiny_dir):
    """Against HEAD (this checkout's last commit) every check passes, and both sides were really timed."""
    cfg = {"threads": 1, "prompt_len": 4, "new_tokens": 8, "prefill": [8], "mode": "eager"}
    if not (REPO / ".git").exists():  # a tarball of the sources: the one-line error is the behaviour to check
        with pytest.raises(CompressError, match="no such commit"):
            ab_checks([str(tiny_dir)], cfg, "HEAD", 0.2, chunks=4, repeats=2, progress=False)
        return
    checks, info = ab_checks([str(tiny_dir)], cfg, "HEAD", 0.6, chunks=4, repeats=2, progress=False)
    assert info["reference"] == resolve_commit("HEAD")
    assert [c.metric for c in checks] == [f"decode_tokens_per_s:1 vs {info['reference'][:12]}",
                                          f"prefill_ms:8 vs {info['reference'][:12]}"]
    assert all(c.baseline > 0 and c.current > 0 for c in checks)
    assert all(c.ok for c in checks), [c.to_dict() for c in checks]


def test_regress_with_an_unknown_reference_fails_before_measuring(tmp_path, monkeypatch):
    import json
    import sys

    import compress.eval.bench as bench
    from compress.eval.regress import regress

    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: pytest.fail("measured before checking the reference"))
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"env": {"label": "CPU"}, "entries": ["m"], "settings": {},
                                "results": [{"name": "m", "perplexity": 2.0, "ratios": {}}]}))
    with pytest.raises(CompressError, match="--reference 0123abcd: no such commit"):
        regress(path, device="cpu", progress=False, reference="0123abcd")
    with pytest.raises(CompressError, match="cannot gate a --current report"):
        regress(path, path, progress=False, reference="HEAD")
    cli = subprocess.run([sys.executable, "-m", "compress", "regress", "--baseline", str(path), "--reference", "0123abcd"],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert [ln for ln in cli.stderr.splitlines() if ln.strip()] == [
        f"error: --reference 0123abcd: no such commit in {REPO} (not a git checkout, or a shallow clone without it: "
        "`git fetch --unshallow`)"]
