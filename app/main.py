"""The Panel app served by ``panel serve`` (see ``panel_serve.sh``): one call per browser session."""

import panel as pn

from app.shell import build_app

pn.extension("tabulator", "codeeditor", "plotly", notifications=True, reconnect=True)  # page widgets need their JS up front

build_app().servable(title="DAMNIT")
