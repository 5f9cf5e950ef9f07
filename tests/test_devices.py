"""Device choice with the accelerators mocked as absent or present."""

from __future__ import annotations

import pytest
import torch

from logloss.training import devices


@pytest.fixture
def accelerators(monkeypatch):
    """Set which accelerators torch reports: call with (cuda, mps)."""

    def set_present(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_present


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [
        (True, True, "cuda"),  # CUDA first
        (True, False, "cuda"),
        (False, True, "mps"),  # then Apple's MPS
        (False, False, "cpu"),  # then the CPU
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(accelerators, cuda, mps, expected):
    accelerators(cuda, mps)
    assert devices.pick_device("auto") == torch.device(expected)
    assert devices.available_devices()[0] == expected
    assert devices.available_devices()[-1] == "cpu"


def test_explicit_devices_when_present(accelerators):
    accelerators(True, True)
    assert devices.pick_device("cpu") == torch.device("cpu")
    assert devices.pick_device("CUDA") == torch.device("cuda")
    assert devices.pick_device("cuda:1") == torch.device("cuda", 1)
    assert devices.pick_device("mps") == torch.device("mps")


@pytest.mark.parametrize("requested", ["cuda", "mps", "cuda:0"])
def test_absent_accelerator_is_a_clear_error(accelerators, requested):
    accelerators(False, False)
    with pytest.raises(ValueError, match=r"not available on this machine \(available: cpu\)"):
        devices.pick_device(requested)


@pytest.mark.parametrize("requested", ["gpu", "tpu", "mps:0", ""])
def test_unknown_device_names_are_rejected(requested):
    with pytest.raises(ValueError, match="unknown device"):
        devices.pick_device(requested)


def test_mps_missing_from_the_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")
    assert devices.mps_available() is False
    assert devices.pick_device("auto") == torch.device("cpu")


def test_configure_threads_sets_the_cpu_thread_count():
    before = torch.get_num_threads()
    try:
        assert devices.configure_threads(torch.device("cpu"), 1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="at least 1"):
        devices.configure_threads(torch.device("cpu"), 0)
