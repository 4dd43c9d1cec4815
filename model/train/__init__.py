"""Training runs: config, data and pack sampler, the loop, evaluation, run folders, checkpoints, processes.

    from model.train import TrainConfig, start_run
    handle = start_run(TrainConfig(data="default", steps=200), runs_dir)   # a subprocess
    handle.metrics()[-1]["loss"]; handle.stop(); resume_run(handle.path)
    model, model_config, meta = load_checkpoint(handle.path)

Modules, bottom to top: ``config`` (TrainConfig, the schema) -> ``data`` (sequences, split, pack
sampler) -> ``runs`` (run folders, checkpoints, processes) -> ``evaluate`` (held-out metrics, A/B of
checkpoints) -> ``trainer`` (the loop). See ``model/train/README.md`` for the terminal, DDP (torchrun)
and device notes.
"""
from model.train.config import TrainConfig
from model.train.evaluate import compare_checkpoints, evaluate_sequences
from model.train.runs import (CorruptCheckpointError, RunHandle, list_runs, load_checkpoint, read_metrics,
                              resume_run, start_run)
from model.train.trainer import run_training

__all__ = ["TrainConfig", "RunHandle", "CorruptCheckpointError", "start_run", "resume_run", "list_runs",
           "read_metrics", "load_checkpoint", "run_training", "evaluate_sequences", "compare_checkpoints"]
