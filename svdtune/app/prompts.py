"""The demo's rewrite toggle: a `svdtune train-rewriter` run loaded on first use, once; without one
(or if it fails to load), the prompt plus the domain's style suffix, and the result says which."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from svdtune.data.domains import load_domain
from svdtune.errors import UserError

log = logging.getLogger("svdtune")
TRAIN_HINT = "svdtune train-rewriter --config configs/rewriter/world.yaml"


@dataclass
class Styled:
    text: str      # what the image model gets
    source: str    # "model", "retry", "fallback" (the rewriter's guardrail) or "suffix" (no rewriter)
    note: str      # how it was obtained, for the user
    seconds: float = 0.0


class PromptStyler:
    def __init__(self, path: str, dtype: str = "bfloat16", device: str = "cpu", compile: bool = False):
        self.path, self.dtype, self.device, self.compile = path, dtype, device, compile
        self._rewriter = None
        self._error: str | None = None if Path(path).exists() else f"no rewriter at {path!r} (train one: {TRAIN_HINT})"
        self._lock = threading.Lock()
        # One rewrite at a time: compiled decoding reuses a single static KV cache (concurrency > 1).
        self._rewrite_lock = threading.Lock()

    @property
    def status(self) -> str:
        """One line for the UI next to the toggle."""
        if self._error:
            return f"{self._error}; rewriting adds the domain's style suffix to the prompt instead"
        loaded = "loaded" if self._rewriter is not None else "loaded on first use"
        if self.compile and self._rewriter is None:
            loaded += ", which also compiles its decoding: 10-30 s"
        return f"rewriter: {self.path} ({loaded})"

    def _load(self):
        with self._lock:  # two first requests load it once
            if self._rewriter is None and self._error is None:
                from svdtune.rewrite import DecodingConfig, Rewriter

                try:
                    decoding = DecodingConfig(compile=self.compile)
                    self._rewriter = Rewriter.load(self.path, decoding, dtype=self.dtype, device=self.device)
                except (UserError, OSError, ValueError, KeyError) as e:  # half-written or foreign folder
                    log.warning("rewriter %s could not be loaded: %s", self.path, e)
                    self._error = f"the rewriter at {self.path!r} could not be loaded ({type(e).__name__}: {e})"
            return self._rewriter

    def apply(self, prompt: str, domain: str) -> Styled:
        style = load_domain(domain)
        start = time.perf_counter()
        rewriter = self._load()
        if rewriter is None:
            return Styled(prompt + style.style_suffix, "suffix",
                          f"{self._error}; used the prompt plus the {domain} style suffix",
                          time.perf_counter() - start)
        with self._rewrite_lock:
            result = rewriter.rewrite([prompt], style)[0]
        how = {"model": f"rewritten by {self.path}"}.get(result.source, "; ".join(result.notes) or result.source)
        return Styled(result.text, result.source, how, time.perf_counter() - start)
