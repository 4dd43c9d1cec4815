"""What ``panel serve workbench`` runs for every browser session (served at ``/workbench``).

Resources load from the local server only: Panel's default resource mode when serving is
``server`` and the Tabulator and notification bundles ship in the panel wheel; no template or
web font is used. Callbacks run in a small thread pool so one session's plotting does not
hold up the others; long work (store build, encoding, training) runs outside the UI anyway.
"""
import panel as pn

from workbench.app import EXTENSIONS, create_app

pn.extension(*EXTENSIONS, notifications=True, nthreads=4, disconnect_notification="Lost the server connection.")

if pn.state.served:
    create_app().servable(title="VMMoE Workbench")
