"""The architecture, checked: the engine owns its state, time is a port, domain rooms
know nothing of the transport. Reads the source with `ast`; nothing is imported."""

import ast
from pathlib import Path

from notifyagent.scheduler.engine.core import Engine

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "services"
ENGINE = SERVICES / "scheduler" / "engine"
STORE = SERVICES / "scheduler" / "store"
DOMAIN_ROOMS = [ENGINE, STORE]
STATE = {"live", "leases", "wheel", "ready", "sessions", "queues", "outbox"}
ENGINE_NAMES = {"engine", "_engine", "e", "_e"}  # what callers name an Engine
MAX_ENGINE_MODULE_LINES = 300


def sources(*roots: Path):
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "v1" not in path.relative_to(SERVICES.parent).parts:
                yield path, ast.parse(path.read_text(), str(path))


def is_engine(node: ast.expr) -> bool:
    """engine, self._engine, system.scheduler.engine, e ..."""
    if isinstance(node, ast.Name):
        return node.id in ENGINE_NAMES
    return isinstance(node, ast.Attribute) and node.attr in ENGINE_NAMES


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_nothing_outside_the_engine_touches_its_state():
    outside = [p for p in (SERVICES, ROOT / "tests", ROOT / "bench") if p.exists()]
    bad = []
    for path, tree in sources(*outside):
        if ENGINE in path.parents or path.name == "test_structure.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_engine(node.value):
                if node.attr.startswith("_") or node.attr in STATE:
                    bad.append(f"{where(path, node)}: .{node.attr} on the engine")
            if isinstance(node, ast.Attribute) and node.attr == "outbox":
                bad.append(f"{where(path, node)}: a session's outbox has one consumer, its stream's writer")
    assert not bad, "use the Engine's methods or its snapshot():\n" + "\n".join(bad)


def test_the_engine_has_no_public_state_to_reach_into():
    public = {name for name in vars(Engine(store=None)) if not name.startswith("_")}
    assert not public, f"Engine attributes others could change: {sorted(public)}"
    assert not STATE & set(dir(Engine)), "state is read through snapshot(), not attributes"


# The one exception: the store's codec reads and writes the store's own format, a StoredSpec
# (proto/notifyagent/v1/storage.proto), so it imports that generated message module and no other.
STORAGE_FORMAT = (STORE / "codec.py", "...v1", ["storage_pb2"])


def test_domain_rooms_import_neither_the_api_room_nor_grpc():
    bad = []
    for path, tree in sources(*DOMAIN_ROOMS):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
                if (path, names[0], [a.name for a in node.names]) == STORAGE_FORMAT:
                    continue
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.lstrip(".").split(".")
                if parts[0] in ("grpc", "google", "grpc_status") or "api" in parts or "v1" in parts:
                    bad.append(f"{where(path, node)}: imports {name}")
    assert not bad, "domain rooms (engine/, store/) stay free of the transport:\n" + "\n".join(bad)


def test_the_engine_reads_time_only_through_its_clock():
    bad = []
    for path, tree in sources(ENGINE):
        if path.name == "clock.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("call_at", "call_later", "monotonic", "time", "sleep"):
                if isinstance(node.value, ast.Name) and node.value.id in ("time", "loop") or node.attr in ("call_later", "monotonic"):
                    bad.append(f"{where(path, node)}: {ast.unparse(node)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "asyncio.sleep":
                if not (node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == 0):
                    bad.append(f"{where(path, node)}: {ast.unparse(node)} (a yield is asyncio.sleep(0); waits go through the clock)")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "asyncio.wait_for":
                bad.append(f"{where(path, node)}: asyncio.wait_for (use clock.wait_event)")
    assert not bad, "the engine asks its Clock for the time and for timers:\n" + "\n".join(bad)


def test_the_engine_checks_versions_not_identities():
    """`live.get(id) is n` compared objects, and a `committing` flag marked leases; a
    notify's version says whether it moved on."""
    bad = []
    for path, tree in sources(ENGINE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
                text = ast.unparse(node)
                none = any(isinstance(o, ast.Constant) for o in [node.left, *node.comparators])  # `x is None`
                if not none and "session" not in text:  # a session is compared as itself: it is one stream
                    bad.append(f"{where(path, node)}: {text}")
            if isinstance(node, ast.Attribute) and node.attr in ("committing", "stored_state"):
                bad.append(f"{where(path, node)}: .{node.attr}")
    assert not bad, "compare versions:\n" + "\n".join(bad)


def test_each_engine_module_reads_in_one_sitting():
    long = {p.name: n for p, _ in sources(ENGINE) if (n := len(p.read_text().splitlines())) > MAX_ENGINE_MODULE_LINES}
    assert not long, f"split these by job: {long}"


def test_one_http_method_table_and_it_matches_the_proto_enum():
    from notifyagent.common.calls import METHOD_BY_NUMBER
    from notifyagent.v1 import notify_pb2 as pb

    assert {pb.HttpMethod.Value(f"HTTP_METHOD_{m}"): m for m in METHOD_BY_NUMBER.values()} == METHOD_BY_NUMBER
    assert len(pb.HttpMethod.keys()) == len(METHOD_BY_NUMBER) + 1, "every method but UNSPECIFIED has its name"
    tables = [
        where(path, node)
        for path, tree in sources(SERVICES)
        if path.name != "calls.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == "PATCH"
    ]
    assert not tables, f"HTTP methods are listed in common/calls.py only: {tables}"
