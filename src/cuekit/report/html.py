"""The report page, OUT/index.html, built only from the results files on disk (it never computes).

Reads OUT/reproduce.json (the last run's mode, seeds and total time) and OUT/<area>/results.json
for every registered area. Plain HTML with inline CSS, no JavaScript; every text is escaped.
"""
from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cuekit.report import experiments

VERDICT_COLOURS = {
    "held": "#1a7f37", "did not hold": "#b42318", "inconclusive": "#9a6700",
    "failed": "#6f1d8a", "unreadable": "#6f1d8a", "not run yet": "#6e7781", "not implemented yet": "#6e7781",
}
MAX_DETAILS_CHARS = 20_000

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
section { margin: 2em 0; padding: 0.6em 1.2em 1em; border: 1px solid #d0d7de; border-radius: 8px; }
.badge { display: inline-block; padding: 0.1em 0.6em; border-radius: 1em; color: #fff; font-size: 0.85em;
         font-weight: 600; vertical-align: middle; white-space: nowrap; }
.banner { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 0.5em 0.9em; }
.note { color: #57606a; font-size: 0.92em; }
.warn { color: #9a6700; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: 0.85em; color: #57606a; }
pre { background: #f6f8fa; padding: 0.7em; overflow-x: auto; font-size: 0.85em; }
dt { font-weight: 600; margin-top: 0.5em; } dd { margin-left: 1.2em; }
""".strip()


def _e(value: Any) -> str:
    """Escaped text of any value."""
    return escape("" if value is None else str(value), quote=True)


def _seconds(value: Any) -> str:
    from cuekit.report.runner import format_seconds

    return format_seconds(value if isinstance(value, (int, float)) and not isinstance(value, bool) else None)


def _cell(value: Any) -> tuple[str, bool]:
    """A table cell's text (floats with 4 decimals, as cuekit.io.format_table) and whether it is a number."""
    if value is None:
        return "n/a", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value), True
        return (f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, (list, dict)):
        return json.dumps(value), False
    return str(value), False


def _badge(label: str) -> str:
    colour = VERDICT_COLOURS.get(label, "#6e7781")
    return f'<span class="badge" style="background:{colour}">{_e(label)}</span>'


def _table_html(columns: list, rows: list) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for v in row:
            text, numeric = _cell(v)
            cells.append(f'<td class="num">{_e(text)}</td>' if numeric else f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object, None) or (None, why it could not be read)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{type(e).__name__}: {e}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, found {type(obj).__name__}"
    return obj, None


def load_area_states(out_dir: str | Path) -> list[tuple[str, str, dict | None, str | None]]:
    """One (area, state, record, problem) per registered area, in registry order.

    state: "completed", "failed", "unreadable" (results.json present but not usable),
    "not run yet" (module exists, no results) or "not implemented yet" (no module, no results).
    """
    from cuekit.report.runner import module_exists

    out = Path(out_dir)
    states = []
    for area, module in experiments.AREA_MODULES.items():
        path = out / area / "results.json"
        if path.is_file():
            record, problem = _read_json(path)
            if record is None:
                states.append((area, "unreadable", None, problem))
            elif record.get("status") == "failed":
                states.append((area, "failed", record, None))
            elif record.get("verdict") in experiments.VERDICTS and isinstance(record.get("table"), dict):
                states.append((area, "completed", record, None))
            else:
                states.append((area, "unreadable", record, "results.json has no valid verdict or table"))
        elif module_exists(module):
            states.append((area, "not run yet", None, None))
        else:
            states.append((area, "not implemented yet", None, None))
    return states


def _plots_html(area: str, plots: Any, area_dir: Path) -> str:
    if not isinstance(plots, list) or not plots:
        return ""
    parts = []
    for plot in plots:
        p = Path(str(plot))
        if p.is_absolute() or ".." in p.parts:
            parts.append(f'<p class="warn">plot {_e(plot)} is outside the area folder: not shown</p>')
        elif not (area_dir / p).is_file():
            parts.append(f'<p class="warn">plot {_e(plot)} is missing</p>')
        else:
            src = quote(f"{area}/{p.as_posix()}")
            parts.append(f'<figure><img src="{_e(src)}" alt="{_e(p.name)}">'
                         f"<figcaption>{_e(p.name)}</figcaption></figure>")
    return '<div class="plots">\n' + "\n".join(parts) + "\n</div>"


def _environment_html(env: Any) -> str:
    if not isinstance(env, dict) or not env:
        return ""
    text = " · ".join(f"{k} {v}" for k, v in env.items())
    return f'<p class="note">Environment: {_e(text)}</p>'


def _meta_html(record: dict) -> str:
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    seeds = record.get("seeds") or config.get("seeds") or []
    items = [f"Time taken: {_seconds(record.get('time_s'))}", f"Scale: {record.get('scale', 'n/a')}"]
    if isinstance(seeds, list):
        items.append(f"Seeds: {', '.join(str(s) for s in seeds) or 'n/a'}")
    if config:
        items.append(f"Device: {config.get('device', 'n/a')}")
        items.append(f"Image size: {config.get('img_size', 'n/a')} px")
        items.append(f"Data: {config['data']}" if config.get("data") else "Data: built-in")
    if record.get("finished_at"):
        items.append(f"Finished: {record['finished_at']}")
    return f'<p class="note">{_e(" · ".join(items))}</p>'


def _machine_html(machine: Any, total: Any) -> str:
    """CPUs, threads and the calibration speed against the machine the quick budget was set on."""
    if not isinstance(machine, dict):
        return ""
    speed = machine.get("speed") if isinstance(machine.get("speed"), dict) else {}
    items = [f"{machine.get('available_cpus', 'n/a')} CPU(s) usable (os.cpu_count {machine.get('os_cpu_count')}, "
             f"cgroup quota {machine.get('cgroup_cpu_limit') or 'none'})",
             f"{machine.get('torch_threads', 'n/a')} torch thread(s)"]
    step = speed.get("step_s")
    if isinstance(step, (int, float)):
        items.append(f"calibration step {1000 * step:.1f} ms")
    rel = speed.get("relative_speed")
    if isinstance(rel, (int, float)) and rel > 0:
        items.append(f"{rel:.2f}x the speed of the reference machine ({speed.get('reference_machine')})")
        if isinstance(total, (int, float)):
            items.append(f"this run would take about {_seconds(total * rel)} there")
    return f'<p class="note">Machine: {_e(" · ".join(items))}</p>'


def _completed_html(area: str, record: dict, area_dir: Path) -> str:
    verdict = record["verdict"]
    out = [f'<h2>{_e(record.get("title") or area)} {_badge(verdict)}</h2>',
           f'<p class="note">Area: {_e(area)}</p>', "<dl>",
           f"<dt>The paper's claim</dt><dd>{_e(record.get('claim'))}</dd>",
           f"<dt>What we measured</dt><dd>{_e(record.get('measured'))}</dd>",
           f"<dt>Verdict</dt><dd>{_badge(verdict)}"]
    effects = record.get("effects")
    if isinstance(effects, list) and effects and all(isinstance(v, (int, float)) for v in effects):
        mean, spread = experiments.mean_spread(effects)
        sign = record.get("expected_sign")
        per_seed = ", ".join(f"{v:+.4g}" for v in effects)
        out.append(f" <span class=\"note\">the headline claim's effect per seed: {_e(per_seed)}; "
                   f"mean {_e(f'{mean:+.4g}')}, spread (sample s.d.) {_e(f'{spread:.4g}')}; "
                   f"the paper predicts sign {_e(f'{sign:+d}' if isinstance(sign, int) else sign)}</span>")
    seeds = record.get("seeds")
    if isinstance(seeds, list) and len(seeds) < 3:
        out.append(f' <span class="warn">only {len(seeds)} seed(s): by the rule every verdict with fewer than '
                   "3 seeds is inconclusive</span>")
    out.append("</dd></dl>")
    if record.get("regime"):
        out.append(f"<p><strong>Regime:</strong> {_e(record['regime'])}</p>")
    claims = record.get("claims")
    if isinstance(claims, list) and claims:
        out.append(_claims_html(claims))
    table = record["table"]
    columns, rows = table.get("columns"), table.get("rows")
    if isinstance(columns, list) and isinstance(rows, list) and all(
            isinstance(r, list) and len(r) == len(columns) for r in rows):
        out.append(_table_html(columns, rows))
    else:
        out.append('<p class="warn">the results table is malformed and is not shown</p>')
    out.append(_plots_html(area, record.get("plots"), area_dir))
    for w in record.get("warnings") or []:
        out.append(f'<p class="warn">warning: {_e(w)}</p>')
    details = record.get("details")
    if isinstance(details, dict) and details:
        text = json.dumps(details, indent=2, sort_keys=True)
        if len(text) > MAX_DETAILS_CHARS:
            text = text[:MAX_DETAILS_CHARS] + "\n... (truncated; see results.json)"
        out.append(f"<details><summary>Details</summary><pre>{_e(text)}</pre></details>")
    out.append(_meta_html(record))
    out.append(_environment_html(record.get("environment")))
    out.append(f'<p class="note">Files: <a href="{_e(quote(area + "/results.json"))}">'
               f"{_e(area)}/results.json</a></p>")
    return "\n".join(x for x in out if x)


def _effects_text(effects: Any) -> tuple[str, str]:
    """("+0.1, +0.2, ...", "mean +0.15, s.d. 0.07") for a list of numbers, else ("n/a", "")."""
    if not isinstance(effects, list) or not effects or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in effects):
        return "n/a", ""
    mean, spread = experiments.mean_spread(effects)
    return ", ".join(f"{v:+.4g}" for v in effects), f"mean {mean:+.4g}, s.d. {spread:.4g}"


def _preconditions_html(pre: Any) -> str:
    if not isinstance(pre, list) or not pre:
        return '<span class="note">none stated</span>'
    items = []
    for p in pre:
        if not isinstance(p, dict):
            continue
        mark, colour = ("met", "#1a7f37") if p.get("met") else ("NOT MET", "#b42318")
        measured = f" ({_e(p.get('measured'))})" if p.get("measured") else ""
        items.append(f'<li><span style="color:{colour};font-weight:600">{mark}</span> '
                     f"{_e(p.get('what'))}{measured}</li>")
    return "<ul style=\"margin:0;padding-left:1.1em\">" + "".join(items) + "</ul>"


def _claims_html(claims: list) -> str:
    """One row per claim of the paper: its words, the per-seed effect, preconditions and its own verdict."""
    rows = []
    for c in claims:
        if not isinstance(c, dict):
            continue
        per_seed, summary = _effects_text(c.get("effects"))
        sign = c.get("expected_sign")
        tags = []
        if c.get("headline"):
            tags.append("<strong>headline</strong>")
        if c.get("reference"):
            tags.append("<em>reference row, not a claim of the method</em>")
        words = _e(c.get("claim")) + (f'<br><span class="note">{" · ".join(tags)}</span>' if tags else "")
        measure = _e(c.get("measure"))
        if isinstance(sign, int):
            measure += f'<br><span class="note">the paper predicts sign {sign:+d}</span>'
        effect = f"{_e(per_seed)}<br><span class=\"note\">{_e(summary)}</span>"
        extra = []
        if c.get("regime"):
            extra.append(f"regime: {_e(c['regime'])}")
        if c.get("note"):
            extra.append(_e(c["note"]))
        verdict = _badge(str(c.get("verdict")))
        failed = c.get("failed_preconditions")
        if isinstance(failed, list) and failed:
            verdict += f'<br><span class="warn">failed: {_e("; ".join(map(str, failed)))}</span>'
        style = ' style="background:#f6f8fa"' if c.get("headline") else ""
        rows.append(f"<tr{style}><td>{words}</td><td>{measure}</td><td>{effect}</td>"
                    f"<td>{_preconditions_html(c.get('preconditions'))}"
                    + (f'<div class="note">{"<br>".join(extra)}</div>' if extra else "")
                    + f"</td><td>{verdict}</td></tr>")
    return ("<h3>Claims, one row each</h3>\n<table>\n<thead><tr><th>the paper's claim</th><th>effect measured</th>"
            "<th>effect per seed</th><th>preconditions</th><th>verdict</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def _failed_html(area: str, record: dict | None, state: str, problem: str | None) -> str:
    record = record or {}
    out = [f"<h2>{_e(record.get('title') or area)} {_badge(state)}</h2>", f'<p class="note">Area: {_e(area)}</p>']
    if state == "failed":
        out.append(f"<p>The experiment failed: <strong>{_e(record.get('error', 'unknown error'))}</strong></p>")
        if record.get("traceback"):
            out.append(f"<details><summary>Traceback</summary><pre>{_e(record['traceback'])}</pre></details>")
        out.append(_meta_html(record))
        out.append(_environment_html(record.get("environment")))
    else:
        out.append(f"<p>{_e(area)}/results.json could not be used: {_e(problem)}</p>")
    return "\n".join(x for x in out if x)


def render_index(out_dir: str | Path) -> str:
    """The page's HTML, from OUT/reproduce.json and OUT/<area>/results.json."""
    out = Path(out_dir)
    run, _ = _read_json(out / "reproduce.json") if (out / "reproduce.json").is_file() else (None, None)
    states = load_area_states(out)
    shown = [s for s in states if s[1] in ("completed", "failed", "unreadable")]
    not_run = [s for s in states if s[1] == "not run yet"]
    missing = [s for s in states if s[1] == "not implemented yet"]

    body = ["<h1>cuekit: reproductions of the papers' claims</h1>"]
    scales = {r.get("scale") for _, st, r, _ in shown if r and st != "unreadable"}
    if (run and run.get("mode") == "quick") or any(s and "smoke" in str(s) for s in scales):
        body.append('<p class="banner"><strong>Smoke-scale run (quick, 32 px).</strong> Small models, small '
                    "images, few steps, on built-in data: a verdict here says whether the claim shows at this "
                    "scale, not whether it holds at the paper's scale. Run <code>cuekit reproduce --full</code> "
                    "for the larger runs.</p>")
    body.append("<p>One verdict rule for every area: the effect the paper predicts is measured with each seed "
                "(at least 3). <strong>held</strong>: every seed shows the paper's sign and the mean exceeds the "
                "spread (sample standard deviation); <strong>did not hold</strong>: likewise with the opposite "
                "sign; otherwise <strong>inconclusive</strong>.</p>")
    if run:
        seeds = run.get("seeds")
        items = [f"Last run: {run.get('mode', 'n/a')} mode ({run.get('scale', 'n/a')})",
                 f"{seeds} seed(s)", f"device {run.get('device', 'n/a')}", f"workers {run.get('workers', 'n/a')}",
                 f"areas run: {', '.join(run.get('areas') or []) or 'none'}",
                 f"started {run.get('started_at', 'n/a')}", f"finished {run.get('finished_at', 'n/a')}"]
        body.append(f'<p class="note">{_e(" · ".join(items))}</p>')
        total, budget = run.get("total_time_s"), run.get("budget_s")
        line = f"Total time of the last run: {_seconds(total)}"
        if isinstance(budget, (int, float)) and isinstance(total, (int, float)):
            line += f" (quick-mode budget {_seconds(budget)}: {'within' if total <= budget else 'OVER'} budget)"
        body.append(f"<p><strong>{_e(line)}</strong></p>")
        body.append(_machine_html(run.get("machine"), total))
        if isinstance(seeds, int) and seeds < 3:
            body.append(f'<p class="warn">This run used {seeds} seed(s), fewer than 3: by the rule every '
                        "verdict from it is inconclusive.</p>")

    if not shown:
        if missing and not not_run:
            body.append("<p><strong>No area is implemented yet</strong>: none of the experiment modules exist, "
                        "so nothing was run. Every area is listed below as not implemented yet.</p>")
        else:
            body.append("<p><strong>No results yet.</strong> Run <code>cuekit reproduce</code> to produce "
                        "them.</p>")
    else:
        body.append("<h2>Summary</h2>")
        rows = []
        for area, state, record, _ in shown:
            label = record.get("verdict") if state == "completed" else state
            title = (record or {}).get("title") or area
            rows.append(f'<tr><td><a href="#area-{_e(area)}">{_e(area)}</a></td><td>{_e(title)}</td>'
                        f"<td>{_badge(label)}</td><td class=\"num\">{_e(_seconds((record or {}).get('time_s')))}"
                        f"</td><td>{_e((record or {}).get('scale', 'n/a'))}</td></tr>")
        area_total = sum(r.get("time_s") for _, _, r, _ in shown
                         if r and isinstance(r.get("time_s"), (int, float)))
        rows.append(f'<tr><td colspan="3"><strong>total of the areas shown</strong></td>'
                    f'<td class="num"><strong>{_e(_seconds(area_total))}</strong></td><td></td></tr>')
        body.append("<table>\n<thead><tr><th>area</th><th>work</th><th>verdict</th><th>time</th><th>scale</th>"
                    "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")
        for area, state, record, problem in shown:
            inner = (_completed_html(area, record, out / area) if state == "completed"
                     else _failed_html(area, record, state, problem))
            body.append(f'<section id="area-{_e(area)}">\n{inner}\n</section>')

    if not_run:
        body.append("<h2>Not run yet</h2>\n<ul>\n" + "\n".join(
            f"<li>{_e(a)} {_badge(st)}</li>" for a, st, _, _ in not_run) + "\n</ul>")
    if missing:
        body.append("<h2>Not implemented yet</h2>\n<ul>\n" + "\n".join(
            f"<li>{_e(a)} <span class=\"note\">({_e(experiments.AREA_MODULES[a])})</span> {_badge(st)}</li>"
            for a, st, _, _ in missing) + "\n</ul>")

    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<title>cuekit reproduce report</title>\n"
            f"<style>\n{CSS}\n</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_index(out_dir: str | Path = "reports") -> Path:
    """Rebuild OUT/index.html from the results on disk (atomically); returns its path."""
    from cuekit.io import atomic_write_text

    out = Path(out_dir)
    path = out / "index.html"
    atomic_write_text(path, render_index(out))
    return path
