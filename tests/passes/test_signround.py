"""The `signround` pass on a tiny Llama: packed modules on the grid it learned, lower error than RTN, loads back."""
from __future__ import annotations

import pytest
import torch

import compress
from compress.errors import CompressError
from compress.formats.quant_linear import QuantLinear
from tests.conftest import make_model
from tests.passes.test_gptq import held_out_error, run

Q = {"bits": 4, "group_size": 32, "symmetric": False}


@pytest.mark.parametrize("q", [Q, {"bits": 4, "group_size": -1, "symmetric": True}])
def test_beats_rtn_on_the_same_grid_and_stores_packed(q, tokenizer, text_file):
    ref = make_model()
    res = run([{"signround": {**q, "iters": 40, "batch": 2}}], make_model(), tokenizer, text_file)
    rtn = run([{"rtn": q}], make_model(), tokenizer, text_file).model
    mods = [m for m in res.model.modules() if isinstance(m, QuantLinear)]
    assert len(mods) == 14 and all(m.qspec.bits == 4 and m.qweight.dtype == torch.uint8 for m in mods)
    stats = res.report["passes"][0]
    assert stats["layer_loss"] < 0.9 * stats["layer_loss_rtn"]  # the tuned layers fit their targets better …
    assert held_out_error(res.model, ref, tokenizer) < held_out_error(rtn, ref, tokenizer)  # … and generalize


def test_one_step_is_not_enough_to_move_far_from_rtn(tokenizer, text_file):
    """Sanity of the previous test's margin: with a single tiny step the result is RTN's codes almost everywhere."""
    one = run([{"signround": {**Q, "iters": 1, "lr": 1e-6}}], make_model(), tokenizer, text_file).model
    rtn = run([{"rtn": Q}], make_model(), tokenizer, text_file).model
    a, b = one.model.layers[0].mlp.up_proj, rtn.model.layers[0].mlp.up_proj
    assert torch.equal(a.codes(), b.codes())


def test_checkpoint_roundtrip(tokenizer, text_file, tmp_path):
    res = run([{"signround": {**Q, "iters": 5}}], make_model(), tokenizer, text_file, out=tmp_path / "ck")
    back = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, res.model(ids).logits)


def test_refuses_packed_modules(tokenizer, text_file):
    with pytest.raises(CompressError, match="signround"):
        run([{"rtn": Q}, {"signround": Q}], make_model(), tokenizer, text_file)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tokenizer, text_file, tmp_path, monkeypatch):
    from compress.passes import signround as sr

    opts = {**Q, "iters": 6, "batch": 2, "state_dir": str(tmp_path / "state")}
    whole = run([{"signround": {**Q, "iters": 6, "batch": 2}}], make_model(), tokenizer, text_file).model
    real, tuned = sr.SignRoundLayers._tune, []

    def crash_on_layer_1(self, index, layer, mods):
        if index == 1:
            raise KeyboardInterrupt
        tuned.append(index)
        return real(self, index, layer, mods)

    monkeypatch.setattr(sr.SignRoundLayers, "_tune", crash_on_layer_1)
    with pytest.raises(KeyboardInterrupt):
        run([{"signround": opts}], make_model(), tokenizer, text_file)
    assert tuned == [0] and (tmp_path / "state" / "layer-0000.pt").is_file()
    monkeypatch.setattr(sr.SignRoundLayers, "_tune", lambda self, index, layer, mods: tuned.append(index) or real(self, index, layer, mods))
    res = run([{"signround": {**opts, "resume": True}}], make_model(), tokenizer, text_file)
    assert tuned == [0, 1] and res.report["passes"][0]["resumed_layers"] == 1  # layer 0 read back, not tuned again
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        assert torch.equal(res.model(ids).logits, whole(ids).logits)


def test_resume_with_other_options_is_one_line(tokenizer, text_file, tmp_path):
    opts = {**Q, "iters": 2, "state_dir": str(tmp_path / "state")}
    run([{"signround": opts}], make_model(), tokenizer, text_file)
    with pytest.raises(CompressError, match=r"resume state .* other options; resume with the same options"):
        run([{"signround": {**opts, "iters": 3, "resume": True}}], make_model(), tokenizer, text_file)
    with pytest.raises(CompressError, match="resume.*needs 'state_dir'"):
        run([{"signround": {**Q, "resume": True}}], make_model(), tokenizer, text_file)


def test_a_damaged_resume_state_is_one_line(tokenizer, text_file, tmp_path):
    opts = {**Q, "iters": 2, "state_dir": str(tmp_path / "state")}
    run([{"signround": opts}], make_model(), tokenizer, text_file)
    (tmp_path / "state" / "layer-0001.pt").write_bytes(b"not a tensor file")
    with pytest.raises(CompressError, match=r"layer-0001.pt is unreadable .*delete it"):
        run([{"signround": {**opts, "resume": True}}], make_model(), tokenizer, text_file)
    (tmp_path / "state" / "fingerprint.json").write_text("{broken")
    with pytest.raises(CompressError, match=r"fingerprint.json is unreadable"):
        run([{"signround": {**opts, "resume": True}}], make_model(), tokenizer, text_file)


def test_a_failed_layer_leaves_its_own_linears_in_the_model(tokenizer, text_file, monkeypatch):
    """A crash mid-layer (NaN error, Ctrl-C) must not leave tuning wrappers in a model the caller still holds."""
    from compress.passes import signround as sr

    def crash(self, index, layer, mods):
        raise KeyboardInterrupt

    monkeypatch.setattr(sr.SignRoundLayers, "_tune", crash)
    model, ref = make_model(), make_model()
    with pytest.raises(KeyboardInterrupt):
        run([{"signround": {**Q, "iters": 2}}], model, tokenizer, text_file)
    for name, mod in model.model.layers[0].named_modules():
        assert not isinstance(mod, sr.SignRoundLinear), name
    up, up_ref = model.model.layers[0].mlp.up_proj, ref.model.layers[0].mlp.up_proj
    assert type(up) is torch.nn.Linear and torch.equal(up.weight, up_ref.weight)
