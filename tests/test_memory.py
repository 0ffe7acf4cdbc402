"""Tests of srgnn.memory: freed training buffers stay in the process (no page faults)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Training steps of a 43k-item model (17 MB (B, N) tensors), counting the page faults of the
# last 10 steps.
_ROUNDS = textwrap.dedent(
    """
    import resource, sys, numpy as np, torch
    from srgnn.memory import retain_freed_memory
    applied = retain_freed_memory() if sys.argv[1] == "retain" else False
    from srgnn.batching import collate
    from srgnn.graph import build_graphs
    from srgnn.model import SRGNN, ModelConfig
    from srgnn.train import training_step
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = SRGNN(ModelConfig(num_items=43_000))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    def steps(count):
        for _ in range(count):
            lengths = rng.integers(1, 8, size=100)
            values = rng.integers(1, 43_001, size=int(lengths.sum()))
            batch = collate(build_graphs(values, np.r_[0, np.cumsum(lengths)]),
                            rng.integers(1, 43_001, size=100))
            training_step(model, optimizer, batch, "float32")
    steps(8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    steps(10)
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
    """
)


def _faults_per_round(mode: str, **env) -> tuple[str, int]:
    import os

    result = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True,
                            check=True, env={**os.environ, **env})
    applied, faults = result.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_freed_buffers_are_reused_without_page_faults():
    applied, default_faults = _faults_per_round("default")
    assert applied == "False"
    # With the allocator's defaults the step's large buffers come back as fresh pages.
    assert default_faults > 2_000, default_faults
    applied, retained_faults = _faults_per_round("retain")
    assert applied == "True"
    assert retained_faults < min(1_000, default_faults / 5), (retained_faults, default_faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_user_settings_and_the_switch_are_respected():
    assert _faults_per_round("retain", SRGNN_RETAIN_FREED_MEMORY="0")[0] == "False"
    assert _faults_per_round("retain", MALLOC_TRIM_THRESHOLD_="1000000")[0] == "False"
