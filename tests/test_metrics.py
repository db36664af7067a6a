"""/metrics after a known workload shows exactly what happened, in every role; `dev` shows its
dispatcher's series next to its scheduler's."""

import asyncio
import re

import aiohttp
import grpc
from prometheus_client.parser import text_string_to_metric_families

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, fast_retry, free_port, open_channel, wait_serving


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}  # fmt: skip


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for_metric(port, name, labels, expected, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(port)
        if value(samples, name, **labels) == expected or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.1)


async def test_metrics_of_dev_after_a_known_workload_show_the_exact_counts(tmp_path, target):
    grpc_port, http_port = free_port(), free_port()
    proc = Proc(["dev", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}",
                 "--store", f"sqlite:///{tmp_path}/n.db"], log_path=tmp_path / "dev.log").start()  # fmt: skip
    target.respond("/gone", 404)
    target.respond("/broken", 500)
    try:
        await wait_serving(f"127.0.0.1:{grpc_port}", proc=proc)
        async with open_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            for path, count in (("/ok", 5), ("/gone", 3), ("/broken", 2)):
                for _ in range(count):
                    n = pb.Notify(request=pb.HttpRequest(url=target.url(path)), retry=fast_retry(max_attempts=2), queue="m")
                    await stub.CreateNotify(api.CreateNotifyRequest(notify=n))
        samples = await wait_for_metric(http_port, "notifyagent_delivered_total", {"outcome": "failed"}, 5)
        assert value(samples, "notifyagent_notifies_created_total") == 10
        assert value(samples, "notifyagent_delivered_total", outcome="succeeded") == 5
        assert value(samples, "notifyagent_delivered_total", outcome="failed") == 5
        # from the dispatcher running inside dev: 5 ok, 3 x 404 once, 2 x 500 twice
        assert value(samples, "notifyagent_attempts_total", result="ok") == 5
        assert value(samples, "notifyagent_attempts_total", result="http_error") == 7
        assert value(samples, "notifyagent_call_latency_seconds_count") == 12
        assert value(samples, "notifyagent_lateness_seconds_count") == 12
        t = f"127.0.0.1:{target.port}"
        assert value(samples, "notifyagent_target_attempts_total", target=t, result="http_error") == 7
        assert value(samples, "notifyagent_notifies", queue="m", state="succeeded") == 5
        assert value(samples, "notifyagent_notifies", queue="m", state="failed") == 5
        assert value(samples, "notifyagent_sent_ok") == 5, "the old gauge name still works"
        assert value(samples, "notifyagent_dispatcher_in_flight") == 0
    finally:
        proc.terminate()


def test_per_target_series_are_capped():
    from notifyagent.dispatcher.metrics import MAX_TARGETS, OTHER, DispatcherMetrics
    from prometheus_client import CollectorRegistry

    m = DispatcherMetrics(CollectorRegistry())
    labels = {m.target_label(f"http://host{i}.example:80/x") for i in range(MAX_TARGETS * 3)}
    assert len(labels) == MAX_TARGETS + 1 and OTHER in labels
    assert m.target_label("http://host0.example:80/y") == "host0.example:80", "a known target keeps its label"


async def test_json_log_lines_carry_the_delivery_fields_and_go_to_the_log_file(tmp_path, target):
    import json

    grpc_port = free_port()
    log_file = tmp_path / "notifyagent.log"
    proc = Proc(["dev", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db",
                 "--log-format", "json", "--log-level", "DEBUG", "--log-file", str(log_file)],
                log_path=tmp_path / "dev.log").start()  # fmt: skip
    target.respond("/fail", 404)
    try:
        await wait_serving(f"127.0.0.1:{grpc_port}", proc=proc)
        async with open_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            n = (await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(
                request=pb.HttpRequest(url=target.url("/fail")), queue="billing")))).notify  # fmt: skip
        await target.wait_for(1)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            docs = [json.loads(line) for line in log_file.read_text().splitlines()]
            mine = [d for d in docs if d.get("notify_id") == n.id]
            if len(mine) >= 2 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
    dispatcher_line = next(d for d in mine if d["logger"] == "notifyagent.dispatcher.client")
    assert dispatcher_line["attempt"] == 1 and dispatcher_line["status_code"] == 404
    assert isinstance(dispatcher_line["latency_ms"], float)
    scheduler_line = next(d for d in mine if d["logger"].startswith("notifyagent.scheduler.engine"))
    assert scheduler_line["queue"] == "billing" and scheduler_line["status_code"] == 404
    assert not [d for d in docs if d["logger"].startswith(("asyncio", "grpc")) and d["level"] == "debug"], "quiet DEBUG"
    assert log_file.read_text().splitlines() == [line for line in (tmp_path / "dev.log").read_text().splitlines()
                                                  if line.startswith("{")], "the file holds the same lines as stderr"


def test_the_grafana_dashboard_uses_only_series_the_code_exports():
    import json
    import pathlib

    root = pathlib.Path(__file__).parent.parent
    dashboard = json.loads((root / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"notifyagent_\w+", e)}
    source = "\n".join(p.read_text() for p in (root / "services").rglob("*.py"))
    assert names and [n for n in names if f'"{n}"' not in source] == []


def test_the_lateness_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from notifyagent.common.web import add_collector
    from notifyagent.scheduler.engine.model import AttemptRecord
    from notifyagent.scheduler.metrics import LATENESS_BUCKETS, SchedulerMetrics

    class Engine:  # only what SchedulerMetrics subscribes to
        class observers:  # noqa: N801
            created, attempted, finished = [], [], []

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    metrics = SchedulerMetrics(Engine(), CollectorRegistry())  # type: ignore[arg-type]
    add_collector(ours, lambda: [metrics._lateness()])  # the family _collect() yields (the rest needs an engine)
    reference = Histogram("notifyagent_lateness_seconds", "From a notify's due time to its attempt's start",
                          buckets=LATENESS_BUCKETS, registry=theirs)  # fmt: skip
    for late_ms in (-5, 0, 1, 2, 5, 10, 11, 250, 251, 999, 1000, 86_400_000, 86_400_001, 7):
        metrics._attempted(None, AttemptRecord(1, 1_000 + late_ms, 0, "d", 200, "", True, b""), 1_000)  # type: ignore[arg-type]
        reference.observe(max(0, late_ms) / 1000)
    assert generate_latest(ours) == generate_latest(theirs)
