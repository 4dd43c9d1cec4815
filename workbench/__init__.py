"""The VMMoE workbench: a Panel app that draws what the model layer computes.

``panel serve workbench`` serves ``workbench/main.py`` at ``/workbench``; notebooks call
``workbench.app.create_app()``. Bokeh also runs this file as a separate module when it serves the
folder, so it holds nothing but this docstring: shared objects live in ``pn.state.cache``
(see ``workbench/services.py``).
"""
