"""compress's perplexity as an `evaluate` metric: the standard protocol (GPTQ/AWQ), loadable offline from this folder.

    import evaluate
    ppl = evaluate.load("/path/to/compress/eval/metrics/perplexity_protocol")   # a local path: no hub access
    ppl.compute(predictions=load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"], model="smollm2")

The texts are rows, joined with "\\n\\n" and tokenized once (for WikiText-2's rows that is the protocol of
../shared/data/README.md), then scored in non-overlapping windows by `compress.eval.perplexity`: the same
numbers as `compress eval`, not a re-implementation.
"""
from __future__ import annotations

from typing import Any

import datasets
import evaluate

from compress.eval.metrics import score_texts

_DESCRIPTION = """exp(mean next-token NLL) over non-overlapping windows of `seq_len` tokens of the texts joined with
blank lines and tokenized once; the first token of each window is not scored, the ragged tail is dropped."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the text, as rows (one row: the whole text); joined with "\\n\\n".
    model (str or torch.nn.Module): a model directory, .gguf, compress checkpoint, hub id or 'smollm2' (loaded as
        `compress eval` loads it), or a loaded causal LM (then pass `tokenizer`).
    tokenizer (optional): the tokenizer of a loaded `model`.
    seq_len (int, default 2048): tokens per window.
    max_windows (int, optional): score only the first N windows.
    device (str, optional): cpu or cuda (default: cuda when available).
Returns:
    perplexity (float), tokens (int: of the whole text), windows (int: scored), seq_len (int).
"""

_CITATION = """@misc{merity2016pointer, title={Pointer Sentinel Mixture Models}, author={Stephen Merity and Caiming Xiong
and James Bradbury and Richard Socher}, year={2016}, eprint={1609.07843}, archivePrefix={arXiv}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerplexityProtocol(evaluate.Metric):
    """Standard-protocol perplexity of a causal LM on the texts given as `predictions`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(module_type="metric", description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions: list[str], model: Any, tokenizer: Any = None, seq_len: int = 2048,
                 max_windows: int | None = None, device: str | None = None, progress: bool = False) -> dict[str, Any]:
        return score_texts(predictions, model, tokenizer, seq_len=seq_len, max_windows=max_windows, device=device,
                           progress=progress)
