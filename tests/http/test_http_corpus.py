"""Every corpus case (tests/http/corpus/) against HTTPConnection over a socketpair."""

from __future__ import annotations

import pytest
from corpus_cases import Case, check_case, load_cases
from httphelpers import exchange

from testproject.parse import application as parse_app

CASES = load_cases()


def test_corpus_is_big_enough():
    assert len([c for c in CASES if c.valid]) >= 30
    assert len([c for c in CASES if not c.valid]) >= 100


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case: Case):
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return parse_app(environ, start_response)

    ex = exchange(app, case.raw, keepalive=True, shutdown=case.shutdown, **case.all_settings)
    assert not ex.errors
    check_case(case, ex.raw)
    if not case.valid:
        assert ex.results[-1] is False, "the connection must close"
        if case.app is False:
            assert calls == []
    else:
        assert len(calls) == len([s for s in case.statuses if s >= 200])
