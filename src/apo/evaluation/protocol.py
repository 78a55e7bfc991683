"""Pieces shared by the experiment runners (``apo benchmark``, ``apo loop``).

* evaluation settings: the original tasks, and with a perturbation the perturbed variants first
  (where the robot is deployed and refined) and the original tasks (to measure forgetting);
* the run folder's ``config.json``: a rerun continues the run only with the same settings, so
  stored stages are never mixed with stages of another configuration;
* ``log.txt``: one timestamped line per stage (also printed);
* evaluations cached as JSON (written atomically, so a kill never leaves a half-written result);
* videos of recorded interaction episodes whose frame colour shows who acted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from apo.data.storage import iter_episodes
from apo.deployment.labels import takeover_steps
from apo.envs import EnvConfig
from apo.envs.perturbations import perturbed_task
from apo.evaluation.rollout import EvalConfig, evaluate, results_to_dict
from apo.evaluation.video import write_episode_video

ORIGINAL = "original"
PERTURBED = "perturbed"


def evaluation_settings(tasks: tuple[str, ...], perturbation: str | None) -> dict[str, tuple[str, ...]]:
    """``{"perturbed": (task+perturbation, ...), "original": tasks}``, or ``{"original": tasks}`` without
    a perturbation. The first setting is the one the robot is deployed (and refined) in."""
    tasks = tuple(tasks)
    if perturbation is None:
        return {ORIGINAL: tasks}
    return {PERTURBED: tuple(perturbed_task(t, perturbation) for t in tasks), ORIGINAL: tasks}


def all_tasks(settings: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for tasks in settings.values() for t in tasks))


def setting_success(results: dict, settings: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Mean success rate over each setting's tasks, from an eval.json ``results`` dict."""
    return {name: float(np.mean([results[t]["success_rate"] for t in tasks])) for name, tasks in settings.items()}


# ----- the run folder's configuration -----

class RunConfigMismatchError(ValueError):
    """A run folder is being continued with settings that change what its stored stages mean."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_and_save_config(out: Path, config: dict, may_change: tuple[str, ...] = ()) -> None:
    """Write ``out/config.json``; if the folder already holds a run, first check that no setting other
    than ``may_change`` (dotted names; a name covers everything under it) differs from it."""
    path = out / "config.json"
    new = json.loads(json.dumps(config, default=str))
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None  # a config.json cut short by a kill: the stages themselves are the record
        if isinstance(old, dict):
            a, b = _flatten(old), _flatten(new)
            free = lambda k: any(k == m or k.startswith(m + ".") for m in may_change)  # noqa: E731
            differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k] and not free(k))
            if differ:
                shown = "; ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in differ[:8])
                raise RunConfigMismatchError(
                    f"{out} holds a run made with other settings ({shown}{' ...' if len(differ) > 8 else ''}); "
                    f"continuing it would mix results of both. Rerun with the same options, or give a new --out."
                )
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(new, indent=2))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----- log -----

class RunLog:
    """Appends timestamped lines to ``log.txt`` of a run folder and prints them."""

    def __init__(self, path: Path, console: Console | None = None):
        self.path = path
        self.console = console or Console()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, message: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")

    def stage(self, message: str) -> None:
        """A stage begins (a rule in the console)."""
        self._append(message)
        self.console.rule(message)

    def info(self, message: str) -> None:
        self._append(f"  {message}")
        self.console.print(message)


# ----- evaluation, cached -----

def evaluate_once(policy_dir: Path, path: Path, eval_cfg: EvalConfig, env_cfg: EnvConfig) -> dict:
    """Evaluate a saved policy on ``eval_cfg.tasks`` and store the results in ``path`` (JSON); a stored
    result that covers those tasks is returned as is. Videos (if asked) go to ``<path stem>/videos``."""
    if path.exists():
        results = json.loads(path.read_text())["results"]
        if all(t in results for t in eval_cfg.tasks):
            return results
    from apo.models import VLAPolicy

    policy = VLAPolicy.load(policy_dir)
    results = results_to_dict(evaluate(policy, eval_cfg, env_cfg, path.parent / path.stem))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps({"results": results, "policy": str(policy_dir),
                                    "config": dataclasses.asdict(eval_cfg)}, indent=2))
    return results


# ----- interaction videos -----

def write_interaction_videos(root: Path, out_dir: Path, per_outcome: int = 1) -> list[Path]:
    """Videos of recorded interaction episodes, ``per_outcome`` successful and failed ones per task
    (episodes with takeovers first, then by seed). Each frame is coloured by who acted: red = the
    person, orange = the K policy steps before a takeover, green = the policy. Existing videos are kept."""
    if per_outcome < 1:
        return []
    chosen: dict[tuple[str, bool], list[tuple[tuple[bool, int], Any, int]]] = {}
    for ep in iter_episodes(root):
        n = len(takeover_steps(np.where(ep.labels == 0, 1, ep.labels)))
        picks = chosen.setdefault((ep.task, bool(ep.success)), [])
        picks.append(((n == 0, ep.seed), ep, n))
        picks.sort(key=lambda item: item[0])
        del picks[per_outcome:]
    paths = []
    for (task, ok), picks in sorted(chosen.items()):
        for _, ep, n in picks:
            path = out_dir / f"{task}_seed{ep.seed}_{'success' if ok else 'failure'}_{n}takeovers.mp4"
            if not path.exists():
                tmp = path.with_name(path.stem + ".part.mp4")
                write_episode_video(tmp, ep)
                os.replace(tmp, path)
            paths.append(path)
    return paths
