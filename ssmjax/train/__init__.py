"""Training: configs, the sharded Optax loop, Orbax checkpoints and run logging."""

from ssmjax.train.checkpoint import CheckpointError, Checkpointer
from ssmjax.train.config import (ExperimentConfig, TrainConfig, load_config, override,
                                 run_name)
from ssmjax.train.feed import HostTask, OnDeviceTask
from ssmjax.train.loop import TrainingRun, train
from ssmjax.train.objectives import CLASSIFICATION, TOKEN, Objective, perplexity
from ssmjax.train.optim import OptimizerConfig, make_optimizer, parameter_groups
from ssmjax.train.registry import model_entry, register_model
from ssmjax.train.sharding import batch_mesh_axes, make_mesh, state_shardings

__all__ = ["CLASSIFICATION", "CheckpointError", "Checkpointer", "ExperimentConfig", "HostTask",
           "Objective", "OnDeviceTask", "OptimizerConfig", "TOKEN", "TrainConfig", "TrainingRun",
           "batch_mesh_axes", "load_config", "make_mesh", "make_optimizer", "model_entry",
           "override", "parameter_groups", "perplexity", "register_model", "run_name",
           "state_shardings", "train"]
