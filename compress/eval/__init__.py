"""Evaluation: perplexity (standard protocol); speed and the regression gate build on it."""
from compress.eval.perplexity import perplexity

__all__ = ["perplexity"]
