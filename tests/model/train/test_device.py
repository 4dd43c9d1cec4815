"""Device policy. MPS (and CUDA here) cannot run on this machine: those tests patch availability
and say so in their names ("mocked")."""
from unittest import mock

import pytest
import torch

from model import device as dev
from model.device import resolve_device


def test_cpu_resolves_to_float32():
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)


def test_auto_picks_mps_when_available_mocked():
    with mock.patch.object(dev, "mps_available", return_value=True), \
            mock.patch.object(dev, "cuda_available", return_value=True):
        d, dtype = resolve_device("auto")
    assert d.type == "mps" and dtype == torch.float32  # fp32 is MPS's safe default


def test_auto_picks_cuda_with_bf16_when_no_mps_mocked():
    with mock.patch.object(dev, "mps_available", return_value=False), \
            mock.patch.object(dev, "cuda_available", return_value=True), \
            mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True):
        d, dtype = resolve_device("auto")
    assert d.type == "cuda" and dtype == torch.bfloat16


def test_cuda_without_bf16_falls_back_to_fp32_mocked():
    with mock.patch.object(dev, "cuda_available", return_value=True), \
            mock.patch.object(torch.cuda, "device_count", return_value=1), \
            mock.patch.object(torch.cuda, "is_bf16_supported", return_value=False):
        assert resolve_device("cuda") == (torch.device("cuda"), torch.float32)


def test_auto_falls_back_to_cpu_mocked():
    with mock.patch.object(dev, "mps_available", return_value=False), \
            mock.patch.object(dev, "cuda_available", return_value=False):
        assert resolve_device("auto") == (torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("name", ["mps", "cuda", "cuda:0"])
def test_explicit_device_that_is_absent_is_a_clear_error_mocked(name):
    with mock.patch.object(dev, "mps_available", return_value=False), \
            mock.patch.object(dev, "cuda_available", return_value=False), \
            pytest.raises(ValueError, match="not available"):
        resolve_device(name)


def test_mps_explicit_precision_is_honoured_mocked():
    with mock.patch.object(dev, "mps_available", return_value=True):
        assert resolve_device("mps", "fp16") == (torch.device("mps"), torch.float16)


@pytest.mark.parametrize("name, precision, match", [("tpu", "auto", "device must be one of"),
                                                    ("cpu", "fp64", "precision must be one of"),
                                                    ("cpu", "bf16", "not supported on the CPU"),
                                                    (3, "auto", "device must be a string")])
def test_bad_device_or_precision_is_refused(name, precision, match):
    with pytest.raises(ValueError, match=match):
        resolve_device(name, precision)


def test_describe_names_device_dtype_and_mps_fallback(monkeypatch):
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    info = dev.describe(torch.device("cpu"), torch.float32)
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["mps_fallback"] is True
    assert info["hardware"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resolves_on_a_real_gpu():
    d, dtype = resolve_device("auto")
    assert d.type == "cuda"
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_cpu_threads_counts_usable_cores_minus_busy_ones_and_keeps_the_override(monkeypatch):
    import os

    from model import device

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert device.usable_cores() == 2
    assert device.cpu_threads(busy=0.0) == 2  # an idle 2-core machine: both
    assert device.cpu_threads(busy=0.9) == 1  # one competing busy process: no oversubscription
    assert device.cpu_threads(busy=5.0) == 1  # never below one
    assert device.cpu_threads(busy=0.0, processes=2) == 1  # two local ranks share the cores
    assert device.cpu_threads(3, busy=2.0) == 3  # the config's `threads` wins
    busy = device.busy_cores(window=0.05)
    assert 0.0 <= busy <= os.cpu_count()


def test_a_busy_process_is_seen_by_busy_cores():
    import subprocess
    import sys

    from model.device import busy_cores

    p = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert busy_cores(window=0.3) >= 0.5  # the spinning process holds most of a core
    finally:
        p.kill()
        p.wait()
