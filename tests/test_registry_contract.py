"""Registry behaviour: one contract suite over every adapter, then adapter specifics.

The contract runs against MemoryRegistry, ConsulRegistry on the fake Consul in
tests/fake_consul.py (bare and wrapped in CachedRegistry) and, when
CONSUL_HTTP_ADDR is set, ConsulRegistry on that real Consul.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from fake_consul import FakeConsul
from notifyagent.registry import (
    CachedRegistry,
    ConsulRegistry,
    MemoryCatalog,
    MemoryRegistry,
    Node,
    Registry,
    RegistryUnavailable,
    Service,
    ServiceNotFound,
    StaticRegistry,
    WatcherStopped,
    from_url,
)

ADAPTERS = ["memory", "consul-fake", "cached-consul-fake", "consul-real"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def healthy_ids(registry: Registry, name: str) -> set[str]:
    try:
        return {node.id for node in await registry.get_service(name)}
    except ServiceNotFound:
        return set()


async def eventually(
    probe: Callable[[], Awaitable[object]], expected: object, *, within: float = 5.0
) -> None:
    """Real Consul syncs its catalogue asynchronously; the others settle at once."""
    deadline = asyncio.get_running_loop().time() + within
    while (actual := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {actual!r}, expected {expected!r}"
        await asyncio.sleep(0.02)


def consul_factory(host: str, port: int) -> Callable[[], ConsulRegistry]:
    return lambda: ConsulRegistry(host=host, port=port, watch_wait=5.0, retry_attempts=2)


@pytest.fixture
async def fake_consul() -> AsyncIterator[FakeConsul]:
    fake = FakeConsul()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(params=ADAPTERS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Registry]]:
    """A factory of registries that share one backend (one catalogue, one Consul)."""
    fake: FakeConsul | None = None
    if request.param == "memory":
        catalog = MemoryCatalog()
        factory: Callable[[], Registry] = lambda: MemoryRegistry(catalog)  # noqa: E731
    elif request.param == "consul-real":
        address = os.environ.get("CONSUL_HTTP_ADDR")
        if not address:
            pytest.skip(
                "set CONSUL_HTTP_ADDR (e.g. 127.0.0.1:8500) to run the contract against a real Consul"
            )
        parts = urlsplit(address if "//" in address else f"//{address}")
        factory = consul_factory(parts.hostname or "127.0.0.1", parts.port or 8500)
    else:
        fake = FakeConsul()
        await fake.start()
        consul = consul_factory("127.0.0.1", fake.port)
        # The cache shows other registries' changes within its ttl: keep it short here.
        factory = consul if request.param == "consul-fake" else lambda: CachedRegistry(consul(), ttl=0.2)
    made: list[Registry] = []

    def make() -> Registry:
        made.append(factory())
        return made[-1]

    yield make
    for registry in made:
        await registry.close()
    if fake is not None:
        await fake.stop()


@pytest.fixture
def registry(backend: Callable[[], Registry]) -> Registry:
    return backend()


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


# -- the contract ---------------------------------------------------------


async def test_registered_node_is_returned_with_its_address_port_and_metadata(
    registry: Registry, name: str
) -> None:
    node = Node(f"{name}-1", "127.0.0.1", 9001, {"version": "1.2.3"})
    await registry.register(name, node, ttl=5)
    await eventually(lambda: registry.get_service(name), [node])


async def test_unknown_service_raises_service_not_found(registry: Registry, name: str) -> None:
    with pytest.raises(ServiceNotFound):
        await registry.get_service(name)


async def test_deregistered_node_is_no_longer_returned(registry: Registry, name: str) -> None:
    await registry.register(name, Node(f"{name}-1", "127.0.0.1", 9001), ttl=5)
    await registry.register(name, Node(f"{name}-2", "127.0.0.1", 9002), ttl=5)
    await eventually(lambda: healthy_ids(registry, name), {f"{name}-1", f"{name}-2"})
    await registry.deregister(name, f"{name}-1")
    await eventually(lambda: healthy_ids(registry, name), {f"{name}-2"})


async def test_deregistering_an_unknown_node_is_a_no_op(registry: Registry, name: str) -> None:
    await registry.deregister(name, f"{name}-never-registered")


async def test_registering_a_node_again_replaces_it(registry: Registry, name: str) -> None:
    await registry.register(name, Node(f"{name}-1", "127.0.0.1", 9001, {"v": "1"}), ttl=5)
    await registry.register(name, Node(f"{name}-1", "127.0.0.1", 9002, {"v": "2"}), ttl=5)
    await eventually(lambda: registry.get_service(name), [Node(f"{name}-1", "127.0.0.1", 9002, {"v": "2"})])


async def test_list_services_includes_a_registered_service_with_its_nodes(
    registry: Registry, name: str
) -> None:
    node = Node(f"{name}-1", "127.0.0.1", 9001)
    await registry.register(name, node, ttl=5)

    async def ours() -> list[Service]:
        return [s for s in await registry.list_services() if s.name == name]

    await eventually(ours, [Service(name, (node,))])


async def test_heartbeat_keeps_a_node_healthy_long_past_its_ttl(registry: Registry, name: str) -> None:
    await registry.register(name, Node(f"{name}-1", "127.0.0.1", 9001), ttl=0.4)
    await eventually(lambda: healthy_ids(registry, name), {f"{name}-1"})
    for _ in range(4):
        await asyncio.sleep(0.25)
        assert await healthy_ids(registry, name) == {f"{name}-1"}


async def test_watch_reports_a_register_and_then_a_deregister(registry: Registry, name: str) -> None:
    node = Node(f"{name}-1", "127.0.0.1", 9001)
    watcher = await registry.watch(name)
    assert await asyncio.wait_for(watcher.next(), 5) == []
    await registry.register(name, node, ttl=5)
    assert await asyncio.wait_for(watcher.next(), 5) == [node]
    await registry.deregister(name, node.id)
    assert await asyncio.wait_for(watcher.next(), 5) == []
    watcher.stop()


async def test_stop_wakes_a_pending_watch_next_with_watcher_stopped(registry: Registry, name: str) -> None:
    watcher = await registry.watch(name)
    await asyncio.wait_for(watcher.next(), 5)
    pending = asyncio.create_task(watcher.next())
    await asyncio.sleep(0.05)
    watcher.stop()
    with pytest.raises(WatcherStopped):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(WatcherStopped):
        await watcher.next()


async def test_close_deregisters_only_what_that_registry_registered(
    backend: Callable[[], Registry], name: str
) -> None:
    first, second = backend(), backend()
    await first.register(name, Node(f"{name}-1", "127.0.0.1", 9001), ttl=5)
    await second.register(name, Node(f"{name}-2", "127.0.0.1", 9002), ttl=5)
    await eventually(lambda: healthy_ids(second, name), {f"{name}-1", f"{name}-2"})
    await first.close()
    await first.close()  # idempotent
    await eventually(lambda: healthy_ids(second, name), {f"{name}-2"})



# -- static ---------------------------------------------------------------


async def test_static_registry_resolves_every_service_name_to_the_configured_nodes() -> None:
    registry = StaticRegistry(["10.0.0.1:50051", " sched.internal:7000", "[::1]:50052"])
    expected = [
        Node("10.0.0.1:50051", "10.0.0.1", 50051),
        Node("sched.internal:7000", "sched.internal", 7000),
        Node("[::1]:50052", "::1", 50052),
    ]
    assert await registry.get_service("notifyagent.scheduler") == expected
    assert await registry.get_service("anything-else") == expected
    await registry.register("x", Node("n", "127.0.0.1", 1), ttl=1)  # accepted, changes nothing
    await registry.deregister("x", "n")
    assert await registry.get_service("x") == expected
    await registry.close()


@pytest.mark.parametrize(
    "address", ["", "host", "host:", ":50051", "host:0", "host:65536", "host:http", "::1:80"]
)
def test_static_registry_rejects_an_address_that_is_not_host_and_port(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        StaticRegistry([address])


async def test_static_watch_returns_the_nodes_once_then_waits_until_stopped() -> None:
    registry = StaticRegistry(["127.0.0.1:50051"])
    watcher = await registry.watch("notifyagent.scheduler")
    assert await watcher.next() == [Node("127.0.0.1:50051", "127.0.0.1", 50051)]
    pending = asyncio.create_task(watcher.next())
    await asyncio.sleep(0.02)
    assert not pending.done()
    await registry.close()
    with pytest.raises(WatcherStopped):
        await pending


# -- from_url ---------------------------------------------------------------


async def test_from_url_builds_the_adapter_each_form_names() -> None:
    assert isinstance(from_url("memory"), MemoryRegistry)
    static = from_url("static:127.0.0.1:50051,127.0.0.1:50052")
    assert isinstance(static, StaticRegistry)
    assert [n.port for n in await static.get_service("any")] == [50051, 50052]
    consul = from_url("consul://127.0.0.1:8500")
    assert isinstance(consul, CachedRegistry) and isinstance(consul.inner, ConsulRegistry)
    assert consul.inner.api.base_url == "http://127.0.0.1:8500"
    await consul.close()


@pytest.mark.parametrize(
    "url",
    ["", "redis://127.0.0.1", "memory://", "static:", "static:127.0.0.1", "consul://", "consul://h:port"],
)
def test_from_url_rejects_a_bad_url_naming_notify_registry_and_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match="NOTIFY_REGISTRY") as error:
        from_url(url)
    assert all(form in str(error.value) for form in ("memory", "static:host:port", "consul://host:port"))


# -- TTL expiry -------------------------------------------------------------


async def test_memory_node_that_stops_heartbeating_drops_out_after_its_ttl(name: str) -> None:
    clock = FakeClock()
    catalog = MemoryCatalog(clock=clock)
    node = Node(f"{name}-1", "127.0.0.1", 9001)
    catalog.register(name, node, ttl=10)  # registered by a process that then died: no heartbeats
    registry = MemoryRegistry(catalog)
    watcher = await registry.watch(name)
    assert await watcher.next() == [node]
    clock.advance(9.9)
    assert await registry.get_service(name) == [node]
    clock.advance(0.2)
    with pytest.raises(ServiceNotFound):
        await registry.get_service(name)
    assert await asyncio.wait_for(watcher.next(), 5) == []
    await registry.close()


async def test_consul_node_that_stops_heartbeating_drops_out_after_its_ttl(
    fake_consul: FakeConsul, name: str
) -> None:
    registration = {
        "ID": f"{name}-1",
        "Name": name,
        "Address": "127.0.0.1",
        "Port": 9001,
        "Check": {"CheckID": f"service:{name}-1", "TTL": "300ms", "DeregisterCriticalServiceAfter": "1m"},
    }
    base = f"http://{fake_consul.address}/v1"
    async with aiohttp.ClientSession() as http:  # a process that registers, passes once, dies
        (await http.put(f"{base}/agent/service/register", json=registration)).raise_for_status()
        (await http.put(f"{base}/agent/check/pass/service:{name}-1")).raise_for_status()
    registry = consul_factory("127.0.0.1", fake_consul.port)()
    watcher = await registry.watch(name)
    assert [n.id for n in await watcher.next()] == [f"{name}-1"]
    assert await asyncio.wait_for(watcher.next(), 5) == []
    with pytest.raises(ServiceNotFound):
        await registry.get_service(name)
    await registry.close()


async def test_consul_heartbeat_registers_again_after_the_agent_forgets_the_node(
    fake_consul: FakeConsul, name: str
) -> None:
    registry = consul_factory("127.0.0.1", fake_consul.port)()
    await registry.register(name, Node(f"{name}-1", "127.0.0.1", 9001), ttl=0.3)
    fake_consul.forget_service(f"{name}-1")
    await eventually(lambda: healthy_ids(registry, name), {f"{name}-1"}, within=2)
    await registry.close()


# -- unavailability and the cache --------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_consul_raises_registry_unavailable(name: str) -> None:
    registry = consul_factory("127.0.0.1", free_port())()
    with pytest.raises(RegistryUnavailable) as error:
        await registry.get_service(name)
    assert error.value.retryable
    await registry.close()


async def test_cached_registry_serves_the_last_good_answer_while_consul_is_down(
    fake_consul: FakeConsul, name: str
) -> None:
    registry = CachedRegistry(consul_factory("127.0.0.1", fake_consul.port)(), ttl=0)
    node = Node(f"{name}-1", "127.0.0.1", 9001)
    await registry.register(name, node, ttl=5)
    assert await registry.get_service(name) == [node]
    await fake_consul.stop()
    assert await registry.get_service(name) == [node]
    with pytest.raises(RegistryUnavailable):
        await registry.get_service(f"{name}-never-seen")
    await registry.close()


class FlakyRegistry(MemoryRegistry):
    """A memory registry that counts get_service calls and can be made unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.down = False

    async def get_service(self, name: str) -> list[Node]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise RegistryUnavailable("down")
        return await super().get_service(name)


async def test_cached_registry_throttles_refreshes_and_coalesces_concurrent_ones(name: str) -> None:
    clock, inner = FakeClock(), FlakyRegistry()
    registry = CachedRegistry(inner, ttl=5, retry_interval=1, clock=clock)
    node = Node(f"{name}-1", "127.0.0.1", 9001)
    await inner.register(name, node, ttl=60)
    assert await asyncio.gather(*(registry.get_service(name) for _ in range(5))) == [[node]] * 5
    assert inner.calls == 1, "concurrent misses share one refresh"
    clock.advance(4)
    await registry.get_service(name)
    assert inner.calls == 1, "fresh for ttl"
    inner.down = True
    clock.advance(2)
    assert await registry.get_service(name) == [node]
    assert inner.calls == 2
    clock.advance(0.5)
    assert await registry.get_service(name) == [node]
    assert inner.calls == 2, "no new attempt within retry_interval of a failure"
    clock.advance(1)
    inner.down = False
    assert await registry.get_service(name) == [node]
    assert inner.calls == 3
    await registry.close()


async def test_cached_registry_does_not_serve_stale_nodes_once_the_service_is_gone(name: str) -> None:
    clock, inner = FakeClock(), FlakyRegistry()
    registry = CachedRegistry(inner, ttl=5, clock=clock)
    await inner.register(name, Node(f"{name}-1", "127.0.0.1", 9001), ttl=60)
    await registry.get_service(name)
    await inner.deregister(name, f"{name}-1")
    clock.advance(6)
    with pytest.raises(ServiceNotFound):
        await registry.get_service(name)
    await registry.close()
