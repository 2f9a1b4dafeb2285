"""The claims of a reproduce run as Markdown, for docs/results.md: one table per area, one row per claim.

Built only from OUT/reproduce.json and OUT/<area>/results.json, like the HTML page.
"""
from __future__ import annotations

from pathlib import Path

from cuekit.report import experiments


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _effects(effects: list) -> str:
    if not effects:
        return "n/a"
    mean, spread = experiments.mean_spread(effects)
    return f"{mean:+.3g} ± {spread:.2g} ({', '.join(f'{e:+.3g}' for e in effects)})"


def results_markdown(out_dir: str | Path) -> str:
    """Markdown for every completed area in OUT: mode, time, machine, and its claims table."""
    from cuekit.report.html import _read_json, load_area_states
    from cuekit.report.runner import format_seconds

    out = Path(out_dir)
    run, _ = _read_json(out / "reproduce.json") if (out / "reproduce.json").is_file() else (None, None)
    lines = []
    if run:
        machine = run.get("machine") or {}
        speed = (machine.get("speed") or {}).get("relative_speed")
        lines.append(f"Run: {run.get('mode', 'n/a')} mode, {run.get('seeds', 'n/a')} seeds, finished "
                     f"{run.get('finished_at', 'n/a')}, {machine.get('available_cpus', 'n/a')} CPU(s), device "
                     f"{run.get('device', 'n/a')}" + (f", {speed:.2f}x the reference machine's speed" if speed else "")
                     + ".")
        lines.append("")
    for area, state, record, problem in load_area_states(out):
        if state != "completed":
            continue
        env = record.get("environment") or {}
        lines += [f"### {record.get('title') or area}", "",
                  f"`{area}`: {record.get('scale', 'n/a')}, {format_seconds(record.get('time_s'))}, finished "
                  f"{record.get('finished_at', 'n/a')}, torch {env.get('torch', 'n/a')}. Headline verdict: "
                  f"**{record['verdict']}**.", "",
                  f"Regime: {_cell(record.get('regime', 'n/a'))}", "",
                  "| claim | role | effect (mean ± s.d., per seed) | verdict | failed preconditions |",
                  "|---|---|---|---|---|"]
        for c in record.get("claims") or []:
            role = "headline" if c.get("headline") else ("reference" if c.get("reference") else "")
            failed = "; ".join(c.get("failed_preconditions") or []) or "none"
            lines.append(f"| `{c['id']}`: {_cell(c['claim'])} | {role} | {_effects(c.get('effects') or [])} "
                         f"(sign {c.get('expected_sign', 0):+d}) | {c['verdict']} | {_cell(failed)} |")
        lines.append("")
    return "\n".join(lines)
