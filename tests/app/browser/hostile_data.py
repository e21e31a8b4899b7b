"""Hostile text for the dashboard's browser test (test_hostile_payloads.py): the payload corpus, a
context file that puts it into every field a context file fills, and the user-side fields (user
variables, comments, standalone comments) written through the database API.

Every payload carries a marker ``XSSnn``: a dialog, a script, an attribute or a request naming one
was made from a payload.
"""

from __future__ import annotations

from pathlib import Path

from backend.storage.database import DamnitDB
from backend.storage.user_variables import UserEditableVariable

PAYLOADS = {
    "img": '<img src=x onerror=alert("XSS01")>',
    "svg": '<svg onload=alert("XSS02")><circle r=9></svg>',
    "script": '<script>alert("XSS03")</script>',
    "jslink": '<a href="javascript:alert(\'XSS04\')">XSS04 click</a>',
    "mdlink": '[XSS05](javascript:alert("XSS05"))',
    "mdimg": '![XSS06](http://127.0.0.1:1/XSS06.png)',
    "entity": '&lt;b&gt;XSS07&lt;/b&gt; &amp;amp; &#60;i&#62;',
    "template": 'XSS08 {{7*7}} ${7*7} #{7*7} {0} {x}',
    "long": "XSS09" + "W" * 4995,
    "rtl": "XSS10 abc\u202edcba\u200b\u200c\u200d\ufeff end",
    "ctrl": "XSS11 a\x01b\x07c\x1bd\x7fe\x08f",
    "bokeh": "XSS12 @{x} $x @run $index @$name $$x^2$$",
    "textarea": '</textarea><script>alert("XSS13")</script>',
    "css": "</style><style>body{display:none}/*XSS14*/</style>",
    "attr": '"\'><img src=x onerror=alert("XSS15")>',
}
KEYS = list(PAYLOADS)
# The payloads that show as one unbroken line of text (the long one is shown clipped in places).
SHORT = [k for k in KEYS if k != "long"]

CONTEXT_HEAD = '''\
import sys

import numpy as np
import pandas as pd
import xarray as xr
from damnit_ctx import Skip, Variable

P = {payloads!r}
KEYS = list(P)


def nc(text):
    """NetCDF names cannot hold '/'."""
    return text.replace("/", "\\u2215")


def line(i):
    """A DataArray whose name, dimension, coordinate units and units are payloads."""
    name, dim, units = (P[KEYS[(3 * i + k) % len(KEYS)]] for k in range(3))
    x = np.arange(20, dtype=float)
    coord = xr.Variable(nc(dim), x * 0.5, attrs={{"units": units}})
    return xr.DataArray(np.sin(x / 3) + i, dims=[nc(dim)], coords={{nc(dim): coord}}, name=nc(name),
                        attrs={{"units": units, "long_name": name}})


@Variable(title="Printer")
def printer(run):
    """Prints every payload, to stdout and stderr (the run's log)."""
    for text in P.values():
        print(text)
    print(*P.values(), sep="\\n", file=sys.stderr)
    return 1


@Variable(title="Image " + P["svg"], units=P["entity"])
def picture(run):
    y, x = np.mgrid[0:40, 0:60]
    return np.sin(x / 5.0) * np.cos(y / 7.0)


@Variable(title="Map " + P["script"])
def image_map(run):
    y, x = np.mgrid[0:30, 0:40]
    return xr.DataArray(np.hypot(x - 20, y - 15), dims=[nc(P["bokeh"]), nc(P["template"])],
                        coords={{nc(P["template"]): np.arange(40) * 0.5}}, name=nc(P["img"]),
                        attrs={{"units": P["attr"]}})


@Variable(title="Plain " + P["attr"], units=P["mdlink"])
def plain_trace(run):
    return np.cos(np.arange(30) / 4.0)


@Variable(title="Dataset " + P["jslink"])
def payload_dataset(run):
    x = np.arange(10.0)
    return xr.Dataset({{nc(P[k]): ("t", x * (n + 1)) for n, k in enumerate(["img", "script", "bokeh"])}})


@Variable(title="Frame " + P["css"])
def payload_frame(run):
    frame = pd.DataFrame({{P[k]: [P[k], P["img"], P["template"]] for k in ["img", "script", "jslink", "entity",
                                                                        "bokeh", "css"]}})
    frame.index.name = P["svg"]
    return frame


@Variable(title="Cube " + P["template"])
def cube(run):
    """Frames on a numeric coordinate named like a payload (a slider picks the frame)."""
    dim = nc(P["img"])
    return xr.DataArray(np.arange(3 * 8 * 10, dtype=float).reshape(3, 8, 10), dims=[dim, "y", "x"],
                        coords={{dim: [0.5, 1.5, 2.5]}}, name=nc(P["attr"]))


@Variable(title="Shots " + P["rtl"])
def shots(run):
    """Frames on a coordinate of payloads (a list picks the frame)."""
    return xr.DataArray(np.ones((2, 6, 7)), dims=["shot", "y", "x"],
                        coords={{"shot": [P["script"], P["jslink"]]}}, name="shots")


@Variable(title="Plotly " + P["mdimg"])
def payload_plotly(run):
    import plotly.graph_objects as go
    fig = go.Figure(go.Scatter(y=[1, 3, 2], name=P["jslink"]))
    fig.update_layout(title=P["img"], xaxis_title=P["script"], yaxis_title=P["entity"])
    return fig
'''

PER_PAYLOAD = '''

@Variable(title=P[{k!r}] + " #num", description=P[{k!r}], units=P[{k!r}], tags=[P[{k!r}], "hostile"])
def num_{k}(run):
    return {i} + 0.5


@Variable(title="String {k}")
def str_{k}(run):
    return P[{k!r}]


@Variable(title="Error {k}")
def err_{k}(run):
    raise ValueError(P[{k!r}])


@Variable(title="Skip {k}")
def skip_{k}(run):
    raise Skip(P[{k!r}])
'''

LINES = '''

@Variable(title="Line {i} " + P[KEYS[{j}]])
def line_{i}(run):
    return line({i})
'''
N_LINES = 5  # three payloads each: every payload is a plot's name, dimension or units somewhere


def context_code() -> str:
    code = CONTEXT_HEAD.format(payloads=PAYLOADS)
    code += "".join(PER_PAYLOAD.format(k=k, i=i) for i, k in enumerate(KEYS))
    code += "".join(LINES.format(i=i, j=(3 * i + 1) % len(KEYS)) for i in range(N_LINES))
    return code


def user_title(key: str) -> str:
    return f"{PAYLOADS[key]} (user)"


def fill_user_fields(db_dir: Path, proposal: int, runs: list[int]) -> None:
    """User variables with hostile titles, descriptions and values; hostile run and standalone comments."""
    with DamnitDB.from_dir(db_dir) as db:
        for key in KEYS:
            db.add_user_variable(UserEditableVariable(f"uv_{key}", user_title(key), "string",
                                                      description=PAYLOADS[key]))
            db.set_user_variable_value(proposal, runs[0], f"uv_{key}", PAYLOADS[key])
        db.add_user_variable(UserEditableVariable("uv_number", "User number", "number",
                                                  description="a number typed by users"))
        for run, key in zip(runs, ["img", "textarea", "long"]):
            db.change_run_comment(proposal, run, PAYLOADS[key])
        for n, key in enumerate(KEYS):
            db.add_standalone_comment(1.7e9 + 60 * n, PAYLOADS[key])
