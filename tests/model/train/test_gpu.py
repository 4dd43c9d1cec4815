"""CUDA: training steps in the device's precision, and packed inference there equal to one-by-one."""
import pytest
import torch

from model.device import resolve_device
from model.infer import one_by_one, packed_inference
from model.train import TrainConfig
from model.train.trainer import Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto = bf16 autocast on the H100
@pytest.mark.parametrize("packing", ["packed", "single"])
def test_training_steps_on_cuda(tiny, precision, packing):
    trainer = Trainer(TrainConfig.from_dict(tiny(device="cuda", steps=5, precision=precision, packing=packing)))
    assert trainer.device.type == "cuda" and trainer.dtype == resolve_device("cuda", precision)[1]
    steps = trainer.sampler.epoch_steps(0)[:5]
    losses = [trainer.train_step(s)["loss"] for s in steps]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert trainer.meta["dtype"] in ("bfloat16", "float32")
    assert next(trainer.model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_packed_inference_on_cuda_equals_one_by_one(tiny):
    trainer = Trainer(TrainConfig.from_dict(tiny(device="cuda")))
    seqs = [s.vectors for s in trainer.eval_seqs[:8]]
    got = packed_inference(trainer.model, seqs, max_len=64)
    for g, w in zip(got, one_by_one(trainer.model, seqs)):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)
