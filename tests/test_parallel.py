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
