"""Average several refined policies into one (a "model soup", Wortsman et al. 2022).

Refined policies are saved with their LoRA adapters merged, so a saved policy is base + B A.
Averaging the saved weights of policies refined from the same base gives base + mean_i(B_i A_i):
the mean of the adapters' weight changes, exactly (averaging the A and B factors separately
would not be). The policies must share architecture, tokenizer and normalization stats; the
average is only meaningful when they were refined from the same base policy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from apo.models.policy import PolicyLoadError, VLAPolicy


def average_policies(paths: Sequence[str | os.PathLike]) -> VLAPolicy:
    """Load the policies at ``paths`` and return one whose weights are their element-wise mean."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two policies, got {len(paths)}")
    policies = [VLAPolicy.load(p) for p in paths]
    first = policies[0]
    for path, other in zip(paths[1:], policies[1:]):
        for what, a, b in (("model config", first.config, other.config),
                           ("tokenizer", first.tokenizer.to_dict(), other.tokenizer.to_dict()),
                           ("normalization stats", first.stats, other.stats),
                           ("rendering", first.rendering, other.rendering)):
            if a != b:
                raise PolicyLoadError(f"{path} has a different {what} from {paths[0]}: only policies refined "
                                      "from the same base policy can be averaged")
    states = [p.model.state_dict() for p in policies]
    mean = {}
    for name, first_value in states[0].items():
        if first_value.is_floating_point():
            mean[name] = torch.stack([s[name] for s in states]).mean(0)
        else:  # integer buffers (none today) must agree
            if any(not torch.equal(s[name], first_value) for s in states[1:]):
                raise PolicyLoadError(f"buffer {name!r} differs between the policies; they cannot be averaged")
            mean[name] = first_value
    first.model.load_state_dict(mean)
    for other in policies[1:]:  # instruction embeddings come from a fixed encoder: take the union
        for text, emb in other._instructions.items():
            first._instructions.setdefault(text, emb)
    return first
