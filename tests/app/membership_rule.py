"""A proposal-membership rule for the access tests (``DAMNIT_MEMBERSHIP=tests.app.membership_rule:rule``):
the facility's own rule would ask its proposal database."""

MEMBERS = {("alice", 1111), ("bob", 2222)}
CALLS: list[tuple[str, int]] = []


def rule(user: str, proposal: int) -> bool:
    CALLS.append((user, proposal))
    return (user, proposal) in MEMBERS


def signed_in(user: str, proposal: int) -> bool:
    """Every signed-in user belongs to every proposal (tests about sign-in, not membership)."""
    return bool(user)


SIGNED_IN = {"DAMNIT_MEMBERSHIP": "tests.app.membership_rule:signed_in"}
