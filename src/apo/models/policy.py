"""VLAPolicy: the TinyVLA network with its tokenizer, normalization stats and instruction cache.

``act(obs)`` turns one observation dict (as returned by the env) into a chunk of continuous
actions; ``act_batch`` does the same for a batch (evaluation runs episodes in lockstep).
``save(dir)`` writes ``model.safetensors``, ``config.json`` (model + tokenizer + stats) and
``instructions.safetensors`` (the cached instruction embeddings, so deployment on known tasks
does not need the sentence encoder); ``VLAPolicy.load(dir)`` restores an identical policy.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from apo.data.stats import DatasetStats
from apo.models.language import LANG_DIM, encode_instructions
from apo.models.vla import TinyVLA, VLAConfig
from apo.tokenizers import ActionTokenizer, tokenizer_from_dict

POLICY_FORMAT = "apo-policy-v1"


class PolicyLoadError(RuntimeError):
    """A saved policy folder is missing files or does not match; the message says what to do."""


class VLAPolicy(torch.nn.Module):
    def __init__(self, config: VLAConfig, tokenizer: ActionTokenizer, stats: DatasetStats):
        super().__init__()
        if config.vocab_size != tokenizer.vocab_size or config.num_action_tokens != tokenizer.num_tokens:
            raise ValueError(
                f"model config (vocab {config.vocab_size}, {config.num_action_tokens} tokens) does not match the "
                f"tokenizer (vocab {tokenizer.vocab_size}, {tokenizer.num_tokens} tokens)"
            )
        if len(stats.proprio_mean) != config.proprio_dim:
            raise ValueError(f"stats have {len(stats.proprio_mean)}-d proprio, model expects {config.proprio_dim}")
        self.config = config
        self.tokenizer = tokenizer
        self.stats = stats
        self.model = TinyVLA(config)
        self.model.proprio_mean.copy_(torch.tensor(stats.proprio_mean))
        self.model.proprio_std.copy_(torch.tensor(stats.proprio_std))
        self._instructions: dict[str, torch.Tensor] = {}
        self.rendering: dict[str, Any] | None = None
        """How its training images were rendered (``EnvConfig.rendering()``), if the demos recorded it."""

    def rendering_to_match(self) -> dict[str, Any]:
        """What a deployment env must render like: the recorded rendering, else at least the image size."""
        return self.rendering or {"image_size": self.config.image_size}

    @classmethod
    def build(cls, tokenizer: ActionTokenizer, stats: DatasetStats, **model_kwargs: Any) -> "VLAPolicy":
        cfg = VLAConfig(vocab_size=tokenizer.vocab_size, num_action_tokens=tokenizer.num_tokens,
                        proprio_dim=len(stats.proprio_mean), **model_kwargs)
        return cls(cfg, tokenizer, stats)

    # ----- language -----
    def embed_instructions(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._instructions})
        if missing:
            for t, e in zip(missing, encode_instructions(missing)):
                self._instructions[t] = torch.from_numpy(e)
        return torch.stack([self._instructions[t] for t in texts])

    # ----- scoring -----
    def log_prob(self, batch: dict[str, torch.Tensor], tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log-probs (B, N) of ``tokens`` (default: ``batch["tokens"]``)."""
        tokens = batch["tokens"] if tokens is None else tokens
        return self.model.log_prob(batch["image"], batch["lang"], batch["proprio"], tokens)

    def logits(self, batch: dict[str, torch.Tensor], tokens: torch.Tensor | None = None) -> torch.Tensor:
        tokens = batch["tokens"] if tokens is None else tokens
        return self.model(batch["image"], batch["lang"], batch["proprio"], tokens)

    # ----- acting -----
    @torch.no_grad()
    def act_batch(self, images: np.ndarray, proprio: np.ndarray, instructions: list[str],
                  use_cache: bool = True, return_info: bool = False):
        """Greedy action chunks (B, H, D) for a batch of observations (decoding constrained by the
        tokenizer's ``next_token_mask``, so every chunk decodes)."""
        was_training = self.model.training
        self.model.eval()
        try:
            imgs = torch.as_tensor(np.asarray(images))
            prop = torch.as_tensor(np.asarray(proprio, np.float32))
            if imgs.ndim != 4 or len(instructions) != imgs.shape[0]:
                raise ValueError(
                    f"act_batch needs images (B, H, W, 3) and B instructions, got {tuple(imgs.shape)} and "
                    f"{len(instructions)} instructions"
                )
            tok = self.tokenizer
            tokens, entropy = self.model.generate(imgs, self.embed_instructions(instructions), prop, use_cache=use_cache,
                                                  allowed=tok.next_token_mask, pad_id=tok.pad_id)
        finally:
            self.model.train(was_training)
        actions = tok.decode(tokens.numpy())
        bad = ~np.isfinite(actions).reshape(len(actions), -1).all(1)
        if bad.any():  # cannot happen: decoding is constrained to well-formed sequences
            raise RuntimeError(f"the policy produced undecodable action tokens {tokens[bad].tolist()} despite "
                               f"constrained decoding; the {tok.kind} tokenizer's next_token_mask is wrong")
        if return_info:
            # padded positions (variable-length tokenizers) get the mean entropy of the sequence's real
            # tokens, so that a mean over the row is the mean over real tokens
            valid = tok.token_mask(tokens)
            mean = (entropy * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
            entropy = torch.where(valid, entropy, mean)
            return actions, {"tokens": tokens.numpy(), "entropy": entropy.numpy(), "token_mask": valid.numpy()}
        return actions

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """One observation dict -> action chunk (H, D)."""
        for key in ("image", "proprio", "instruction"):
            if key not in obs:
                raise KeyError(f"observation is missing {key!r} (needs image, proprio, instruction)")
        return self.act_batch(obs["image"][None], np.asarray(obs["proprio"])[None], [obs["instruction"]])[0]

    # ----- persistence -----
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        names = sorted(self._instructions)
        if names:
            save_file({f"i{i}": self._instructions[n] for i, n in enumerate(names)}, str(tmp / "instructions.safetensors"))
        meta = {
            "format": POLICY_FORMAT, "model": asdict(self.config), "tokenizer": self.tokenizer.to_dict(),
            "stats": asdict(self.stats), "instructions": names,
            **({"rendering": self.rendering} if self.rendering is not None else {}),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if path.exists():
            old = path.with_name(path.name + ".old")
            if old.exists():
                _rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VLAPolicy":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise PolicyLoadError(f"{path} is not a saved policy (no config.json); train one with `apo train`")
        try:
            meta = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise PolicyLoadError(f"{cfg_file} is corrupt ({e}); re-save or re-train the policy") from e
        if meta.get("format") != POLICY_FORMAT:
            raise PolicyLoadError(f"{cfg_file} has format {meta.get('format')!r}, expected {POLICY_FORMAT!r}")
        try:
            policy = cls(VLAConfig(**meta["model"]), tokenizer_from_dict(meta["tokenizer"]), DatasetStats(**meta["stats"]))
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyLoadError(f"{cfg_file} is incomplete or inconsistent ({e!r}); re-save or re-train the policy") from e
        weights = _read_safetensors(path / "model.safetensors")
        try:
            policy.model.load_state_dict(weights)
        except RuntimeError as e:  # missing/unexpected keys or shapes that differ from config.json
            raise PolicyLoadError(
                f"cannot load weights from {path / 'model.safetensors'}: they do not match {cfg_file} ({e}); "
                "re-save the policy or restore the config.json it was saved with"
            ) from e
        if meta.get("instructions"):
            emb = _read_safetensors(path / "instructions.safetensors")
            try:
                policy._instructions = {n: emb[f"i{i}"] for i, n in enumerate(meta["instructions"])}
            except KeyError as e:
                raise PolicyLoadError(f"{path / 'instructions.safetensors'} lacks embedding {e}; re-save the policy") from e
        policy.rendering = meta.get("rendering")
        policy.eval()
        return policy


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.exists():
        raise PolicyLoadError(f"{file} is missing; the policy folder is incomplete: re-save or re-train the policy")
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error types (header, truncation)
        raise PolicyLoadError(f"{file} is corrupt ({e}); re-save or re-train the policy") from e


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
