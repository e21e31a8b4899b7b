"""Serving the dashboard: the ``panel_serve.sh`` command line (``serve``), the Panel app and its start-up
(``main``, ``setup``), our own HTTP routes (``routes``, ``thumbnails``), the demo proposal (``demo``) and a
launcher that tests and benchmarks start servers with (``launcher``)."""
