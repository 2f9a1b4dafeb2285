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
