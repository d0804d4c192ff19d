"""A ``Table`` as terminal text, Markdown, LaTeX (booktabs), HTML or CSV (tidy numbers), and the
whole report as one self-contained HTML page (figures inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
import textwrap
from pathlib import Path

from zeroflow.report.grid import Table


def _keys(table: Table) -> int:
    """How many leading columns are row keys (left-aligned)."""
    return table.groups[0][1] if table.groups and table.groups[0][0] == "" else 0


def _note_lines(table: Table) -> list[str]:
    return ([f"[{i}] {text}" for i, text in enumerate(table.notes, 1)]
            + [f"* {text}" for text in table.remarks])


def to_text(table: Table, width: int = 100) -> str:
    cols = table.columns
    widths = [max([len(c)] + [len(r[i]) for r in table.rows]) for i, c in enumerate(cols)]
    keys = _keys(table)
    cell = lambda i, s: s.ljust(widths[i]) if i < keys else s.rjust(widths[i])  # noqa: E731
    lines = [table.title, ""]
    if any(label for label, _ in table.groups):
        parts, i = [], 0
        for label, span in table.groups:
            w = sum(widths[i:i + span]) + 2 * (span - 1)
            parts.append(label.center(w, "-" if label else " ")[:w] if label else " " * w)
            i += span
        lines.append("  ".join(parts).rstrip())
    lines.append("  ".join(cell(i, c) for i, c in enumerate(cols)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell(i, c) for i, c in enumerate(row)).rstrip() for row in table.rows]
    lines.append("")
    lines += textwrap.wrap(table.caption, width)
    for note in _note_lines(table):
        lines += textwrap.wrap(note, width, subsequent_indent="    ")
    return "\n".join(lines)


def _header_names(table: Table) -> list[str]:
    names, i = [], 0
    for label, span in table.groups:
        names += [f"{label} {c}".strip() for c in table.columns[i:i + span]]
        i += span
    return names


def to_markdown(table: Table) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    keys = _keys(table)
    lines = [f"### {table.title}", "", table.caption, ""]
    lines.append("| " + " | ".join(esc(c) for c in _header_names(table)) + " |")
    lines.append("|" + "|".join(":---" if i < keys else "---:"
                                for i in range(len(table.columns))) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    lines.append("")
    lines += [f"{note}  " for note in _note_lines(table)]
    return "\n".join(lines).rstrip() + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
          "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "—": "---", "−": "$-$", "α": r"$\alpha$",
          "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    keys = _keys(table)
    spec = "l" * keys + "r" * (len(table.columns) - keys)
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering\\small",
             f"\\caption{{{latex_escape(table.title)}}}", f"\\begin{{tabular}}{{{spec}}}",
             "\\toprule"]
    if any(label for label, _ in table.groups):
        lines.append(" & ".join(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}"
                                if label else " & ".join([""] * span)
                                for label, span in table.groups) + " \\\\")
    lines.append(" & ".join(latex_escape(c) for c in table.columns) + " \\\\")
    lines.append("\\midrule")
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}", "",
              f"\\par\\footnotesize {latex_escape(table.caption)}"]
    lines += [f"\\par {latex_escape(note)}" for note in _note_lines(table)]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    e = html.escape
    keys = _keys(table)
    out = [f'<section class="table" id="{e(table.name)}">', f"<h2>{e(table.title)}</h2>",
           f'<table class="zeroflow" id="{e(table.name)}-table">', "<thead>"]
    if any(label for label, _ in table.groups):
        out.append("<tr>" + "".join(f'<th colspan="{span}">{e(label)}</th>'
                                    for label, span in table.groups) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>")
    out += ["</thead>", "<tbody>"]
    for row in table.rows:
        out.append("<tr>" + "".join(
            f'<td class="{"key" if i < keys else "num"}">{e(c)}</td>'
            for i, c in enumerate(row)) + "</tr>")
    out += ["</tbody>", "</table>", f'<p class="caption">{e(table.caption)}</p>']
    out += [f'<p class="note">{e(note)}</p>' for note in _note_lines(table)]
    out.append("</section>")
    return "\n".join(out)


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table.zeroflow{border-collapse:collapse;font-size:13px;margin:.5em 0}
table.zeroflow th,table.zeroflow td{border:1px solid #ccc;padding:2px 6px}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}
p.caption,p.note{font-size:12px;max-width:70em}p.note{margin:.2em 0}
figure{display:inline-block;margin:1em}img{max-width:100%}"""


def html_page(title: str, intro: list[str], tables: list[Table],
              figures: list[tuple[Path | None, str]]) -> str:
    """One HTML file holding every table and every figure (PNG bytes inlined as base64)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title>", f"<style>{_STYLE}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    parts += [f"<p>{e(line)}</p>" for line in intro]
    parts += [to_html(t) for t in tables]
    if figures:
        parts.append('<section id="figures"><h2>Figures</h2>')
        for path, caption in figures:
            if path is None:  # left out, and why
                parts.append(f'<p class="note">{e(caption)}</p>')
                continue
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
