"""Run by tests/test_stream_ranks.py under torchrun: ``deepfm ARGV`` whose ranks all die (``os._exit``,
as if killed) when they are about to take training step number ``DEEPFM_CRASH_AFTER_STEPS`` + 1."""

import os
import sys

from deepfm.cli import main
from deepfm.training.trainer import Trainer

limit, taken = int(os.environ["DEEPFM_CRASH_AFTER_STEPS"]), 0
step = Trainer._step


def crashing_step(self, batch):
    global taken
    if taken >= limit:
        os._exit(3)
    taken += 1
    return step(self, batch)


Trainer._step = crashing_step
sys.exit(main(sys.argv[1:]))
