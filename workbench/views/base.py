"""LazyView: a view that draws only while its tab is shown.

Every model view redraws when the shared state changes (new batch, row or model). Hidden views only
note that they are stale and draw when their tab is opened, so a change costs one forward pass for
the tab in front instead of one for every tab.
"""
from __future__ import annotations

import panel as pn
import param


class LazyView(pn.viewable.Viewer):
    active = param.Boolean(default=True, doc="shown now; the app sets it from the selected tab")

    def __init__(self, **params):
        self._stale = True
        super().__init__(**params)

    def should_draw(self) -> bool:
        """Call first in ``draw``: False (and remembered as stale) while the view is hidden."""
        if not self.active:
            self._stale = True
            return False
        self._stale = False
        return True

    def _repr_mimebundle_(self, include=None, exclude=None):
        # displayed on its own in a notebook cell (e.g. ``app.leakage``): it is shown, so it draws
        self.active = True
        return super()._repr_mimebundle_(include, exclude)

    @param.depends("active", watch=True)
    def _draw_when_shown(self):
        if self.active and self._stale:
            self.draw()  # each subclass's own draw, which starts with ``should_draw()``


LEAKY_OFF = "Resets on (isolated)"
LEAKY_ON = "RESETS OFF: leaky"


def leaky_toggle(owner: param.Parameterized, css_class: str, name: str = "leaky", width: int = 200) -> pn.widgets.Toggle:
    """The "resets off (leaky)" switch, plainly different on and off: an outlined grey "Resets on (isolated)"
    button when off, a solid red "RESETS OFF: leaky" one when on. Two-way linked to ``owner.<name>``."""
    toggle = pn.widgets.Toggle(value=getattr(owner, name), width=width, css_classes=[css_class])

    def look(on: bool) -> None:
        toggle.param.update(name=LEAKY_ON if on else LEAKY_OFF, button_type="danger" if on else "default",
                            button_style="solid" if on else "outline")

    look(toggle.value)
    toggle.param.watch(lambda e: (look(e.new), setattr(owner, name, e.new)), "value")
    owner.param.watch(lambda e: setattr(toggle, "value", e.new), name)
    return toggle
