"""Asking for help: does the robot's own uncertainty announce the person's takeovers, and how much
watching does it save?

The robot asks for help while the mean token entropy of the action chunk it executes is above a
threshold calibrated to an intervention budget (``calibrate_threshold``: the ``1 - budget``
quantile of the per-step entropies of autonomous rollouts). Per task (default: the development
suite), with the same env seeds for every mode:

1. calibration: ``--calib-episodes`` autonomous rollouts per task (seeds ``CALIBRATION_SEED_BASE + i``),
   pooled over the tasks -> one threshold per budget;
2. (A) the always-watching simulated person (divergence trigger on, progress on the reward alone) on seeds
   ``INTERACTION_SEED_BASE + i``; the entropy of every step is logged (requests are computed, not
   shown to anyone). Its takeover triggers are the "failures". A trigger at step t is **caught** when
   a request was active at some step in [t - window, t] (before the person reacts);
   recall = caught / triggers; precision = share of raised requests followed by a trigger within
   the window; request rate = share of steps with an active request;
3. (B) per budget, the person who looks only when asked and takes over when asked
   (``watch="on_request"``, ``honour_requests=True``): **watched share** = steps the person had to
   watch / steps, so the monitoring load saved versus (A) (which watches every step) is
   1 - watched share; success and intervention rate of (A) and (B) tell what it costs.

Usage::

    python benchmarks/bench_help.py --policy runs/demo/train/policy [--tasks pick-place-v3] [--episodes 10]
        [--budgets 0.05 0.1 0.2] [--max-steps N] [--out benchmarks/results/help.json]
    python benchmarks/bench_help.py --untrained --tasks pick-place-v3 --episodes 2 --calib-episodes 1 --max-steps 40

``--untrained`` uses a default-size untrained policy (a smoke test of the script, not a result).
The full run (4 tasks x 10 episodes x (1 + budgets) modes, up to 200 steps each) takes tens of
minutes on 2 cores; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS_DIR, build_base_policy, load_avg, machine_info, make_console, save_results, table
from apo.deployment.collect import INTERACTION_SEED_BASE
from apo.deployment.console.help import (
    CALIBRATION_SEED_BASE, EntropyLog, HelpRequester, UncertaintyPolicy, autonomous_entropies, calibrate_threshold,
)
from apo.deployment.runner import DeployConfig, run_episode
from apo.deployment.simulated import SimulatedPerson, SimulatedPersonConfig
from apo.envs import DEV_SUITE, EnvConfig, make_env

DEFAULT_OUT = RESULTS_DIR / "help.json"


def caught(triggers: list[int], requests: np.ndarray, window: int) -> list[bool]:
    """Per trigger step t: was a request active at some step in [t - window, t]?"""
    return [bool(requests[max(0, t - window):t + 1].any()) for t in triggers]


def request_onsets(requests: np.ndarray) -> list[int]:
    r = np.asarray(requests, bool)
    return np.flatnonzero(r & ~np.concatenate([[False], r[:-1]])).tolist()


def followed(onsets: list[int], triggers: list[int], window: int) -> list[bool]:
    """Per request onset r: did a trigger follow in [r, r + window]?"""
    return [any(r <= t <= r + window for t in triggers) for r in onsets]


def _run_mode(wrapped, make_person, tasks, episodes, env_cfg, deploy, extra) -> list[dict]:
    """Per task, ``episodes`` deployments of ``wrapped`` with the person ``make_person(task)``, on seeds
    ``INTERACTION_SEED_BASE + i``; a dict per episode (``extra(log, person)`` adds mode-specific fields)."""
    out = []
    for task in tasks:
        env = make_env(task, env_cfg)
        person = make_person(task)
        log = EntropyLog(wrapped, inner=person)
        try:
            for i in range(episodes):
                _, s = run_episode(env, wrapped, log, INTERACTION_SEED_BASE + i, deploy)
                out.append(dict(task=task, seed=INTERACTION_SEED_BASE + i, steps=s.steps, human_steps=s.human_steps,
                                takeovers=s.takeovers, success=s.success, watched=person.watched_steps,
                                **extra(log, person)))
        finally:
            env.close()
    return out


def run_always(policy, tasks, episodes, env_cfg, person_cfg, deploy) -> list[dict]:
    """(A): the always-watching person; per episode the step entropies, the triggers, the outcome."""
    return _run_mode(UncertaintyPolicy(policy), lambda task: SimulatedPerson(task, person_cfg), tasks, episodes,
                     env_cfg, deploy,
                     lambda log, person: dict(entropies=list(log.entropies), triggers=[t for t, _ in person.triggers],
                                              trigger_kinds=[k for _, k in person.triggers]))


def run_on_request(policy, threshold, tasks, episodes, env_cfg, person_cfg, deploy, patience) -> list[dict]:
    """(B): the person who looks only when asked and honours requests."""
    requester = HelpRequester(threshold, patience)
    cfg = SimulatedPersonConfig(**{**person_cfg.__dict__, "watch": "on_request", "honour_requests": True})
    return _run_mode(UncertaintyPolicy(policy, requester), lambda task: SimulatedPerson(task, cfg, help_signal=requester),
                     tasks, episodes, env_cfg, deploy,
                     lambda log, person: dict(requests=int(np.sum(log.requests)),
                                              request_onsets=len(request_onsets(log.requests))))


def totals(eps: list[dict]) -> dict[str, float]:
    steps = sum(e["steps"] for e in eps)
    return dict(episodes=len(eps), steps=steps, success_rate=float(np.mean([e["success"] for e in eps])),
                intervention_rate=sum(e["human_steps"] for e in eps) / max(1, steps),
                takeovers_per_episode=sum(e["takeovers"] for e in eps) / max(1, len(eps)),
                watched_share=sum(e["watched"] for e in eps) / max(1, steps))


def analyse_always(eps: list[dict], threshold: float, window: int) -> dict[str, float]:
    n_trig = n_caught = n_onsets = n_followed = req_steps = steps = 0
    for e in eps:
        requests = np.asarray(e["entropies"]) > threshold
        c = caught(e["triggers"], requests, window)
        onsets = request_onsets(requests)
        f = followed(onsets, e["triggers"], window)
        n_trig, n_caught = n_trig + len(c), n_caught + sum(c)
        n_onsets, n_followed = n_onsets + len(onsets), n_followed + sum(f)
        req_steps, steps = req_steps + int(requests.sum()), steps + len(requests)
    return dict(triggers=n_trig, caught=n_caught, recall=n_caught / n_trig if n_trig else float("nan"),
                requests=n_onsets, precision=n_followed / n_onsets if n_onsets else float("nan"),
                request_rate=req_steps / max(1, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--policy", type=Path, help="saved policy folder (e.g. runs/demo/train/policy)")
    src.add_argument("--untrained", action="store_true", help="a default-size untrained policy (smoke test)")
    parser.add_argument("--tasks", nargs="+", default=list(DEV_SUITE), help="tasks (default: the development suite)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and mode")
    parser.add_argument("--calib-episodes", type=int, default=5, help="autonomous calibration rollouts per task")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="intervention budgets")
    parser.add_argument("--window", type=int, default=10, help="steps before a trigger in which a request catches it")
    parser.add_argument("--patience", type=int, default=1, help="uncertain predictions before a request")
    parser.add_argument("--max-steps", type=int, default=None, help="episode step cap (default: the task's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    console = make_console()
    t0 = time.perf_counter()
    if args.untrained:
        policy = build_base_policy(horizon=4)
    else:
        from apo.models import VLAPolicy

        policy = VLAPolicy.load(args.policy)
    tasks = tuple(args.tasks)
    env_cfg = EnvConfig(image_size=policy.config.image_size, max_steps=args.max_steps)
    # the person of the measured figures (docs/results.md): divergence trigger on, progress on the reward alone
    person_cfg, deploy = SimulatedPersonConfig(divergence_steps=6, progress_distance=0.0), DeployConfig()

    console.print(f"calibration: {args.calib_episodes} autonomous rollouts x {len(tasks)} tasks")
    entropies = autonomous_entropies(policy, tasks, args.calib_episodes, env_cfg, CALIBRATION_SEED_BASE)
    thresholds = {b: calibrate_threshold(entropies, b) for b in args.budgets}
    console.print("(A) the always-watching person")
    always = run_always(policy, tasks, args.episodes, env_cfg, person_cfg, deploy)
    results: dict[str, object] = {
        "machine": machine_info(), "policy": "untrained" if args.untrained else str(args.policy),
        "tasks": list(tasks), "episodes": args.episodes, "calib_episodes": args.calib_episodes,
        "window": args.window, "patience": args.patience, "max_steps": args.max_steps,
        "calibration": {"steps": int(entropies.size), "entropy_mean": float(entropies.mean()),
                        "entropy_quantiles": {q: float(np.quantile(entropies, q)) for q in (0.5, 0.8, 0.9, 0.95)}},
        "always": {**totals(always), "triggers": sum(len(e["triggers"]) for e in always)},
        "budgets": {},
    }
    for b in args.budgets:
        console.print(f"(B) budget {b:.0%}: the person who watches on request")
        on_request = run_on_request(policy, thresholds[b], tasks, args.episodes, env_cfg, person_cfg, deploy,
                                    args.patience)
        tb = totals(on_request)
        results["budgets"][str(b)] = {
            "threshold": thresholds[b], "always": analyse_always(always, thresholds[b], args.window),
            "on_request": tb, "monitoring_load_saved": 1.0 - tb["watched_share"],
        }
    results["load_avg_end"] = load_avg()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    save_results(results, args.out)

    def pct(x: float, digits: int = 0) -> str:
        return "-" if x != x else f"{x:.{digits}%}"

    a = results["always"]
    rows = [["(A) always", "-", "-", "-", "-", "-", f"{a['watched_share']:.0%}", "0%",
             f"{a['intervention_rate']:.1%}", f"{a['success_rate']:.0%}"]]
    for b, r in results["budgets"].items():
        x, o = r["always"], r["on_request"]
        rows.append([f"(B) {float(b):.0%} budget", f"{r['threshold']:.3f}", f"{x['request_rate']:.1%}",
                     f"{x['caught']}/{x['triggers']}", pct(x["recall"]), pct(x["precision"]),
                     f"{o['watched_share']:.0%}", f"{r['monitoring_load_saved']:.0%}",
                     f"{o['intervention_rate']:.1%}", f"{o['success_rate']:.0%}"])
    console.print(table(
        f"asking for help: {len(tasks)} tasks x {args.episodes} episodes ({results['policy']}), window {args.window}",
        ["mode", "threshold", "requests", "caught", "recall", "precision", "watched", "load saved",
         "intervention", "success"], rows))
    console.print(f"wrote {args.out} ({results['wall_s']} s)")


if __name__ == "__main__":
    main()
