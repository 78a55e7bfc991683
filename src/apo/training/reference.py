"""Reference-model log-probs for the preference objectives, computed once per dataset.

The reference policy is frozen, so its log-probs of a step's own action tokens, of its KL
partner's tokens (a step of another episode, fixed per step) and of the policy's proposed tokens
never change: they are scored in one pass before refinement and looked up by step index
(``CachedReference``). ``OnlineReference`` computes the same numbers with the frozen model at
every step (what the public reference implementation does); both fill the same batch fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from apo.data.dataset import StepData


def assign_kl_partners(episode_ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """For every step, the index of another step, from a different episode whenever there is one."""
    n = len(episode_ids)
    gen = torch.Generator().manual_seed(seed)
    partners = torch.randperm(n, generator=gen)
    for _ in range(10):  # re-draw clashes (same episode); a few rounds leave (almost) none
        clash = episode_ids[partners] == episode_ids
        if not clash.any() or episode_ids.unique().numel() < 2:
            break
        partners[clash] = torch.randint(n, (int(clash.sum()),), generator=gen)
    return partners


def _ref_fields(ref_policy, batch: dict[str, torch.Tensor], kl_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    m = ref_policy.model
    prefix = m.embed_prefix(batch["image"], batch["lang"], batch["proprio"])

    def logp(tokens: torch.Tensor) -> torch.Tensor:
        logits = m.forward_from_prefix(prefix, tokens)
        return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)

    out = {"ref_logp": logp(batch["tokens"]), "ref_kl_logp": logp(kl_tokens)}
    if "policy_tokens" in batch:
        out["ref_policy_logp"] = logp(batch["policy_tokens"])
    return out


@dataclass
class CachedReference:
    partners: torch.Tensor
    tokens: torch.Tensor
    fields: dict[str, torch.Tensor]

    @classmethod
    @torch.no_grad()
    def compute(cls, ref_policy, data: StepData, seed: int = 0, batch_size: int = 256) -> "CachedReference":
        ref_policy.eval()
        partners = assign_kl_partners(data.episode_ids, seed)
        lang = ref_policy.embed_instructions(data.instructions)
        chunks: dict[str, list[torch.Tensor]] = {}
        for start in tqdm(range(0, len(data), batch_size), desc="reference log-probs", unit="batch", leave=False):
            idx = torch.arange(start, min(start + batch_size, len(data)))
            for k, v in _ref_fields(ref_policy, data.batch(idx, lang), data.tokens[partners[idx]]).items():
                chunks.setdefault(k, []).append(v)
        return cls(partners, data.tokens, {k: torch.cat(v) for k, v in chunks.items()})

    def fingerprint(self) -> str:
        return hashlib.sha1(self.tokens.numpy().tobytes()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """Written to a temporary file and renamed, so a kill mid-write never leaves a partial cache."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"partners": self.partners, "tokens": self.tokens, "fields": self.fields}, tmp)
        tmp.replace(path)

    @classmethod
    def load_if_matching(cls, path: str | Path, data: StepData, seed: int = 0) -> "CachedReference | None":
        """The cache at ``path`` if it was scored for these steps with this seed's KL partners, else None."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            d = torch.load(path, map_location="cpu")
        except Exception:  # unreadable (e.g. cut short by a kill before atomic writes): score it again
            return None
        if d["tokens"].shape != data.tokens.shape or not torch.equal(d["tokens"], data.tokens):
            return None  # a different dataset: recompute
        if not torch.equal(d["partners"], assign_kl_partners(data.episode_ids, seed)):
            return None  # another training seed's KL partners (e.g. a cache copied from seed 0): recompute
        return cls(d["partners"], d["tokens"], d["fields"])

    def fill(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        idx = batch["index"]
        batch["kl_tokens"] = self.tokens[self.partners[idx]]
        for k, v in self.fields.items():
            batch[k] = v[idx]
        return batch


class OnlineReference:
    """Scores the reference log-probs with the frozen model at every step (for checks and comparisons)."""

    def __init__(self, ref_policy, data: StepData, seed: int = 0):
        self.ref = ref_policy.eval()
        self.partners = assign_kl_partners(data.episode_ids, seed)
        self.tokens = data.tokens

    @torch.no_grad()
    def fill(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kl_tokens = self.tokens[self.partners[batch["index"]]]
        batch["kl_tokens"] = kl_tokens
        batch.update(_ref_fields(self.ref, batch, kl_tokens))
        return batch
