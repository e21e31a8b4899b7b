"""Layer 2, processing: context workers, summaries, and the run processor that stores their results.
Imports only the layers below (storage, base); runs ``backend/ctxsupport`` as separate processes."""
