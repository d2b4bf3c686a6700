"""Every repair is said: when flowroutes mends something it found broken (a damaged shard recomputed, a model
cache entry rebuilt or removed, the lock of a run that died taken over), it prints one line naming what it
repaired and why, on the `flowroutes` logger (stderr unless the application configured logging otherwise).
A repair never stops the work; saying it lets a user see that part of a run was redone, and why.
"""

from __future__ import annotations

import logging

LOG = logging.getLogger("flowroutes")


def say(what: str, why: str) -> None:
    """One line: `flowroutes: repaired <what>: <why>`."""
    LOG.warning("flowroutes: repaired %s: %s", what, why)
