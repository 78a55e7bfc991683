"""Models: the tiny VLA network and the policy wrapper (tokenizer, stats, instruction cache)."""

from apo.models.averaging import average_policies
from apo.models.language import LANG_DIM, encode_instructions
from apo.models.policy import PolicyLoadError, VLAPolicy
from apo.models.vla import TinyVLA, VLAConfig

__all__ = [
    "LANG_DIM",
    "PolicyLoadError",
    "TinyVLA",
    "VLAConfig",
    "VLAPolicy",
    "average_policies",
    "encode_instructions",
]
