"""A/B timing of the current code against a reference revision's code, on the same machine in the same minutes.

Ratios to an fp32 base are not steady on a shared CPU: the base is bound by memory bandwidth, the packed
models by arithmetic, and the neighbours move the two apart (SmolLM2 int4 ÷ fp32 read 2.85–4.72 round
by round in one run, 2.3–3.5 between sessions), so a baseline ratio cannot tell a 25% slowdown from another
host. The same entry under two revisions of the code has the same bottleneck: two worker processes
(`ab_worker.py`), one per tree, hold their models loaded and compiled and are timed in alternating
chunks of a few steps (A B B A …), so load drift hits both sides alike.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from compress.errors import CompressError

WORKER = Path(__file__).with_name("ab_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    except FileNotFoundError:
        raise CompressError("--reference: git is not installed; A/B timing needs the reference commit's files") from None


def resolve_commit(rev: str, repo: Path = REPO) -> str:
    """The full hash of `rev` in `repo`, or a one-line error (not a checkout, unknown or shallow-cut commit)."""
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise CompressError(f"--reference {rev}: no such commit in {repo} (not a git checkout, or a shallow clone "
                            f"without it: `git fetch --unshallow`)")
    return found.stdout.decode().strip()


@contextmanager
def reference_tree(rev: str, repo: Path = REPO) -> Iterator[Path]:
    """The files of commit `rev` in a temporary folder (git archive), removed afterwards."""
    sha = resolve_commit(rev, repo)
    with tempfile.TemporaryDirectory(prefix="compress-ref-") as tmp:
        archive = _git(repo, "archive", "--format=tar", sha)
        if archive.returncode != 0:
            raise CompressError(f"--reference {rev}: git archive failed: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)


class Worker:
    """One `ab_worker.py` process importing `compress` from `tree`; its stderr goes to a log shown on failure."""

    def __init__(self, tree: Path, cfg: dict[str, Any], log: Path, name: str) -> None:
        self.name, self.log_path = name, log
        self.log: IO[bytes] = open(log, "wb")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(cfg)], cwd=tree, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        ready = self._read()
        if ready.get("error") or not ready.get("ready"):
            self._fail(ready.get("error", "no ready line"))

    def _read(self) -> Any:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self._fail(f"exited with code {self.proc.wait()}")
        return json.loads(line)

    def _fail(self, why: str) -> None:
        self.close()
        tail = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise CompressError(f"A/B timing: the {self.name} worker failed ({why}){': ' + tail[0] if tail else ''}")

    def ask(self, **cmd: Any) -> Any:
        """One command (see `ab_worker.serve`) and its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


class ABRun:
    """Both workers, loaded one after the other (never both loading on a 2-core CPU), then timed in small
    alternating chunks (A B B A …), entry by entry, so both sides of a pair see the same neighbours."""

    def __init__(self, reference: Path, current: Path, cfg: dict[str, Any], logs: Path, chunk: int = 4) -> None:
        self.cfg, self.chunk = cfg, chunk
        self.workers = {"ref": Worker(reference, cfg, logs / "reference.log", "reference")}
        try:
            self.workers["cur"] = Worker(current, cfg, logs / "current.log", "current")
            for w in self.workers.values():  # build compiled steps, warm caches: not counted
                for i in range(len(cfg["entries"])):
                    w.ask(op="decode", entry=i, steps=chunk)
                    for n in cfg["prefill"]:
                        w.ask(op="prefill", entry=i, length=n)
        except BaseException:
            self.close()
            raise
        n = len(cfg["entries"])
        self.steps: dict[str, list[list[list[float]]]] = {k: [[] for _ in range(n)] for k in self.workers}
        self.prefill: dict[str, list[list[list[float]]]] = {k: [[[] for _ in cfg["prefill"]] for _ in range(n)] for k in self.workers}

    def _pairs(self, count: int) -> Iterator[tuple[str, str]]:
        for p in range(count):
            yield ("ref", "cur") if p % 2 == 0 else ("cur", "ref")

    def decode(self, chunks: int) -> None:
        """`chunks` chunks of `chunk` steps per entry and side."""
        for order in self._pairs(chunks):
            for i in range(len(self.cfg["entries"])):
                for k in order:
                    self.steps[k][i].append(self.workers[k].ask(op="decode", entry=i, steps=self.chunk))

    def prefills(self, repeats: int) -> None:
        for order in self._pairs(repeats):
            for i in range(len(self.cfg["entries"])):
                for j, n in enumerate(self.cfg["prefill"]):
                    for k in order:
                        self.prefill[k][i][j].append(self.workers[k].ask(op="prefill", entry=i, length=n))

    def summary(self) -> dict[str, list[dict[str, float]]]:
        """Per side and entry: decode tokens/s of the median step (batch 1), median prefill ms per length."""
        return {k: [{"decode_tokens_per_s:1": 1 / statistics.median([s for c in self.steps[k][i] for s in c]),
                     **{f"prefill_ms:{n}": statistics.median(self.prefill[k][i][j]) for j, n in enumerate(self.cfg["prefill"])
                        if self.prefill[k][i][j]}}
                    for i in range(len(self.cfg["entries"]))] for k in self.workers}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


def worker_entries(entries: list[str], repo: Path = REPO) -> list[str]:
    """Entries as both workers must name them: a file of the repository (a recipe) relative to its root, so each
    tree times its own version of it; another existing path absolute; a model name as it is."""
    from compress.eval.entries import split_dtype

    out = []
    for e in entries:
        name = split_dtype(e)[0]
        suffix, p = e[len(name):], Path(name).resolve()  # suffix: '@bf16' or ''
        if p.exists():
            name = str(p.relative_to(repo.resolve())) if p.is_relative_to(repo.resolve()) else str(p)
        out.append(name + suffix)
    return out


def ab_checks(entries: list[str], cfg: dict[str, Any], rev: str, tol: float, confirm: int = 1, chunks: int = 40,
              repeats: int = 5, progress: bool = True) -> tuple[list[Any], dict[str, Any]]:
    """Latency checks of the current code against commit `rev`'s, each entry timed under both in one run:
    decode tokens/s may fall, prefill ms rise, by `tol` at most. A failed check is timed as long again and
    the runs pooled (a real slowdown stays; a burst of load is diluted)."""
    def say(msg: str) -> None:
        if progress:
            print(f"regress: {msg}", file=sys.stderr, flush=True)

    cfg, sha = {**cfg, "entries": worker_entries(entries)}, resolve_commit(rev)
    with reference_tree(sha) as tree, tempfile.TemporaryDirectory(prefix="compress-ab-") as logs:
        say(f"A/B timing against {rev}: loading and compiling {len(entries)} entries in two workers …")
        run = ABRun(tree, REPO, cfg, Path(logs))
        try:
            for attempt in range(confirm + 1):
                say(f"A/B timing: {chunks} alternating chunks of {run.chunk} decode steps, {repeats} prefills per entry …")
                run.decode(chunks)
                run.prefills(repeats)
                checks = latency_checks(entries, run.summary(), f"vs {sha[:12]}", tol)
                if all(c.ok for c in checks) or attempt == confirm:
                    break
                say("A/B: " + ", ".join(f"{c.entry} {c.metric} {c.current:.4g} (limit {c.limit:.4g})" for c in checks if not c.ok)
                    + f"; timing again to confirm ({attempt + 1}/{confirm}) …")
        finally:
            run.close()
    return checks, {"reference": sha, "chunk": run.chunk, "summary": run.summary()}


def latency_checks(entries: list[str], summary: dict[str, list[dict[str, float]]], label: str, tol: float) -> list[Any]:
    """Current vs reference per entry: decode tokens/s may fall, prefill ms rise, by `tol` (0.2: a 25% slowdown fails)."""
    from compress.eval.regress import Check

    checks = []
    for name, ref, cur in zip(entries, summary["ref"], summary["cur"]):
        for key in ref:
            up = key.startswith("prefill_ms:")
            checks.append(Check(name, f"{key} {label}", ref[key], cur[key], ref[key] * (1 + tol if up else 1 - tol), up))
    return checks


__all__ = ["ABRun", "Worker", "ab_checks", "latency_checks", "reference_tree", "resolve_commit", "worker_entries"]
