"""``zeroflow run | sweep | resume | report | ui | trajectories``: thin parsing over modules.

Every project error is printed as one line (``error: ...``) with exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import math
import sys

from zeroflow.errors import ZeroflowError


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_result(result) -> str:
    """The per-task accuracy table and the summary lines of a finished trial."""
    m = result.matrix
    header = ["after task", *[f"T{j}" for j in range(m.n_tasks)], "seen", "fgt"]
    rows = []
    for t in range(m.done):
        cells = ["" if math.isnan(v) else f"{v:.1f}" for v in m.a[t]]
        rows.append([str(t), *cells, f"{m.seen[t]:.2f}", f"{m.forgetting(t):.2f}"])
    s = result.summary
    c = result.config
    mem_label = {"cuda_max_allocated": "CUDA max allocated"}.get(result.memory_label,
                                                                 "process peak RSS")
    lines = [
        _table(rows, header),
        "",
        f"{c.method} / {c.optimizer} on {c.dataset} ({m.n_tasks} tasks, backbone {c.backbone})",
        f"avg accuracy   {s['avg']:.2f} %",
        f"last accuracy  {s['last']:.2f} %",
        f"forgetting     {s['forgetting']:.2f} %",
        f"peak memory    {s['peak_memory_mb']:.0f} MB ({mem_label})",
        f"forward passes {int(s['forward_passes'])} in {int(s['steps'])} steps",
        f"train time     {s['train_seconds']:.1f} s",
    ]
    return "\n".join(lines)


def _say(message: str) -> None:
    """A progress line on stderr, at once (the first output of a command comes before its slow
    imports and starts)."""
    print(f"zeroflow: {message}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from zeroflow.config import load_config

    path = None
    overrides = list(args.items)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    config = load_config(path, overrides)
    _say(f"{config.method} / {config.optimizer} on {config.dataset}: loading torch, the data "
         f"and the {config.backbone} backbone")
    from zeroflow.trial import run_trial

    tracker = None
    if args.track:
        from zeroflow.tracking import RunTracker

        tracker = RunTracker(config.to_dict(), RunTracker.key_for(args.checkpoint_dir))
    import tempfile

    from zeroflow.progress import TaskBar

    bar = TaskBar()
    # a tracked run keeps its final checkpoint as an artifact: without --checkpoint-dir, the
    # per-task checkpoints go to a temporary folder for that
    scratch = tempfile.TemporaryDirectory(prefix="zf_run_") if tracker and not (
        args.checkpoint_dir) else None
    checkpoint_dir = args.checkpoint_dir or (scratch.name if scratch else None)
    try:
        result = run_trial(config, tracker.report if tracker else None,
                           checkpoint_dir=checkpoint_dir, resume_from=args.resume_from,
                           log=bar.log, on_step=bar.step)
        bar.close()
        if tracker:
            tracker.n_tasks = result.matrix.n_tasks
            try:
                tracker.tracker.log_checkpoint(tracker.run_id, checkpoint_dir)
            except Exception as err:  # noqa: BLE001 - the result stands without the artifact
                print(f"warning: could not log the checkpoint artifact: {err}", file=sys.stderr)
            tracker.finish("FINISHED")
    except BaseException as err:
        bar.close()
        if tracker:
            _finish_quietly(tracker, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if scratch:
            scratch.cleanup()
    print(format_result(result))
    if tracker:
        print(f"MLflow run {tracker.run_id} in experiment {tracker.tracker.sweep!r}: zeroflow ui")
    return 0


def _finish_quietly(tracker, status: str) -> None:
    """Mark the run ended without letting a tracking problem hide the trial's own error."""
    try:
        tracker.finish(status)
    except Exception as err:  # noqa: BLE001 - the original error is what the user needs
        print(f"warning: could not finish the MLflow run: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zeroflow", description=__doc__.splitlines()[0])
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
    run.set_defaults(func=cmd_run)

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
    sweep.set_defaults(func=cmd_sweep)

    resume = sub.add_parser("resume", help="finish an interrupted sweep: zeroflow resume NAME")
    resume.add_argument("sweep", metavar="NAME|PATH")
    resume.add_argument("--storage", help="where the sweep lives (default ./zeroflow_runs)")
    resume.add_argument("--address", help="Ray cluster: auto or HOST:PORT (default: local)")
    resume.set_defaults(func=cmd_resume)

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
    report.set_defaults(func=cmd_report)

    ui = sub.add_parser("ui", help="the MLflow UI over this project's runs",
                        description="Serve the MLflow UI over the MLflow store of this folder "
                        "($MLFLOW_TRACKING_URI, else ./mlflow.db) on 127.0.0.1 until Ctrl-C.")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ui.set_defaults(func=cmd_ui)


def _add_trajectories_command(sub) -> None:
    from zeroflow.analysis.trajectories import DEFAULT_Q, DEFAULT_STEPS

    traj = sub.add_parser("trajectories", help="the two-task 2-D toy with every optimizer: "
                          "CSV and contour plots")
    traj.add_argument("--optimizers", nargs="+", metavar="NAME",
                      help="optimizers to run (default: every registered one)")
    traj.add_argument("--q", nargs="+", type=int, default=list(DEFAULT_Q),
                      help=f"query budgets of the ZO runs (default: {DEFAULT_Q})")
    traj.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                      help=f"steps per task (default: {DEFAULT_STEPS})")
    traj.add_argument("--out", default="trajectories", help="output folder")
    traj.set_defaults(func=cmd_trajectories)


def cmd_trajectories(args) -> int:
    _say(f"the 2-D toy with {', '.join(args.optimizers) if args.optimizers else 'every optimizer'}"
         f", {args.steps} steps per task")
    from zeroflow.analysis.trajectories import write_trajectories

    written = write_trajectories(args.out, args.optimizers, args.q, args.steps)
    print(f"wrote {len(written)} files to {args.out}/: {', '.join(p.name for p in written)}")
    return 0


def _print_summary(results, space, uri: str) -> int:
    """The sweep's table, its best trial and where its runs went (``uri``, the MLflow store the
    driver logged to)."""
    from zeroflow.sweep import summary_table
    from zeroflow.sweep.driver import failed_trials

    table = summary_table(results, space.varying)
    failed = failed_trials(results, space.varying)
    print()
    print(f"sweep {space.name}: {len(results)} trials, {len(failed)} errored")
    for name, reason in failed:
        print(f"  failed: {name}: {reason}")
    if len(table):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    _print_best(results, space, uri)
    if uri.startswith(("http://", "https://")):
        print(f"\nbrowse every run: open {uri} (the MLflow server)")
    else:
        print(f"\nbrowse every run: zeroflow ui   (MLflow store: {uri})")
    return 1 if failed else 0


def _print_best(results, space, uri: str) -> None:
    """The best complete trial's setting and its MLflow run (to carry into another space)."""
    from zeroflow.sweep import best_trial
    from zeroflow.sweep.space import trial_config

    best, metric = best_trial(results, space)
    if best is None:
        return
    run = ""
    try:
        from mlflow import MlflowClient

        from zeroflow.tracking import TAG_TRIAL

        found = MlflowClient(uri).search_runs(
            [e.experiment_id for e in MlflowClient(uri).search_experiments()
             if e.name == space.name],
            filter_string=f"tags.`{TAG_TRIAL}` = '{best.metrics.get('trial_id')}'")
        run = f"  (MLflow run {found[0].info.run_id})" if found else ""
    except Exception:  # noqa: BLE001 - the pointer is a convenience, the table is the result
        pass
    config = trial_config(best.config)
    setting = ", ".join(f"{k}={config[k]}" for k in space.varying if k in config) or "-"
    print(f"\nbest {metric} {best.metrics[metric]:.2f}: {setting}{run}")


def cmd_sweep(args) -> int:
    from zeroflow.sweep import run_sweep

    if args.list:
        from zeroflow.sweep.driver import shipped_spaces, space_summary

        spaces = shipped_spaces()
        width = max(map(len, spaces))
        for name, path in spaces.items():
            print(f"{name:<{width}}  {space_summary(path)}")
        return 0
    if args.space is None:
        raise ZeroflowError("give a space: a YAML file or a shipped space's name "
                            "(zeroflow sweep --list)")
    if args.dry_run:
        return _dry_run(args)
    from zeroflow.tracking import default_tracking_uri

    results, space = run_sweep(args.space, name=args.name, storage=args.storage,
                               address=args.address, verbose=1 if args.verbose else 0,
                               progress=not args.verbose)
    return _print_summary(results, space, default_tracking_uri())


def _dry_run(args) -> int:
    """``zeroflow sweep SPACE --dry-run``: the resolved trials, as a table or JSON."""
    import json

    from zeroflow.sweep import load_space
    from zeroflow.sweep.driver import planned_trials, resolve_space

    space = load_space(resolve_space(args.space), args.name)
    trials = planned_trials(space)
    if args.format == "json":
        print(json.dumps(trials, indent=1))
        return 0
    from zeroflow.config import TrialConfig

    keys = [k for k in trials[0] if len({json.dumps(t[k]) for t in trials}) > 1] if trials else []
    defaults = TrialConfig(dataset=trials[0]["dataset"]).to_dict() if trials else {}
    fixed = [f"{k}={v}" for k, v in (trials[0] if trials else {}).items()
             if k not in keys and v != defaults.get(k)]
    print(f"sweep {space.name}: {len(trials)} trials, {space.run['max_concurrent']} at a time"
          + (f"; every trial: {', '.join(fixed)}" if fixed else "")
          + "; other keys at their defaults (zeroflow run --help)")
    rows = [[str(t[k]) for k in keys] for t in trials]
    print(_table(rows, keys) if keys else "")
    return 0


def cmd_resume(args) -> int:
    from zeroflow.sweep import resume_sweep
    from zeroflow.sweep.driver import sweep_path, tracking_uri_of

    results, space = resume_sweep(args.sweep, storage=args.storage, address=args.address)
    return _print_summary(results, space, tracking_uri_of(sweep_path(args.sweep, args.storage)))


def cmd_report(args) -> int:
    from zeroflow.tracking import default_tracking_uri

    _say(f"reading runs from {default_tracking_uri()}")
    from zeroflow.report import build_report, write_report

    split = lambda text: [k.strip() for k in text.split(",") if k.strip()] if text else None  # noqa: E731
    report = build_report(args.experiments, rows=split(args.rows), cols=split(args.cols),
                          include_stopped=args.include_stopped)
    print(report.text())
    written = write_report(report, args.out, args.formats or ["md", "html"])
    print(f"\nwrote {len(written)} files to {args.out}/: {', '.join(p.name for p in written)}")
    return 0


def cmd_ui(args) -> int:
    """The MLflow UI over this project's store: one server process (no job consumers, one
    worker), its URL printed once it answers, and every process of it stopped on Ctrl-C or
    SIGTERM."""
    import os
    import signal
    import subprocess

    from zeroflow.tracking import default_tracking_uri

    uri = default_tracking_uri()
    url = f"http://127.0.0.1:{args.port}"
    _say(f"starting the MLflow UI for {uri} on {url}")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--registry-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port),
           "--workers", "1",
           "--uvicorn-opts", "--log-level warning"]  # not a line per request
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    # the server's own chatter goes to stderr: stdout carries the URL line only
    server = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=sys.stderr)

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        if _wait_for_http(f"{url}/health", server):
            print(f"MLflow UI at {url}  (store {uri}; Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_session(server)


def _wait_for_http(url: str, process, timeout: float = 180.0) -> bool:
    """Whether ``url`` answered before ``process`` ended or ``timeout`` seconds passed."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop_session(process, grace: float = 10.0) -> None:
    """SIGTERM every process of ``process``'s session (it was started in a new one), then
    SIGKILL what is left after ``grace`` seconds."""
    import os
    import signal
    import time

    def alive() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                if fields[0] != "Z" and int(fields[3]) == process.pid:
                    pids.append(int(entry))
        return pids

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            process.poll()  # reap the server itself
            time.sleep(0.2)
    process.poll()


if __name__ == "__main__":
    sys.exit(main())
