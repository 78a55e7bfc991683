"""Instruction embeddings from the bundled sentence encoder (loaded once per session)."""

from __future__ import annotations

import numpy as np
import pytest

from apo.models import LANG_DIM, encode_instructions


def test_embeddings_are_unit_norm_float32(instruction_embeddings):
    texts, emb = instruction_embeddings
    assert emb.shape == (len(texts), LANG_DIM) == (3, 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embeddings_are_deterministic_and_distinguish_texts(instruction_embeddings):
    texts, emb = instruction_embeddings
    assert texts[0] == texts[2]
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    assert float(emb[0] @ emb[1]) < 0.9  # different instructions, different embeddings
    again = encode_instructions([texts[1]])  # encoder is cached: cheap
    np.testing.assert_allclose(again[0], emb[1], atol=1e-5)


def test_empty_list_and_bad_texts(instruction_embeddings):
    out = encode_instructions([])
    assert out.shape == (0, LANG_DIM) and out.dtype == np.float32
    with pytest.raises(ValueError, match="non-empty"):
        encode_instructions(["ok", "  "])
    with pytest.raises(ValueError, match="non-empty"):
        encode_instructions([None])
