"""One module per workbench view; each is a ``pn.viewable.Viewer`` over the shared ``WorkbenchState``."""
