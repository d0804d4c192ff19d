"""``zeroflow run | sweep | resume | report | ui | trajectories``: thin parsing over modules.

Every project error is printed as one line (``error: ...``) with exit status 2, no traceback.
The commands live beside this file: ``run``, ``sweep`` (sweep and resume), ``analysis`` (report
and trajectories), ``ui``; ``output`` holds what they print.
"""

from __future__ import annotations

import argparse
import sys

from zeroflow.cli.output import format_result
from zeroflow.errors import ZeroflowError

DESCRIPTION = ("Forward-pass (zeroth-order) optimizers against forgetting in class-incremental "
               "learning: one trial, a Ray Tune sweep and its resume, the paper's tables from "
               "MLflow runs, the MLflow UI. `zeroflow COMMAND --help` for each command.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zeroflow", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one trial (no Ray): zeroflow run [CONFIG.yaml] [k=v ...]")
    run.add_argument("items", nargs="*", metavar="CONFIG.yaml | key=value",
                     help="an optional YAML config file, then key=value overrides")
    run.add_argument("--checkpoint-dir", default=None,
                     help="write a checkpoint after every task here, and resume from it")
    run.add_argument("--resume-from", default=None, metavar="DIR",
                     help="start from the checkpoint in DIR (e.g. a run's downloaded "
                          "'checkpoint' artifact)")
    run.add_argument("--no-track", dest="track", action="store_false",
                     help="do not record the run in MLflow")
    run.set_defaults(func=_command("run", "cmd_run"))
    plain_help = run.format_help
    run.format_help = lambda: plain_help() + "\n" + _keys_help()  # torch only for --help

    _add_sweep_commands(sub)
    _add_trajectories_command(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ZeroflowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zeroflow ... | head`: the reader left; nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _add_sweep_commands(sub) -> None:
    """``sweep``, ``resume`` and ``ui`` (Ray Tune and MLflow are imported only when used)."""
    sweep = sub.add_parser("sweep", help="run a Ray Tune sweep: zeroflow sweep SPACE",
                           description="Run every trial of a space file as a Ray Tune sweep, "
                           "tracked in MLflow. SPACE is a YAML file or the name of a shipped "
                           "space (zeroflow sweep --list).")
    sweep.add_argument("space", nargs="?", metavar="SPACE",
                       help="a space YAML file, or a shipped space's name (e.g. quickstart)")
    sweep.add_argument("--list", action="store_true", help="list the shipped spaces and exit")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the trials the sweep would run (override rules applied) "
                            "and exit without starting Ray")
    sweep.add_argument("--format", choices=["text", "json"], default="text",
                       help="--dry-run's output: a table (default) or JSON, a list of configs")
    sweep.add_argument("--name", help="sweep name (default: the space's name)")
    sweep.add_argument("--storage", help="where Ray keeps the sweep (default ./zeroflow_runs)")
    sweep.add_argument("--address", help="Ray cluster: auto or HOST:PORT (default: local)")
    sweep.add_argument("--verbose", action="store_true",
                       help="Ray Tune's own result boxes and trial logs instead of status lines")
    sweep.set_defaults(func=_command("sweep", "cmd_sweep"))

    resume = sub.add_parser("resume", help="finish an interrupted sweep: zeroflow resume NAME",
                            description="Finish a sweep whose driver stopped (Ctrl-C, a killed "
                            "job, a lost head node): trials that finished are kept, the others "
                            "continue from their newest checkpoint, in the same MLflow runs.")
    resume.add_argument("sweep", metavar="NAME|PATH",
                        help="the sweep's name (in --storage) or its folder or URI")
    resume.add_argument("--storage", help="where the sweep lives (default ./zeroflow_runs)")
    resume.add_argument("--address", help="Ray cluster: auto or HOST:PORT (default: local)")
    resume.set_defaults(func=_command("sweep", "cmd_resume"))

    report = sub.add_parser("report", help="the paper's tables and figures from MLflow runs")
    report.add_argument("--experiment", dest="experiments", action="extend", nargs="+",
                        metavar="NAME", help="experiment(s) to merge (default: every one)")
    report.add_argument("--format", dest="formats", action="extend", nargs="+",
                        choices=["md", "csv", "latex", "html"],
                        help="what to write besides the PNGs (default: md html)")
    report.add_argument("--out", default="report", help="output folder (default: report/)")
    report.add_argument("--rows", help="pivot: comma-separated config keys for the rows")
    report.add_argument("--cols", help="pivot: comma-separated config keys for the columns")
    report.add_argument("--include-stopped", action="store_true",
                        help="also trials a scheduler stopped early (left out by default)")
    report.set_defaults(func=_command("analysis", "cmd_report"))

    ui = sub.add_parser("ui", help="the MLflow UI over this project's runs",
                        description="Serve the MLflow UI over the MLflow store of this folder "
                        "($MLFLOW_TRACKING_URI, else ./mlflow.db) on 127.0.0.1 until Ctrl-C.")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ui.set_defaults(func=_command("ui", "cmd_ui"))


def _add_trajectories_command(sub) -> None:
    from zeroflow.analysis.trajectories import DEFAULT_PROBLEM, DEFAULT_Q, PROBLEMS

    traj = sub.add_parser("trajectories", help="every optimizer on a 2-D toy: CSV and contour "
                          "plots")
    traj.add_argument("--problem", default=DEFAULT_PROBLEM, metavar="NAME",
                      help=f"the toy (default: {DEFAULT_PROBLEM}): " + "; ".join(
                          f"{n} = {p.summary}" for n, p in PROBLEMS.items()))
    traj.add_argument("--optimizers", nargs="+", metavar="NAME",
                      help="optimizers to run (default: every registered one)")
    traj.add_argument("--q", nargs="+", type=int, default=list(DEFAULT_Q),
                      help=f"query budgets of the ZO runs (default: {DEFAULT_Q})")
    traj.add_argument("--steps", type=int, default=None,
                      help="steps per task (default: the problem's, " + ", ".join(
                          f"{n} {p.default_steps}" for n, p in PROBLEMS.items()) + ")")
    traj.add_argument("--out", default="trajectories", help="output folder")
    traj.set_defaults(func=_command("analysis", "cmd_trajectories"))


def _keys_help() -> str:
    """Every config key of ``zeroflow run``: type, default, allowed values and one line."""
    from zeroflow.config import describe_keys
    from zeroflow.key_help import KEY_HELP

    lines = ["config keys (key=value; in a CONFIG.yaml, key: value):"]
    for key, typ, default, allowed in describe_keys():
        lines.append(f"  {key:<19} {typ}, default {default}" + (
            f"; {allowed}" if allowed else ""))
        lines.append(f"  {'':<19} {KEY_HELP[key]}")
    return "\n".join(lines) + "\n"


def _command(module: str, name: str):
    """The command ``name`` of ``zeroflow.cli.<module>``, imported when it runs."""

    def run(args) -> int:
        from importlib import import_module

        return getattr(import_module(f"zeroflow.cli.{module}"), name)(args)

    return run

__all__ = ["format_result", "main"]
