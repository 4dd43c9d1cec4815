"""``python -m model`` is the ``vmmoe`` command."""
import sys

from model.cli import main

sys.exit(main())
