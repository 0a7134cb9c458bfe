"""``python -m deepfm``: the ``deepfm`` command."""

from deepfm.cli import entry

entry()
