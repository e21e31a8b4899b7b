"""Creating a DAMNIT folder: its database, its context file and user variables copied from another one."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from backend.base.paths import DB_NAME, db_path

from .database import DamnitDB


def initialize_proposal(db_dir: str | os.PathLike, proposal: int | None = None,
                        context_file_src: str | os.PathLike | None = None,
                        user_vars_src: str | os.PathLike | None = None,
                        context_python: str | None = None) -> DamnitDB:
    """Create (or reuse) a DAMNIT directory: runs.sqlite, context.py and optionally copied user variables.

    `user_vars_src` is another runs.sqlite (or its directory) whose user-editable variables are copied
    into a newly created database.
    """
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    if db_dir.stat().st_uid == os.getuid():
        os.chmod(db_dir, 0o777)
    new_db = not db_path(db_dir).is_file()
    if new_db:
        if proposal is None:
            raise ValueError(f"A proposal number is needed to create a new database in {db_dir}")
        db = DamnitDB.from_dir(db_dir, create=True)
        db.metameta.update(proposal=int(proposal), context_python=context_python or sys.executable)
    else:
        db = DamnitDB.from_dir(db_dir)

    context_path = db_dir / "context.py"
    if not context_path.is_file():
        if context_file_src is not None:
            shutil.copyfile(context_file_src, context_path)
        else:
            context_path.touch()
        os.chmod(context_path, 0o666)

    if new_db and user_vars_src is not None:
        src = Path(user_vars_src)
        with DamnitDB(src / DB_NAME if src.is_dir() else src, read_only=True) as prev:
            for var in prev.get_user_variables().values():
                db.add_user_variable(var, exist_ok=True)
    return db
