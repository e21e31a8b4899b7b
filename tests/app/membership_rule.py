"""A proposal-membership rule for the access tests (``DAMNIT_MEMBERSHIP=tests.app.membership_rule:rule``):
the facility's own rule would ask its proposal database."""

MEMBERS = {("alice", 1111), ("bob", 2222)}
CALLS: list[tuple[str, int]] = []


def rule(user: str, proposal: int) -> bool:
    CALLS.append((user, proposal))
    return (user, proposal) in MEMBERS
