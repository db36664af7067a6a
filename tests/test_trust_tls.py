"""TLS and mTLS on real processes, with a throwaway CA: plaintext and a wrong CA refused,
mTLS without a client certificate refused, the dispatcher, CLI and grpcurl through TLS,
the HTTP port under TLS, and a new certificate taken on SIGHUP."""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys

import aiohttp
import grpc
import pytest

from notifyagent.v1 import admin_service_pb2 as admin, admin_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api
from notifyagent.v1 import notify_service_pb2_grpc
from support import Pki, Proc, Trust, free_port, open_channel, wait_serving, wait_until


def creds(ca, cert=None, key=None):
    return grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None)


class TlsRun:
    """A scheduler with TLS (mTLS when mutual) and a dispatcher that verifies it."""

    def __init__(self, tmp_path, *, mutual=False, pki=None, cert=None, key=None, client_ca=None):
        self.pki = pki or Pki.make(tmp_path)
        self.trust = Trust.make(tmp_path)
        self.port, self.http_port = free_port(), free_port()
        self.addr = f"127.0.0.1:{self.port}"
        tls = {"NOTIFY_TLS_CERT": str(cert or self.pki.cert), "NOTIFY_TLS_KEY": str(key or self.pki.key),
               "NOTIFY_TLS_CA": str(self.pki.ca)}  # fmt: skip
        if mutual:
            tls["NOTIFY_TLS_CLIENT_CA"] = str(client_ca or self.pki.ca)
        self.tls = tls
        self.scheduler = Proc(["scheduler", "--grpc-addr", self.addr, "--http-addr", f"127.0.0.1:{self.http_port}",
                               "--store", f"sqlite:///{tmp_path}/n.db"],
                              log_path=tmp_path / "scheduler.log", env={**self.trust.env(), **tls})  # fmt: skip
        self.dispatcher = Proc(["dispatcher", "--registry", f"static:{self.addr}", "--http-addr", "", "--allow-networks", "127.0.0.0/8"],
                               log_path=tmp_path / "dispatcher.log", env={**self.trust.env("dispatcher"), **tls})  # fmt: skip
        self.mutual = mutual

    def good_creds(self):
        return creds(self.pki.ca, self.pki.cert, self.pki.key) if self.mutual else creds(self.pki.ca)

    async def start(self):
        self.scheduler.start()
        await wait_serving(self.addr, proc=self.scheduler, credentials=self.good_creds())
        self.dispatcher.start()
        return self

    async def stop(self):
        self.dispatcher.kill()
        await asyncio.to_thread(self.scheduler.terminate)


async def refused(addr, credentials, token="") -> grpc.StatusCode:
    async with open_channel(addr, token, credentials=credentials) if credentials else open_channel(addr, token) as ch:
        try:
            await notify_service_pb2_grpc.NotifyServiceStub(ch).ListNotifies(api.ListNotifiesRequest(), timeout=5)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


async def deliver_one(run, credentials, target, path):
    async with open_channel(run.addr, run.trust.tokens["client"], credentials=credentials) as ch:
        stub = notify_service_pb2_grpc.NotifyServiceStub(ch)
        created = await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url(path)))))
        received = await target.wait_for(len(target.received) + 1, timeout=15)
        assert received[-1].headers["Notify-Id"] == created.notify.id


async def test_tls_refuses_plaintext_and_a_wrong_ca_and_serves_the_dispatcher_cli_and_grpcurl(tmp_path, target):
    run = await TlsRun(tmp_path).start()
    try:
        token = run.trust.tokens["client"]
        assert await refused(run.addr, None, token) == grpc.StatusCode.UNAVAILABLE, "plaintext is refused"
        assert await refused(run.addr, creds(run.pki.other_ca), token) == grpc.StatusCode.UNAVAILABLE, "a wrong CA is refused"
        assert await refused(run.addr, creds(run.pki.ca), token) == grpc.StatusCode.OK
        await deliver_one(run, creds(run.pki.ca), target, "/tls")  # the dispatcher leases through TLS

        env = {**os.environ, "NOTIFY_TOKEN": token, "NOTIFY_TLS_CA": str(run.pki.ca)}
        cli = [sys.executable, "-m", "notifyagent", "send", target.url("/cli"), "--addr", run.addr]
        out = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, timeout=30, env=env)
        assert out.returncode == 0, out.stderr
        wrong = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, timeout=30,
                                        env={**env, "NOTIFY_TLS_CA": str(run.pki.other_ca)})  # fmt: skip
        assert wrong.returncode == 1 and "UNAVAILABLE" in wrong.stderr

        grpcurl = os.path.join(os.path.dirname(sys.executable), "grpcurl")
        tour = [grpcurl, "-cacert", str(run.pki.ca), "-H", f"authorization: Bearer {token}", run.addr,
                "notifyagent.v1.NotifyService/ListNotifies"]  # fmt: skip
        out = await asyncio.to_thread(subprocess.run, tour, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and '"notifies"' in out.stdout, out.stderr
        plain = await asyncio.to_thread(subprocess.run, [grpcurl, "-plaintext", run.addr, "list"], capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0

        ctx = ssl.create_default_context(cafile=str(run.pki.ca))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{run.http_port}/healthz", ssl=ctx) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{run.http_port}/healthz") as r:
                    await r.read()
    finally:
        await run.stop()


async def test_mtls_refuses_a_client_without_a_certificate_or_with_one_from_another_ca(tmp_path, target):
    run = await TlsRun(tmp_path, mutual=True).start()
    try:
        token = run.trust.tokens["client"]
        pki = run.pki
        assert await refused(run.addr, creds(pki.ca), token) == grpc.StatusCode.UNAVAILABLE, "no client certificate"
        assert await refused(run.addr, creds(pki.ca, pki.other_cert, pki.other_key), token) == grpc.StatusCode.UNAVAILABLE
        assert await refused(run.addr, creds(pki.ca, pki.cert, pki.key), token) == grpc.StatusCode.OK
        await deliver_one(run, creds(pki.ca, pki.cert, pki.key), target, "/mtls")  # the dispatcher presents its certificate
        async with open_channel(run.addr, run.trust.tokens["admin"], credentials=creds(pki.ca, pki.cert, pki.key)) as ch:
            status = await admin_service_pb2_grpc.AdminServiceStub(ch).GetStatus(admin.GetStatusRequest())
            assert len(status.dispatchers) == 1

        ctx = ssl.create_default_context(cafile=str(pki.ca))
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"https://127.0.0.1:{run.http_port}/healthz", ssl=ctx) as r:
                    await r.read()
            ctx.load_cert_chain(str(pki.cert), str(pki.key))
            async with http.get(f"https://127.0.0.1:{run.http_port}/healthz", ssl=ctx) as r:
                assert r.status == 200
    finally:
        await run.stop()


async def test_sighup_takes_a_new_certificate_and_a_bad_one_keeps_the_old(tmp_path):
    first = Pki.make(tmp_path)
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    run = await TlsRun(tmp_path, pki=first, cert=cert, key=key).start()
    try:
        token = run.trust.tokens["client"]
        assert await refused(run.addr, creds(first.other_ca), token) == grpc.StatusCode.UNAVAILABLE
        cert.write_bytes(b"not a certificate")
        run.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "keeping the TLS certificate" in run.scheduler.log(), 10, "the refused reload")
        assert await refused(run.addr, creds(first.ca), token) == grpc.StatusCode.OK, "the old certificate still serves"
        shutil.copy(first.other_cert, cert)
        shutil.copy(first.other_key, key)
        run.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: f"TLS certificate {cert} read again" in run.scheduler.log(), 10, "the reload")
        assert await refused(run.addr, creds(first.other_ca), token) == grpc.StatusCode.OK, "new connections get the new one"
        assert await refused(run.addr, creds(first.ca), token) == grpc.StatusCode.UNAVAILABLE
    finally:
        await run.stop()


async def https_status(port, ca, cert, key):
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=ctx) as r:
                return r.status
        except aiohttp.ClientError:
            return "refused"


def https_get(port, ctx, session=None):
    """GET /healthz over a raw TLS socket, offering `session` for resumption: (status line, session, resumed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = tls.recv(64).split(b"\r\n")[0]
                return head.decode() or "refused", tls.session, tls.session_reused
        except (ssl.SSLError, OSError):
            return "refused", None, False


async def test_sighup_dropping_a_client_ca_refuses_its_clients_on_grpc_and_http(tmp_path):
    pki = Pki.make(tmp_path)
    client_ca = tmp_path / "clients.pem"
    client_ca.write_bytes(pki.ca.read_bytes() + pki.other_ca.read_bytes())  # CA-1 and CA-2
    run = await TlsRun(tmp_path, mutual=True, pki=pki, client_ca=client_ca).start()
    try:
        token = run.trust.tokens["client"]
        one, two = creds(pki.ca, pki.cert, pki.key), creds(pki.ca, pki.other_cert, pki.other_key)
        assert await refused(run.addr, one, token) == grpc.StatusCode.OK
        assert await refused(run.addr, two, token) == grpc.StatusCode.OK
        assert await https_status(run.http_port, pki.ca, pki.cert, pki.key) == 200
        assert await https_status(run.http_port, pki.ca, pki.other_cert, pki.other_key) == 200
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(pki.cert), str(pki.key))
        status, session, _ = await asyncio.to_thread(https_get, run.http_port, ctx)
        status, session, resumed = await asyncio.to_thread(https_get, run.http_port, ctx, session)
        assert status == "HTTP/1.1 200 OK" and resumed, "the HTTP port resumes TLS sessions"

        client_ca.write_bytes(pki.other_ca.read_bytes())  # CA-2 alone
        run.scheduler.popen.send_signal(signal.SIGHUP)
        await asyncio.to_thread(wait_until, lambda: "TLS certificate" in run.scheduler.log(), 10, "the reload")
        assert await refused(run.addr, one, token) == grpc.StatusCode.UNAVAILABLE, "CA-1's client is refused on gRPC"
        assert await https_status(run.http_port, pki.ca, pki.cert, pki.key) == "refused", "and on HTTP"
        status, _, _ = await asyncio.to_thread(https_get, run.http_port, ctx, session)
        assert status == "refused", "resuming a session from before the reload is no way around it"
        assert await refused(run.addr, two, token) == grpc.StatusCode.OK, "CA-2's client still passes"
        assert await https_status(run.http_port, pki.ca, pki.other_cert, pki.other_key) == 200
    finally:
        await run.stop()


async def test_dev_with_a_certificate_but_no_ca_says_what_is_missing(tmp_path):
    pki = Pki.make(tmp_path)
    args = [sys.executable, "-m", "notifyagent", "dev", "--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", "",
            "--store", f"sqlite:///{tmp_path}/n.db", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]  # fmt: skip
    out = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: dev with NOTIFY_TLS_CERT needs NOTIFY_TLS_CA"), out.stderr
    missing = await asyncio.to_thread(subprocess.run, [*args, "--tls-ca", str(tmp_path / "nope.pem")], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "cannot read NOTIFY_TLS_CA" in missing.stderr and "Traceback" not in missing.stderr, missing.stderr
