"""In-memory form of one variable's result for one run, mirroring DAMNIT's HDF5 layout.

Shared by the summariser (which fills it), the HDF5 writer and the database writer, so that each stage
only has to agree on this one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Values of the `_damnit_objtype` attribute (docs/spec.md "HDF5: object types").
OBJTYPE_DATAARRAY = "dataarray"
OBJTYPE_DATASET = "dataset"
OBJTYPE_IMAGE = "image"
OBJTYPE_PLOTLY = "PlotlyFigure"
OBJTYPE_DATAFRAME = "dataframe"  # Parquet bytes (uint8) of a pandas DataFrame
OBJTYPE_SERIES = "series"        # Parquet bytes of a one-column DataFrame


@dataclass
class VariableResult:
    """One variable of one run: either data (+ summary, preview) or an error.

    - ``data``: None, a numpy array/scalar, str, complex, an xarray DataArray/Dataset, an RGBA uint8 array
      (``objtype='image'``) or plotly JSON as a uint8 array (``objtype='PlotlyFigure'``).
    - ``summary``: what goes in ``.reduced/<name>``: a number, str, complex, PNG bytes as a 1-D uint8
      array, or a float64 ``[2, N]`` trendline.
    - ``summary_attrs``: attributes of the ``.reduced`` dataset: ``summary_method``, ``bold``,
      ``background`` (uint8[3]), ``units``, ``max_diff``, ``summary_type``.
    - ``error``/``error_cls``: set for a failed or skipped variable; then data/summary/preview are None.
    """

    name: str
    data: Any = None
    objtype: str | None = None
    preview: Any = None
    preview_objtype: str | None = None
    summary: Any = None
    summary_attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_cls: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error is not None


@dataclass
class ReducedData:
    """A variable's summary value and metadata as stored in one run_variables row."""

    value: Any
    max_diff: float | None = None
    summary_method: str | None = ""
    summary_type: str | None = None
    attributes: dict | None = None
