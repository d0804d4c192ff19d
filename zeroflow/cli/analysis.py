"""``zeroflow report`` and ``zeroflow trajectories``: the paper's tables and figures from
MLflow runs, and the two-task 2-D toy."""

from __future__ import annotations

from zeroflow.cli.output import say


def cmd_report(args) -> int:
    from zeroflow.tracking import default_tracking_uri

    say(f"reading runs from {default_tracking_uri()}")
    from zeroflow.report import build_report, write_report

    split = lambda text: [k.strip() for k in text.split(",") if k.strip()] if text else None  # noqa: E731
    report = build_report(args.experiments, rows=split(args.rows), cols=split(args.cols),
                          include_stopped=args.include_stopped)
    print(report.text())
    written = write_report(report, args.out, args.formats or ["md", "html"])
    print(f"\nwrote {len(written)} files to {args.out}/: {', '.join(p.name for p in written)}")
    return 0


def cmd_trajectories(args) -> int:
    say(f"the 2-D toy with {', '.join(args.optimizers) if args.optimizers else 'every optimizer'}"
         f", {args.steps} steps per task")
    from zeroflow.analysis.trajectories import write_trajectories

    written = write_trajectories(args.out, args.optimizers, args.q, args.steps)
    print(f"wrote {len(written)} files to {args.out}/: {', '.join(p.name for p in written)}")
    return 0
