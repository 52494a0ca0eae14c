"""Loaded model variants for the demo: a bounded least-recently-used cache of pipelines, each with
its image-to-image twin (same components, built on first use) and its sizes."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from svdtune.errors import UserError
from svdtune.eval import variants as variants_mod
from svdtune.pipelines import denoiser_attr

log = logging.getLogger("svdtune")


@dataclass
class Loaded:
    variant: variants_mod.Variant
    pipe: object
    sizes: dict
    resolution: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # a pipeline's scheduler is not thread-safe
    _img2img: object = None

    def img2img(self):
        """diffusers' image-to-image pipeline sharing this pipeline's modules (no copy, no dtype cast)."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                pipe = AutoPipelineForImage2Image.from_pipe(self.pipe)
            except ValueError as e:
                raise UserError(f"{self.variant.label!r}: {type(self.pipe).__name__} has no image-to-image "
                                f"pipeline in diffusers ({e})") from None
            pipe.set_progress_bar_config(disable=True)
            pipe.svdtune_call_kwargs = getattr(self.pipe, "svdtune_call_kwargs", {})
            self._img2img = pipe
        return self._img2img


def resolution(pipe) -> int:
    """The square image size the model was trained at (48 for the reference family)."""
    size = getattr(getattr(pipe, denoiser_attr(pipe)).config, "sample_size", None)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if not size:
        raise UserError(f"{type(pipe).__name__}: its denoiser config has no sample_size to size images by")
    return int(size) * int(getattr(pipe, "vae_scale_factor", 8))


class PipelineCache:
    def __init__(self, size: int, dtype: str = "float32", device: str = "cpu", backend: str = "auto"):
        self.size, self.dtype, self.device, self.backend = size, dtype, device, backend
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, label: str) -> bool:
        return label in self._items

    def get(self, variant: variants_mod.Variant) -> Loaded:
        with self._lock:  # one load at a time: two loads side by side only slow each other down
            if variant.label in self._items:
                self._items.move_to_end(variant.label)
                self._trim(self.size, keep=variant.label)
                return self._items[variant.label]
            self._trim(self.size - 1)
            log.info("demo: loading %s (%s)", variant.label, variant.spec)
            try:
                pipe = variants_mod.load(variant, self.dtype, self.device, self.backend)
                item = Loaded(variant, pipe, variants_mod.sizes(variant, pipe), resolution(pipe))
            except (OSError, ValueError, KeyError, RuntimeError) as e:  # a damaged folder: this variant only
                log.exception("demo: loading %s failed", variant.label)
                raise UserError(f"the variant {variant.label!r} ({variant.spec}) could not be loaded: "
                                f"{type(e).__name__}: {e}") from None
            self._items[variant.label] = item
            return item

    def _trim(self, limit: int, keep: str | None = None) -> None:
        """Unload least recently used pipelines down to `limit`, never one that is generating
        (concurrency > 1: a request for it would load a second copy); the cache stays over its size
        until they finish."""
        while len(self._items) > limit:
            idle = next((label for label, item in self._items.items() if label != keep and not item.lock.locked()),
                        None)
            if idle is None:
                return
            del self._items[idle]
            log.info("demo: unloaded %s (cache_size %d)", idle, self.size)
