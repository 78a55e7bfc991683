"""Step-level training data: every step of every episode, with its action chunk and tokens.

Built once in memory from episodes (64 px images: ~12 kB a step). The action chunk of step t is
``actions[t : t + H]`` of the same episode; near the end of an episode it is padded by repeating
the episode's last action, never by reaching into the next episode.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from apo.data.episode import Episode
from apo.tokenizers import ActionTokenizer


# Step categories used by samplers and objectives.
UNDESIRABLE, AUTONOMOUS, CORRECTION, EXPERT = 0, 1, 2, 3
CATEGORY_NAMES = {UNDESIRABLE: "undesirable", AUTONOMOUS: "autonomous", CORRECTION: "correction", EXPERT: "expert"}


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """(T, D) -> (T, H, D): chunk t is actions[t:t+H], padded with the last action of the episode."""
    T = actions.shape[0]
    idx = np.minimum(np.arange(T)[:, None] + np.arange(horizon)[None, :], T - 1)
    return actions[idx]


@dataclass
class StepData:
    images: torch.Tensor  # uint8 (N, H, W, 3)
    proprio: torch.Tensor  # float32 (N, P)
    instruction_ids: torch.Tensor  # long (N,)
    instructions: list[str]
    chunks: torch.Tensor  # float32 (N, H, D) label action chunks
    tokens: torch.Tensor  # long (N, num_tokens)
    labels: torch.Tensor  # int8 (N,)
    episode_ids: torch.Tensor  # long (N,)
    is_expert: torch.Tensor  # bool (N,): step comes from an expert demonstration
    policy_chunks: torch.Tensor | None = None  # float32 (N, H, D) the policy's proposal (interaction data)
    policy_tokens: torch.Tensor | None = None  # long (N, num_tokens) tokens of policy_chunks

    @property
    def categories(self) -> torch.Tensor:
        """(N,) EXPERT for demonstration steps, else the label (UNDESIRABLE, AUTONOMOUS, CORRECTION)."""
        return torch.where(self.is_expert, torch.full_like(self.labels, EXPERT), self.labels).long()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @classmethod
    def from_episodes(cls, episodes: list[Episode], tokenizer: ActionTokenizer) -> "StepData":
        if not episodes:
            raise ValueError("no episodes to build training data from")
        sizes = {e.images.shape[1:] for e in episodes}
        if len(sizes) != 1:
            raise ValueError(f"episodes have different image sizes {sorted(sizes)}; collect at one --image-size")
        instructions = sorted({e.instruction for e in episodes})
        inst_id = {s: i for i, s in enumerate(instructions)}
        H = tokenizer.horizon
        chunks = [action_chunks(e.actions, H) for e in episodes]
        any_policy = any(e.policy_actions is not None for e in episodes)
        policy_chunks = policy_tokens = None
        if any_policy:
            pc = np.concatenate([
                action_chunks(e.policy_actions if e.policy_actions is not None else e.actions, H) for e in episodes
            ]).astype(np.float32)
            policy_chunks, policy_tokens = torch.from_numpy(pc), torch.from_numpy(tokenizer.encode(pc))
        chunk_arr = np.concatenate(chunks).astype(np.float32)
        return cls(
            images=torch.from_numpy(np.concatenate([e.images for e in episodes])),
            proprio=torch.from_numpy(np.concatenate([e.proprio for e in episodes]).astype(np.float32)),
            instruction_ids=torch.from_numpy(np.concatenate([np.full(len(e), inst_id[e.instruction]) for e in episodes])).long(),
            instructions=instructions,
            chunks=torch.from_numpy(chunk_arr),
            tokens=torch.from_numpy(tokenizer.encode(chunk_arr)),
            labels=torch.from_numpy(np.concatenate([e.labels for e in episodes]).astype(np.int8)),
            episode_ids=torch.from_numpy(np.concatenate([np.full(len(e), i) for i, e in enumerate(episodes)])).long(),
            is_expert=torch.from_numpy(np.concatenate([np.full(len(e), e.source == "expert") for e in episodes])),
            policy_chunks=policy_chunks,
            policy_tokens=policy_tokens,
        )

    def select(self, keep: torch.Tensor) -> "StepData":
        """The steps where the (N,) bool mask ``keep`` is true (chunks were cut from whole episodes, so a
        kept step's chunk still holds the actions that followed it)."""
        keep = torch.as_tensor(keep)
        if keep.dtype != torch.bool or keep.shape != (len(self),):
            raise ValueError(f"keep must be a bool mask of shape ({len(self)},), got {keep.dtype} {tuple(keep.shape)}")
        return StepData(**{f.name: v[keep] if isinstance(v := getattr(self, f.name), torch.Tensor) else v
                            for f in fields(self)})

    def batch(self, idx: torch.Tensor, lang_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather a training batch; ``lang_table`` is (len(instructions), 384) embeddings."""
        out = {
            "image": self.images[idx],
            "proprio": self.proprio[idx],
            "lang": lang_table[self.instruction_ids[idx]],
            "chunks": self.chunks[idx],
            "tokens": self.tokens[idx],
            "labels": self.labels[idx],
            "categories": self.categories[idx],
            "index": idx,
        }
        if self.policy_chunks is not None:
            out["policy_chunks"] = self.policy_chunks[idx]
            out["policy_tokens"] = self.policy_tokens[idx]
        return out
