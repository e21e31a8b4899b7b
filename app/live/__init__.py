"""The live state of the dashboard: each proposal's table kept current (``source``, ``table``), what
moved (``records``), and each browser session's view of it (``session``)."""
