"""Layer 3, services: the run-event listener and its database, Slurm jobs, supervisord, the combiner and
the job entry point. Imports only the layers below."""
