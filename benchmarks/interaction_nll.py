"""How well the base policy already predicts each kind of refinement data, per task.

For every step of the refinement data (interaction episodes + the first DEMOS_PER_TASK expert
demonstrations of each task) the base policy's negative log-likelihood of the recorded action chunk
(sum over its tokens) is averaged per task and step category (undesirable, autonomous, correction,
expert). A high NLL on the person's corrections says they are far from what the policy has learned.

    python benchmarks/interaction_nll.py --policy runs/exp/train_n02/policy \
        --interactions runs/bench/interactions --demos runs/exp/demos_n02
Prints a markdown table and saves benchmarks/results/interaction_nll.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from apo.data import load_episodes
from apo.data.dataset import CATEGORY_NAMES, StepData
from apo.models import VLAPolicy
from apo.training.refine import select_demos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--demos", required=True)
    ap.add_argument("--demos-per-task", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "interaction_nll.json"))
    args = ap.parse_args()

    policy = VLAPolicy.load(args.policy).eval()
    episodes = load_episodes(args.interactions) + select_demos(load_episodes(args.demos), args.demos_per_task)
    data = StepData.from_episodes(episodes, policy.tokenizer)
    lang = policy.embed_instructions(data.instructions)
    tasks = np.concatenate([[ep.task] * len(ep) for ep in episodes])
    nll = []
    with torch.no_grad():
        for start in range(0, len(data), 512):
            batch = data.batch(torch.arange(start, min(start + 512, len(data))), lang)
            mask = policy.tokenizer.token_mask(batch["tokens"]).float()
            nll.append(-(policy.log_prob(batch, batch["tokens"]) * mask).sum(-1))
    nll = torch.cat(nll).numpy()
    cats = data.categories.numpy()

    table: dict[str, dict[str, dict[str, float]]] = {}
    for task in sorted(set(tasks)):
        table[task] = {}
        for c, name in CATEGORY_NAMES.items():
            sel = (tasks == task) & (cats == c)
            table[task][name] = {"steps": int(sel.sum()), "nll": float(nll[sel].mean()) if sel.any() else float("nan")}
    names = list(CATEGORY_NAMES.values())
    print("| task | " + " | ".join(f"{n} NLL (steps)" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for task, row in table.items():
        print(f"| {task} | " + " | ".join(f"{row[n]['nll']:.1f} ({row[n]['steps']})" for n in names) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "nll_per_task_and_category": table}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
