"""Training and evaluation following the paper: multi-scale loss, schedules, stacking, metrics.

- ``MultiScaleLoss``: the per-scale weighted loss (Caffe or NVIDIA weights, sparse-valid aware).
- ``get_schedule``: S_short, S_long, S_fine (``@SCALE`` for short runs) and constant learning rates.
- ``prepare_stack_for_training`` / ``initialise_from``: stacked training, one network at a time.
- ``Trainer`` / ``train`` with ``load_config``: the training loop behind ``flownet2-train``.
- ``evaluate`` and the metrics (EPE, Fl-all, outlier rates) behind ``flownet2-evaluate``.
"""

from .config import ConfigError, DatasetSpec, TrainConfig, apply_override, config_from_dict, load_config
from .datasets import DatasetError, build_dataset
from .evaluation import EvaluationResult, evaluate, write_results
from .losses import CAFFE_WEIGHTS, FUSION_WEIGHTS, PYTORCH_WEIGHTS, MultiScaleLoss, downsample_flow
from .metrics import FlowMetrics, average_epe, epe_map, fl_all, fl_outliers, sample_metrics
from .schedules import ADAM_BETAS, SCHEDULE_NAMES, LRSchedule, get_schedule, make_optimizer
from .stacking import DEFAULT_STAGE, frozen_subnetworks, initialise_from, prepare_stack_for_training
from .trainer import BEST, LATEST, Trainer, TrainingError, TrainResult, read_resume, resume_config, train

__all__ = [
    "ADAM_BETAS",
    "BEST",
    "CAFFE_WEIGHTS",
    "DEFAULT_STAGE",
    "FUSION_WEIGHTS",
    "LATEST",
    "PYTORCH_WEIGHTS",
    "SCHEDULE_NAMES",
    "ConfigError",
    "DatasetError",
    "DatasetSpec",
    "EvaluationResult",
    "FlowMetrics",
    "LRSchedule",
    "MultiScaleLoss",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "apply_override",
    "average_epe",
    "build_dataset",
    "config_from_dict",
    "downsample_flow",
    "epe_map",
    "evaluate",
    "fl_all",
    "fl_outliers",
    "frozen_subnetworks",
    "get_schedule",
    "initialise_from",
    "load_config",
    "make_optimizer",
    "prepare_stack_for_training",
    "read_resume",
    "resume_config",
    "sample_metrics",
    "train",
    "write_results",
]
