"""JupyterLab launcher tile for the workbench, through jupyter-server-proxy.

``pyproject.toml`` declares the entry point::

    [project.entry-points.jupyter_serverproxy_servers]
    vmmoe-workbench = "workbench.jupyter_proxy:setup_workbench"

so a Jupyter server started from this environment lists a "VMMoE Workbench" tile in its launcher.
Clicking it makes jupyter-server-proxy start ``panel serve`` on a free port and proxy
``<base_url>vmmoe-workbench/`` to it. The app runs with ``--prefix <base_url>vmmoe-workbench`` and
``absolute_url=True`` (the proxy forwards the full path, Panel strips its prefix), the mechanics
Panel documents for JupyterHub/Lab. This module imports nothing heavy: Jupyter loads it at startup.
"""
from __future__ import annotations

import sys
from pathlib import Path

NAME = "vmmoe-workbench"  # the entry point's name; jupyter-server-proxy mounts the app under it
TITLE = "VMMoE Workbench"
APP_DIR = Path(__file__).resolve().parent  # `panel serve <dir>` serves workbench/main.py at /workbench
ICON = APP_DIR / "icons" / "vmmoe.svg"
# The first start may build the default concept store (about a minute on a laptop CPU).
START_TIMEOUT_S = 180.0


def command(port: str = "{port}", base_url: str = "{base_url}") -> list[str]:
    """The ``panel serve`` command line; jupyter-server-proxy fills in ``{port}`` and ``{base_url}``.

    The interpreter is this one (``sys.executable``), so the app runs in the environment that
    holds the model layer, whichever ``panel`` happens to be first on PATH.
    """
    return [
        sys.executable, "-m", "panel", "serve", str(APP_DIR),
        "--port", port,
        "--allow-websocket-origin=*",  # the browser talks to Jupyter's host, not to 127.0.0.1:port
        "--prefix", f"{base_url}{NAME}",
    ]


def setup_workbench() -> dict:
    """The jupyter-server-proxy server-process configuration (see its ``ServerProcess`` traits)."""
    return {
        "command": command(),
        "absolute_url": True,
        "timeout": START_TIMEOUT_S,
        "environment": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},  # never download at run time
        "new_browser_tab": False,  # open inside JupyterLab, next to the notebooks
        "launcher_entry": {
            "enabled": True,
            "title": TITLE,
            "icon_path": str(ICON),
            "path_info": f"{NAME}/{APP_DIR.name}",  # the launcher opens the app page, not Panel's index
            "category": "Notebook",
        },
    }
