"""The Panel app served by ``panel serve`` (see ``panel_serve.sh``): one call per browser session."""

import panel as pn

from app.shell import build_app

# plotly and the ace editor (CodeEditor) are loaded after the table is drawn: app.shell.ScriptLoader.
# app/assets/tabulator_speedups.js: a faster header layout for wide tables (served by app/routes.py).
pn.extension("tabulator", notifications=True, reconnect=True,
             js_files={"damnit_tabulator_speedups": "damnit-assets/tabulator_speedups.js"})

build_app().servable(title="DAMNIT")
