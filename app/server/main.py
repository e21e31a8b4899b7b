"""The Panel app served by ``panel serve`` (see ``panel_serve.sh``): one call per browser session."""

import panel as pn

from app.shell import build_app

# plotly and the ace editor (CodeEditor) are loaded after the table is drawn: app.shell.ScriptLoader.
# Browser code of app/assets/ (served by app/server/routes.py): a faster header layout for wide tables, and
# the stored thumbnail shown when hovering one in the table.
pn.extension("tabulator", notifications=True, reconnect=True,
             js_files={"damnit_tabulator_speedups": "damnit-assets/tabulator_speedups.js",
                       "damnit_thumbnail_preview": "damnit-assets/thumbnail_preview.js"})

build_app().servable(title="DAMNIT")
