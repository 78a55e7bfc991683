"""The ``apo`` command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apo.cli import commands
from apo.data import DatasetStats


def apo_cmd() -> list[str]:
    exe = shutil.which("apo") or str(Path(sys.executable).with_name("apo"))
    if Path(exe).exists():
        return [exe]
    return [sys.executable, "-m", "apo.cli.main"]


HELP = ("--help",)
DEMO_HELP = ("demo", "--help")
EVAL_MISSING = ("eval", "--policy", "/nonexistent/policy", "--out")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The three CLI invocations, started together (each pays torch/MuJoCo import time)."""
    out_dir = tmp_path_factory.mktemp("cli") / "ev"
    env = {**os.environ, "COLUMNS": "200"}
    cmds = {HELP: HELP, DEMO_HELP: DEMO_HELP, EVAL_MISSING: (*EVAL_MISSING, str(out_dir))}
    procs = {
        key: subprocess.Popen([*apo_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for key, args in cmds.items()
    }
    results = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return results, out_dir


@pytest.mark.slow
def test_help_lists_subcommands(cli_runs):
    out = cli_runs[0][HELP]
    assert out.returncode == 0, out.stderr
    for sub in ("demo", "collect-demos", "stats", "train", "eval"):
        assert sub in out.stdout


@pytest.mark.slow
def test_demo_help_shows_options(cli_runs):
    out = cli_runs[0][DEMO_HELP]
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for opt in ("--out", "--demos.episodes-per-task", "--recipe.horizon", "--recipe.train.steps",
                "--eval.episodes", "--env.image-size"):
        assert opt in text, opt
    assert "--recipe.model.image-size" not in text  # derived from the data: hidden


@pytest.mark.slow
def test_eval_of_missing_policy_fails_clearly(cli_runs):
    results, out_dir = cli_runs
    out = results[EVAL_MISSING]
    assert out.returncode != 0
    err = out.stdout + out.stderr
    assert "PolicyLoadError" in err or "not a saved policy" in err
    assert "no config.json" in err
    assert not (out_dir / "eval.json").exists()


def test_stats_command_recomputes_stats(tmp_path, tiny_dataset, tiny_stats):
    data = tmp_path / "ds"
    shutil.copytree(tiny_dataset, data)
    (data / "stats.json").unlink()
    commands.stats(commands.StatsArgs(data=data))
    assert DatasetStats.load(data) == tiny_stats


def test_benchmark_and_loop_take_a_perturbation():
    import tyro

    from apo.registry import UnknownNameError

    args = tyro.cli(commands.BenchmarkArgs, args=["--out", "r", "--benchmark.perturbation", "texture",
                                                  "--benchmark.train-seeds", "0", "1"])
    assert args.benchmark.perturbation == "texture" and args.benchmark.train_seeds == (0, 1)
    assert tyro.cli(commands.BenchmarkArgs, args=["--out", "r"]).benchmark.perturbation is None
    loop = tyro.cli(commands.LoopArgs, args=["--policy", "p", "--out", "o", "--loop.perturbation", "position+lighting",
                                             "--loop.rounds", "5"])
    assert loop.loop.perturbation == "position+lighting" and loop.loop.rounds == 5
    with pytest.raises(UnknownNameError, match="Valid names: position, background, texture, lighting"):
        tyro.cli(commands.BenchmarkArgs, args=["--out", "r", "--benchmark.perturbation", "fog"])


@pytest.mark.slow
def test_help_lists_fit_tokenizer(cli_runs):
    assert "fit-tokenizer" in cli_runs[0][HELP].stdout


def test_fit_tokenizer_command_writes_a_loadable_tokenizer(tmp_path, tiny_dataset, capsys):
    from apo.tokenizers import FASTActionTokenizer, FASTConfig, load_tokenizer

    out = tmp_path / "fast.json"
    commands.fit_tokenizer(commands.FitTokenizerArgs(data=tiny_dataset, out=out, horizon=2, fast=FASTConfig(vocab_size=120)))
    tok = load_tokenizer(out)
    assert isinstance(tok, FASTActionTokenizer) and tok.horizon == 2 and tok.vocab_size <= 120
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "bin tokenizer: 8" in printed and "padded to 10" in printed and out.name in printed


def test_missing_tokenizer_file_is_a_clean_error(tmp_path, tiny_dataset, monkeypatch, capsys):
    from apo.cli.main import main

    missing = tmp_path / "nope.json"
    monkeypatch.setattr(sys, "argv", ["apo", "train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"),
                                      "--recipe.tokenizer", "fast", "--recipe.tokenizer-file", str(missing)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "apo fit-tokenizer" in err and "Traceback" not in err


def test_evaluating_with_other_images_is_a_clean_error(tmp_path, tiny_policy, monkeypatch, capsys):
    from apo.cli.main import main
    from apo.envs import EnvConfig

    tiny_policy.rendering = EnvConfig(image_size=tiny_policy.config.image_size, goal_pin=True).rendering()
    try:
        path = tiny_policy.save(tmp_path / "policy")
    finally:
        tiny_policy.rendering = None
    monkeypatch.setattr(sys, "argv", ["apo", "eval", "--policy", str(path), "--out", str(tmp_path / "eval"),
                                      "--eval.episodes", "1", "--env.image-size", str(tiny_policy.config.image_size)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and "--env.goal-pin" in err and "Traceback" not in err


def test_compare_command_prints_table_and_writes_chart(tmp_path, monkeypatch, capsys):
    import json

    from apo.cli.main import main

    for name, succ in (("base", [True, False]), ("apo", [True, True])):
        (tmp_path / name).mkdir()
        res = {"t-v3": {"success_rate": sum(succ) / 2, "successes": succ, "seeds": [1, 2]}}
        (tmp_path / name / "eval.json").write_text(json.dumps({"results": res}))
    monkeypatch.setattr(sys, "argv", ["apo", "compare", f"base={tmp_path / 'base'}", f"apo={tmp_path / 'apo'}",
                                      "--out", str(tmp_path / "cmp")])
    main()
    out = capsys.readouterr().out
    assert "| **apo** | 100%" in out and "(+50.0 pt)" in out
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert "(+50.0 pt)" in (tmp_path / "cmp" / "compare.md").read_text()
    # a malformed pair is a clean error that shows the expected form
    monkeypatch.setattr(sys, "argv", ["apo", "compare", "just-a-path"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "NAME=PATH" in capsys.readouterr().err
