"""Load a Triton kernel module for the tests: on CUDA as it is, without a GPU under Triton's interpreter.

``TRITON_INTERPRET=1`` is read when a kernel is *defined*, so it must be set before the kernel module
is first imported; a module that another test imported earlier without it is reloaded. Without
triton installed the calling test module is skipped.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch

CUDA = torch.cuda.is_available()


def load_kernels(module_name: str, kernel_attr: str):
    """The module ``module_name`` with its kernels runnable here (``kernel_attr`` names one of them)."""
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    pytest.importorskip("triton")
    module = importlib.import_module(module_name)
    if not CUDA and "InterpretedFunction" not in type(getattr(module, kernel_attr)).__name__:
        module = importlib.reload(module)  # imported earlier without the interpreter
    return module
