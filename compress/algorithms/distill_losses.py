"""Distillation losses: pure tensor functions of student/teacher logits and hidden states.

KL on temperature-scaled logits (forward KL(teacher‖student), reverse KL(student‖teacher), or the
generalized Jensen–Shannon mix of GKD), optionally restricted to the teacher's top-k logits to save
memory, next-token cross-entropy, and a normalized hidden-state MSE. Every function returns a mean
over tokens, so weights combine losses independently of batch size and sequence length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KL_MODES = ("forward", "reverse", "jsd")


def scaled_log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                     top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax of logits / T for both models, in fp32.

    With `top_k`, both distributions are renormalized over the teacher's k largest logits per token:
    the rest of the vocabulary carries little teacher mass and would cost [tokens, vocab] memory.
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    if top_k is not None and top_k < t.shape[-1]:
        idx = t.topk(top_k, dim=-1).indices
        s, t = s.gather(-1, idx), t.gather(-1, idx)
    return s.log_softmax(-1), t.log_softmax(-1)


def kl_per_token(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ p (log p − log q) over the last dim, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def generalized_jsd(log_t: torch.Tensor, log_s: torch.Tensor, beta: float) -> torch.Tensor:
    """β·KL(t‖m) + (1−β)·KL(s‖m) with m = β·t + (1−β)·s (GKD's generalized JSD), per token."""
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta={beta}: the generalized JSD needs 0 < beta < 1")
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
    return beta * kl_per_token(log_t, log_m) + (1 - beta) * kl_per_token(log_s, log_m)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, mode: str = "forward",
               temperature: float = 1.0, beta: float = 0.5, top_k: int | None = None) -> torch.Tensor:
    """Mean per-token divergence between temperature-scaled distributions, times T².

    The T² factor (Hinton et al.) keeps gradient magnitudes comparable across temperatures.
    """
    log_s, log_t = scaled_log_probs(student_logits, teacher_logits, temperature, top_k)
    if mode == "forward":
        per_token = kl_per_token(log_t, log_s)
    elif mode == "reverse":
        per_token = kl_per_token(log_s, log_t)
    elif mode == "jsd":
        per_token = generalized_jsd(log_t, log_s, beta)
    else:
        raise ValueError(f"mode={mode!r}: allowed {', '.join(KL_MODES)}")
    return per_token.mean() * temperature**2


def next_token_ce(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [B, L, V] against the ground-truth next tokens ids[:, 1:]."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean squared error between hidden states of equal shape, divided by mean(teacher²) when normalized.

    Normalizing makes layers with large activations (the residual stream grows with depth) weigh
    like shallow ones, and makes the loss weight independent of the model's scale.
    """
    s, t = student.float(), teacher.float()
    mse = (s - t).pow(2).mean()
    return mse / t.pow(2).mean().clamp(min=1e-12) if normalize else mse
