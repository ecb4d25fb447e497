"""The distillation training loop on accelerate: the same code runs on one CPU, one GPU (bf16 mixed
precision) or data-parallel under `accelerate launch` (DDP/FSDP chosen by the launcher's config).

AdamW with a cosine schedule and warmup, gradient accumulation, optional gradient checkpointing,
held-out perplexity every N steps, a state file for exact resume, a progress bar with loss and
tokens/s, and a JSON/CSV log plus a loss-curve PNG.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from compress.algorithms.distill_losses import distill_kl, hidden_mse, next_token_ce
from compress.distill.data import step_batch
from compress.distill.layers import DistillStudent, capture_layer_outputs
from compress.distill.log import write_logs
from compress.distill.schedule import warmup_cosine
from compress.errors import CompressError

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the training trajectory (and so must match when resuming), plus I/O."""

    steps: int
    batch_size: int
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    weights: dict[str, float] = field(default_factory=lambda: {"kl": 1.0})
    kl_mode: str = "forward"
    temperature: float = 1.0
    jsd_beta: float = 0.5
    top_k: int | None = None
    seed: int = 0
    mixed_precision: str = "bf16"
    grad_checkpointing: bool = False
    eval_every: int = 0
    state_dir: str | None = None
    save_every: int = 0
    resume: bool = False
    progress: bool = True
    where: str = "distill"

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one."""
        keep = ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "weight_decay", "max_grad_norm", "weights",
                "kl_mode", "temperature", "jsd_beta", "top_k", "seed")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class TrainResult:
    """What the pass reports: the log rows and a few totals."""

    rows: list[dict[str, Any]]
    start_step: int
    seconds: float
    tokens: int
    files: dict[str, str]


def make_accelerator(device: torch.device, mixed_precision: str) -> Any:
    """An Accelerator for `device`; bf16 autocast only on GPUs (CPU bf16 matmuls are slow)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mp = mixed_precision if device.type == "cuda" else "no"
    try:
        return Accelerator(cpu=device.type == "cpu", mixed_precision=mp)
    except ValueError:  # a previous run in this process set other global accelerate state
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(cpu=device.type == "cpu", mixed_precision=mp)


def loss_terms(logits: torch.Tensor, hidden: dict[int, torch.Tensor], t_logits: torch.Tensor,
               t_hidden: dict[int, torch.Tensor], ids: torch.Tensor, layer_map: dict[int, int],
               s: TrainSettings) -> dict[str, torch.Tensor]:
    """Each weighted loss term by name (only those with a non-zero weight)."""
    out: dict[str, torch.Tensor] = {}
    if s.weights.get("kl", 0.0):
        out["kl"] = distill_kl(logits, t_logits, mode=s.kl_mode, temperature=s.temperature, beta=s.jsd_beta, top_k=s.top_k)
    if s.weights.get("ce", 0.0):
        out["ce"] = next_token_ce(logits, ids)
    if s.weights.get("hidden", 0.0):
        out["hidden"] = torch.stack([hidden_mse(hidden[i], t_hidden[j]) for i, j in layer_map.items()]).mean()
    return out


@torch.no_grad()
def held_out_perplexity(model: nn.Module, windows: torch.Tensor, device: torch.device, batch: int) -> float:
    """exp(mean next-token NLL) of `model` on held-out windows (first token of each window unscored)."""
    was = model.training
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        ids = windows[i : i + batch].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        count += ids[:, 1:].numel()
    model.train(was)
    return math.exp(nll / count)


def set_checkpointing(model: nn.Module, on: bool) -> None:
    """Activation (gradient) checkpointing, non-reentrant so hooked layer outputs keep their gradients.

    transformers ≥ 5.2x names it activation_checkpointing_*; older versions gradient_checkpointing_*.
    """
    kw = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw) if on else model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw) if on else model.gradient_checkpointing_disable()


def _trainable(student: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in student.named_parameters() if p.requires_grad}


def _fixed(student: nn.Module) -> dict[str, torch.Tensor]:
    """Frozen buffers that give the trained weights their meaning (a pruned module's mask), by name:
    each module lists them in `resume_buffers`. Saved with the state and checked on resume."""
    return {f"{n}.{b}": getattr(m, b) for n, m in student.named_modules() for b in getattr(m, "resume_buffers", ())}


def save_state(path: Path, step: int, rows: list, s: TrainSettings, student: nn.Module, opt: Any, sched: Any) -> None:
    """Write the resume state atomically (a crash mid-write leaves the previous state intact)."""
    path.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "rows": rows, "fingerprint": json.dumps(s.fingerprint(), sort_keys=True),
             "trainable": {n: p.detach().cpu() for n, p in _trainable(student).items()},
             "fixed": {n: b.detach().cpu() for n, b in _fixed(student).items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / STATE_FILE)


def load_state(path: Path, s: TrainSettings, student: nn.Module, opt: Any, sched: Any) -> tuple[int, list]:
    """Restore weights, optimizer and schedule from `path`; (0, []) when there is nothing to resume.

    A state file that cannot be resumed (truncated, another run's, not a plain tensor file) is one line
    naming it and what to do, never a traceback from torch or pickle."""
    f = path / STATE_FILE
    if not f.is_file():
        return 0, []
    state = _read_state(f, s.where)
    if state["fingerprint"] != json.dumps(s.fingerprint(), sort_keys=True):
        raise _unusable(f, s.where, f"holds a run with other settings ({_changed(state['fingerprint'], s)}); resume "
                                    f"with the same options, or")
    params = _trainable(student)
    _check_shapes(f, s.where, params, state["trainable"])
    _check_fixed(f, s.where, _fixed(student), state.get("fixed", {}))
    try:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["trainable"][n])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        return int(state["step"]), list(state["rows"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise _unusable(f, s.where, f"does not fit this model's optimizer state ({_first_line(e)}); it is from "
                                    f"another run, so") from None


STATE_KEYS = ("step", "rows", "fingerprint", "trainable", "optimizer", "scheduler")


def _read_state(f: Path, where: str) -> dict[str, Any]:
    """torch.load with weights_only (a state file never runs code), every failure as one line."""
    import pickle
    import zipfile

    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _unusable(f, where, "was refused by torch.load(weights_only=True): it holds objects other than "
                                  "tensors and plain data (it was not written by compress, and is not loaded);") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise _unusable(f, where, f"is truncated or damaged ({_first_line(e).split('. ')[0]});") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise _unusable(f, where, "is not a distill resume state (it lacks step/fingerprint/trainable);")
    return state


def _check_shapes(f: Path, where: str, params: dict[str, nn.Parameter], saved: Any) -> None:
    """The saved weights must be those of the modules trained now, shape for shape."""
    if not isinstance(saved, dict) or set(params) != set(saved):
        raise _unusable(f, where, "was saved for other trained modules (another model or other targets);")
    for n, p in params.items():
        if not isinstance(saved[n], torch.Tensor) or tuple(saved[n].shape) != tuple(p.shape):
            got = tuple(saved[n].shape) if isinstance(saved[n], torch.Tensor) else type(saved[n]).__name__
            raise _unusable(f, where, f"was saved for another model ({n} is {got} there, {tuple(p.shape)} here);")


def _check_fixed(f: Path, where: str, now: dict[str, torch.Tensor], saved: Any) -> None:
    """The pruned modules' masks must be those the saved weights were trained under: a different one
    means the passes before distill changed, and continuing would give a model of neither run."""
    if not isinstance(saved, dict) or set(now) != set(saved):
        raise _unusable(f, where, "was saved for other pruned modules (a sparse module is dense, or the other way "
                                  "round, in one of the two runs);")
    for n, b in now.items():
        old = saved[n]
        if not isinstance(old, torch.Tensor) or old.shape != b.shape or not torch.equal(old, b.detach().cpu()):
            raise _unusable(f, where, f"was trained under another sparsity mask for {n.removeprefix('model.').rsplit('.', 1)[0]} (the "
                                      f"pruning before distill changed);")


def _unusable(f: Path, where: str, problem: str) -> CompressError:
    return CompressError(f"{where}: resume state {f} {problem} delete it (or the whole state_dir) to start afresh, "
                         f"or set another state_dir")


def _changed(saved: Any, s: TrainSettings) -> str:
    """'lr 0.0001 there, 0.001 here' for each setting that differs (all of the saved ones if unreadable)."""
    try:
        old = json.loads(saved)
    except (TypeError, ValueError):
        old = None
    if not isinstance(old, dict):
        return f"saved: {str(saved)[:120]}"
    now = json.loads(json.dumps(s.fingerprint()))
    diffs = [f"{k} {old.get(k)!r} there, {now.get(k)!r} here" for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
    return "; ".join(diffs) or "saved by another version"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def train(student: DistillStudent, teacher: nn.Module, train_windows: torch.Tensor, eval_windows: torch.Tensor,
          s: TrainSettings, device: torch.device, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Distil `teacher` into `student` in place for `s.steps` optimizer steps (see the module docstring)."""
    acc = make_accelerator(device, s.mixed_precision)
    for p in student.parameters():  # fp32 master weights; bf16 happens in autocast on GPUs
        p.data = p.data.float()
    teacher.to(acc.device).eval()
    if s.grad_checkpointing:
        set_checkpointing(student.model, True)
    student.train()
    params = list(_trainable(student).values())
    if not params:
        raise CompressError(f"{s.where}: nothing to train (targets/ignore select no module with weights)")
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = warmup_cosine(opt, s.warmup_steps, s.steps)
    wrapped, opt = acc.prepare(student, opt)
    state_dir = Path(s.state_dir) if s.state_dir else None
    start, rows = load_state(state_dir, s, acc.unwrap_model(wrapped), opt, sched) if (state_dir and s.resume) else (0, [])
    layer_map, teacher_layers = student.layer_map, sorted(set(student.layer_map.values()))
    eval_batch = max(1, s.batch_size)
    if start == 0 and eval_windows.numel():
        rows.append({"step": 0, "eval_ppl": held_out_perplexity(student.model, eval_windows, acc.device, eval_batch)})
    tokens_per_step = s.batch_size * s.grad_accum * train_windows.shape[1] * acc.num_processes
    bar = tqdm(total=s.steps, initial=start, desc="distill", disable=not (s.progress and acc.is_main_process))
    t_start = time.perf_counter()
    for step in range(start, s.steps):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        for micro in range(s.grad_accum):
            ids = step_batch(train_windows, step, micro, s.batch_size, s.seed, acc.process_index).to(acc.device)
            with torch.no_grad(), capture_layer_outputs(teacher, teacher_layers) as t_hidden:
                t_logits = teacher(input_ids=ids, use_cache=False).logits
            sync = nullcontext() if micro == s.grad_accum - 1 else acc.no_sync(wrapped)
            with sync:
                logits, hidden = wrapped(ids)
                terms = loss_terms(logits, hidden, t_logits, t_hidden, ids, layer_map, s)
                loss = sum(s.weights[k] * v for k, v in terms.items())
                acc.backward(loss / s.grad_accum)
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / s.grad_accum
        if s.max_grad_norm > 0:
            acc.clip_grad_norm_(params, s.max_grad_norm)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {"step": step + 1, **{k: round(v, 6) for k, v in sums.items()}, "lr": lr,
                               "tokens": tokens_per_step * (step + 1), "seconds": round(dt, 3),
                               "tokens_per_s": round(tokens_per_step / dt, 1)}
        if eval_windows.numel() and ((s.eval_every and (step + 1) % s.eval_every == 0) or step + 1 == s.steps):
            row["eval_ppl"] = held_out_perplexity(student.model, eval_windows, acc.device, eval_batch)
        rows.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if state_dir and ((s.save_every and (step + 1) % s.save_every == 0) or step + 1 == s.steps):
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_state(state_dir, step + 1, rows, s, acc.unwrap_model(wrapped), opt, sched)
        if on_step is not None:
            on_step(step + 1)
    bar.close()
    if s.grad_checkpointing:
        set_checkpointing(student.model, False)
    student.eval()
    files = write_logs(rows, state_dir) if (state_dir and acc.is_main_process) else {}
    seconds = time.perf_counter() - t_start
    return TrainResult(rows, start, seconds, tokens_per_step * (s.steps - start), files)
