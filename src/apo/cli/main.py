"""Entry point of the ``apo`` command line."""

from __future__ import annotations

import sys

import tyro

from apo.cli import commands


def main() -> None:
    from rich.console import Console

    from apo.data.storage import DatasetError
    from apo.deployment.devices import DeviceNotFoundError
    from apo.envs.metaworld_env import RenderingMismatchError
    from apo.evaluation.protocol import RunConfigMismatchError
    from apo.evaluation.report import EvalFileError
    from apo.models.policy import PolicyLoadError
    from apo.registry import UnknownNameError
    from apo.tokenizers import TokenizerFileError

    try:
        _run()
    except (DatasetError, PolicyLoadError, UnknownNameError, DeviceNotFoundError, RunConfigMismatchError,
            TokenizerFileError, EvalFileError, RenderingMismatchError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: rerun the same command to continue from the last checkpoint")
        sys.exit(130)


def _run() -> None:
    tyro.extras.subcommand_cli_from_dict(
        {
            "demo": commands.demo,
            "collect-demos": commands.collect_demos,
            "stats": commands.stats,
            "fit-tokenizer": commands.fit_tokenizer,
            "train": commands.train,
            "eval": commands.evaluate,
            "compare": commands.compare,
            "collect": commands.collect,
            "serve": commands.serve,
            "refine": commands.refine,
            "average": commands.average,
            "benchmark": commands.benchmark,
            "loop": commands.loop,
        },
        prog="apo",
        description="Human-assisted refinement of VLA policies by Action Preference Optimization.",
    )


if __name__ == "__main__":
    main()
