"""One run at a glance, shared by the Inspect page and the run panel: its numbers and text as a
name/value list, and the variables that failed."""

from __future__ import annotations

import panel as pn

from app.config import get_config, zone_label
from app.display.formatting import format_summary, format_time
from app.display.run_contents import StoredVariable, holds_booleans
from app.display.text import escape, safe_text
from app.live.source import ProposalSource

SCALARS_CSS = """
.damnit-scalars { border-collapse: collapse; width: 100%; }
.damnit-scalars td { padding: 2px 8px; border-bottom: 1px solid var(--panel-border-color, #e0e0e0);
                     vertical-align: top; white-space: pre-wrap; overflow-wrap: anywhere; }
.damnit-scalars td:first-child { opacity: 0.75; width: 40%; }
"""


def scalar_table(source: ProposalSource, run: int,
                 stored: dict[str, StoredVariable] | None = None) -> pn.viewable.Viewable:
    """The run's numbers and text as name/value rows, formatted as the run table shows them (arrays get
    plots). Plain HTML with every title and value escaped: a second Tabulator per run shown costs the
    browser far more than the list is worth. ``stored`` (the run file's metadata) tells booleans, which
    runs.sqlite keeps as 0/1, from numbers."""
    tz = get_config().tz
    rows = []
    start_time = source.start_time(run)
    if start_time is not None:
        rows.append((f"Timestamp ({zone_label(tz)})", format_time(start_time, tz)))
    for name in ["comment", *source.column_names()]:
        cell = source.cell(run, name)
        if cell is None or cell.value is None:
            continue
        boolean = holds_booleans(source.variable(name).type, (stored or {}).get(name))
        rows.append((source.variable(name).display_title, format_summary(cell.value, cell.units, boolean=boolean)))
    if not rows:
        return safe_text("")
    body = "".join(f"<tr><td>{escape(name)}</td><td>{escape(value)}</td></tr>" for name, value in rows)
    return pn.pane.HTML(f"<table class='damnit-scalars'>{body}</table>", stylesheets=[SCALARS_CSS],
                        sizing_mode="stretch_width", styles={"max-height": "300px", "overflow-y": "auto"})


def error_list(source: ProposalSource, errors: list[StoredVariable]) -> pn.viewable.Viewable:
    """The variables that failed or were skipped for this run, folded away under a count."""
    lines = [f"{source.variable(v.name).display_title}: {v.error_cls or 'Error'}: {v.error}" for v in errors]
    return pn.Card(safe_text("\n".join(lines), css_classes=["damnit-errors"]),
                   title=f"{len(errors)} variable(s) failed or were skipped", collapsed=True,
                   sizing_mode="stretch_width")
