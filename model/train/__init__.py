"""Training runs: config, data and pack sampler, the loop, run folders, checkpoints, processes.

    from model.train import TrainConfig, start_run
    handle = start_run(TrainConfig(data="default", steps=200), runs_dir)   # a subprocess
    handle.metrics()[-1]["loss"]; handle.stop(); resume_run(handle.path)
    model, model_config, meta = load_checkpoint(handle.path)

See ``model/train/README.md`` for the terminal, DDP (torchrun) and device notes.
"""
from model.train.config import TrainConfig
from model.train.runs import (CorruptCheckpointError, RunHandle, list_runs, load_checkpoint, read_metrics,
                              resume_run, start_run)

__all__ = ["TrainConfig", "RunHandle", "CorruptCheckpointError", "start_run", "resume_run", "list_runs",
           "read_metrics", "load_checkpoint", "run_training"]


def run_training(*args, **kwargs):
    """Train in this process; see ``model.train.trainer.run_training``."""
    from model.train.trainer import run_training as _run

    return _run(*args, **kwargs)
