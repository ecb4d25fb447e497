"""compress: turn a base language-model checkpoint into a smaller, faster one, and prove it."""
from compress.api import RunResult, evaluate, load, run
from compress.checkpoint import load_tokenizer
from compress.errors import CompressError, RecipeError
from compress.eval.bench import benchmark
from compress.eval.fast_decode import generate_fast
from compress.models import fetch_smollm2
from compress.recipe import Recipe, load_recipe
from compress.registry import PassConfig, list_passes, option, register_pass

__all__ = ["CompressError", "PassConfig", "Recipe", "RecipeError", "RunResult", "benchmark", "evaluate",
           "fetch_smollm2", "generate_fast", "list_passes", "load", "load_recipe", "load_tokenizer", "option",
           "register_pass", "run"]
