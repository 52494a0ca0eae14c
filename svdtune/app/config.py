"""`svdtune demo` settings: which model variants to offer, the rewriter, where to listen, input limits."""

from __future__ import annotations

import dataclasses
import ipaddress

from svdtune.pipelines import DTYPES


@dataclasses.dataclass
class Limits:
    max_prompt_chars: int = 400       # the reference models' CLIP tokenizer keeps 77 tokens anyway
    max_steps: int = 100
    max_guidance: float = 20.0
    max_upload_mb: float = 8.0        # also gradio's own upload cap: bigger files never reach the disk
    max_pixels: int = 4096 * 4096     # checked from the image header, before decoding

    def validate(self) -> None:
        for key in ("max_prompt_chars", "max_steps", "max_guidance", "max_upload_mb", "max_pixels"):
            if getattr(self, key) <= 0:
                raise ValueError(f"limits.{key} must be positive, got {getattr(self, key)}")


@dataclasses.dataclass
class DemoConfig:
    # label=spec, as in `svdtune eval`; specs whose folders are missing are left out with a note.
    variants: list[str] = dataclasses.field(default_factory=lambda: [
        "ref-unet 16-bit=ref-unet",
        "ref-unet W4A4=runs/train/ref-unet-pastel:0",
        "ref-unet W4A4 + pastel=runs/train/ref-unet-pastel",
    ])
    rewriter: str = "runs/rewriter/world"      # a `svdtune train-rewriter` run (or a causal LM folder)
    rewriter_dtype: str = "bfloat16"
    rewriter_compile: bool = True              # compiled decoding (decoding.compile): a long-lived process pays
                                               # the compilation once, on the first rewrite, for faster ones after
    domains: list[str] = dataclasses.field(default_factory=lambda: ["pastel", "neon", "striped", "blueprint"])
    steps: int = 20                            # defaults shown in the UI
    guidance_scale: float = 4.0
    seed: int = 0
    strength: float = 0.7                      # image-to-image: how much of the input is re-noised
    host: str = "127.0.0.1"                    # 0.0.0.0 to listen on every interface (anyone who can reach it)
    port: int = 7860
    concurrency: int = 1                       # generations at a time (2 CPU cores: one)
    queue_size: int = 16                       # requests waiting beyond that are refused
    cache_size: int = 3                        # loaded pipelines kept (least recently used goes): the defaults
    history_rows: int = 20
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "auto"                      # kernel of quantized variants (svdtune.kernels.dispatch)
    limits: Limits = dataclasses.field(default_factory=Limits)

    def validate(self) -> None:
        from svdtune.data.domains import shipped_domains
        from svdtune.kernels.dispatch import BACKENDS

        if not self.variants:
            raise ValueError("variants: give at least one label=spec (for example 'ref-unet 16-bit=ref-unet')")
        if not self.domains:
            raise ValueError("domains: give at least one (a shipped name or a domain YAML file)")
        unknown = [d for d in self.domains if d not in shipped_domains() and not d.endswith((".yaml", ".yml"))]
        if unknown:
            raise ValueError(f"domains: unknown domain {unknown[0]!r}; shipped: {', '.join(shipped_domains())}")
        if self.dtype not in DTYPES or self.rewriter_dtype not in DTYPES:
            raise ValueError(f"dtype / rewriter_dtype must be one of {', '.join(DTYPES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not a TCP port (0-65535)")
        for key in ("concurrency", "queue_size", "cache_size", "history_rows"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        self.limits.validate()
        if not 1 <= self.steps <= self.limits.max_steps:
            raise ValueError(f"steps {self.steps} is outside 1..{self.limits.max_steps} (limits.max_steps)")
        if not 0 <= self.guidance_scale <= self.limits.max_guidance:
            raise ValueError(f"guidance_scale {self.guidance_scale} is outside 0..{self.limits.max_guidance} "
                             "(limits.max_guidance)")

    @property
    def listens_beyond_this_machine(self) -> bool:
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: assume it is reachable from elsewhere
            return True
