"""``zeroflow report``: MLflow runs → the ZeroFlow paper's tables and figures, beside the
published values (no Ray needed).

- ``runs``: reads trial runs with ``mlflow.search_runs`` (one experiment or several merged); one
  run per setting (full config, seed included): the latest FINISHED one counts.
- ``tables``: Table 1 (method × optimizer × strategy; Avg / Last / Fgt per dataset), Table 2
  (memory, runtime, forward passes per optimizer and q), Tables 3–4 (history α, sparsity) and a
  pivot of any swept keys, each a ``grid`` (mean ± sample std over seeds; missing cells as ``–``
  with a note) ordered by ``ordering`` (the registries' order).
- ``published``: the paper's Tables 1–4 as package data, matched on dataset, method, optimizer, q.
- ``render``: terminal text, Markdown, CSV, LaTeX, HTML (one self-contained file).
- ``figures``: accuracy against q (Figure 5), per task, against memory and against time; old- vs
  new-task probe losses along training where runs logged them (``track_task_losses``).
- The sharpness-vs-forgetting table (with Spearman's ρ) where runs logged ``sharpness``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zeroflow.errors import ReportError, ZeroflowError
from zeroflow.report import render
from zeroflow.report.figures import make_figures
from zeroflow.report.grid import Table
from zeroflow.report.runs import RunSet, load_runs
from zeroflow.report.tables import enhancement_table, pivot, sharpness_table, table1, table2

FORMATS = ("md", "csv", "latex", "html")
_SUFFIX = {"md": ".md", "csv": ".csv", "latex": ".tex"}


@dataclass
class Report:
    runset: RunSet
    tables: list[Table]  # Table 1 first; the pivot (if asked for) last

    @property
    def main(self) -> Table:
        return self.tables[0]

    def intro(self) -> list[str]:
        rs = self.runset
        finished = sum(r.finished for r in rs.runs)
        return [f"MLflow store {rs.uri}; experiment(s) {', '.join(rs.experiments)}: "
                f"{len(rs.runs)} setting(s) counted ({finished} finished), "
                f"{len(rs.superseded)} duplicate run(s) left out."]

    def text(self) -> str:
        """What the terminal shows: Table 1 (and the pivot, if one was asked for)."""
        shown = [self.main] + [t for t in self.tables[1:] if t.name == "pivot"]
        return "\n\n".join([*self.intro(), *[render.to_text(t) for t in shown]])


def build_report(experiments: list[str] | None = None, tracking_uri: str | None = None,
                 rows: list[str] | None = None, cols: list[str] | None = None,
                 include_stopped: bool = False) -> Report:
    runset = load_runs(experiments, tracking_uri, include_stopped=include_stopped)
    unloaded = load_plugins(runset)
    tables = [table1(runset), table2(runset)]
    tables[0].remarks += unloaded
    tables += [t for t in (enhancement_table(runset, "history"),
                           enhancement_table(runset, "sparsity"), sharpness_table(runset))
               if t is not None]
    if rows or cols:
        rows = list(rows or ["method", "optimizer"])
        cols = list(cols or [])
        known = runset.keys()
        for key in rows + cols:
            if key not in known:
                raise ReportError(f"--rows/--cols: {key!r} is not a logged config key; "
                                  f"choose from: {', '.join(known)}")
        if set(rows) & set(cols):
            raise ReportError(f"--rows and --cols share {', '.join(set(rows) & set(cols))}; "
                              "name each key once")
        tables.append(pivot(runset, rows, cols))
    return Report(runset, tables)


def load_plugins(runset: RunSet) -> list[str]:
    """Import the plugins the runs name (their ``plugins`` param and ``plugin.<module>``
    params), so that their optimizers and methods are filed by registered family, strategy and
    order; returns a remark for each that cannot be imported here (its rows then show the name
    alone)."""
    from zeroflow import plugins
    from zeroflow.report.ordering import order

    specs = dict.fromkeys(s for r in runset.runs for s in plugins.parse(r.config.get("plugins")))
    specs.update(dict.fromkeys(k[len("plugin."):] for r in runset.runs for k in r.config
                               if k.startswith("plugin.")))
    remarks = []
    for spec in specs:
        try:
            plugins.load([spec])
        except ZeroflowError as err:  # the plugin is not installed here
            remarks.append(f"plugin {spec} is not importable here, so its rows show names "
                           f"only: {err}")
    order.cache_clear()
    return remarks


def write_report(report: Report, out: str | Path = "report",
                 formats: list[str] | tuple[str, ...] = ("md", "html")) -> list[Path]:
    """Write the figures (PNG) and every table in each format into ``out``; returns the paths."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise ReportError(f"--format {fmt!r} is not known; choose from: {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = make_figures(report.runset.runs, out)
    written = [path for path, _ in figures if path is not None]
    for fmt in formats:
        if fmt == "html":
            path = out / "report.html"
            path.write_text(render.html_page("zeroflow report", report.intro(), report.tables,
                                             figures))
            written.append(path)
            continue
        for table in report.tables:
            path = out / f"{table.name}{_SUFFIX[fmt]}"
            if fmt == "csv":
                table.data.to_csv(path, index=False)
            else:
                writer = render.to_markdown if fmt == "md" else render.to_latex
                path.write_text(writer(table))
            written.append(path)
    return written
