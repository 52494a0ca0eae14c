"""Data-stage throughput on this machine: reading, embedding, and a whole `data build`.

    .venv/bin/python benchmarks/data_throughput.py [--read 600000] [--embed 4000] [--build 100000]

1. Read and normalise N COCO-style caption records (one captions_train2017.json, 5 per image).
2. MiniLM (all-MiniLM-L6-v2) embedding of M fresh captions, batched, no cache.
3. `data build --domain food` over K synthetic COCO captions: cold (empty embedding cache), then
   warm (same cache). check_images=none: the synthetic records have no image files.
Each measurement runs in its own process, which reports its wall time and peak RSS.
Captions are synthetic but varied (subject x action x place x detail, about 10 words each).
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["a man", "a woman", "two kids", "a dog", "a black cat", "a group of people", "a young boy", "an old man",
            "a brown horse", "a plate of pasta", "a slice of pizza", "a red bus", "a white truck", "a small boat",
            "a train", "a bowl of soup", "a cow", "a herd of sheep", "a bicycle", "a giraffe", "a surfer", "a skier",
            "a chef", "a girl", "a couple", "a pile of oranges", "a sandwich", "a motorcycle", "an airplane", "a bird"]
ACTIONS = ["sitting", "standing", "walking", "parked", "lying", "waiting", "resting", "displayed", "shown", "moving"]
PLACES = ["on a table", "in a kitchen", "near the beach", "on a city street", "in a field", "by a lake",
          "in a living room", "at the station", "on a snowy slope", "in a park", "next to a window", "on a plate",
          "under a tree", "in the desert", "at an airport", "in a bedroom", "on the sidewalk", "in the water"]
DETAILS = ["at sunset", "in the rain", "on a sunny day", "with a blue sky", "at night", "with some friends",
           "in the morning", "near a fence", "with a red umbrella", "beside a wooden bench", "", "in winter"]


def captions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} {rng.choice(DETAILS)} "
            f"{rng.randint(1, 10**6)}".replace("  ", " ") for _ in range(n)]


def write_coco(folder: Path, n: int, seed: int) -> Path:
    caps = captions(n, seed)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range((n + 4) // 5)]
    anns = [{"image_id": i // 5, "id": i, "caption": c} for i, c in enumerate(caps)]
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return folder


def stage(name: str, args) -> dict:
    t0 = time.perf_counter()
    if name == "read":
        from svdtune.data.records import SkipLog
        from svdtune.data.sources.coco import read_coco

        t0 = time.perf_counter()
        n = len(read_coco(Path(args.dir), SkipLog()))
    elif name == "embed":
        from svdtune.data.embed import Embedder

        e = Embedder(cache=None)
        e.embed(["warm up"])  # model load is not embedding throughput
        texts = captions(args.n, 1)
        t0 = time.perf_counter()
        n = len(e.embed(texts))
    else:
        from svdtune.config import load_config
        from svdtune.data.build import DataBuildConfig, run_data_build

        cfg = load_config(DataBuildConfig, None, [
            "domain=food", "sources=" + json.dumps({"coco": args.dir}),
            f"output_dir={args.out}", "check_images=none", f"embedding_cache={args.cache}"])
        run_data_build(cfg)
        n = json.loads((Path(args.out) / "report.json").read_text())["counts"]["coco"]["read"]
    seconds = time.perf_counter() - t0
    return {"n": n, "seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run(name: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--stage", name] + [f"--{k}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"stage {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--read", type=int, default=600_000)
    ap.add_argument("--embed", type=int, default=4000)
    ap.add_argument("--build", type=int, default=100_000)
    ap.add_argument("--stage")
    ap.add_argument("--dir")
    ap.add_argument("--n", type=int)
    ap.add_argument("--out")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        r = run("read", dir=write_coco(tmp / "read", args.read, 0))
        rows.append((f"read + normalise {r['n']:,} COCO caption records", r, "< 60 s", f"{r['n'] / r['seconds']:,.0f} records/s"))
        r = run("embed", n=args.embed)
        rows.append((f"MiniLM embedding of {r['n']:,} captions", r, ">= 300 captions/s", f"{r['n'] / r['seconds']:,.0f} captions/s"))
        coco = write_coco(tmp / "build", args.build, 2)
        for label in ("cold", "warm"):
            r = run("build", dir=coco, out=tmp / f"out-{label}", cache=tmp / "cache.sqlite")
            bar = "< 10 min" if label == "cold" else "< 1 min"
            rows.append((f"data build --domain food, {r['n']:,} captions, cache {label}", r, bar, ""))
    print("| measurement | seconds | peak RSS (GB) | bar | rate |")
    print("|---|---:|---:|---|---|")
    for label, r, bar, rate in rows:
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {bar} | {rate} |")


if __name__ == "__main__":
    main()
