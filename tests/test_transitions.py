"""The state table and Held: versions, and memory's moves applied to the store's counts."""

from notifyagent.scheduler.engine.model import Notification, State
from notifyagent.scheduler.engine.transitions import MOVES, Held, allowed
from support import spec


def held_notify(state: State, queue: str = "q") -> tuple[Held, Notification]:
    held, n = Held(), Notification(id="N1", spec=spec(queue=queue), state=state, create_ms=0, due_ms=0)
    held.take(n)
    return held, n


def test_finished_notifies_only_start_again_by_retry_and_a_success_is_final():
    assert MOVES[State.SUCCEEDED] == frozenset()
    assert MOVES[State.FAILED] == MOVES[State.CANCELLED] == {State.PENDING}
    assert not allowed(State.SCHEDULED, State.DELIVERING), "a grant takes only a due (PENDING) notify"


def test_every_move_gives_a_new_version_and_so_does_leaving_memory():
    held, n = held_notify(State.SCHEDULED)
    seen = [n.version]
    for state in (State.PENDING, State.DELIVERING, State.RETRY_WAIT):
        held.move(n, state, 5)
        seen.append(n.version)
    held.release(n)
    seen.append(n.version)
    assert len(set(seen)) == len(seen)


def test_counts_move_a_due_and_leased_notify_out_of_its_stored_state_until_committed():
    held, n = held_notify(State.SCHEDULED)
    stored = {("q", State.SCHEDULED): 1}
    held.move(n, State.PENDING, 0)
    assert held.counts(stored) == {("q", State.PENDING): 1}
    held.move(n, State.DELIVERING, 0)
    assert held.counts(stored) == {("q", State.DELIVERING): 1}
    held.move(n, State.RETRY_WAIT, 9)  # decided; the store still says SCHEDULED until the commit
    assert held.counts(stored) == {("q", State.RETRY_WAIT): 1}
    held.committed(n)
    assert held.counts({("q", State.RETRY_WAIT): 1}) == {("q", State.RETRY_WAIT): 1}
    held.move(n, State.PENDING, 9)
    held.release(n)  # gone from memory: the store's word again
    assert held.counts({("q", State.RETRY_WAIT): 1}) == {("q", State.RETRY_WAIT): 1}


def test_a_move_outside_the_table_is_logged_as_a_bug_and_made(caplog):
    held, n = held_notify(State.SUCCEEDED)
    held.move(n, State.DELIVERING, None)
    assert n.state == State.DELIVERING
    assert "from SUCCEEDED to DELIVERING" in caplog.text
    caplog.clear()  # the autouse check in conftest.py fails any test that leaves such a line
