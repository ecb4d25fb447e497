"""Bad input and faults, table-driven through the CLI (issue #13).

Every case asserts: the exit code (2 a user mistake, 1 an environment fault), exactly one stderr line
starting with `error:` and holding the expected words, no traceback anywhere, and the file system as
it was: every file of the workspace (an existing checkpoint, a user's thesis) byte-identical by hash,
no new entry, and no `.NAME.tmp-*` / `.NAME.old-*` / probe sibling left. A few cases run as a real
process (`proc`), the rest through typer's CliRunner in this process (so faults can be injected).
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from typer.testing import CliRunner

import compress
import compress.recipe
from compress.cli import app
from tests.conftest import make_model

runner = CliRunner()
RECIPE = "passes:\n  - rtn: {bits: 8}\n"
RUN = ("run", "r.yaml", "--model", "{tiny}", "--device", "cpu", "-q")
DISTILL = ("passes:\n  - distill: {{data: '{text}', steps: 1, seq_len: 16, batch_size: 1, eval_windows: 0, "
           "state_dir: st, resume: true}}\n")
LEFTOVERS = (".*.tmp-*", ".*.old-*", ".compress-probe-*")


Setup = Callable[[Path, Path], None]  # (workspace, a good distill state_dir) → None


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, what it must answer, and how the workspace is prepared first."""

    args: tuple[str, ...]
    code: int
    words: str  # in the one error line
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the workspace first
    setup: Optional[Setup] = None  # damages a file of the workspace (after `files`)
    fault: Optional[str] = None  # a fault injected in this process: see `inject`
    proc: bool = False  # run as a real `python -m compress` process


def case(id_: str, args: tuple[str, ...], code: int, words: str, **kw: object) -> pytest.param:  # type: ignore[valid-type]
    return pytest.param(Case(tuple(args), code, words, **kw), id=id_)  # type: ignore[arg-type]


def recipe(id_: str, text: str | bytes, words: str, *extra: str, code: int = 2) -> pytest.param:  # type: ignore[valid-type]
    """A `run` of a bad recipe file."""
    return case(id_, ("run", "bad.yaml", "--model", "{tiny}", "--device", "cpu", "-q", *extra), code, words,
                files={"bad.yaml": text})


def override(id_: str, item: str, words: str) -> pytest.param:  # type: ignore[valid-type]
    """A `run` of the good recipe with one bad `--set`."""
    return case(id_, (*RUN, "--set", item), 2, words)


def distill_state(id_: str, setup: Setup, words: str, *extra: str,
                  model: str = "{tiny}") -> pytest.param:  # type: ignore[valid-type]
    """A resumed `distill` whose state_dir/state.pt is not this run's."""
    return case(id_, ("run", "d.yaml", "--model", model, "--device", "cpu", "-q", *extra), 2, words,
                files={"d.yaml": DISTILL}, setup=setup)


# --- damage to the workspace's checkpoint `ck` and distill state `st/state.pt` -------------------------------------

def truncate(rel: str) -> Setup:
    def damage(ws: Path, good: Path) -> None:
        f = ws / rel
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return damage


def write(rel: str, data: str | bytes) -> Setup:
    def damage(ws: Path, good: Path) -> None:
        f = ws / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data.encode() if isinstance(data, str) else data)
    return damage


def remove(rel: str) -> Setup:
    return lambda ws, good: (ws / rel).unlink()


def unknown_format(ws: Path, good: Path) -> None:
    f = ws / "ck" / "compress.json"
    f.write_text(f.read_text().replace('"format": "int"', '"format": "int3"'))


class Pwn:
    """Pickles as a call to print: a state file that would run code if loaded without weights_only."""

    def __reduce__(self) -> tuple:
        return (print, ("PWNED: the crafted pickle ran",))


def crafted_state(ws: Path, good: Path) -> None:
    (ws / "st").mkdir(exist_ok=True)
    torch.save({"step": 1, "rows": [], "fingerprint": Pwn()}, ws / "st" / "state.pt")


def plain_state(obj: object) -> Setup:
    def make(ws: Path, good: Path) -> None:
        (ws / "st").mkdir(exist_ok=True)
        torch.save(obj, ws / "st" / "state.pt")
    return make


def good_state(ws: Path, good: Path) -> None:
    shutil.copytree(good, ws / "st", dirs_exist_ok=True)


def truncated_state(ws: Path, good: Path) -> None:
    good_state(ws, good)
    truncate("st/state.pt")(ws, good)

EVAL = ("eval", "ck", "--data", "{text}", "--seq-len", "32", "--max-windows", "1", "--device", "cpu")
BENCH = ("bench", "{tiny}", "--data", "{text}", "--seq-len", "32", "--max-windows", "1", "--device", "cpu", "-q")

CASES = [
    # recipes ------------------------------------------------------------------------------------------------------------
    case("recipe: missing file", ("run", "nosuch.yaml", "--model", "{tiny}", "-q"), 2, "recipe file not found"),
    case("recipe: a directory", ("run", "thesis", "--model", "{tiny}", "-q"), 2, "recipe file not found"),
    recipe("recipe: YAML syntax error", "passes:\n  - rtn: {bits: 8\n", "YAML syntax error at line"),
    recipe("recipe: tab indentation", "passes:\n\t- rtn: {}\n", "YAML syntax error"),
    recipe("recipe: unknown pass", "passes:\n  - rtnn: {}\n", "pass 'rtnn' is unknown; allowed:"),
    recipe("recipe: unknown option", "passes:\n  - rtn: {bitz: 8}\n", "option 'bitz' is unknown; allowed:"),
    recipe("recipe: wrong type", "passes:\n  - rtn: {bits: eight}\n", "option 'bits': expected int, got 'eight'"),
    recipe("recipe: bool for an int", "passes:\n  - rtn: {bits: true}\n", "option 'bits': expected int"),
    recipe("recipe: value not allowed", "passes:\n  - rtn: {bits: 5}\n", "option 'bits' = 5 is not allowed; allowed: 3, 4, 8"),
    recipe("recipe: out of range float", "passes:\n  - magnitude: {sparsity: 1.5}\n", "out of range"),
    recipe("recipe: NaN float", "passes:\n  - magnitude: {sparsity: .nan}\n", "expected a finite number"),
    recipe("recipe: inf float", "passes:\n  - gptq: {damp: .inf}\n", "expected a finite number"),
    recipe("recipe: distill lr NaN", "passes:\n  - distill: {lr: .nan}\n", "option 'lr': expected a finite number"),
    recipe("recipe: distill temperature -inf", "passes:\n  - distill: {temperature: -.inf}\n", "expected a finite number"),
    recipe("recipe: samples far beyond sense", "calibration: {samples: 1000000000}\npasses:\n  - gptq: {}\n", "out of range"),
    recipe("recipe: huge seed", f"calibration: {{seed: {2**70}}}\npasses:\n  - gptq: {{}}\n", "out of range"),
    recipe("recipe: duplicate top-level key", "passes:\n  - rtn: {}\npasses:\n  - magnitude: {}\n", "appears twice"),
    recipe("recipe: duplicate option", "passes:\n  - rtn: {bits: 8, bits: 4}\n", "appears twice"),
    recipe("recipe: huge file", b"# padding\n" * 110_000 + RECIPE.encode(), "is not a recipe"),
    recipe("recipe: empty file", "", "a recipe is a mapping"),
    recipe("recipe: a list, not a mapping", "- rtn: {bits: 8}\n", "a recipe is a mapping"),
    recipe("recipe: a scalar", "just words\n", "a recipe is a mapping"),
    recipe("recipe: not UTF-8", b"\xff\xfe passes: \x00\x81", "cannot read recipe"),
    recipe("recipe: unknown top-level key", "pases:\n  - rtn: {}\n", "key 'pases' is unknown"),
    recipe("recipe: no passes", "passes: []\n", "expected a non-empty list"),
    recipe("recipe: passes as a mapping", "passes: {rtn: {bits: 8}}\n", "expected a non-empty list"),
    recipe("recipe: pass with two names", "passes:\n  - {rtn: {}, magnitude: {}}\n", "expected 'NAME' or 'NAME: {options}'"),
    recipe("recipe: options not a mapping", "passes:\n  - rtn: [8]\n", "expected a mapping of options"),
    recipe("recipe: targets match nothing", "passes:\n  - rtn: {targets: ['*.nosuch.*']}\n", "matches no module"),
    recipe("recipe: calibration on the test split", "calibration: {source: wikitext2-test}\npasses:\n  - gptq: {}\n",
           "wikitext2-test is the evaluation split"),
    recipe("recipe: model not a string", "model: 5\npasses:\n  - rtn: {}\n", "model: expected a path or name"),
    recipe("recipe: evaluate not a mapping", "passes:\n  - rtn: {}\nevaluate: yes\n", "evaluate: expected a mapping"),
    recipe("recipe: missing data file", "passes:\n  - rtn: {}\nevaluate: {perplexity: {source: /nonexistent/d.txt}}\n",
           "no such file"),
    # --set ----------------------------------------------------------------------------------------------------------------
    override("--set: no '='", "rtn.bits", "expected KEY=VALUE"),
    override("--set: no such pass", "gptq.damp=0.1", "no pass 'gptq' in the recipe"),
    override("--set: unknown option", "rtn.bitz=4", "option 'bitz' is unknown"),
    override("--set: value not allowed", "rtn.bits=9", "option 'bits' = 9 is not allowed"),
    override("--set: NaN", "rtn.group_size=.nan", "option 'group_size'"),
    override("--set: index not a number", "rtn[x].bits=4", "index 'x' is not a whole number"),
    override("--set: index out of range", "rtn[3].bits=4", "index 3 out of range"),
    override("--set: pass without option", "rtn=4", "expected PASS.OPTION=VALUE"),
    override("--set: calibration without key", "calibration=5", "expected calibration.KEY=VALUE"),
    override("--set: samples too large", "calibration.samples=1000000000", "out of range"),
    # models, paths, devices -------------------------------------------------------------------------------------------------
    case("model: path not found", ("run", "r.yaml", "--model", "/nonexistent/model", "-q"), 2, "path not found"),
    case("model: dir without config.json", ("run", "r.yaml", "--model", "thesis", "-q"), 2, "has no config.json"),
    case("model: a plain file", ("run", "r.yaml", "--model", "afile", "-q"), 2, "a file must be a .gguf"),
    case("model: none given", ("run", "r.yaml", "-q"), 2, "no model given"),
    case("model: --set model=missing", ("run", "r.yaml", "--set", "model=/nonexistent/m", "-q"), 2, "path not found"),
    case("--device: unknown kind", ("run", "r.yaml", "--model", "{tiny}", "--device", "tpu", "-q"), 2, "allowed: cpu, cuda"),
    case("--device: empty", ("run", "r.yaml", "--model", "{tiny}", "--device", "", "-q"), 2, "allowed: cpu, cuda"),
    case("--device: CUDA index beyond the machine", ("eval", "{tiny}", "--data", "{text}", "--device", "cuda:99"), 2,
         "--device 'cuda:99'"),
    # damaged checkpoints --------------------------------------------------------------------------------------------------
    case("checkpoint: truncated weights (eval)", EVAL, 2, "damaged or inconsistent checkpoint", setup=truncate("ck/model.safetensors")),
    case("checkpoint: manifest is a list (inspect)", ("inspect", "ck"), 2, "ck", setup=write("ck/compress.json", "[1, 2]")),
    case("checkpoint: manifest not JSON (run --model)", ("run", "r.yaml", "--model", "ck", "--device", "cpu", "-q"), 2,
         "unreadable manifest", setup=write("ck/compress.json", "{not json")),
    case("checkpoint: no weights (inspect)", ("inspect", "ck"), 2, "no model.safetensors", setup=remove("ck/model.safetensors")),
    case("checkpoint: unknown packed format (eval)", EVAL, 2, "unknown to this version", setup=unknown_format),
    # --out ------------------------------------------------------------------------------------------------------------------
    case("--out: exists, no --force", (*RUN, "--out", "ck"), 2, "output directory exists; pass --force"),
    case("--out: --force on a user's directory", (*RUN, "--out", "thesis", "--force"), 2, "not a compress checkpoint"),
    case("--out: empty", (*RUN, "--out", "", "--force"), 2, "working directory"),
    case("--out: the working directory", (*RUN, "--out", ".", "--force"), 2, "working directory"),
    case("--out: a parent of the working directory", (*RUN, "--out", "..", "--force"), 2, "working directory"),
    case("--out: the input model", (*RUN, "--out", "{tiny}", "--force"), 2, "the input"),
    case("--out: an existing file", (*RUN, "--out", "afile", "--force"), 2, "not a directory"),
    case("--out: under a file", (*RUN, "--out", "afile/sub/ck"), 2, "is a file, so nothing can be made under it"),
    case("--out: unwritable parent", (*RUN, "--out", "{locked}/ck"), 2, "is not writable"),
    case("--out: disk too full (pre-check)", (*RUN, "--out", "new"), 1, "needs about", fault="small disk"),
    case("--out: disk too full (pre-check, --force)", (*RUN, "--out", "ck", "--force"), 1, "needs about", fault="small disk"),
    case("--out: ENOSPC mid-write", (*RUN, "--out", "new"), 1, "[ENOSPC] No space left on device", fault="enospc"),
    case("--out: ENOSPC mid-write, --force", (*RUN, "--out", "ck", "--force"), 1, "the previous one there is unchanged",
         fault="enospc"),
    case("--out: I/O error writing the manifest, --force", (*RUN, "--out", "ck", "--force"), 1, "[EIO]", fault="eio"),
    case("environment: an I/O error inside the work", RUN, 1, "[EIO] Input/output error: /dev/sdz", fault="eio in a pass"),
    # distill state_dir ------------------------------------------------------------------------------------------------------
    distill_state("distill state: truncated", truncated_state, "is truncated or damaged"),
    distill_state("distill state: crafted pickle", crafted_state, "refused by torch.load(weights_only=True)"),
    distill_state("distill state: another run's settings", good_state, "holds a run with other settings", "--set", "distill.lr=0.001"),
    distill_state("distill state: another model", good_state, "was saved for another model", model="{other}"),
    distill_state("distill state: not a state", plain_state([1, 2, 3]), "is not a distill resume state"),
    case("distill state: the recipe now prunes first", ("run", "d.yaml", "--model", "{tiny}", "--device", "cpu", "-q"), 2,
         "was saved for other pruned modules", setup=good_state,
         files={"d.yaml": "passes:\n  - magnitude: {{sparsity: 0.5}}\n" + DISTILL.removeprefix("passes:\n")}),
    # eval / inspect / fetch -------------------------------------------------------------------------------------------------
    case("eval: missing model", ("eval", "/nonexistent/m", "--data", "{text}"), 2, "path not found"),
    case("eval: missing data", ("eval", "{tiny}", "--data", "/nonexistent/d.txt"), 2, "no such file"),
    case("eval: seq-len beyond positions", ("eval", "{tiny}", "--data", "{text}", "--seq-len", "100000", "--device", "cpu"),
         2, "longer than the model's 512 positions"),
    case("inspect: missing dir", ("inspect", "/nonexistent/ck"), 2, "not a checkpoint directory"),
    case("inspect: a file", ("inspect", "afile"), 2, "not a checkpoint directory"),
    case("fetch: unknown model", ("fetch", "gpt5"), 2, "unknown model 'gpt5'", proc=True),
    # bench / regress --------------------------------------------------------------------------------------------------------
    case("bench: missing model", ("bench", "/nonexistent/m", "--data", "{text}", "--device", "cpu", "-q"), 2, "path not found"),
    case("bench: --json is a directory", (*BENCH, "--json", "thesis"), 2, "is a directory"),
    case("bench: --json under a file", (*BENCH, "--json", "afile/r.json"), 2, "is a file"),
    case("bench: --plot unwritable", (*BENCH, "--plot", "{locked}/p.png"), 2, "is not writable"),
    case("bench: --prefill not numbers", (*BENCH, "--prefill", "abc"), 2, "expected positive integers"),
    case("bench: --prefill beyond positions", (*BENCH, "--prefill", "100000"), 2, "longer than the model's 512 positions"),
    case("bench: unknown --decode-mode", (*BENCH, "--decode-mode", "warp"), 2, "warp"),
    case("regress: baseline missing", ("regress", "--baseline", "nosuch.json"), 2, "file not found"),
    case("regress: baseline not JSON", ("regress", "--baseline", "b.json"), 2, "not readable JSON", files={"b.json": "{oops"}),
    case("regress: baseline not a report", ("regress", "--baseline", "b.json"), 2, "not a bench report", files={"b.json": "[]"}),
    case("regress: --json is a directory", ("regress", "--baseline", "b.json", "--json", "thesis"), 2, "is a directory",
         files={"b.json": "{}"}),
    # export (its generic errors only) ---------------------------------------------------------------------------------------
    case("export: unknown format", ("export", "ck", "--format", "onnx", "--out", "exp"), 2, "unknown; allowed:"),
    case("export: missing source", ("export", "/nonexistent/ck", "--format", "dense", "--out", "exp"), 2, "/nonexistent/ck"),
    case("export: --out is the input", ("export", "ck", "--format", "dense", "--out", "ck", "--force"), 2, "the input"),
    # typer usage errors: one line too -----------------------------------------------------------------------------------------
    case("usage: missing argument", ("run",), 2, "Missing argument", proc=True),
    case("usage: unknown option", ("run", "r.yaml", "--bogus"), 2, "No such option: --bogus", proc=True),
    case("usage: bad int", ("eval", "ck", "--seq-len", "abc"), 2, "Invalid value for '--seq-len'", proc=True),
    case("usage: unknown command", ("frobnicate",), 2, "No such command 'frobnicate'"),
    case("usage: int below its minimum", ("eval", "ck", "--seq-len", "4"), 2, "--seq-len"),
    case("usage: --max-windows 0", ("eval", "ck", "--max-windows", "0"), 2, "--max-windows"),
    case("usage: option without its value", ("run", "r.yaml", "--out"), 2, "requires an argument"),
    case("usage: bench without models", ("bench",), 2, "Missing argument"),
    case("usage: regress without --baseline", ("regress",), 2, "Missing option '--baseline'"),
    case("usage: export without --format", ("export", "ck", "--out", "exp"), 2, "Missing option"),
    case("usage: fetch without a name", ("fetch",), 2, "Missing argument"),
    case("usage: inspect with two paths", ("inspect", "ck", "ck2"), 2, "unexpected extra argument"),
    case("usage: negative tolerance", ("regress", "--baseline", "b.json", "--tol-perplexity", "-1"), 2, "--tol-perplexity"),
    case("usage: bad float", ("regress", "--baseline", "b.json", "--tol-latency", "fast"), 2, "--tol-latency"),
]


# --- fixtures ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """One small int8 checkpoint for the session; each case works on a copy."""
    out = tmp_path_factory.mktemp("bad-inputs") / "ck"
    compress.run({"passes": [{"rtn": {"bits": 8}}]}, str(tiny_dir), out=out, device="cpu", progress=False)
    return out


@pytest.fixture(scope="session")
def other_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: object) -> Path:
    """A second tiny model with other widths: a distill state saved for the first does not fit it."""
    d = tmp_path_factory.mktemp("other-llama")
    make_model(ffn=96, seed=3).save_pretrained(d)
    tokenizer.save_pretrained(d)  # type: ignore[attr-defined]
    return d


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path, text_file: Path) -> Path:
    """A real distill resume state (one step on the tiny model) for the distill cases to misuse."""
    d = tmp_path_factory.mktemp("distill-state")
    r = compress.recipe.load_recipe(_write(d / "d.yaml", DISTILL.format(text=text_file)))
    compress.run(r, str(tiny_dir), overrides=[f"distill.state_dir={d / 'st'}"], device="cpu", progress=False)
    return d / "st"


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.fixture()
def locked(tmp_path: Path) -> Path:
    """A directory nothing can be created in. chmod does not stop root, so as root (detected by trying)
    the fault is /proc, where no one can make a directory; the case is never skipped."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        (d / "probe").mkdir()
    except PermissionError:
        yield d
        d.chmod(0o755)
        return
    (d / "probe").rmdir()
    d.chmod(0o755)
    d.rmdir()
    yield Path("/proc")


@pytest.fixture()
def ws(tmp_path: Path, checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: a checkpoint `ck`, a user's `thesis/` (with a source tree), a file, a good recipe."""
    w = tmp_path / "ws"
    w.mkdir()
    monkeypatch.chdir(w)
    shutil.copytree(checkpoint_dir, w / "ck")
    (w / "thesis" / "src").mkdir(parents=True)
    (w / "thesis" / "thesis.tex").write_text("\\documentclass{article} years of work")
    (w / "thesis" / "src" / "main.py").write_text("print('mine')\n")
    (w / "afile").write_text("x")
    (w / "r.yaml").write_text(RECIPE)
    return w


def snapshot(*roots: Path) -> dict[str, str]:
    """Every entry under `roots`: directories by name, files by content hash."""
    out: dict[str, str] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- faults injected in this process -------------------------------------------------------------------------------------------

def inject(fault: Optional[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """'enospc': the weights write fills the disk half-way; 'eio': writing the manifest fails; 'eio in a pass':
    an I/O error no part of the core turns into a message; 'small disk': the file system reports 4 KiB free."""
    import compress.checkpoint as ckpt
    import compress.fsutil as fsutil

    if fault == "enospc":
        def full_disk(state: dict, path: str, metadata: Optional[dict] = None) -> None:
            Path(path).write_bytes(b"\0" * 4096)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        monkeypatch.setattr(ckpt, "save_file", full_disk)
    elif fault == "eio":
        real = Path.write_text

        def failing(self: Path, data: str, *a: object, **kw: object) -> int:
            if self.name == "compress.json" and ".tmp-" in self.parent.name:
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
            return real(self, data, *a, **kw)  # type: ignore[arg-type]
        monkeypatch.setattr(Path, "write_text", failing)
    elif fault == "eio in a pass":  # the disk under a memory-mapped weight failed: no layer names it, the CLI must
        import dataclasses

        from compress import registry

        def broken(model: object, cfg: object, ctx: object) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO), "/dev/sdz")
        monkeypatch.setitem(registry._PASSES, "rtn", dataclasses.replace(registry.get_pass("rtn"), fn=broken))
    elif fault == "small disk":
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - 4096, 4096))
    else:
        assert fault is None, fault


def invoke(args: list[str], proc: bool, cwd: Path) -> tuple[int, str, str, Optional[BaseException]]:
    """(exit code, stdout, stderr, uncaught exception) from CliRunner or a real process."""
    if proc:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        p = subprocess.run([sys.executable, "-m", "compress", *args], cwd=cwd, capture_output=True, text=True,
                           env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr, None
    res = runner.invoke(app, args)
    exc = None if res.exception is None or isinstance(res.exception, SystemExit) else res.exception
    return res.exit_code, res.stdout, res.stderr, exc


# --- the test --------------------------------------------------------------------------------------------------------------------

def test_the_table_has_enough_cases() -> None:
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("c", CASES)
def test_bad_input_is_one_line_and_changes_nothing(c: Case, ws: Path, tiny_dir: Path, text_file: Path, other_dir: Path,
                                                   state_dir: Path, locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill = {"tiny": str(tiny_dir), "text": str(text_file), "other": str(other_dir), "locked": str(locked)}
    for name, data in c.files.items():
        data = data.format(**fill) if name == "d.yaml" else data  # the distill recipe names the text file
        (ws / name).write_bytes(data.encode() if isinstance(data, str) else data)
    if c.setup is not None:
        c.setup(ws, state_dir)
    before = snapshot(ws, tiny_dir)
    inject(c.fault, monkeypatch)
    args = [a.format(**fill) for a in c.args]

    code, out, err, exc = invoke(args, c.proc, ws)

    assert exc is None, f"uncaught {type(exc).__name__}: {exc}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr was:\n{err}\nstdout:\n{out}"
    assert c.words in lines[0], lines[0]
    assert code == c.code, lines[0]
    assert "Traceback" not in out + err and "PWNED" not in out + err
    assert snapshot(ws, tiny_dir) == before, "the file system changed"
    for pattern in LEFTOVERS:
        assert not list(ws.glob(pattern)) and not list(locked.glob(pattern)), pattern
    if c.fault and "--force" in args:  # the replaced checkpoint is still whole
        model = compress.load(ws / "ck", device="cpu")
        assert sum(p.numel() for p in model.parameters()) > 0
