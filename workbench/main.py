"""What ``panel serve workbench`` runs for every browser session (served at ``/workbench``).

Resources load from the local server only: Panel's default resource mode when serving is
``server`` and the Tabulator and notification bundles ship in the panel wheel; no template or
web font is used. Callbacks run on the server's event loop (the views stream into Bokeh data
sources, which must change under the document lock); long work (store build, encoding, audits,
training) runs in threads or in its own process and is polled, so the UI does not wait on it.
"""
import panel as pn

from workbench.app import EXTENSIONS, create_app

pn.extension(*EXTENSIONS, notifications=True, disconnect_notification="Lost the server connection.")

if pn.state.served:
    create_app().servable(title="VMMoE Workbench")
