"""Minibatch gradient training (``deepfm.training.Trainer``), with FNN's FM pre-training as a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from deepfm.config import RunConfig
from deepfm.data.batch import BatchSource, EncodedData
from deepfm.models.fnn import FNN, pretrain_with_fm
from deepfm.models.heads import CumulativeLink
from deepfm.tasks import Task
from deepfm.training.checkpoint import complete_checkpoint, remove_checkpoint_dirs, stage_checkpoint
from deepfm.training.trainer import TrainResult, Trainer

STAGE1_SUFFIX = "-fnn-stage1"  # FNN's pre-training checkpoints: a sibling of the run's checkpoint directory


class GradientSolver:
    """Trains with the run's optimiser, early stopping and checkpoints. An FNN with ``pretrain``
    first trains an FM (stage 1, checkpointed on its own so an interrupted stage 1 resumes) unless
    the run's own checkpoint shows stage 2 had begun."""

    def __init__(self, config: RunConfig, progress: bool = True, log: Callable[[str], None] | None = None):
        self.config = config
        self.progress = progress
        self.log = log or (lambda message: None)

    def fit(self, model: nn.Module, task: Task, train: EncodedData | BatchSource, valid: EncodedData | None = None,
            checkpoint_dir: Path | None = None, resume: bool = False) -> TrainResult:
        stage1 = stage_checkpoint(checkpoint_dir, STAGE1_SUFFIX)
        scored = model.score if isinstance(model, CumulativeLink) else model  # ordinal: the model under the head
        if isinstance(scored, FNN) and self.config.model.pretrain:
            if resume and complete_checkpoint(checkpoint_dir, warn=lambda message: None):  # the trainer warns
                self.log("FNN stage 1: done before the interruption (stage 2 resumes from its checkpoint)")
            else:
                pretrain_with_fm(scored, task, self.config.training, train, valid, self.log,
                                 checkpoint_dir=stage1, resume=resume)
        trainer = Trainer(model, task, self.config.training, checkpoint_dir=checkpoint_dir,
                          progress=self.progress, log=self.log)
        result = trainer.fit(train, valid, resume=resume)
        if stage1 is not None:
            remove_checkpoint_dirs(stage1)  # stage 2's checkpoints carry the run from here
        return result

