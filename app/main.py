"""The Panel app served by ``panel serve`` (see ``panel_serve.sh``): one call per browser session."""

import panel as pn

from app.shell import build_app

# plotly and the ace editor (CodeEditor) are loaded after the table is drawn: app.shell.ScriptLoader.
pn.extension("tabulator", notifications=True, reconnect=True)

build_app().servable(title="DAMNIT")
