"""Tests of srgnn.training.memory: freed training buffers stay in the process (no page faults)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Training steps of a 43k-item model (17 MB (B, N) tensors) on one batch, counting the page
# faults of the last 20 steps.
_ROUNDS = textwrap.dedent(
    """
    import resource, sys, numpy as np, torch
    from srgnn.training.memory import retain_freed_memory
    applied = retain_freed_memory() if sys.argv[1] == "retain" else False
    from srgnn.model.batching import collate
    from srgnn.data.graph import build_graphs
    from srgnn.model.network import SRGNN, ModelConfig
    from srgnn.training.loop import training_step
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = SRGNN(ModelConfig(num_items=43_000))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    lengths = rng.integers(1, 8, size=100)
    values = rng.integers(1, 43_001, size=int(lengths.sum()))
    batch = collate(build_graphs(values, np.r_[0, np.cumsum(lengths)]),
                    rng.integers(1, 43_001, size=100))
    def steps(count):  # one batch over and over: the same buffers every step
        for _ in range(count):
            training_step(model, optimizer, batch, "float32")
    steps(8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    steps(20)
    print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 20)
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
    # With the allocator's defaults the step's large buffers come back as fresh pages
    # (2,000-11,000 faults a step measured, i.e. 8-45 MB).
    assert default_faults > 1_000, default_faults
    applied, retained_faults = _faults_per_round("retain")
    assert applied == "True"
    # Retained: at most a one-time growth of the heap (one 17 MB buffer = 4,200 faults, i.e.
    # 210 a step over 20 steps), never a buffer a step.
    assert retained_faults < 500, (retained_faults, default_faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_user_settings_and_the_switch_are_respected():
    assert _faults_per_round("retain", SRGNN_RETAIN_FREED_MEMORY="0")[0] == "False"
    assert _faults_per_round("retain", MALLOC_TRIM_THRESHOLD_="1000000")[0] == "False"
