"""`distill`: knowledge distillation from a teacher into the current (pruned and/or quantized) model.

The teacher is the model as it was before the recipe's passes (the core keeps a frozen copy) or a
model named in the recipe. Packed int modules among the trained ones are trained quantization-aware
(fake-quantized on their own grid, straight-through gradients) and packed back at the end; pruned
(SparseLinear) modules train with their mask held fixed and are stored back under the same mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.context import Context
from compress.distill.data import TEACHER, eval_split_reason, split_holdout, teacher_windows, text_windows
from compress.distill.layers import DistillStudent, auto_layer_map
from compress.distill.qat import pack_after_training, unpack_for_training
from compress.distill.sparse_train import pack_sparse_after_training, unpack_sparse_for_training
from compress.distill.trainer import TrainSettings, train
from compress.errors import CompressError
from compress.formats.quant_linear import QuantLinear
from compress.layerwise import decoder_layers
from compress.models import compute_dtype, load_model
from compress.registry import PassConfig, option, register_pass
from compress.select import select_modules

LOSSES = ("kl", "ce", "hidden")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(PassConfig):
    targets: tuple[str, ...] = option((), "linear, packed int or sparse modules whose weights train (fnmatch; sparse ones keep their mask); empty = every linear (embeddings and norms stay frozen)")
    teacher: str | None = option(None, "teacher model (path, checkpoint or alias); none = the model before the recipe's passes")
    data: str = option("wikitext2-valid", "training text: a text source (never wikitext2-test) or 'teacher' for text sampled from the teacher")
    teacher_samples: int = option(256, "sequences sampled from the teacher when data is 'teacher'", min=2)
    steps: int = option(200, "optimizer steps", min=1)
    seq_len: int = option(512, "tokens per training window", min=8)
    batch_size: int = option(8, "windows per micro-batch (per process)", min=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", min=1)
    lr: float = option(1e-4, "peak learning rate (AdamW)", min=0.0)
    warmup_steps: int = option(10, "linear warmup steps before the cosine decay", min=0)
    weight_decay: float = option(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 = off", min=0.0)
    loss: dict[str, float] = option({"kl": 1.0}, "loss weights by name: kl (teacher logits), ce (next token), hidden (layer outputs)")
    kl: str = option("forward", "divergence: forward KL(teacher‖student), reverse KL(student‖teacher), or jsd (generalized JS)",
                     choices=("forward", "reverse", "jsd"))
    jsd_beta: float = option(0.5, "teacher weight in the jsd mixture, strictly between 0 and 1", min=0.0, max=1.0)
    temperature: float = option(1.0, "softmax temperature for the KL term (loss is scaled by T²)", min=0.01)
    top_k: int | None = option(None, "KL over the teacher's top-k logits only (saves memory); null = full vocabulary", min=1)
    layer_map: dict[int, int] = option({}, "student layer → teacher layer for the hidden loss; {} = found automatically")
    eval_every: int = option(0, "held-out perplexity every N steps (and at start/end); 0 = start and end only", min=0)
    eval_windows: int = option(4, "training-data windows held out for that perplexity (never trained on)", min=0)
    mixed_precision: str = option("bf16", "autocast dtype on GPUs (CPUs always train in fp32)", choices=("bf16", "no"))
    grad_checkpointing: bool = option(False, "recompute activations in backward (less memory, ~30% slower)")
    seed: int = option(0, "seed for batch order and teacher sampling")
    state_dir: str | None = option(None, "folder for the resume state (state.pt), log.json, log.csv and loss.png; null = none")
    save_every: int = option(0, "write the resume state every N steps (and at the end); 0 = at the end only", min=0)
    resume: bool = option(False, "continue from state_dir/state.pt when it exists (same options required)")

    def check(self) -> None:
        unknown = sorted(set(self.loss) - set(LOSSES))
        if unknown:
            raise ValueError(f"option 'loss': key {unknown[0]!r} is unknown; allowed: {', '.join(LOSSES)}")
        if any(w < 0 for w in self.loss.values()) or not any(w > 0 for w in self.loss.values()):
            raise ValueError("option 'loss': weights must be ≥ 0 with at least one > 0, e.g. {kl: 1.0}")
        if self.kl == "jsd" and not 0.0 < self.jsd_beta < 1.0:
            raise ValueError(f"option 'jsd_beta' = {self.jsd_beta}: jsd needs 0 < jsd_beta < 1")
        reason = eval_split_reason(self.data)
        if reason:
            raise ValueError(f"option 'data': {reason} and is never trained on; allowed: wikitext2-valid, a text file, hf:NAME[:CONFIG[:SPLIT]], or teacher")
        if (self.resume or self.save_every) and not self.state_dir:
            raise ValueError("option 'resume'/'save_every' needs 'state_dir' (where the state is kept)")

    def settings(self, progress: bool, where: str) -> TrainSettings:
        return TrainSettings(
            steps=self.steps, batch_size=self.batch_size, grad_accum=self.grad_accum, lr=self.lr,
            warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            weights={k: v for k, v in self.loss.items() if v}, kl_mode=self.kl, temperature=self.temperature,
            jsd_beta=self.jsd_beta, top_k=self.top_k, seed=self.seed, mixed_precision=self.mixed_precision,
            grad_checkpointing=self.grad_checkpointing, eval_every=self.eval_every, state_dir=self.state_dir,
            save_every=self.save_every, resume=self.resume, progress=progress, where=where)


def _teacher(cfg: DistillConfig, ctx: Context, student: nn.Module) -> nn.Module:
    if cfg.teacher is None:
        teacher = ctx.teacher()
    else:
        try:
            teacher, _ = load_model(cfg.teacher, ctx.device, compute_dtype(ctx.device))
        except CompressError as e:
            raise CompressError(f"{ctx.where}: option 'teacher': {e}") from None
        for p in teacher.parameters():
            p.requires_grad_(False)
    s_vocab, t_vocab = student.get_output_embeddings().out_features, teacher.get_output_embeddings().out_features
    if s_vocab != t_vocab:
        raise CompressError(f"{ctx.where}: option 'teacher': vocabulary {t_vocab} differs from the student's {s_vocab}; "
                            "distillation needs the same tokenizer")
    return teacher


def _layer_map(cfg: DistillConfig, ctx: Context, student: nn.Module, teacher: nn.Module) -> dict[int, int]:
    if not cfg.loss.get("hidden"):
        return {}
    n_s, n_t = len(decoder_layers(student)), len(decoder_layers(teacher))
    if not cfg.layer_map:
        return auto_layer_map(student, teacher)
    for i, j in cfg.layer_map.items():
        if not (0 <= i < n_s and 0 <= j < n_t):
            raise CompressError(f"{ctx.where}: option 'layer_map': {i}: {j} is out of range; student layers 0..{n_s - 1}, teacher layers 0..{n_t - 1}")
    return dict(cfg.layer_map)


def _windows(cfg: DistillConfig, ctx: Context, teacher: nn.Module) -> torch.Tensor:
    if cfg.data == TEACHER:
        return teacher_windows(teacher, ctx.tokenizer, cfg.teacher_samples, cfg.seq_len, ctx.device, cfg.seed,
                               progress=ctx.progress)
    reason = eval_split_reason(cfg.data)
    if reason:
        raise CompressError(f"{ctx.where}: option 'data': {reason} and is never trained on")
    try:
        return text_windows(cfg.data, ctx.tokenizer, cfg.seq_len)
    except CompressError as e:
        raise CompressError(f"{ctx.where}: option 'data': {e}") from None


def _latent_weights(teacher: nn.Module, chosen: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The teacher's dense weights for the packed modules it has under the same name (QAT's starting point)."""
    out = {}
    for name, mod in chosen.items():
        if isinstance(mod, QuantLinear):
            try:
                t = teacher.get_submodule(name)
            except AttributeError:
                continue
            if isinstance(t, nn.Linear):
                out[name] = t.weight
    return out


def _candidates(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, QuantLinear))}


@register_pass("distill", DistillConfig, needs_teacher=True)
def distill(model: nn.Module, cfg: DistillConfig, ctx: Context) -> nn.Module:
    """Knowledge distillation from the original (or a named) model; int modules train quantization-aware,
    sparse modules with their mask fixed."""
    teacher = _teacher(cfg, ctx, model)
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where, candidates=_candidates(model))
    store = next(model.parameters()).dtype
    for p in model.parameters():
        p.requires_grad_(False)
    qat = unpack_for_training(model, chosen, _latent_weights(teacher, chosen))
    masked = unpack_sparse_for_training(model, chosen)
    for name in chosen:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    windows = _windows(cfg, ctx, teacher)
    train_w, eval_w = split_holdout(windows, cfg.eval_windows)
    layer_map = _layer_map(cfg, ctx, model, teacher)
    student = DistillStudent(model, layer_map, model.config.hidden_size, teacher.config.hidden_size)
    result = train(student, teacher, train_w, eval_w, cfg.settings(ctx.progress, ctx.where), ctx.device)
    pack_after_training(model, list(qat), store)
    pack_sparse_after_training(model, list(masked))
    for p in model.parameters():
        p.requires_grad_(False)
        p.data = p.data.to(store)
    evals = [r["eval_ppl"] for r in result.rows if r.get("eval_ppl") is not None]
    losses = [r["loss"] for r in result.rows if "loss" in r]
    ctx.stats.update({
        "steps": cfg.steps, "resumed_from": result.start_step, "trained_modules": len(chosen), "qat_modules": len(qat),
        "sparse_modules": len(masked),
        "layer_map": layer_map, "train_windows": int(train_w.shape[0]), "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.seconds, 1) if result.seconds > 0 else None,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "heldout_ppl_before": evals[0] if evals else None, "heldout_ppl_after": evals[-1] if evals else None,
        "log": result.files,
    })
    return model.eval()
