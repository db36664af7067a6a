import pytest

from support import System, Target, settings_for


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
