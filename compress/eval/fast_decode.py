"""Fast greedy decoding from a static KV cache: the path `compress bench` times and users can call.

Plain `generate` re-runs Python and launches every tiny kernel each token, so it measures the
interpreter, not the model. Here the cache is preallocated (fixed shapes, fixed addresses) so the
one-token step can run as one unit:

- ``compile``: ``torch.compile(fullgraph=True)`` — Inductor fuses RMSNorm, rotary, SwiGLU and
  the dequantize prologue of packed weights into few kernels; on CUDA (``reduce-overhead``) the
  step then replays as a CUDA graph, on a CPU it removes the interpreter's per-op cost. Every
  format compiles to one graph (tests/eval/test_compile_decode.py), so a graph break is an error.
- ``graph``: the eager step captured once into a ``torch.cuda.CUDAGraph`` and replayed (no
  fusion, no compile time) (CUDA only).
- ``eager``: a plain static-cache loop.

The step never syncs with the host, so tokens/s counts the model's work.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import re
import time
import types
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.eval.gqa_attention import use_for_decode

MODES = ("auto", "eager", "graph", "compile", "max")


def resolve_mode(mode: str, device: torch.device) -> str:
    """`auto` → compile (measured faster than eager on CUDA and on our CPU); `graph` needs CUDA."""
    if mode not in MODES:
        raise CompressError(f"decode mode {mode!r}: allowed: {', '.join(MODES)}")
    if mode == "auto":
        return "compile"
    if mode == "graph" and device.type != "cuda":
        raise CompressError(f"decode mode {mode!r} needs CUDA; on {device.type} use 'compile', 'eager' or 'auto'")
    return mode


def compile_step(fn: Callable[..., torch.Tensor], device: torch.device, mode: str = "compile",
                 lean_guards: bool = False) -> Callable[..., torch.Tensor]:
    """One graph for the whole step (fullgraph: a break is an error, not a silent slowdown). `max`: Inductor's
    max-autotune, which tries its own GEMM templates against the library's (built under `building`).
    `lean_guards`: dynamo keeps no guards on the decoder the step is bound to (see `_lean_guards`)."""
    if mode == "max":
        preset = "max-autotune" if device.type == "cuda" else "max-autotune-no-cudagraphs"
    else:
        preset = "reduce-overhead" if device.type == "cuda" else "default"
    if not (lean_guards and _CAN_FILTER_GUARDS):
        return torch.compile(fn, mode=preset, fullgraph=True, dynamic=False)
    from torch._inductor import list_mode_options

    options = {**list_mode_options(preset), "guard_filter_fn": _lean_guards, **EXTRA_OPTIONS}  # mode or options, not both
    return torch.compile(fn, options=options, fullgraph=True, dynamic=False)


def building(mode: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Inductor settings while a `max` step compiles on a CPU: freezing, so the weights become constants its GEMM
    templates prepack (SmolLM2 bf16: 2× the default compile's decode, +783 MiB RSS). Set around the compiling call:
    passed as compile options, freezing was not applied (torch 2.13)."""
    if mode != "max" or device.type != "cpu":
        return contextlib.nullcontext()
    import torch._inductor.config as inductor

    return inductor.patch(freezing=True)


EXTRA_OPTIONS: dict[str, Any] = {}  # more Inductor options for a step built from now on (benchmarks: `cpp_wrapper`)
_CAN_FILTER_GUARDS = hasattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe")  # shipped with guard_filter_fn; else all guards
_BOUND = re.compile(r"\bbound_decoder\b")  # how dynamo names what the step reads through its bound decoder


def _lean_guards(entries: Sequence[Any]) -> list[bool]:
    """Keep every guard except those on the bound decoder (its model's modules and parameters, its cache, the
    config): ~10,000 checks, ~2.5–3.5 ms of a ~20 ms SmolLM2 step on a CPU (profile: "TorchDynamo Cache Lookup"),
    and all of them fixed for the decoder's life. The token and position inputs and global state keep theirs, so
    another batch shape still recompiles. (`set_stance(skip_guard_eval_unsafe=True)` left that time as it was.)"""
    return [_BOUND.search(e.name) is None for e in entries]


def _next_token(tok: torch.Tensor, pos: torch.Tensor, bound_decoder: "StaticDecoder | None" = None) -> torch.Tensor:
    """One token per row at cache position `pos` → the next greedy token per row [B, 1] (grad mode: the caller's)."""
    dec = bound_decoder
    assert dec is not None
    logits = dec.model(input_ids=tok, **{dec._cache_kw: dec.cache}, cache_position=pos, use_cache=True).logits
    return logits[:, -1].argmax(-1, keepdim=True)


def _bound_step(dec: "StaticDecoder") -> Callable[..., torch.Tensor]:
    """`_next_token` with `dec` as its last default, under a code object of its own: a plain function for dynamo
    to compile. Dynamo keeps compiled frames per code object, so decoders sharing one code object checked each
    other's guards every step (two SmolLM2 int4 decoders, as `bench --interleave` keeps them, decoded at 64 tok/s
    each where one alone ran at 93, 2 threads), and with the decoder's guards dropped (`_lean_guards`) a second
    decoder would run the first one's graph, weights and cache included. One code object per decoder rules out both."""
    code = _next_token.__code__.replace(co_name=f"_next_token_{next(_STEP_IDS)}")
    return types.FunctionType(code, _next_token.__globals__, code.co_name, (dec,))


_STEP_IDS = itertools.count()


class StaticDecoder:
    """Greedy decoding of a Hugging Face causal LM with a static KV cache of `max_len` positions."""

    def __init__(self, model: nn.Module, max_len: int, mode: str = "auto") -> None:
        from transformers import StaticCache

        self.model = model
        use_for_decode(model)  # grouped-query decode reads the KV cache in place (same results as `sdpa`)
        self.device = next(model.parameters()).device
        self.mode = resolve_mode(mode, self.device)
        self.fallback = mode == "auto"  # auto may fall back to eager where compiling fails (no C++ compiler, say)
        self.max_len = max_len
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        # transformers ≥ 5.2x names the argument `cache` (past_key_values is deprecated); older ones only know the latter
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        # The compiled step keeps no guards on this decoder (model, cache: `_lean_guards`), whose every later call
        # passes the same cache and weights. Off (set before the first decode) in the test that counts recompiles.
        self.skip_guards = True
        self._graph: torch.cuda.CUDAGraph | None = None

    @property
    def built(self) -> bool:
        """Whether the step exists (a compiled or graphed step is built on the first decode)."""
        return self._step is not None

    @torch.no_grad()
    def _eager_step(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return _next_token(tok, pos, self)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Fill the cache with a prompt [B, P] (eager: shapes vary) and return the first new token."""
        if ids.shape[1] >= self.max_len:
            raise CompressError(f"prompt of {ids.shape[1]} tokens does not fit a cache of {self.max_len}")
        if self.cache.is_initialized:
            self.cache.reset()  # stale keys beyond the new prompt are masked anyway; zero them for clarity
        pos = torch.arange(ids.shape[1], device=self.device)
        logits = self.model(input_ids=ids, **{self._cache_kw: self.cache}, cache_position=pos, use_cache=True).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    def _build_step(self, tok: torch.Tensor, pos: torch.Tensor) -> None:
        """Set up the step function for the chosen mode (after a prefill, so the cache exists)."""
        if self.mode == "eager":
            self._step = self._eager_step
        elif self.mode in ("compile", "max"):
            compiled = compile_step(_bound_step(self), self.device, self.mode, lean_guards=self.skip_guards)
            cuda = self.device.type == "cuda"
            built: list[bool] = []  # whether the first (compiling) call has run

            def step(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
                if cuda:
                    torch.compiler.cudagraph_mark_step_begin()
                with building(self.mode if not built else "", self.device):
                    out = compiled(t, p).clone()
                built[:] = [True]
                return out

            self._step = step
        else:
            self._step = self._capture(tok, pos)

    def _capture(self, tok: torch.Tensor, pos: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Capture the eager step into a CUDA graph over static input/output buffers."""
        s_tok, s_pos = tok.clone(), pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up allocator and lazy init outside the capture
                self._eager_step(s_tok, s_pos)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            s_out = self._eager_step(s_tok, s_pos)
        self._graph = graph

        def step(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            s_tok.copy_(t)
            s_pos.copy_(p)
            graph.replay()
            return s_out.clone()

        return step

    def rewind(self, length: int) -> None:
        """Make the cache hold the first `length` positions again (newer transformers count writes in
        each layer's `cumulative_length` instead of using cache_position); in place, so graphs stay valid."""
        for layer in getattr(self.cache, "layers", ()):
            n = getattr(layer, "cumulative_length", None)
            if isinstance(n, torch.Tensor):
                n.fill_(length)
            elif n is not None:
                layer.cumulative_length = length

    @torch.no_grad()
    def decode(self, first: torch.Tensor, start: int, steps: int, step_times: list[float] | None = None) -> torch.Tensor:
        """`steps` greedy tokens after `first` (which sits at position `start`) → [B, steps].

        With `step_times`, each step's wall seconds are appended to it (a CUDA step is synchronized
        on, so each time is the step's own): the benchmark takes the median step, which a burst of
        a neighbour's load on a shared machine moves far less than the total of a short run.
        """
        if start + steps > self.max_len:
            raise CompressError(f"{start + steps} positions do not fit a cache of {self.max_len}")
        pos = torch.tensor([start], device=self.device)
        if self._step is None:
            self._build_step(first, pos)
        self.rewind(start)  # after a graph capture too: its warm-up steps wrote to the cache
        out, tok = [], first
        for i in range(steps):
            pos.fill_(start + i)  # in place on device: no host sync, no new graph input
            t0 = self._clock() if step_times is not None else 0.0
            tok = self._first_step(tok, pos) if i == 0 else self._step(tok, pos)
            if step_times is not None:
                step_times.append(self._clock() - t0)
            out.append(tok)
        return torch.cat(out, dim=1)

    def _clock(self) -> float:
        """Wall seconds, after the device has finished what was queued."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _first_step(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The first step builds a compiled step; with mode auto a failure to compile falls back to eager, once, loudly."""
        assert self._step is not None
        if self.mode not in ("compile", "max") or not self.fallback:
            return self._step(tok, pos)
        try:
            return self._step(tok, pos)
        except Exception as e:  # Inductor raises many types (lowering, C++ build); the eager step is always valid
            first = (str(e).strip().splitlines() or [""])[0][:200]
            warnings.warn(f"compiled decode failed ({type(e).__name__}: {first}); decoding eagerly", RuntimeWarning, stacklevel=3)
            self.mode, self._step, self.fallback = "eager", self._eager_step, False
            return self._step(tok, pos)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Prompt [B, P] → prompt plus `new_tokens` greedy tokens [B, P + new_tokens]."""
        ids = ids.to(self.device)
        first = self.prefill(ids)
        if new_tokens <= 1:
            return torch.cat([ids, first], dim=1)[:, : ids.shape[1] + new_tokens]
        rest = self.decode(first, ids.shape[1], new_tokens - 1)
        return torch.cat([ids, first, rest], dim=1)


def generate_fast(model: nn.Module, ids: torch.Tensor, new_tokens: int, mode: str = "auto") -> torch.Tensor:
    """Greedy continuation of `ids` [B, P] by `new_tokens` tokens on the fast static-cache path."""
    return StaticDecoder(model, ids.shape[1] + new_tokens, mode).generate(ids, new_tokens)
