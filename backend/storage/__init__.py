"""Layer 1, storage: runs.sqlite (schema, migrations, every SQL query), the per-run HDF5 files, the
in-memory records both hold, user-editable variable types, and the read API. Imports only ``backend.base``."""
