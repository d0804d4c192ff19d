"""On CUDA: perturbations restore the parameters bit for bit, in-place draws are the fresh ones,
and a ZO step's peak memory is that of inference plus what the docs promise (the swapped-in set
for exact restore, the direction buffers of the fast regime, a few blocks of the largest
tensor). Marked ``gpu``: skipped where CUDA is absent. The checks live in
``benchmarks/gpu_check.py``, which runs them without pytest on a GPU machine."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", gpu_check.ZO_NAMES)
def test_cuda_perturbations_restore_parameters_bit_for_bit(name):
    gpu_check.check_restore_bit_exact(name, "cuda")


def test_cuda_in_place_draws_equal_fresh_draws():
    gpu_check.check_in_place_draws("cuda")


@pytest.mark.parametrize("regime", list(gpu_check.REGIMES))
def test_cuda_zo_step_peak_memory_is_inference_plus_documented_scratch(regime):
    gpu_check.check_zo_peak_memory(regime, "cuda")
