"""Wall time and peak memory of a block of work (CUDA max allocated on GPU, peak RSS on CPU)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Cost:
    seconds: float = 0.0
    peak_bytes: int = 0
    start_bytes: int = 0  # memory in use when the block began: peak - start is what the block added
    memory_kind: str = "rss"  # "rss" (CPU process peak resident set) or "cuda_allocated"

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def added_mib(self) -> float:
        return (self.peak_bytes - self.start_bytes) / 2**20


@contextmanager
def measure(device: str | torch.device = "cpu", interval: float = 0.002):
    """with measure(device) as cost: ...  -> cost.seconds, cost.peak_bytes filled on exit."""
    cost = Cost()
    cuda = torch.device(device).type == "cuda"
    stop = threading.Event()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cost.start_bytes = torch.cuda.memory_allocated(device)
        cost.memory_kind = "cuda_allocated"
    else:
        proc = psutil.Process()
        cost.peak_bytes = cost.start_bytes = proc.memory_info().rss

        def sample():
            while not stop.wait(interval):
                cost.peak_bytes = max(cost.peak_bytes, proc.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    try:
        with stopwatch(device) as timed:
            yield cost
    finally:
        if cuda:  # the stopwatch synchronized on exit
            cost.peak_bytes = torch.cuda.max_memory_allocated(device)
        else:
            stop.set()
            sampler.join()
            cost.peak_bytes = max(cost.peak_bytes, psutil.Process().memory_info().rss)
    cost.seconds = timed.seconds


@contextmanager
def stopwatch(device: str | torch.device = "cpu"):
    """with stopwatch(device) as cost: ...  -> cost.seconds (the device's queued work included).
    Unlike `measure` it leaves memory statistics alone, so it can time parts of a measured block
    (measure resets the CUDA peak, and its RSS sampler thread competes for the cores)."""
    cost = Cost()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        cost.seconds = time.perf_counter() - start


def interleaved_best(fns: dict, rounds: int = 5, warmup: int = 2) -> dict[str, float]:
    """Best wall time (seconds) of each zero-argument callable, run in turn round after round so
    that every method sees the same machine load (timings on shared machines drift)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


LATENCY_PROMPT = "a large red circle in the center, on a white background"


def pipeline_latency(pipe, steps: int, repeats: int = 3, device: str | torch.device = "cpu",
                     prompt: str = LATENCY_PROMPT, guidance_scale: float = 4.0) -> dict:
    """Warm batch-1 latency of a diffusers pipeline: median seconds per image at `steps` steps and,
    from the median 1-step time, milliseconds per denoising step (what is left is text encoding,
    VAE decoding and set-up; None for steps = 1); peak memory of those runs (peak RSS, or CUDA max allocated) and what
    they added to the memory in use when they began."""
    import statistics

    from svdtune.pipelines import call_kwargs

    def timed(n_steps: int) -> list[Cost]:
        runs = []
        for r in range(repeats):
            with measure(device) as cost:
                pipe(prompt=prompt, num_inference_steps=n_steps, guidance_scale=guidance_scale,
                     generator=torch.Generator("cpu").manual_seed(r), output_type="np", **call_kwargs(pipe))
            runs.append(cost)
        return runs

    timed(min(steps, 2))  # warm-up: lazily built kernels, compiled graphs, allocator
    one, full = timed(1), timed(steps)
    image_s = statistics.median(c.seconds for c in full)
    one_s = statistics.median(c.seconds for c in one)
    top = max(full + one, key=lambda c: c.peak_bytes)
    step_ms = 1000 * (image_s - one_s) / (steps - 1) if steps > 1 else None  # one step: nothing to difference
    return {"image_s": image_s, "step_ms": step_ms,
            "peak_mib": top.peak_mib, "added_mib": max(c.added_mib for c in full + one), "memory": top.memory_kind,
            "repeats": repeats}
