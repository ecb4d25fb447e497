"""The `distill` pass end to end on tiny models: a depth-pruned student, an int4 student and sparse
(50% and 2:4) students recover perplexity from a teacher that knows the text, the sparse ones with
their masks held fixed; bad options are one-line errors."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import compress
from compress.algorithms.masks import is_nm
from compress.data import tokenize
from compress.distill.data import split_holdout, text_windows
from compress.distill.trainer import held_out_perplexity
from compress.errors import CompressError, RecipeError
from compress.eval.perplexity import perplexity
from compress.formats.quant_linear import QuantLinear
from compress.formats.sparse import SparseLinear
from compress.recipe import recipe_from_dict
from conftest import TEXT, make_model

SEQ = 32


def ppl(model, tok, text_file) -> float:
    return perplexity(model, tok, str(text_file), SEQ, max_windows=40, progress=False)["perplexity"]


@pytest.fixture(scope="module")
def teacher(tokenizer):
    """A tiny Llama trained on the fixture text with a plain loop (so it knows the text well)."""
    model = make_model(layers=3, seed=3).train()
    ids = tokenize(tokenizer, TEXT)
    windows = ids[: ids.numel() // SEQ * SEQ].view(-1, SEQ)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        batch = windows[torch.randint(0, windows.shape[0], (8,), generator=g)]
        logits = model(batch).logits[:, :-1]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def teacher_dir(teacher, tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def drop_layer(model, i: int):
    m = copy.deepcopy(model)
    del m.model.layers[i]
    m.config.num_hidden_layers = len(m.model.layers)
    for j, layer in enumerate(m.model.layers):
        layer.self_attn.layer_idx = j
    return m


def distill_step(**kw) -> dict:
    opts = {"steps": 12, "seq_len": SEQ, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "eval_windows": 2}
    return {"distill": {**opts, **kw}}


def test_depth_pruned_student_recovers(teacher, teacher_dir, tokenizer, text_file, tmp_path):
    student = drop_layer(teacher, 1)
    base, before = ppl(teacher, tokenizer, text_file), ppl(student, tokenizer, text_file)
    assert before > 1.5 * base  # dropping a layer really hurts
    recipe = {"passes": [distill_step(teacher=str(teacher_dir), data=str(text_file), state_dir=str(tmp_path / "s"),
                                      loss={"kl": 1.0, "hidden": 0.1})]}
    res = compress.run(recipe, student, tokenizer=tokenizer, device="cpu", progress=False)
    after = ppl(res.model, tokenizer, text_file)
    assert after < before - 0.5 * (before - base)  # recovers more than half of what dropping the layer cost
    stats = res.report["passes"][0]
    assert stats["layer_map"] == {0: 0, 1: 2}  # found by its norm weights: student layer 1 was teacher layer 2
    assert stats["heldout_ppl_after"] < stats["heldout_ppl_before"]
    assert (tmp_path / "s" / "state.pt").is_file() and (tmp_path / "s" / "loss.png").is_file()
    assert not any(p.requires_grad for p in res.model.parameters())


def test_int4_student_trains_quantization_aware_and_stays_packed(teacher, tokenizer, text_file, tmp_path):
    base = copy.deepcopy(teacher)
    with torch.no_grad():  # an outlier input column per linear: per-channel int4 then really hurts
        for name, mod in base.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":
                mod.weight[:, 0] *= 6
    rtn = {"rtn": {"bits": 4, "group_size": -1, "symmetric": True}}
    only_rtn = compress.run({"passes": [rtn]}, copy.deepcopy(base), tokenizer=tokenizer, device="cpu", progress=False)
    recipe = {"passes": [rtn, distill_step(data=str(text_file), lr=3e-4, kl="jsd", top_k=50)]}
    res = compress.run(recipe, copy.deepcopy(base), tokenizer=tokenizer, device="cpu", progress=False,
                       out=tmp_path / "ckpt")
    q_base, q_rtn, q_qad = (ppl(m, tokenizer, text_file) for m in (base, only_rtn.model, res.model))
    assert q_qad < q_rtn - 0.3 * (q_rtn - q_base)  # recovers a good part of what quantization lost
    mods = {n: m for n, m in res.model.named_modules() if isinstance(m, QuantLinear)}
    assert len(mods) == 3 * 7 and res.report["passes"][1]["qat_modules"] == 21
    name = "model.layers.0.mlp.down_proj"
    assert mods[name].qweight.dtype == torch.uint8
    assert not torch.equal(mods[name].qweight, only_rtn.model.get_submodule(name).qweight)  # codes were trained
    assert torch.equal(mods[name].scales, only_rtn.model.get_submodule(name).scales)        # on the same grid
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        assert torch.equal(res.model(ids).logits, compress.load(tmp_path / "ckpt", device="cpu", dtype=torch.float32)(ids).logits)


def sparse_modules(model) -> dict[str, SparseLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear)}


@pytest.mark.parametrize("prune", [{"sparsity": 0.5}, {"pattern": "2:4"}], ids=["50%", "2:4"])
def test_sparse_student_trains_with_its_mask_fixed(prune, teacher, teacher_dir, tokenizer, text_file, tmp_path):
    pruned = compress.run({"passes": [{"magnitude": prune}]}, copy.deepcopy(teacher), progress=False).model
    before = {n: (m.mask.clone(), m.dense_weight().clone(), m.pattern) for n, m in sparse_modules(pruned).items()}
    assert len(before) == 3 * 7
    step = distill_step(teacher=str(teacher_dir), data=str(text_file), state_dir=str(tmp_path / "s"))
    res = compress.run({"passes": [step]}, copy.deepcopy(pruned), tokenizer=tokenizer, device="cpu", progress=False,
                       out=tmp_path / "ckpt")
    after = sparse_modules(res.model)
    assert set(after) == set(before) and res.report["passes"][0]["sparse_modules"] == 21
    for name, (mask, w, pattern) in before.items():
        got = after[name]
        assert torch.equal(got.mask, mask) and got.pattern == pattern, name  # the very same kept set
        dense = got.dense_weight()
        assert not dense[~got.keep_mask()].any(), name  # pruned positions exactly zero
        assert not torch.equal(dense, w), name  # the kept weights trained
        if pattern:
            assert is_nm(got.keep_mask(), 2, 4), name
    stats = res.report["passes"][0]
    assert stats["heldout_ppl_after"] < stats["heldout_ppl_before"]
    # what the trainer measured on its last step is what was packed (a mask dropped in training is not)
    _, held_out = split_holdout(text_windows(str(text_file), tokenizer, SEQ), 2)
    assert held_out_perplexity(res.model, held_out, torch.device("cpu"), 4) == pytest.approx(stats["heldout_ppl_after"], rel=1e-5)
    loaded = sparse_modules(compress.load(tmp_path / "ckpt", device="cpu", dtype=torch.float32))
    assert {n: m.values.numel() for n, m in loaded.items()} == {n: m.values.numel() for n, m in sparse_modules(pruned).items()}
    assert all(torch.equal(m.mask, before[n][0]) and m.pattern == before[n][2] for n, m in loaded.items())
    # resuming the finished run on a freshly pruned copy: the saved state (masks included) is taken as is
    resumed = compress.run({"passes": [{"distill": {**step["distill"], "resume": True}}]}, copy.deepcopy(pruned),
                           tokenizer=tokenizer, device="cpu", progress=False)
    assert resumed.report["passes"][0]["resumed_from"] == 12
    for name, m in sparse_modules(resumed.model).items():
        assert torch.equal(m.mask, after[name].mask) and torch.equal(m.values, after[name].values), name


@pytest.mark.parametrize("opts, match", [
    ({"data": "wikitext2-test"}, "option 'data'.*evaluation split"),
    ({"loss": {"kl": 1.0, "mse": 1.0}}, "option 'loss'.*'mse' is unknown; allowed: kl, ce, hidden"),
    ({"loss": {"kl": 0.0}}, "option 'loss'"),
    ({"kl": "jsd", "jsd_beta": 1.0}, "jsd_beta"),
    ({"kl": "sideways"}, "option 'kl'.*allowed: 'forward', 'reverse', 'jsd'"),
    ({"resume": True}, "state_dir"),
])
def test_bad_options_fail_validation(opts, match):
    with pytest.raises(RecipeError, match=match):
        recipe_from_dict({"passes": [{"distill": opts}]}, source="r.yaml")


def test_runtime_errors_name_the_pass(tiny_model, tokenizer, text_file, tmp_path):
    other_vocab = make_model(vocab=200)
    d = tmp_path / "t"
    other_vocab.save_pretrained(d)
    tokenizer.save_pretrained(d)
    run = lambda **kw: compress.run({"passes": [distill_step(data=str(text_file), **kw)]}, tiny_model,  # noqa: E731
                                    tokenizer=tokenizer, device="cpu", progress=False)
    with pytest.raises(CompressError, match=r"pass 'distill' \(#1\): option 'teacher': vocabulary 200"):
        run(teacher=str(d))
    with pytest.raises(CompressError, match=r"option 'layer_map': 0: 7 is out of range"):
        run(loss={"hidden": 1.0}, layer_map={0: 7})
    with pytest.raises(CompressError, match=r"option 'teacher'.*path not found"):
        run(teacher=str(tmp_path / "nope"))
