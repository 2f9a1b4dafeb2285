"""`cuekit nara train|sample|bench` end to end on a tiny image domain, and the reproduce section's contract."""
from __future__ import annotations

import json

import pytest
import torch

from cuekit.cli import main
from cuekit.nara.domains import build_domain, load_domain, save_domain


@pytest.fixture(scope="module")
def tiny_domain_dir(tmp_path_factory):
    d = build_domain("image", quick=True, seed=0, n_images=64, size=6, channels=8, layers=1, mother_steps=10,
                     prior_steps=10, conf_batches=2, horizon=4, window=6)
    out = tmp_path_factory.mktemp("nara") / "image"
    save_domain(d, out)
    return out, d


def test_help_exits_zero(capsys):
    for cmd in (["nara", "--help"], ["nara", "sample", "--help"], ["nara", "bench", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(cmd)
        assert e.value.code == 0
    assert "--tau" in capsys.readouterr().out


def test_save_load_round_trip(tiny_domain_dir):
    out, d = tiny_domain_dir
    loaded = load_domain(out)
    x = torch.randint(0, 2, (2, 36))
    torch.testing.assert_close(loaded.mother.token_logprobs(x), d.mother.token_logprobs(x))
    assert loaded.horizon == 4 and loaded.length == 36


def test_sample_and_bench_commands(tiny_domain_dir, tmp_path, capsys):
    out, _ = tiny_domain_dir
    rc = main(["nara", "sample", "--ckpt", str(out), "--tau", "0.9", "--num", "2", "--out", str(tmp_path / "s"),
               "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert len(res["samples"]) == 2 and len(res["samples"][0]) == 36
    assert (tmp_path / "s" / "samples.png").is_file()
    rc = main(["nara", "bench", "--ckpt", str(out), "--taus", "0.5", "--samples", "1", "--repeats", "1",
               "--out", str(tmp_path / "b"), "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods[:2] == ["sequential", "exact"] and "speculative" in methods
    exact = res["rows"][1]
    assert exact["nll_rel"] == pytest.approx(0.0, abs=1e-6) and exact["calls_per_seq"] <= 36
    assert (tmp_path / "b" / "speed_quality.png").is_file()


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["nara", "sample", "--ckpt", str(tmp_path / "missing")]) == 2
    assert main(["nara", "bench", "--ckpt", str(tmp_path), "--taus", "x,y"]) == 2
    err = capsys.readouterr().err
    assert err.count("cuekit: error:") == 2 and "Traceback" not in err


@pytest.mark.slow
def test_reproduce_section_contract(tmp_path):
    import torch

    from cuekit.nara.experiment import run_experiment
    from cuekit.report.experiments import VERDICTS, ExperimentConfig

    threads = torch.get_num_threads()
    res = run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True))
    assert torch.get_num_threads() == threads  # restored
    assert res["area"] == "nara" and res["verdict"] in VERDICTS and len(res["effects"]) == 3
    assert (tmp_path / "speed_quality.png").is_file()
    assert {row[0] for row in res["table"]["rows"]} == {"text", "image"}
    head = [c for c in res["claims"] if c["headline"]]
    assert [c["id"] for c in head] == ["gated_speed_text"]
    runs = res["details"]["runs"]
    for name in ("text", "image"):
        for r in runs[name]:  # the harness checks that back the preconditions
            assert r["methods"]["exact"]["identical_to_sequential"] >= 0.95
            assert r["batched_equals_one_sequence"] >= 0.95
