"""The prompt rewriter: plain prompts in, prompts in a domain's style out (`Rewriter`)."""

from svdtune.rewrite.rewriter import DecodingConfig, Rewrite, Rewriter

__all__ = ["DecodingConfig", "Rewrite", "Rewriter"]
