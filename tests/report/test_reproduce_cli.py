"""`cuekit reproduce` end to end with fake areas: results files, failures, --report-only, bad input."""
from __future__ import annotations

import itertools
import json
import sys
import textwrap

import pytest

from cuekit.cli import main
from report.test_report import fake_registry, parse_page

_ids = itertools.count()

# A fake area: the effect grows with the seed, so the rule's outcome is known from the seeds used.
OK_AREA = """
from PIL import Image
from cuekit.report import claim, make_result, precondition

def run_experiment(config):
    effects = [0.1 + 0.01 * s for s in config.seeds]
    Image.new("RGB", (8, 8), (10, 120, 10)).save(config.out_dir / "effect.png")
    rows = [claim(id="beats", claim="method beats baseline", measure="acc(method) - acc(baseline)",
                  effects=effects, headline=True, preconditions=[precondition("baseline beats chance", True, "0.9")]),
            claim(id="side", claim="a side claim", measure="x", effects=[-e for e in effects],
                  preconditions=[precondition("x learnable", False, "0.1 < 0.5")])]
    return make_result(
        area="ok", title="Fake <OK> area", claim="method beats baseline", measured="acc(method) - acc(baseline)",
        table={"columns": ["seed", "effect"], "rows": [[s, e] for s, e in zip(config.seeds, effects)]},
        claims=rows, regime="converged toy", plots=["effect.png"], seeds=config.seeds,
        details={"img_size": config.img_size, "quick": config.quick, "device": config.device})
"""

FAILING_AREA = """
def run_experiment(config):
    (config.out_dir / "partial.txt").write_text("started")
    raise RuntimeError("boom: the fake experiment broke")
"""

# Built by hand, not by make_result: "held" from one seed breaks the rule and must not be shown as held.
RULE_BREAKING_AREA = """
from cuekit.report import claim

def run_experiment(config):
    row = claim(id="c", claim="c", measure="m", effects=[1.0], headline=True)
    row["verdict"] = "held"
    return {"area": "cheat", "title": "t", "claim": "c", "measured": "m", "verdict": "held",
            "table": {"columns": ["x"], "rows": [[1]]}, "plots": [], "seeds": [0], "details": {},
            "claims": [row], "regime": "r"}
"""


@pytest.fixture(autouse=True)
def quick_calibration(monkeypatch):
    """The machine calibration is tested in tests/test_parallel.py; here it need not take a second."""
    from cuekit.report import calibration

    monkeypatch.setattr(calibration, "calibration_workload", lambda: 0.01)


@pytest.fixture
def areas(tmp_path, monkeypatch):
    """Make fake area modules importable; returns a function name -> module name for a source text."""
    mods = tmp_path / "mods"
    mods.mkdir()
    monkeypatch.syspath_prepend(str(mods))
    made = []

    def make(source: str) -> str:
        name = f"cuekit_fake_area_{next(_ids)}"
        (mods / f"{name}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


def run_cli(args, capsys):
    code = main(["reproduce", *[str(a) for a in args], "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def read(path):
    return json.loads(path.read_text())


def test_no_area_registered_still_writes_a_page(tmp_path, monkeypatch, capsys):
    fake_registry(monkeypatch, {"adamp": "cuekit_test_missing.adamp", "wsol": "cuekit_test_missing.wsol"})
    code, out, err = run_cli(["--out", tmp_path / "r"], capsys)
    assert code == 0, err
    page = parse_page((tmp_path / "r" / "index.html").read_text())
    assert "No area is implemented yet" in page.page_text and "adamp" in page.page_text
    assert "Smoke-scale run (quick, 32 px)" in page.page_text


def test_failing_area_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"bad": areas(FAILING_AREA), "ok": areas(OK_AREA),
                                "cheat": areas(RULE_BREAKING_AREA), "later": "cuekit_test_missing.later"})
    out = tmp_path / "reports"
    code, stdout, err = run_cli(["--out", out], capsys)
    assert code == 1

    ok = read(out / "ok" / "results.json")
    assert ok["status"] == "completed" and ok["verdict"] == "held" and ok["effects"] == pytest.approx([0.1, 0.11, 0.12])
    assert ok["scale"] == "smoke-scale run (quick, 32 px)" and ok["time_s"] >= 0
    assert ok["config"]["img_size"] == 32 and ok["config"]["quick"] is True and ok["config"]["seeds"] == [0, 1, 2]
    assert ok["config"]["device"] in ("cpu", "cuda") and ok["details"]["device"] == ok["config"]["device"]
    assert "torch" in ok["environment"] and ok["table"]["rows"][2] == [2, pytest.approx(0.12)]
    assert (out / "ok" / "effect.png").is_file() and (out / "ok" / "results.txt").is_file()

    bad = read(out / "bad" / "results.json")
    assert bad["status"] == "failed" and "boom: the fake experiment broke" in bad["error"]
    assert "Traceback" in bad["traceback"] and "RuntimeError" in bad["traceback"]
    assert "environment" in bad and "time_s" in bad and not (out / "bad" / "results.txt").exists()

    cheat = read(out / "cheat" / "results.json")  # "held" from one seed breaks the rule: not shown as held
    assert cheat["status"] == "failed" and "breaks the rule" in cheat["error"]

    page = parse_page((out / "index.html").read_text())
    text = page.page_text
    assert "Fake <OK> area" in text and "The experiment failed: RuntimeError: boom" in text
    assert [i["src"] for i in page.imgs] == ["ok/effect.png"]
    assert "later" in text and "not implemented yet" in text
    assert "Total time of the last run" in text
    # one row per claim, with its own verdict and the failed precondition named
    assert [c["id"] for c in ok["claims"]] == ["beats", "side"] and ok["regime"] == "converged toy"
    assert [c["verdict"] for c in ok["claims"]] == ["held", "inconclusive"]
    assert "x learnable" in text and "NOT MET" in text and "headline" in text and "converged toy" in text
    claims_txt = (out / "ok" / "results.txt").read_text()
    assert "beats" in claims_txt and "x learnable" in claims_txt
    # the final summary table: area, headline verdict, claims, time
    lines = stdout.splitlines()
    assert lines[0].split() == ["area", "headline", "verdict", "claims", "time"]
    assert any(ln.split()[:2] == ["ok", "held"] for ln in lines)
    assert any(ln.split()[:2] == ["bad", "failed"] for ln in lines)
    assert any(ln.startswith("total") for ln in lines)

    # --report-only rebuilds the same page from the files alone
    before = (out / "index.html").read_bytes()
    (out / "index.html").unlink()
    code, _, err = run_cli(["--report-only", "--out", out], capsys)
    assert code == 0, err
    assert (out / "index.html").read_bytes() == before

    # running one area again keeps the others' results, and the page still shows them
    code, _, _ = run_cli(["bad", "--out", out], capsys)
    assert code == 1
    assert read(out / "ok" / "results.json") == ok
    assert "Fake <OK> area" in parse_page((out / "index.html").read_text()).page_text


def test_full_mode_and_too_few_seeds(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"ok": areas(OK_AREA)})
    out = tmp_path / "reports"
    code, _, err = run_cli(["ok", "--full", "--seeds", "2", "--device", "cpu", "--out", out], capsys)
    assert code == 0
    assert "every verdict will be inconclusive" in err
    ok = read(out / "ok" / "results.json")
    assert ok["scale"] == "full" and ok["config"]["img_size"] == 64 and ok["config"]["quick"] is False
    assert ok["verdict"] == "inconclusive" and ok["seeds"] == [0, 1]
    text = parse_page((out / "index.html").read_text()).page_text
    assert "Smoke-scale" not in text and "fewer than 3" in text


@pytest.mark.parametrize("args, needle", [
    (["okk"], "did you mean: ok"),
    (["later"], "not implemented yet"),
    (["--seeds", "0"], "at least 1"),
    (["--device", "tpu9"], "--device"),
    (["--report-only", "ok"], "takes no AREA"),
])
def test_bad_input_is_one_line_with_exit_2(args, needle, tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"ok": areas(OK_AREA), "later": "cuekit_test_missing.later"})
    code, out, err = run_cli([*args, "--out", tmp_path / "r"], capsys)
    assert code == 2
    assert "Traceback" not in err and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "ok").exists()  # nothing ran


def test_markdown_lists_every_claim_of_every_completed_area(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"ok": areas(OK_AREA), "bad": areas(FAILING_AREA)})
    out, md = tmp_path / "reports", tmp_path / "results.md"
    code, stdout, _ = run_cli(["--out", out, "--markdown", md], capsys)
    assert code == 1 and f"claims written to {md}" in stdout
    text = md.read_text()
    assert "### Fake <OK> area" in text and "Headline verdict: **held**" in text and "Regime: converged toy" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["beats", "side"]
    assert "| headline |" in rows[0] and "| held |" in rows[0] and "x learnable" in rows[1]
    assert "bad" not in text.split("### ")[-1]  # a failed area has no claims table
    md.unlink()
    code, _, _ = run_cli(["--report-only", "--out", out, "--markdown", md], capsys)
    assert code == 0 and "`beats`" in md.read_text()


# A fake area whose experiment runs 6 (seed, method) jobs through run_jobs; STOP decides whether the 4th one
# (seed 1, "ours") raises, and what.
AREA_WITH_RUNS = """
import torch
from cuekit.parallel import run_jobs
from cuekit.report import claim, make_result

STOP = {stop}

def _run(job):
    seed, method = job
    if STOP is not None and job == (1, "ours"):
        raise STOP("the fourth run stops here")
    return {{"seed": seed, "method": method, "acc": 0.5 + 0.1 * seed, "weights": torch.zeros(64, 64)}}

def run_experiment(config):
    jobs = [(s, m) for s in config.seeds for m in ("base", "ours")]
    runs = run_jobs(_run, jobs, workers=1, desc="fake runs", progress=config.progress)
    effects = [0.1 + 0.01 * s for s in config.seeds]
    rows = [claim(id="beats", claim="c", measure="m", effects=effects, headline=True)]
    return make_result(area="fake", title="Fake", claim="c", measured="m",
                       table={{"columns": ["runs"], "rows": [[len(runs)]]}}, claims=rows, regime="r", plots=[],
                       seeds=config.seeds, details={{}})
"""


def test_a_completed_area_keeps_no_partial_file_and_prints_one_line_per_run(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"fake": areas(AREA_WITH_RUNS.format(stop=None))})
    out = tmp_path / "reports"
    (out / "fake").mkdir(parents=True)
    (out / "fake" / "partial.jsonl").write_text('{"stale": "an earlier run"}\n')
    code, stdout, err = run_cli(["--out", out], capsys)
    assert code == 0, err
    assert read(out / "fake" / "results.json")["status"] == "completed"
    assert not (out / "fake" / "partial.jsonl").exists()
    finished = [ln for ln in stdout.splitlines() if ln.startswith("fake: fake runs ")]
    assert [ln.split()[3] for ln in finished] == [f"{k}/6" for k in range(1, 7)]


def test_a_failed_area_keeps_its_finished_runs(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"fake": areas(AREA_WITH_RUNS.format(stop="RuntimeError"))})
    out = tmp_path / "reports"
    code, _, _ = run_cli(["--out", out], capsys)
    assert code == 1
    entries = [json.loads(ln) for ln in (out / "fake" / "partial.jsonl").read_text().splitlines()]
    assert [e["job"] for e in entries] == [[0, "base"], [0, "ours"], [1, "base"]]
    assert entries[2]["result"]["acc"] == 0.6 and entries[2]["result"]["weights"] == {"shape": [64, 64],
                                                                                         "dtype": "float32"}
    record = read(out / "fake" / "results.json")
    assert record["status"] == "failed" and record["partial_results"] == "partial.jsonl"
    assert record["finished_runs"] == 3


def test_an_interrupted_area_keeps_its_finished_runs(tmp_path, monkeypatch, capsys, areas):
    fake_registry(monkeypatch, {"fake": areas(AREA_WITH_RUNS.format(stop="KeyboardInterrupt"))})
    out = tmp_path / "reports"
    code, _, err = run_cli(["--out", out], capsys)
    assert code == 130 and "fake interrupted: its 3 finished run(s) are in" in err
    assert len((out / "fake" / "partial.jsonl").read_text().splitlines()) == 3
    assert (out / "index.html").is_file()  # the page still describes what finished
