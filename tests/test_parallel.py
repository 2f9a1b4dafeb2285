"""cuekit.parallel: the thread-count context shared by the experiments."""
from __future__ import annotations

import pytest
import torch


def test_torch_threads_restores_the_count_even_after_an_error():
    from cuekit.parallel import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "200000 100000\n"}, 2.0),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "50000 100000\n"}, 1.0),  # less than one CPU still runs one thread
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4.0),
    ({}, None),
])
def test_cgroup_cpu_limit_reads_v1_and_v2_quotas(tmp_path, files, expected):
    from cuekit.parallel import cgroup_cpu_limit

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(str(tmp_path)) == expected


def test_available_cpus_is_capped_by_a_quota(monkeypatch):
    from cuekit import parallel

    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(parallel, "cgroup_cpu_limit", lambda: 2.5)
    assert parallel.available_cpus() == 2
    monkeypatch.setattr(parallel, "cgroup_cpu_limit", lambda: None)
    assert parallel.available_cpus() == 64


def test_machine_facts_caps_torch_threads_at_the_usable_cpus(monkeypatch):
    from cuekit import parallel
    from cuekit.report import calibration, runner

    monkeypatch.setattr(parallel, "available_cpus", lambda: 1)
    monkeypatch.setattr(calibration, "calibration_workload", lambda: 0.01)
    with parallel.torch_threads(2):
        facts = runner.machine_facts()
        assert torch.get_num_threads() == 1
    assert facts["available_cpus"] == 1 and facts["torch_threads"] == 1
    assert facts["speed"]["step_s"] == 0.01


def test_calibration_workload_times_real_steps():
    from cuekit.report.calibration import calibration_workload

    step = calibration_workload(steps=2, rounds=1)
    assert 0 < step < 5


def _square(x: int) -> int:
    return x * x


def _unreadable_at_two(x: int) -> int:
    from cuekit.errors import DataError

    if x == 2:
        raise DataError(f"file {x} is unreadable")
    return x


def test_json_summary_summarises_instead_of_dumping():
    import numpy as np

    from cuekit.parallel import json_summary

    s = json_summary({"acc": 0.5, "nan": float("nan"), "small": torch.tensor([1.0, 2.0]),
                      "weights": torch.zeros(100, 3), "array": np.ones((4, 5), np.float32),
                      "model": torch.nn.Linear(2, 3), "seeds": list(range(30)), "name": "x" * 300,
                      "scalar": np.float64(0.25), "obj": object()})
    assert s["acc"] == 0.5 and s["nan"] == "nan" and s["small"] == [1.0, 2.0] and s["scalar"] == 0.25
    assert s["weights"] == {"shape": [100, 3], "dtype": "float32"}
    assert s["array"] == {"shape": [4, 5], "dtype": "float32"}
    assert s["model"] == "<Linear: 9 parameters>" and s["obj"] == "<object>"
    assert len(s["seeds"]) == 21 and s["seeds"][-1] == "... 10 more" and len(s["name"]) == 203
    import json

    json.dumps(s, allow_nan=False)  # strict JSON


def test_run_jobs_records_each_finished_run_only_while_asked(tmp_path, capsys):
    import json

    from cuekit.parallel import recording_partial_results, run_jobs

    assert run_jobs(_square, [1, 2, 3], workers=1, progress=False) == [1, 4, 9]
    path = tmp_path / "area" / "partial.jsonl"
    with recording_partial_results(path, "fake", lines=True) as partial:
        assert run_jobs(_square, [1, 2, 3], workers=1, desc="squares", progress=False) == [1, 4, 9]
    assert partial.finished == 3
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["job"], e["result"], e["run"], e["of"], e["desc"], e["area"]) for e in entries] == [
        (1, 1, 0, 3, "squares", "fake"), (2, 4, 1, 3, "squares", "fake"), (3, 9, 2, 3, "squares", "fake")]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("fake: squares 2/3 finished in ")
    run_jobs(_square, [4], workers=1, progress=False)  # outside the block: nothing recorded
    assert len(path.read_text().splitlines()) == 3


def test_worker_processes_record_runs_and_raise_user_errors_as_their_class(tmp_path):
    import json

    from cuekit.errors import DataError
    from cuekit.parallel import recording_partial_results, run_jobs

    path = tmp_path / "partial.jsonl"
    with recording_partial_results(path, "fake"):
        with pytest.raises(DataError, match="file 2 is unreadable") as info:
            run_jobs(_unreadable_at_two, [1, 2, 3], workers=2, progress=False, threads=1)
    assert info.value.exit_code == 2
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((e["job"], e["result"], e["run"]) for e in entries) == [(1, 1, 0), (3, 3, 2)]  # not the failed one
