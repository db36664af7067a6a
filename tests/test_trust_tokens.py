"""Tokens and scopes on real processes: who may call what, the codes they get, SIGHUP,
the safe default, /metrics behind a token; the tokens file and bearer header under fuzz."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import aiohttp
import grpc
import pytest

from notifyagent.common import auth
from notifyagent.common.config import ConfigError
from notifyagent.v1 import admin_service_pb2 as admin, admin_service_pb2_grpc, dispatch_service_pb2 as dpb, dispatch_service_pb2_grpc
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, Trust, free_port, open_channel, wait_serving, wait_until


class Running:
    """A scheduler process and a dispatcher process with tokens on; stubs per token name."""

    def __init__(self, tmp_path, trust: Trust, *, extra=(), env=None):
        self.trust = trust
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        base = {**trust.env(), **(env or {})}
        self.scheduler = Proc(["scheduler", "--grpc-addr", self.addr, "--store", f"sqlite:///{tmp_path}/n.db", *extra],
                              log_path=tmp_path / "scheduler.log", env={"NOTIFY_HTTP_ADDR": "", **base})  # fmt: skip
        self.dispatcher = Proc(["dispatcher", "--registry", f"static:{self.addr}", "--http-addr", "", "--allow-networks", "127.0.0.0/8"],
                               log_path=tmp_path / "dispatcher.log", env=trust.env("dispatcher"))  # fmt: skip
        self.channels = []

    async def start(self, dispatcher=True):
        self.scheduler.start()
        await wait_serving(self.addr, proc=self.scheduler)
        if dispatcher:
            self.dispatcher.start()
            admin_stub = self.admin("admin")
            deadline = time.monotonic() + 20
            while not (await admin_stub.GetStatus(admin.GetStatusRequest())).dispatchers:
                assert time.monotonic() < deadline, self.dispatcher.log()
                await asyncio.sleep(0.1)
        return self

    def channel(self, token_name: str | None):
        ch = open_channel(self.addr, self.trust.tokens[token_name] if token_name else "")
        self.channels.append(ch)
        return ch

    def api(self, token_name):
        return notify_service_pb2_grpc.NotifyServiceStub(self.channel(token_name))

    def admin(self, token_name):
        return admin_service_pb2_grpc.AdminServiceStub(self.channel(token_name))

    async def stop(self):
        for ch in self.channels:
            await ch.close()
        # The scheduler stops first, while its dispatcher can still report what it holds: killed
        # first, its leases would keep the scheduler's drain waiting out the whole grace.
        await asyncio.to_thread(self.scheduler.terminate)
        self.dispatcher.kill()


@pytest.fixture
async def running(tmp_path):
    r = await Running(tmp_path, Trust.make(tmp_path)).start()
    yield r
    await r.stop()


def create_request(url, **headers):
    return api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=url, headers=headers)))


async def succeeded(stub, notify_id, timeout=10.0) -> pb.Notify:
    deadline = time.monotonic() + timeout
    while (n := (await stub.GetNotify(api.GetNotifyRequest(id=notify_id))).notify).state != pb.STATE_SUCCEEDED:
        assert time.monotonic() < deadline, f"notify {notify_id} is {pb.State.Name(n.state)}"
        await asyncio.sleep(0.05)
    return n


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def lease_refusal(channel) -> grpc.StatusCode:
    """Opens a Lease with a generous hello; answers the code it ends with (OK if a grant came)."""
    hello = dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="intruder", capacity=100, credit=100))

    async def requests():
        yield hello
        await asyncio.sleep(3600)

    call = dispatch_service_pb2_grpc.DispatchServiceStub(channel).Lease(requests())
    try:
        async for resp in call:
            if resp.grants:
                call.cancel()
                return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def test_anonymous_or_client_scoped_lease_is_refused_and_a_dispatcher_token_delivers(running, target):
    waiting = await running.api("client").CreateNotify(create_request(target.url("/first")))
    assert await lease_refusal(running.channel(None)) == grpc.StatusCode.UNAUTHENTICATED
    assert await lease_refusal(open_channel(running.addr, "not-a-token")) == grpc.StatusCode.UNAUTHENTICATED
    assert await lease_refusal(running.channel("client")) == grpc.StatusCode.PERMISSION_DENIED
    assert await lease_refusal(running.channel("read")) == grpc.StatusCode.PERMISSION_DENIED
    got = await succeeded(running.api("read"), waiting.notify.id)  # the real dispatcher, with its dispatcher token
    assert len(got.attempts) == 1 and got.attempts[0].dispatcher_id.endswith("@dispatcher"), "one attempt, by the real one"
    assert got.created_by == "client"
    log = running.scheduler.log()
    assert "refused /notifyagent.v1.DispatchService/Lease: UNAUTHENTICATED" in log
    assert "refused /notifyagent.v1.DispatchService/Lease: PERMISSION_DENIED: token 'client'" in log


async def test_each_scope_reaches_only_its_rpcs(running, target):
    url = target.url("/s")
    assert await code_of(running.api(None).CreateNotify(create_request(url))) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(running.api(None).GetNotify(api.GetNotifyRequest(id="x"))) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(running.api("read").CreateNotify(create_request(url))) == grpc.StatusCode.PERMISSION_DENIED, \
        "a read token cannot create"
    assert await code_of(running.api("read").CancelNotify(api.CancelNotifyRequest(id="x"))) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(running.api("dispatcher").ListNotifies(api.ListNotifiesRequest())) == grpc.StatusCode.PERMISSION_DENIED
    created = (await running.api("client").CreateNotify(create_request(url))).notify
    assert created.created_by == "client"
    assert (await running.api("read").GetNotify(api.GetNotifyRequest(id=created.id))).notify.id == created.id
    assert [n.id for n in (await running.api("read").ListNotifies(api.ListNotifiesRequest())).notifies] == [created.id]
    # AdminService is admin's alone
    assert await code_of(running.admin("client").PauseQueue(admin.PauseQueueRequest(name="default"))) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(running.admin("client").GetStatus(admin.GetStatusRequest())) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(running.admin(None).SetQueueLimits(admin.SetQueueLimitsRequest(name="default", rate=0.001))) == \
        grpc.StatusCode.UNAUTHENTICATED
    paused = (await running.admin("admin").PauseQueue(admin.PauseQueueRequest(name="default"))).queue
    assert paused.paused
    await running.admin("admin").ResumeQueue(admin.ResumeQueueRequest(name="default"))
    assert "/notifyagent.v1.AdminService/PauseQueue by token admin" in running.scheduler.log(), "admin changes name their token"
    by_admin = (await running.api("admin").CreateNotify(create_request(url))).notify
    assert by_admin.created_by == "admin"
    await target.wait_for(2, timeout=10)


async def test_health_and_reflection_stay_open(running):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(running.channel(None))
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    out = await asyncio.to_thread(subprocess.run, [_grpcurl(), "-plaintext", running.addr, "list"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "notifyagent.v1.NotifyService" in out.stdout, out.stderr


def _grpcurl() -> str:
    return os.path.join(os.path.dirname(sys.executable), "grpcurl")


async def test_grpcurl_with_a_bearer_token(running, target):
    base = [_grpcurl(), "-plaintext", "-d", f'{{"notify": {{"request": {{"url": "{target.url("/g")}"}}}}}}']
    refused = await asyncio.to_thread(subprocess.run, [*base, running.addr, "notifyagent.v1.NotifyService/CreateNotify"],
                                      capture_output=True, text=True, timeout=30)  # fmt: skip
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
    header = f"authorization: Bearer {running.trust.tokens['client']}"
    ok = await asyncio.to_thread(subprocess.run, [*base, "-H", header, running.addr, "notifyagent.v1.NotifyService/CreateNotify"],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    made = json.loads(ok.stdout)["notify"]
    assert made.get("createdBy", made.get("created_by")) == "client"
    await target.wait_for(1, timeout=10)


async def test_cli_sends_notify_token(running, target):
    def cli(token, *args):
        env = {**os.environ, "NOTIFY_TOKEN": token}
        return subprocess.run([sys.executable, "-m", "notifyagent", *args, "--addr", running.addr],
                              capture_output=True, text=True, timeout=30, env=env)  # fmt: skip

    sent = await asyncio.to_thread(cli, running.trust.tokens["client"], "send", target.url("/cli"))
    assert sent.returncode == 0, sent.stderr
    refused = await asyncio.to_thread(cli, "", "send", target.url("/cli"))
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and "NOTIFY_TOKEN" in refused.stderr
    status = await asyncio.to_thread(cli, running.trust.tokens["read"], "status")
    assert status.returncode == 1 and "PERMISSION_DENIED" in status.stderr and "admin" in status.stderr
    assert running.trust.tokens["client"] not in running.scheduler.log(), "tokens never reach the log"


async def test_sighup_reads_the_tokens_file_again_and_a_bad_file_keeps_the_old_tokens(tmp_path, target):
    trust = Trust.make(tmp_path)
    running = await Running(tmp_path, trust).start(dispatcher=False)
    try:
        newcomer, line = auth.new_token("newcomer", "client")
        stub = notify_service_pb2_grpc.NotifyServiceStub(open_channel(running.addr, newcomer))
        assert await code_of(stub.ListNotifies(api.ListNotifiesRequest())) == grpc.StatusCode.UNAUTHENTICATED
        trust.tokens_file.write_text(trust.tokens_file.read_text() + line + "\n")
        running.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "tokens file" in running.scheduler.log(), 10, "the SIGHUP reload")
        await stub.ListNotifies(api.ListNotifiesRequest())
        good = trust.tokens_file.read_text()
        trust.tokens_file.write_text(good + "broken line\n")
        running.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "keeping the" in running.scheduler.log(), 10, "the refused reload")
        await stub.ListNotifies(api.ListNotifiesRequest())  # the old tokens are still in force
        assert "line 9: expected `NAME SCOPES sha256:HEX`, got 2 fields" in running.scheduler.log()
        trust.tokens_file.write_text("\n".join(ln for ln in good.splitlines() if not ln.startswith("newcomer")) + "\n")
        running.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: running.scheduler.log().count("tokens file") >= 2, 10, "the second reload")
        assert await code_of(stub.ListNotifies(api.ListNotifiesRequest())) == grpc.StatusCode.UNAUTHENTICATED, "revoked"
    finally:
        await running.stop()


@pytest.mark.parametrize("role", ["scheduler", "dev"])
async def test_without_tokens_a_non_loopback_address_is_refused_unless_insecure(tmp_path, role):
    port = free_port()
    args = [sys.executable, "-m", "notifyagent", role, "--grpc-addr", f"0.0.0.0:{port}", "--http-addr", "",
            "--store", f"sqlite:///{tmp_path}/n.db"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    out = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOTIFY_GRPC_ADDR=0.0.0.0" in lines[0] and "NOTIFY_INSECURE=true" in lines[0], out.stderr
    no_tokens = {"NOTIFY_TOKENS_FILE": "", "NOTIFY_TOKEN": ""}
    proc = Proc(args[3:], log_path=tmp_path / "insecure.log", env={**env, **no_tokens, "NOTIFY_INSECURE": "true"}).start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
    finally:
        await asyncio.to_thread(proc.terminate)


async def test_metrics_can_require_a_read_token(tmp_path):
    trust = Trust.make(tmp_path)
    http_port = free_port()
    running = Running(tmp_path, trust, env={"NOTIFY_HTTP_ADDR": f"127.0.0.1:{http_port}", "NOTIFY_METRICS_AUTH": "true"})
    await running.start(dispatcher=False)
    try:
        url = f"http://127.0.0.1:{http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 401
            async with http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {trust.tokens['dispatcher']}"}) as r:
                assert r.status == 403
            async with http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {trust.tokens['read']}"}) as r:
                assert r.status == 200 and "notifyagent_sent_ok" in await r.text()
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200, "health stays open"
    finally:
        await running.stop()


# --- the tokens file and the bearer header, as inputs ---------------------------


def test_tokens_file_lines_comments_and_errors():
    token, line = auth.new_token("ci", "client,read")
    tokens = auth.Tokens.parse(f"# a comment\n\n{line}   # trailing comment\n")
    assert tokens.lookup(token) == auth.Principal("ci", frozenset({"client", "read"}))
    assert tokens.lookup(token + "x") is None and tokens.lookup("") is None
    for bad, why in [
        ("ci client", "expected"), ("ci nosuch sha256:" + "0" * 64, "unknown scope"), ("ci client md5:00", "sha256"),
        ("bad/name client sha256:" + "0" * 64, "name"), (f"{line}\n{line}", "twice"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            auth.Tokens.parse(bad)


def test_fuzzed_tokens_files_and_headers_fail_only_with_their_own_errors(tmp_path):
    rng = random.Random(9)
    alphabet = "abc ,:#\t\n\r\x00\x7fé" + "0123456789abcdef" + "sha256:" + "client,read,dispatcher,admin"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        try:
            auth.Tokens.parse(text)
        except ConfigError:
            pass
    path = tmp_path / "tokens"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(500)))
    with pytest.raises(ConfigError):
        auth.Tokens.read(str(path))
    path.write_bytes(b"x" * (auth.MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger"):
        auth.Tokens.read(str(path))
    token, line = auth.new_token("ci", "client")
    path.write_text(line + "\n")
    gate = auth.Authenticator(str(path))
    for _ in range(2000):
        header = "".join(rng.choice("Bearer \t" + token[:8] + "\x00é") for _ in range(rng.randint(0, 80)))
        with pytest.raises(auth.Unauthenticated):
            gate.authorize(header, "/notifyagent.v1.NotifyService/GetNotify")
    with pytest.raises(auth.Unauthenticated):
        gate.authorize("Bearer " + "x" * 10_000, "/notifyagent.v1.NotifyService/GetNotify")
    assert gate.authorize([("authorization", f"bearer  {token} ")], "/notifyagent.v1.NotifyService/GetNotify").name == "ci"


def test_scopes_map_to_methods_as_designed():
    svc = "/notifyagent.v1.NotifyService/"
    may = lambda scopes, method: auth.Principal("x", frozenset(scopes)).may(method)  # noqa: E731
    for method in ("CreateNotify", "BatchCreateNotify", "Trigger", "CancelNotify", "RetryNotify", "UpdateNotify", "GetGroup"):
        assert may({"client"}, svc + method) and not may({"read"}, svc + method) and not may({"dispatcher"}, svc + method)
    for method in ("GetNotify", "ListNotifies"):
        assert may({"read"}, svc + method) and may({"client"}, svc + method)
    assert may({"dispatcher"}, auth.LEASE_METHOD) and not may({"client", "read"}, auth.LEASE_METHOD)
    assert not may({"client", "read", "dispatcher"}, "/notifyagent.v1.AdminService/PauseQueue")
    assert all(may({"admin"}, m) for m in (svc + "CreateNotify", auth.LEASE_METHOD, "/notifyagent.v1.AdminService/Drain"))
    assert auth.is_open("/grpc.health.v1.Health/Check") and auth.is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")


def test_trust_settings_are_checked_and_booleans_read_as_written():
    from notifyagent.common.config import load

    assert load({}, {"NOTIFY_INSECURE": "yes"}).insecure is True
    assert load({}, {"NOTIFY_INSECURE": "false"}).insecure is False
    for env, names in [
        ({"NOTIFY_INSECURE": "maybe"}, "NOTIFY_INSECURE"),
        ({"NOTIFY_TLS_CERT": "c.pem"}, "NOTIFY_TLS_KEY"),
        ({"NOTIFY_TLS_CLIENT_CA": "ca.pem"}, "NOTIFY_TLS_CERT"),
        ({"NOTIFY_METRICS_AUTH": "true"}, "NOTIFY_TOKENS_FILE"),
        ({"NOTIFY_DISPATCHER_MAX_STREAMS": "0"}, "NOTIFY_DISPATCHER_MAX_STREAMS"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=names):
            load({}, env)


def test_fuzzed_secret_settings_fail_only_with_config_errors():
    from notifyagent.common.sealing import SecretBox, secret_names

    rng = random.Random(12)
    alphabet = "ab-_ ,=\n\x00é/" + "A" * 5
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for build in (secret_names, SecretBox):
            try:
                build(text)
            except ConfigError:
                pass


async def test_the_interceptor_checks_every_call_and_runs_each_as_its_own_token(tmp_path):
    """The handler run as a principal is built once per method and token; every call is still checked:
    calls of two tokens interleaved each see their own name, and a token revoked by a reload is refused."""
    from collections import namedtuple

    (a, a_line), (b, b_line) = auth.new_token("alice", "client"), auth.new_token("bob", "admin")
    path = tmp_path / "tokens"
    path.write_text(f"{a_line}\n{b_line}\n")
    interceptor = auth.AuthInterceptor(auth.Authenticator(str(path)))
    authenticator = interceptor._auth

    async def who(request, context):
        await asyncio.sleep(0)  # interleaved with the other calls
        return auth.current().name

    handler = grpc.unary_unary_rpc_method_handler(who)

    async def continuation(details):
        return handler

    class Refused(Exception):
        pass

    class Context:
        async def abort(self, code, message):
            raise Refused(code)

    Details = namedtuple("Details", "method invocation_metadata")

    async def call(token: str, method: str = "/notifyagent.v1.NotifyService/CreateNotify"):
        h = await interceptor.intercept_service(continuation, Details(method, auth.call_metadata(token)))
        try:
            return await h.unary_unary(None, Context())
        except Refused as e:
            return e.args[0]

    tokens = [a, b, a, "nope", b, ""] * 20
    want = {a: "alice", b: "bob", "nope": grpc.StatusCode.UNAUTHENTICATED, "": grpc.StatusCode.UNAUTHENTICATED}
    assert await asyncio.gather(*(call(t) for t in tokens)) == [want[t] for t in tokens]
    assert await call(a, "/notifyagent.v1.AdminService/PauseQueue") == grpc.StatusCode.PERMISSION_DENIED
    assert await call(b, "/notifyagent.v1.AdminService/PauseQueue") == "bob"
    path.write_text(f"{b_line}\n")  # alice revoked
    assert authenticator.reload()
    assert await asyncio.gather(call(a), call(b)) == [grpc.StatusCode.UNAUTHENTICATED, "bob"]
