"""The trainer: a resumed run ends with exactly the weights of an uninterrupted one (sparse students
included, whose masks the state keeps and checks); logs are written."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from compress.algorithms.masks import matrix_mask, nm_mask
from compress.distill.layers import DistillStudent
from compress.distill.sparse_train import MaskedLinear, unpack_sparse_for_training
from compress.distill.trainer import TrainSettings, train
from compress.errors import CompressError
from compress.formats.sparse import SparseLinear
from conftest import make_model

CPU = torch.device("cpu")


class Interrupt(Exception):
    pass


def prune(model: torch.nn.Module, pattern: str | None) -> None:
    """Every decoder linear → SparseLinear (2:4 or 50% by magnitude), then swapped for mask-fixed training."""
    chosen = {n: m for n, m in model.named_modules() if ".layers." in n and isinstance(m, torch.nn.Linear)}
    for name, lin in chosen.items():
        w = lin.weight.detach()
        keep = nm_mask(w.abs(), 2, 4) if pattern == "2:4" else matrix_mask(w.abs(), 0.5)
        model.set_submodule(name, SparseLinear.from_dense(w * keep, lin.bias, pattern))
    unpack_sparse_for_training(model, {n: model.get_submodule(n) for n in chosen})


def setup(sparse: str | None = None) -> tuple[DistillStudent, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """sparse: None (dense student), '2:4' or '50%' (pruned student, mask-fixed)."""
    teacher = make_model(layers=2, seed=1)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = make_model(layers=1, seed=2)
    if sparse:
        prune(student, "2:4" if sparse == "2:4" else None)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 300, (20, 16), generator=g)
    return DistillStudent(student, {0: 1}, 64, 64), teacher, windows[:18], windows[18:]


def settings(state_dir, **kw) -> TrainSettings:
    base = dict(steps=5, batch_size=2, grad_accum=2, lr=3e-3, warmup_steps=2, weights={"kl": 1.0, "ce": 0.3, "hidden": 0.5},
                state_dir=str(state_dir), save_every=2, progress=False)
    return TrainSettings(**{**base, **kw})


@pytest.mark.parametrize("sparse", [None, "2:4"])
def test_resume_matches_an_uninterrupted_run(tmp_path, sparse):
    s, t, tr, ev = setup(sparse)
    full = train(s, t, tr, ev, settings(tmp_path / "a"), CPU)
    assert [r["lr"] for r in full.rows[1:3]] == pytest.approx([3e-3 / 2, 3e-3])  # warmup 2: no step at lr 0
    ref = {n: p.detach().clone() for n, p in s.named_parameters()}

    s2, t2, _, _ = setup(sparse)

    def stop(step: int) -> None:
        if step == 3:  # one step after the state at step 2 was saved: that step is redone
            raise Interrupt

    with pytest.raises(Interrupt):
        train(s2, t2, tr, ev, settings(tmp_path / "b"), CPU, on_step=stop)
    s3, t3, _, _ = setup(sparse)  # a fresh process rebuilds the student from scratch, then resumes
    resumed = train(s3, t3, tr, ev, settings(tmp_path / "b", resume=True), CPU)
    assert resumed.start_step == 2
    for n, p in s3.named_parameters():
        assert torch.equal(p, ref[n]), n
    up = "model.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(ref[up], setup(sparse)[0].model.model.layers[0].mlp.up_proj.weight)
    masked = [m for m in s3.modules() if isinstance(m, MaskedLinear)]
    assert len(masked) == (7 if sparse else 0)
    for m in masked:  # the pruned latents never moved from zero, through the save and the resume
        assert not m.weight[~m.keep].any()
    assert [r.get("loss") for r in resumed.rows] == [r.get("loss") for r in full.rows]

    rows = json.loads((tmp_path / "b" / "log.json").read_text())
    assert [r["step"] for r in rows] == list(range(6))
    with open(tmp_path / "b" / "log.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert (tmp_path / "b" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # each logged loss is the weighted sum of its terms
    for r in rows[1:]:
        assert r["loss"] == pytest.approx(r["kl"] + 0.3 * r["ce"] + 0.5 * r["hidden"], rel=1e-4)


def test_resume_refuses_other_settings(tmp_path):
    s, t, tr, ev = setup()
    train(s, t, tr, ev, settings(tmp_path, steps=2), CPU)
    s2, t2, _, _ = setup()
    with pytest.raises(CompressError, match="other settings"):
        train(s2, t2, tr, ev, settings(tmp_path, steps=2, lr=1e-3, resume=True), CPU)


@pytest.mark.parametrize("saved, now, words", [
    ("2:4", "50%", "another sparsity mask for model.layers.0.self_attn.q_proj"),
    (None, "2:4", "other pruned modules"),
])
def test_resume_refuses_another_mask(tmp_path, saved, now, words):
    """Same shapes, same trainable names: only the kept masks tell that the pruning before changed."""
    s, t, tr, ev = setup(saved)
    train(s, t, tr, ev[:0], settings(tmp_path, steps=1), CPU)
    s2, t2, _, _ = setup(now)
    with pytest.raises(CompressError, match=words):
        train(s2, t2, tr, ev[:0], settings(tmp_path, steps=1, resume=True), CPU)


def test_hidden_loss_trains_through_activation_checkpointing(tmp_path):
    s, t, tr, ev = setup()  # the hidden loss alone: its gradient must survive the recomputation
    res = train(s, t, tr, ev, settings(tmp_path, steps=8, weights={"hidden": 1.0}, grad_checkpointing=True), CPU)
    losses = [r["loss"] for r in res.rows if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert res.tokens == 8 * 2 * 2 * 16
