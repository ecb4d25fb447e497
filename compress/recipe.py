"""Recipes: an ordered list of passes plus optional model, calibration and evaluate sections.

Read from YAML with `yaml.safe_load`, validated strictly; every error names the file, the
pass and the key, with what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from compress.errors import RecipeError
from compress.registry import PassConfig, get_pass, list_passes, option
from compress.typecheck import build_dataclass, to_plain


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """Where calibration windows come from (never the evaluation split)."""

    source: str = option("wikitext2-valid", "text source: wikitext2-valid, a file path, or hf:NAME[:CONFIG[:SPLIT]] (never wikitext2-test)")
    samples: int = option(128, "number of windows sampled", min=1, max=100_000)
    seq_len: int = option(2048, "tokens per window", min=8, max=1 << 20)
    seed: int = option(0, "sampling seed", min=0, max=2**63 - 1)


@dataclass(frozen=True, kw_only=True)
class PerplexityConfig:
    """Standard perplexity protocol: non-overlapping windows over the whole tokenized text."""

    source: str = option("wikitext2-test", "text source scored")
    seq_len: int = option(2048, "tokens per window", min=8, max=1 << 20)
    max_windows: int | None = option(None, "score only the first N windows (quick runs)", min=1, max=1 << 20)


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """What to measure before and after the passes."""

    perplexity: PerplexityConfig | None = None
    baseline: bool = option(True, "also evaluate the model before the passes")


@dataclass(frozen=True)
class Step:
    """One pass in a recipe: its registered name and validated config."""

    name: str
    config: PassConfig


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; `source` names where it came from, for error messages."""

    steps: tuple[Step, ...]
    model: str | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluate: EvaluateConfig | None = None
    source: str = "<recipe>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, every default filled in (saved as recipe.yaml)."""
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model
        out["calibration"] = to_plain(self.calibration)
        out["passes"] = [{s.name: to_plain(s.config)} for s in self.steps]
        if self.evaluate is not None:
            out["evaluate"] = to_plain(self.evaluate)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def needs_calibration(self) -> bool:
        return any(get_pass(s.name).needs_calibration for s in self.steps)


_TOP_KEYS = ("model", "calibration", "passes", "evaluate")


def _err(src: str, msg: str) -> RecipeError:
    return RecipeError(f"{src}: {msg}")


def _build(cls: type, values: Any, src: str, where: str) -> Any:
    try:
        return build_dataclass(cls, values if values is not None else {}, f"{src}: {where}")
    except ValueError as e:
        raise RecipeError(str(e)) from None


def _parse_step(item: Any, index: int, src: str) -> Step:
    if isinstance(item, str):
        name, opts = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        (name, opts), = item.items()
    else:
        raise _err(src, f"passes[{index}]: expected 'NAME' or 'NAME: {{options}}', got {item!r}")
    known = list_passes()
    if name not in known:
        raise _err(src, f"passes[{index}]: pass {name!r} is unknown; allowed: {', '.join(known)}")
    cfg = _build(known[name].config_cls, opts, src, f"pass {name!r} (#{index + 1})")
    return Step(name, cfg)


def _parse_evaluate(data: Any, src: str) -> EvaluateConfig | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _err(src, f"evaluate: expected a mapping, got {data!r}")
    unknown = set(data) - {"perplexity", "baseline"}
    if unknown:
        raise _err(src, f"evaluate: key {sorted(unknown)[0]!r} is unknown; allowed: perplexity, baseline")
    ppl = data.get("perplexity")
    ppl_cfg = None if ppl is False else _build(PerplexityConfig, ppl or {}, src, "evaluate.perplexity")
    base = _build(EvaluateConfig, {k: v for k, v in data.items() if k == "baseline"}, src, "evaluate")
    return replace(base, perplexity=ppl_cfg)


def recipe_from_dict(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a plain dict (as loaded from YAML) into a Recipe."""
    if not isinstance(data, dict):
        raise _err(source, f"a recipe is a mapping with keys {', '.join(_TOP_KEYS)}; got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise _err(source, f"key {key!r} is unknown; allowed: {', '.join(_TOP_KEYS)}")
    passes = data.get("passes")
    if not isinstance(passes, list) or not passes:
        raise _err(source, "passes: expected a non-empty list of passes, e.g. '- rtn: {bits: 8}'")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise _err(source, f"model: expected a path or name, got {model!r}")
    calibration = _build(CalibrationConfig, data.get("calibration"), source, "calibration")
    if calibration.source == "wikitext2-test":
        raise _err(source, "calibration.source: wikitext2-test is the evaluation split (calibrating on it inflates every "
                           "score); allowed: wikitext2-valid, a file path, or hf:NAME[:CONFIG[:SPLIT]]")
    return Recipe(
        steps=tuple(_parse_step(p, i, source) for i, p in enumerate(passes)),
        model=model,
        calibration=calibration,
        evaluate=_parse_evaluate(data.get("evaluate"), source),
        source=source,
    )


MAX_RECIPE_BYTES = 1 << 20


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice (the first would be "
                                                        f"ignored)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    if p.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{p}: {p.stat().st_size:,} bytes is not a recipe (at most {MAX_RECIPE_BYTES:,}); "
                          f"a recipe is a short YAML list of passes")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{p}: YAML syntax error{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: cannot read recipe: {e}") from None
    return recipe_from_dict(data, str(p))


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """Apply `--set key=value` overrides, each re-validated like the recipe itself.

    Keys: `model`, `calibration.KEY`, `evaluate.perplexity.KEY`, `PASS.KEY` (the only pass of that
    name) or `PASS[i].KEY` (the i-th pass of that name, from 0) or `passes[i].KEY`.
    """
    data = recipe.to_dict()
    for item in overrides:
        src = f"--set {item}"
        if "=" not in item:
            raise RecipeError(f"{src}: expected KEY=VALUE, e.g. rtn.bits=4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set_key(data, key.strip(), value, src)
        recipe_from_dict(data, src)  # validate now so the error names this override
    return recipe_from_dict(data, recipe.source)


def _set_key(data: dict[str, Any], key: str, value: Any, src: str) -> None:
    head, _, rest = key.partition(".")
    if head == "model" and not rest:
        data["model"] = value
        return
    if head in ("calibration", "evaluate"):
        node = data.setdefault(head, {})
        parts = rest.split(".")
        if not rest:
            raise RecipeError(f"{src}: expected {head}.KEY=VALUE")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
        return
    if not rest:
        raise RecipeError(f"{src}: expected PASS.OPTION=VALUE, model=..., calibration.KEY=... or evaluate.perplexity.KEY=...")
    steps = data["passes"]
    name, index = head, None
    if "[" in head and head.endswith("]"):
        name, idx = head[:-1].split("[", 1)
        try:
            index = int(idx)
        except ValueError:
            raise RecipeError(f"{src}: index {idx!r} is not a whole number") from None
    if name == "passes":
        matches = list(range(len(steps)))
    else:
        matches = [i for i, s in enumerate(steps) if next(iter(s)) == name]
    if not matches:
        names = ", ".join(next(iter(s)) for s in steps)
        raise RecipeError(f"{src}: no pass {name!r} in the recipe; its passes: {names}")
    if index is None:
        if len(matches) > 1:
            raise RecipeError(f"{src}: the recipe has {len(matches)} {name!r} passes; say which with {name}[0].{rest}")
        index = 0
    if not 0 <= index < len(matches):
        raise RecipeError(f"{src}: index {index} out of range; there are {len(matches)}")
    step = steps[matches[index]]
    next(iter(step.values()))[rest] = value
