from __future__ import annotations

import pytest
import torch

from compress import data
from compress.errors import CompressError


def test_standard_join_matches_the_protocol():
    raw = " \n = Title = \n \n Some text .\n"
    # rows: "" , " = Title = \n", "", " Some text .\n"  joined with blank lines
    assert data.standard_wikitext_join(raw) == "\n\n = Title = \n\n\n\n\n Some text .\n"


def test_windows_drop_the_tail_and_respect_max():
    t = torch.arange(10)
    assert data.eval_windows(t, 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert data.eval_windows(t, 3, max_windows=2).shape == (2, 3)
    with pytest.raises(CompressError, match="fewer than one window"):
        data.eval_windows(t, 11)


def test_calibration_is_seeded():
    t = torch.arange(1000)
    a, b, c = (data.calibration_windows(t, 4, 16, s) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(w, torch.arange(w[0], w[0] + 16)) for w in a)


def test_sources(tmp_path, monkeypatch):
    p = tmp_path / "t.txt"
    p.write_text("hello")
    assert data.read_text(str(p)) == "hello"
    with pytest.raises(CompressError, match="no such file; allowed"):
        data.read_text(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CompressError, match="cannot read"):
        data.read_text(str(bad))
    monkeypatch.setenv("COMPRESS_DATA_DIR", str(tmp_path))
    with pytest.raises(CompressError, match="set COMPRESS_DATA_DIR"):
        data.read_text("wikitext2-test")


@pytest.mark.slow
def test_shared_wikitext_tokenizes_to_the_standard_count():
    """The protocol of ../shared/data/README.md: 304,986 SmolLM2 tokens (a loader reading the file any
    other way gets another count)."""
    from transformers import AutoTokenizer

    from compress.models import fetch_smollm2

    path = data.data_dir() / data.WIKITEXT["wikitext2-test"]
    if not path.is_file():
        pytest.skip("../shared/data not beside this checkout")
    text = data.read_text("wikitext2-test")
    assert text.startswith("\n\n = Robert Boulter = \n")
    tok = AutoTokenizer.from_pretrained(str(fetch_smollm2(progress=False)))
    assert len(tok(text)["input_ids"]) == 304_986
