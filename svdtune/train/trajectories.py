"""Teacher trajectories for data-free distillation (EfficientDM): record what the 16-bit pipeline
feeds its denoiser at every sampling step, and what the denoiser answers.

    traj = record_trajectories(pipe, prompts, steps=20, guidance=4.0, seed=0)
    kwargs, target = traj.batch(rows, steps)     # replay: student(**kwargs) should match target

The recording hooks the denoiser's forward, so it works for any diffusers pipeline (UNet or DiT,
with or without classifier-free guidance) without knowing how each one builds its inputs. Every
call's batch is split into rows (with CFG the unconditional and conditional halves are separate
rows). Arguments are stored by how they vary:
    const/<name>   (R, ...)     per row, equal at every step (text embeddings, pooled, time ids)
    step/<name>    (R, S, ...)  per row and step (the noisy latent, the timestep)
    shared/<name>  (...)        without a batch dimension, equal everywhere (e.g. FLUX's txt_ids)
    output         (R, S, ...)  the teacher's prediction
Nested dicts (added_cond_kwargs) are flattened as "outer/inner"; plain values (None, numbers) go
to the JSON metadata.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from svdtune.config import atomic_save_file
from svdtune.errors import UserError
from svdtune.pipelines import call_kwargs
from svdtune.quant.quantize import denoiser_of


def flatten(values: dict, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    tensors, plain = {}, {}
    for key, value in values.items():
        name = prefix + key
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict):
            t, p = flatten(value, name + "/")
            tensors |= t
            plain |= p
        elif value is None or isinstance(value, (bool, int, float, str)):
            plain[name] = value
        else:
            raise UserError(f"cannot record denoiser argument {name!r} of type {type(value).__name__}")
    return tensors, plain


def unflatten(flat: dict[str, object]) -> dict:
    out: dict = {}
    for name, value in flat.items():
        node, *path = name.split("/")
        if not path:
            out[node] = value
            continue
        target = out.setdefault(node, {})
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return out


class Recorder:
    """Forward hook on a denoiser: every call's arguments (by name) and output, on the CPU."""

    def __init__(self, denoiser: torch.nn.Module):
        self.denoiser, self.calls = denoiser, []
        self.signature = inspect.signature(denoiser.forward)

    def __enter__(self) -> "Recorder":
        self.handle = self.denoiser.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _hook(self, module, args, kwargs, output):
        bound = self.signature.bind_partial(*args, **kwargs).arguments
        bound.pop("return_dict", None)
        tensors, plain = flatten(bound)
        batch = next(iter(tensors.values())).shape[0]  # the latent comes first in every denoiser
        rows = {}
        for name, t in tensors.items():
            if t.ndim == 0:  # e.g. the UNet pipelines' scalar timestep: one per row
                t = t.expand(batch)
            rows[name] = t.detach().cpu()
        out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        self.calls.append((rows, plain, out.detach().cpu(), batch))


@dataclasses.dataclass
class TensorCache:
    """Named tensors plus JSON metadata in one safetensors file (written atomically)."""
    tensors: dict[str, torch.Tensor]
    plain: dict[str, object]           # non-tensor denoiser arguments, equal in every call
    meta: dict[str, object]            # how it was made

    def save(self, path: str | Path) -> Path:
        return atomic_save_file(self.tensors, path, {"plain": json.dumps(self.plain), "meta": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path):
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{cls.__name__} cache {str(path)!r} does not exist")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "plain" not in meta or "meta" not in meta:
            raise UserError(f"{path}: not a {cls.__name__} cache (no plain/meta metadata)")
        return cls(load_file(path), json.loads(meta["plain"]), json.loads(meta["meta"]))


class Trajectories(TensorCache):
    """tensors: "const/...", "step/...", "shared/...", "output"; meta: model, steps, guidance, prompts, seed."""

    @property
    def rows(self) -> int:
        return self.tensors["output"].shape[0]

    @property
    def steps(self) -> int:
        return self.tensors["output"].shape[1]

    def batch(self, rows: torch.Tensor, steps: torch.Tensor, device=None, dtype=None) -> tuple[dict, torch.Tensor]:
        """Denoiser kwargs and teacher targets for (row, step) pairs (two index vectors)."""
        flat: dict[str, object] = dict(self.plain)
        for name, t in self.tensors.items():
            kind, _, key = name.partition("/")
            if kind == "const":
                flat[key] = t[rows]
            elif kind == "step":
                flat[key] = t[rows, steps]
            elif kind == "shared":
                flat[key] = t
        flat["output"] = self.tensors["output"][rows, steps]
        flat = moved(flat, device, dtype)
        target = flat.pop("output")
        return unflatten(flat), target


def moved(flat: dict, device, dtype) -> dict:
    """Tensors of `flat` on `device`, floating ones also in `dtype`; other values as they are."""
    def move(t):
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)

    return {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in flat.items()}


def assemble(calls: list, steps: int) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Group the recorded calls of one pipeline invocation (`steps` calls) into rows."""
    if len(calls) != steps:
        raise UserError(f"the pipeline called its denoiser {len(calls)} times for {steps} steps; "
                        "pipelines that call it more than once per step are not supported")
    names = calls[0][0].keys()
    plain = calls[0][1]
    batch = calls[0][3]
    out: dict[str, torch.Tensor] = {}
    for name in names:
        series = [c[0][name] for c in calls]
        if series[0].shape[0] != batch:
            kind = "shared"
        elif all(torch.equal(series[0], s) for s in series[1:]):
            kind = "const"
        else:
            kind = "step"
        out[f"{kind}/{name}"] = series[0] if kind != "step" else torch.stack(series, 1)
    out["output"] = torch.stack([c[2] for c in calls], 1)
    return out, plain


def store_dtype(t: torch.Tensor) -> torch.Tensor:
    return t.half() if t.is_floating_point() and t.dtype != torch.float64 else t


@torch.no_grad()
def record_trajectories(pipe, prompts: list[str], steps: int, guidance: float, seed: int = 0,
                        batch_size: int = 16, model_name: str = "") -> Trajectories:
    """Sample every prompt with the (16-bit) pipeline, prompt i with seed + i, recording its
    denoiser. Floating tensors are stored in fp16."""
    if not prompts:
        raise UserError("no prompts to record teacher trajectories for")
    denoiser = denoiser_of(pipe)
    parts, plain = [], None
    for start in tqdm(range(0, len(prompts), batch_size), desc="teacher trajectories", unit="batch", mininterval=5):
        chunk = prompts[start:start + batch_size]
        gens = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
        with Recorder(denoiser) as rec:
            pipe(prompt=chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                 output_type="latent", **call_kwargs(pipe))
        tensors, call_plain = assemble(rec.calls, steps)
        if plain is not None and (call_plain != plain or tensors.keys() != parts[0].keys()):
            raise UserError("the pipeline called its denoiser differently for different prompts")
        plain = call_plain
        parts.append({k: store_dtype(v) for k, v in tensors.items()})
    merged = {k: parts[0][k] if k.startswith("shared/") else torch.cat([p[k] for p in parts])
              for k in parts[0]}
    meta = {"model": model_name, "prompts": len(prompts), "steps": steps, "guidance": guidance, "seed": seed}
    return Trajectories(merged, plain, meta)
