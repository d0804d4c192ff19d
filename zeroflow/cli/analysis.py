"""``zeroflow report`` and ``zeroflow trajectories``: the paper's tables and figures from
MLflow runs, and the 2-D toys."""

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
    from zeroflow.analysis.trajectories import problem, write_trajectories

    toy = problem(args.problem)
    steps = args.steps if args.steps is not None else toy.default_steps
    say(f"{toy.name}: {toy.summary}; "
        f"{', '.join(args.optimizers) if args.optimizers else 'every optimizer'}, "
        f"{steps} steps per task")
    written = write_trajectories(args.out, args.optimizers, args.q, steps,
                                 problem_name=args.problem)
    print(f"wrote {len(written)} files to {args.out}/: {', '.join(p.name for p in written)}")
    return 0
