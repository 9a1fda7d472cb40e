"""A short soak (bench/soak.py): the Procfile's server under load while the site fails in
every known way, one slice of the run after the other, and Redis restarts. The
invariants it checks are :func:`bench.soak.violations`'s, each failure said precisely."""

from __future__ import annotations

import pytest

from bench.soak import soak, violations

MINUTES = 0.6  # about 45 s with the servers' start


@pytest.mark.slow
def test_a_short_soak_keeps_every_invariant() -> None:
    results = soak(MINUTES)
    problems = violations(results)
    assert not problems, "\n".join(problems)
