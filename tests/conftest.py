import logging

import pytest

from support import System, Target, settings_for


@pytest.fixture(autouse=True)
def no_state_move_outside_the_table(caplog):
    """The engine logs a move transitions.MOVES does not list as an error: every test fails on it."""
    yield
    bad = [r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase)
           if r.name.endswith("engine.transitions") and r.levelno >= logging.ERROR]  # fmt: skip
    assert not bad, bad


@pytest.fixture
async def target():
    t = Target()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture
async def system(tmp_path):
    s = System(settings_for(tmp_path))
    await s.start()
    yield s
    await s.stop()
