"""The installed version of the project (``vmmoe --version``, ``model.__version__``)."""
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "vmmoe-workbench"  # the name in pyproject.toml

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree that was never pip-installed
    __version__ = "0+unknown"
