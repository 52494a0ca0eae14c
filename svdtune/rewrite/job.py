"""`svdtune rewrite`: rewrite prompts into a domain's style from the command line.

    svdtune rewrite "a red circle and a blue square" --domain pastel [--rewriter runs/rewriter/world]
    svdtune rewrite --prompt "a dog" --prompt "a cat" --domain animals decoding.strategy=beam

Prints one line per prompt (the rewrite, and how it was obtained when a guardrail stepped in);
with output_dir set, also writes rewrites.jsonl and the resolved config there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from svdtune.config import atomic_write_text, save_config
from svdtune.errors import UserError
from svdtune.rewrite.rewriter import DecodingConfig, Rewriter


@dataclasses.dataclass
class RewriteConfig:
    prompts: list[str] = dataclasses.field(default_factory=list)
    domain: str = "pastel"                    # shipped domain name or a domain YAML file
    rewriter: str = "runs/rewriter/world"     # a train-rewriter run, or a causal LM ("smollm2": untuned)
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    dtype: str = "bfloat16"
    device: str = "cpu"
    output_dir: str = ""                      # "": print only

    def validate(self) -> None:
        if not self.prompts:
            raise ValueError("no prompt given: svdtune rewrite \"a red circle\" --domain pastel")
        self.decoding.validate()


def run_rewrite(cfg: RewriteConfig) -> Path | None:
    from svdtune.data.domains import load_domain

    domain = load_domain(cfg.domain)  # an unknown domain fails before the model loads
    if cfg.rewriter != "smollm2" and not Path(cfg.rewriter).exists():
        raise UserError(f"no rewriter at {cfg.rewriter!r}: train one with `svdtune train-rewriter --config "
                        "configs/rewriter/world.yaml`, or use the untuned base with rewriter=smollm2")
    rewriter = Rewriter.load(cfg.rewriter, cfg.decoding, cfg.dtype, cfg.device)
    results = rewriter.rewrite(cfg.prompts, domain)
    for r in results:
        print(r.text if r.source == "model" else f"{r.text}    [{r.source}: {r.notes[-1]}]")
    if not cfg.output_dir:
        return None
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    atomic_write_text(out / "rewrites.jsonl", "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in results))
    return out
