"""Timing worker of an A/B run: loads the entries once, then times what each command line on stdin asks.

Run as a script with the tree under test first on PYTHONPATH, so this one file times the current code
and a reference revision's code (a tree that may predate this file). It therefore uses only APIs that
have not changed since the A/B gate began (`iter_entries`, `StaticDecoder`, `speed.prefill_ms`,
`speed.decode_step_seconds`). Each answer is one JSON line on the original stdout; anything the
libraries print goes to stderr, so it cannot corrupt the protocol.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO


def serve(cfg: dict[str, Any], commands: TextIO, out: TextIO) -> None:
    """Load `cfg["entries"]`, say ready, then answer each command: `{"op": "decode", "entry": i, "steps": k}` with the
    seconds of k decode steps after the prompt, `{"op": "prefill", "entry": i, "length": n}` with its ms."""
    import torch

    import compress
    from compress.eval import speed
    from compress.eval.entries import Skipped, iter_entries
    from compress.eval.fast_decode import StaticDecoder

    torch.set_num_threads(cfg["threads"])
    models = []
    for spec, loaded in iter_entries(cfg["entries"], torch.device("cpu"), False):
        if isinstance(loaded, Skipped):
            out.write(json.dumps({"error": f"{spec}: {loaded.reason}"}) + "\n")
            return
        models.append(loaded.model)
        del loaded
    prompt, new = cfg["prompt_len"], cfg["new_tokens"]
    decoders = [StaticDecoder(m, prompt + new + 1, cfg["mode"]) for m in models]
    out.write(json.dumps({"ready": True, "compress": os.path.dirname(compress.__file__)}) + "\n")
    out.flush()
    with torch._dynamo.config.patch(cache_size_limit=max(8, 2 * len(models))):
        for line in commands:
            cmd = json.loads(line)
            if cmd.get("op") == "quit":
                break
            i = cmd["entry"]  # no warm-up here: the caller discards its first call of each kind
            if cmd["op"] == "prefill":
                result: Any = speed.prefill_ms(models[i], cmd["length"], 0, 1)["median"]
            else:  # a compiled step is built on its first call, untimed
                result = speed.decode_step_seconds(models[i], 1, prompt, cmd["steps"], 0, 1, cfg["mode"], decoders[i])[0]
            out.write(json.dumps(result) + "\n")
            out.flush()


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints land on stderr; the protocol keeps the original stdout
    sys.stdout = sys.stderr
    serve(json.loads(sys.argv[1]), sys.stdin, out)


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the script's folder (compress/eval) must not shadow top-level modules
    main()
