"""`joinbench report`: merge run folders into one comparison table.

Rows are runs (method, with its overrides), columns are component x metric means, the
best value of each column is marked (bold in Markdown/LaTeX/HTML, a ``best`` flag in CSV).
The HTML form embeds each run's ``grid.png``.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import JoinbenchError
from .tables import arrow, best_mask, comparison_frame, fmt, metric_heading

FORMATS = ("md", "latex", "csv", "html")


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        hint = " (the run may still be going or was interrupted: rerun it with the same --out to finish)" \
            if (Path(run_dir) / "records.jsonl").exists() else ""
        raise JoinbenchError(f"{run_dir} is not a finished run folder: {path} is missing{hint}.")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise JoinbenchError(f"{path} is not valid JSON ({exc.msg}); rerun the run to rewrite it.") from None
    summary["_dir"] = str(run_dir)
    return summary


def _datasets(summaries) -> str:
    return ", ".join(sorted({s["run"]["dataset"] for s in summaries}))


def render_report(run_dirs: list[str | Path], fmt_name: str = "md", title: str | None = None,
                  command: str | None = None) -> str:
    if fmt_name not in FORMATS:
        raise JoinbenchError(f"Unknown report format {fmt_name!r}; use one of {', '.join(FORMATS)}.")
    if not run_dirs:
        raise JoinbenchError("No run folders given; pass one or more runs/<...> folders.")
    summaries = [load_summary(d) for d in run_dirs]
    frame, ci, directions = comparison_frame(summaries)
    # comparison_frame keeps the runs' order, so rows and summaries line up
    best = best_mask(frame, directions, pd.Series([s["run"]["dataset"] for s in summaries], index=frame.index))
    title = title or f"Comparison on {_datasets(summaries)}"
    render = {"md": _markdown, "latex": _latex, "csv": _csv, "html": _html}[fmt_name]
    text = render(frame, ci, best, directions, summaries, title)
    if command and fmt_name == "md":  # say first how to remake this report
        head, _, rest = text.partition("\n")
        text = f"{head}\n\nMade with `{command}`.\n{rest}"
    return text


def _provenance(summaries) -> list[str]:
    lines = []
    for s in summaries:
        env, run = s["environment"], s["run"]
        n = max((v["n"] for c in s["results"].values() for v in c.values()), default=0)
        wall = s.get("timing", {}).get("wall_seconds_this_invocation")
        cmd = f"`{env['command']}`" if env.get("command") else "(Python API)"
        lines.append(
            f"{run['method']} on {run['dataset']}: {n} images at {run['resolution']} px, seed {run['seed']}; "
            f"{cmd}; {env['device_name']}; commit {env['commit']}; torch {env['versions'].get('torch')}, "
            f"joinbench {env['versions'].get('joinbench')}"
            + (f"; wall {wall:.1f} s" if wall is not None else "") + f"; folder {s['_dir']}"
        )
    return lines


def _components(frame) -> list[str]:
    return list(dict.fromkeys(c for c, _ in frame.columns))


def _markdown(frame, ci, best, directions, summaries, title) -> str:
    """One table per component (rows: runs, columns: metrics), so it stays readable."""
    from tabulate import tabulate

    out = [f"# {title}", "", "Mean over images; ↑ higher is better, ↓ lower is better; best per column in bold "
           "(ties all bold; compared only between runs on the same dataset). 95% bootstrap intervals are in each run's `table.md` and in the CSV form.", ""]
    # where the numbers came from comes first: command, device, commit, versions, wall time per run
    out += ["Runs:", ""] + [f"- {line}" for line in _provenance(summaries)] + [""]
    for comp in _components(frame):
        cols = [col for col in frame.columns if col[0] == comp]
        rows = []
        for label in frame.index:
            cells = [f"**{fmt(frame.loc[label, col])}**" if best.loc[label, col] else fmt(frame.loc[label, col]) for col in cols]
            rows.append([label] + cells)
        headers = ["method"] + [f"{metric_heading(m)} {arrow(directions.get(m, False))}" for _, m in cols]
        what = " (re-render vs input)" if comp == "image" else ""
        out += [f"## {comp}{what}", "", tabulate(rows, headers=headers, tablefmt="github"), ""]
    return "\n".join(out).rstrip("\n") + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "{": r"\{",
                  "}": r"\}", "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "δ": r"$\delta$", "γ": r"$\gamma$", "×": r"$\times$"}  # benchmark protocols (whdr, maw)


def _latex_escape(s: str) -> str:
    """Escape LaTeX's special characters in one pass (so inserted braces stay unescaped)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def _latex(frame, ci, best, directions, summaries, title) -> str:
    comps = _components(frame)
    spec = "l" + "".join("r" * sum(1 for c2, _ in frame.columns if c2 == c) for c in comps)
    lines = [f"% {title}", r"\begin{tabular}{" + spec + "}", r"\toprule"]
    lines.append(" & " + " & ".join(
        rf"\multicolumn{{{sum(1 for c2, _ in frame.columns if c2 == c)}}}{{c}}{{{_latex_escape(c)}}}" for c in comps) + r" \\")
    up, down = r"$\uparrow$", r"$\downarrow$"
    lines.append("method & " + " & ".join(
        f"{_latex_escape(metric_heading(m))} {up if directions.get(m) else down}" for _, m in frame.columns) + r" \\")
    lines.append(r"\midrule")
    for label in frame.index:
        cells = []
        for col in frame.columns:
            v = fmt(frame.loc[label, col]).replace("–", "--")
            cells.append(rf"\textbf{{{v}}}" if best.loc[label, col] else v)
        lines.append(_latex_escape(label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {line}" for line in _provenance(summaries)]
    return "\n".join(lines) + "\n"


def _csv(frame, ci, best, directions, summaries, title) -> str:
    rows = []
    for label in frame.index:
        for col in frame.columns:
            v = frame.loc[label, col]
            rows.append({"method": label, "component": col[0], "metric": col[1],
                         "higher_is_better": directions.get(col[1], False),
                         "mean": "" if v is None or (isinstance(v, float) and math.isnan(v)) else v,
                         "ci_low": ci.loc[label, col][0], "ci_high": ci.loc[label, col][1],
                         "best": bool(best.loc[label, col])})
    return pd.DataFrame(rows).to_csv(index=False)


def _html(frame, ci, best, directions, summaries, title) -> str:
    esc = html.escape
    tables = []
    for comp in _components(frame):
        cols = [col for col in frame.columns if col[0] == comp]
        head = "".join(f"<th>{esc(h)}</th>" for h in ["method"] + [f"{metric_heading(m)} {arrow(directions.get(m, False))}" for _, m in cols])
        body = []
        for label in frame.index:
            cells = "".join(
                f"<td{' class=best' if best.loc[label, col] else ''} title='95% CI {esc(fmt(ci.loc[label, col][0]))} .. "
                f"{esc(fmt(ci.loc[label, col][1]))}'>{esc(fmt(frame.loc[label, col]))}</td>" for col in cols)
            body.append(f"<tr><th>{esc(label)}</th>{cells}</tr>")
        tables.append(f"<h2>{esc(comp)}</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    grids = []
    for s in summaries:
        g = Path(s["_dir"]) / "grid.png"
        if g.is_file():
            data = base64.b64encode(g.read_bytes()).decode()
            grids.append(f"<h3>{esc(s['run']['method'])} on {esc(s['run']['dataset'])}</h3>"
                         f"<img alt='decomposition grid' src='data:image/png;base64,{data}'>")
    prov = "".join(f"<li>{esc(line)}</li>" for line in _provenance(summaries))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + esc(title) + "</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right}td.best{font-weight:bold;background:#e6f4e6}img{image-rendering:pixelated}"
        "</style></head><body>"
        f"<h1>{esc(title)}</h1><p>Mean over images; ↑ higher is better, ↓ lower is better; best per column highlighted.</p>"
        f"{''.join(tables)}"
        f"<h2>Runs</h2><ul>{prov}</ul><h2>Decomposition grids</h2>{''.join(grids)}</body></html>\n"
    )
