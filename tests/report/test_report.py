"""The report page: built only from results files on disk, valid HTML, every text escaped."""
from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from cuekit.io import atomic_write_json
from cuekit.report import claim, experiments, precondition, render_index, write_index

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Collects tags, text, <img> sources and nesting errors of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.attrs, self.imgs, self.text = [], [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_page(html: str) -> _Checker:
    """Parse a page with html.parser and assert it is well formed, with no script."""
    assert html.startswith("<!DOCTYPE html>")
    c = _Checker()
    c.feed(html)
    c.close()
    assert c.errors == [] and c.stack == [], (c.errors, c.stack)
    assert "script" not in c.tags and not [a for a in c.attrs if a.startswith("on")]  # no JavaScript
    assert c.tags.count("html") == c.tags.count("head") == c.tags.count("body") == 1
    c.page_text = " ".join(" ".join(c.text).split())
    return c


def fake_registry(monkeypatch, areas: dict[str, str]) -> None:
    """Point the experiment registry at test areas."""
    monkeypatch.setattr(experiments, "AREA_MODULES", dict(areas))


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def test_page_with_no_area_implemented(tmp_path, monkeypatch):
    fake_registry(monkeypatch, {"alpha": "cuekit_test_missing.alpha", "beta": "cuekit.no_such_area.experiment"})
    path = write_index(tmp_path / "reports")
    page = parse_page(path.read_text())
    assert "No area is implemented yet" in page.page_text
    assert page.page_text.count("not implemented yet") >= 2
    assert "alpha" in page.page_text and "beta" in page.page_text
    assert page.imgs == []


def completed_record(**kw) -> dict:
    rec = {
        "area": "alpha", "status": "completed", "title": "Alpha <b>bold</b> & \"quoted\"",
        "claim": "X beats Y <script>alert(1)</script>", "measured": "accuracy of X minus Y",
        "verdict": "held", "table": {"columns": ["seed", "acc X", "acc Y"],
                                      "rows": [[0, 0.91234567, 0.8], [1, 0.9, 0.81], [2, None, "<i>"]]},
        "plots": ["curve.png", "missing.png"], "seeds": [0, 1, 2], "details": {"steps": 10},
        "effects": [0.11, 0.09, 0.1], "expected_sign": 1, "regime": "converged <baseline>",
        "claims": [claim(id="x_beats_y", claim="X beats Y <u>always</u>", measure="acc X - acc Y",
                         effects=[0.11, 0.09, 0.1], headline=True,
                         preconditions=[precondition("Y beats chance", True, "0.8 > 0.1")]),
                   claim(id="z", claim="Z is flatter", measure="radius ratio", effects=[1.0, 2.0, 3.0],
                         preconditions=[precondition("Z learnable alone", False, "0.3 < 0.9")])],
        "config": {"out_dir": "x", "quick": True, "seeds": [0, 1, 2], "img_size": 32, "device": "cpu",
                   "workers": 0},
        "environment": {"torch": "9.9", "python": "3.x"}, "time_s": 75.5,
        "scale": "smoke-scale run (quick, 32 px)", "warnings": [],
    }
    rec.update(kw)
    return rec


def test_page_is_built_from_results_on_disk_only(tmp_path, monkeypatch):
    # The area module exists but raises on import: the page must never import or run it.
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "cuekit_test_explodes.py").write_text("raise RuntimeError('the report must not import me')\n")
    monkeypatch.syspath_prepend(str(mods))
    fake_registry(monkeypatch, {"alpha": "cuekit_test_explodes", "gamma": "cuekit_test_explodes",
                                "delta": "cuekit_test_missing.delta", "broken": "cuekit_test_missing.b"})
    out = tmp_path / "reports"
    atomic_write_json(out / "alpha" / "results.json", completed_record())
    write_png(out / "alpha" / "curve.png")
    (out / "broken").mkdir()
    (out / "broken" / "results.json").write_text("{not json")
    atomic_write_json(out / "reproduce.json", {"mode": "quick", "scale": "smoke-scale run (quick, 32 px)",
                                               "seeds": 3, "device": "cpu", "areas": ["alpha"],
                                               "total_time_s": 1000.0, "budget_s": 900,
                                               "machine": {"available_cpus": 2, "os_cpu_count": 64,
                                                           "cgroup_cpu_limit": 2.0, "torch_threads": 2,
                                                           "speed": {"step_s": 0.02, "relative_speed": 0.5,
                                                                     "reference_machine": "ref box"}}})
    html = write_index(out).read_text()
    page = parse_page(html)
    text = page.page_text

    assert "cuekit_test_explodes" not in sys.modules
    # escaped: the markup inside results appears as text, never as tags
    assert "<script>" not in html and "<b>bold</b>" not in html and "b" not in page.tags
    assert "Alpha <b>bold</b> & \"quoted\"" in text and "X beats Y <script>alert(1)</script>" in text
    # verdict, table (floats to 4 decimals, None as n/a), effects with mean and spread
    assert "held" in text and "0.9123" in text and "n/a" in text and "<i>" in text
    assert "+0.1" in text and "spread" in text
    # the claims table: one row per claim, the headline marked, the failed precondition named
    assert "X beats Y <u>always</u>" in text and "<u>" not in html and "headline" in text
    assert "Z is flatter" in text and "NOT MET" in text and "failed: Z learnable alone" in text
    assert "Regime: converged <baseline>" in text
    # plots: relative <img> for the file that exists, a visible note for the one that does not
    assert [i["src"] for i in page.imgs] == ["alpha/curve.png"]
    assert (out / page.imgs[0]["src"]).is_file()
    assert "missing.png is missing" in text
    # states of the other areas, the smoke-scale label, time per area and total against the budget
    assert "gamma not run yet" in text and "delta" in text and "not implemented yet" in text
    assert "broken/results.json could not be used" in text and "unreadable" in text
    assert "Smoke-scale run (quick, 32 px)" in text
    assert "1 min 15 s" in text and "16 min 40 s" in text and "OVER budget" in text
    assert "torch 9.9" in text
    # the machine line: usable CPUs under a quota, and the time this run would take on the reference machine
    assert "2 CPU(s) usable (os.cpu_count 64, cgroup quota 2.0)" in text and "0.50x the speed" in text
    assert "would take about 8 min 20 s there" in text


def test_failed_area_and_few_seeds_are_shown(tmp_path, monkeypatch):
    fake_registry(monkeypatch, {"alpha": "cuekit_test_missing.a", "omega": "cuekit_test_missing.o"})
    out = tmp_path / "reports"
    atomic_write_json(out / "alpha" / "results.json",
                      completed_record(verdict="inconclusive", seeds=[0, 1], effects=[0.1, 0.2], plots=[],
                                       scale="full"))
    atomic_write_json(out / "omega" / "results.json",
                      {"area": "omega", "status": "failed", "error": "RuntimeError: boom <here>",
                       "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: boom <here>",
                       "time_s": 2.0, "scale": "full"})
    atomic_write_json(out / "reproduce.json", {"mode": "full", "scale": "full", "seeds": 2, "total_time_s": 3.0,
                                               "budget_s": None})
    page = parse_page(render_index(out))
    text = page.page_text
    assert "The experiment failed: RuntimeError: boom <here>" in text and "Traceback" in text
    assert "failed" in text
    assert "only 2 seed(s)" in text and "fewer than 3: by the rule every verdict from it is inconclusive" in text
    assert "Smoke-scale" not in text  # a full run is not labelled smoke scale


def test_import_cuekit_report_stays_light():
    code = ("import sys, cuekit.report, cuekit.report.cli; "
            "print([m for m in ('matplotlib', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("plot", ["/etc/passwd", "../other/x.png"])
def test_plots_outside_the_area_folder_are_not_linked(tmp_path, monkeypatch, plot):
    fake_registry(monkeypatch, {"alpha": "cuekit_test_missing.a"})
    out = tmp_path / "reports"
    atomic_write_json(out / "alpha" / "results.json", completed_record(plots=[plot]))
    page = parse_page(render_index(out))
    assert page.imgs == [] and "outside the area folder" in page.page_text
