"""What moves in a proposal's live table: the ``Change`` every session receives."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Change:
    """What moved in one update; sessions patch exactly this.

    ``new_runs``/``changed`` hold row keys; ``changed`` maps key → names whose cells changed (including
    ``start_time`` and ``comment``). ``processing`` lists row keys whose processing state changed.
    ``run_states`` means the source's failed or waiting runs (``ProposalSource.run_states``) changed,
    or the context file did (which failures are worth reprocessing); their row keys are in ``processing``.
    ``reset`` means "reload everything" (first load or the DB was replaced). ``loaded`` means the older
    runs of a big proposal, opened newest first, arrived (their cells are in ``changed``).
    """

    new_runs: list[int] = field(default_factory=list)
    changed: dict[int, set[str]] = field(default_factory=dict)
    variables: bool = False
    comments: bool = False  # standalone comments changed
    processing: list[int] = field(default_factory=list)
    run_states: bool = False
    connection: bool = False
    reset: bool = False
    loaded: bool = False
    message_time: float | None = None  # wall time the triggering message arrived (latency tracing)

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.changed or self.variables or self.comments or self.processing
                    or self.run_states or self.connection or self.reset or self.loaded)
