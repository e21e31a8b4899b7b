"""How values and text are shown: the one escaping rule (``text``), numbers and times (``formatting``),
plots of stored values (``plots``) and what a run's file holds (``run_contents``), one run at a glance (``run_summary``)."""
