import sys

from deepfm.cli import main

sys.exit(main())
