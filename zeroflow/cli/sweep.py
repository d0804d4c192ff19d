"""``zeroflow sweep`` and ``zeroflow resume``: a space's trials as a Ray Tune sweep (or listed,
or planned without Ray), and the summary printed when it ends."""

from __future__ import annotations

from zeroflow.cli.output import table
from zeroflow.errors import ZeroflowError


def print_summary(results, space, uri: str) -> int:
    """The sweep's table, its best trial and where its runs went (``uri``, the MLflow store the
    driver logged to)."""
    from zeroflow.sweep import failed_trials, summary_table

    frame = summary_table(results, space.varying)
    failed = failed_trials(results, space.varying)
    print()
    print(f"sweep {space.name}: {len(results)} trials, {len(failed)} errored")
    for name, reason in failed:
        print(f"  failed: {name}: {reason}")
    if len(frame):
        signed = {"gain": lambda v: "" if v is None or v != v else f"{v:+.2f}"}
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}",
                              formatters={k: f for k, f in signed.items() if k in frame}))
        if "gain" in frame:
            print("gain: avg minus the untrained row's (epochs 0: no training) of the same "
                  "method")
        if "tie" in frame:
            print("tie: rows with the same letter have the same avg and last to two decimals "
                  "(their optimizers made no visible difference)")
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
        from zeroflow.sweep.plan import shipped_spaces, space_summary

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
    return print_summary(results, space, default_tracking_uri())


def _dry_run(args) -> int:
    """``zeroflow sweep SPACE --dry-run``: the resolved trials, as a table or JSON."""
    import json

    from zeroflow.sweep import load_space
    from zeroflow.sweep.plan import planned_trials, resolve_space

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
    print(table(rows, keys) if keys else "")
    return 0


def cmd_resume(args) -> int:
    from zeroflow.sweep import resume_sweep
    from zeroflow.sweep.driver import sweep_path, tracking_uri_of

    results, space = resume_sweep(args.sweep, storage=args.storage, address=args.address)
    return print_summary(results, space, tracking_uri_of(sweep_path(args.sweep, args.storage)))
