"""Action tokenizer interface and registry.

A tokenizer maps a chunk of continuous actions ``(..., H, D)`` to a fixed number of integer
tokens ``(..., N)`` in ``[0, vocab_size)`` and back. It is saved beside the model as JSON
(``to_dict`` / ``TOKENIZERS.get(d["kind"]).from_dict(d)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from apo.registry import Registry


class ActionTokenizer(ABC):
    kind: str
    action_dim: int
    horizon: int

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def num_tokens(self) -> int:
        """Tokens per action chunk."""

    @abstractmethod
    def encode(self, actions: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(self, tokens: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def gripper_token_mask(self) -> np.ndarray:
        """bool (num_tokens,): True at tokens that encode the gripper (excluded from APO's undesirable reward)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActionTokenizer": ...


TOKENIZERS: Registry[type[ActionTokenizer]] = Registry("action tokenizer")


def tokenizer_from_dict(d: dict[str, Any]) -> ActionTokenizer:
    if "kind" not in d:
        raise ValueError("tokenizer JSON has no 'kind' field; it was not written by apo")
    return TOKENIZERS.get(d["kind"]).from_dict(d)
