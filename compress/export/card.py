"""A short model card for an exported directory: what it came from, how good and how big it is, how to load it."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from compress.report import human_bytes


def _report(src: Path) -> dict[str, Any]:
    try:
        return json.loads((src / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def model_card(src: Path, exporter: Any, modules: dict[str, str], written: Path, name: str) -> str:
    """Markdown: base model, recipe, perplexity before/after, size, module types, load/serve command.
    `written` is the directory as written so far (its size), `name` what it will be called."""
    rep = _report(src)
    recipe = (src / "recipe.yaml").read_text().strip() if (src / "recipe.yaml").is_file() else None
    ppl = lambda key: rep.get(key, {}).get("perplexity")  # noqa: E731
    before, after = ppl("perplexity_before"), ppl("perplexity_after")
    size = sum(f.stat().st_size for f in written.rglob("*") if f.is_file())
    lines = [f"# {src.name} ({exporter.name})", "", f"Exported by compress from `{src}`.", "",
             f"- base model: `{rep.get('model', 'unknown')}`",
             f"- perplexity: {f'{before:.3f}' if before else '—'} before, {f'{after:.3f}' if after else '—'} after"
             + (f" ({(after / before - 1) * 100:+.2f}%)" if before and after else "")
             + (f" ({rep['perplexity_after'].get('windows')} windows of the test text)" if after else ""),
             f"- size: {human_bytes(size)} on disk",
             "- modules: " + ", ".join(f"{n} × {t}" for t, n in sorted(Counter(modules.values()).items())), "",
             "## Load / serve", "", "```", exporter.load_hint.format(out=name), "```"]
    if recipe:
        lines += ["", "## Recipe", "", "```yaml", recipe, "```"]
    return "\n".join(lines) + "\n"
