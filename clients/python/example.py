"""A NotifyAgent client in Python: create a notify, read it back, fire a trigger,
and read the field violations of a bad request.

The stubs are the generated code installed with the package (notifyagent.v1);
google.rpc.BadRequest comes from googleapis-common-protos, via grpcio-status.

    .venv/bin/python clients/python/example.py http://127.0.0.1:9000   (NOTIFY_GRPC_ADDR: the scheduler)
"""

import os
import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc


def wait_final(stub, notify_id: str) -> pb.Notify:
    """Polls GetNotify until the notify has ended; it must have succeeded."""
    deadline = time.monotonic() + 60
    while True:
        n = stub.GetNotify(api.GetNotifyRequest(id=notify_id), timeout=10).notify
        if n.state == pb.STATE_SUCCEEDED:
            return n
        if n.state in (pb.STATE_FAILED, pb.STATE_CANCELLED) or time.monotonic() > deadline:
            raise SystemExit(f"notify {notify_id} is {pb.State.Name(n.state)}")
        time.sleep(0.05)


def main(target: str) -> None:
    addr = os.environ.get("NOTIFY_GRPC_ADDR", "127.0.0.1:50051")
    with grpc.insecure_channel(addr) as channel:
        stub = api_grpc.NotifyServiceStub(channel)

        # 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
        created = stub.CreateNotify(api.CreateNotifyRequest(
            request_id=f"python-example-{time.time_ns()}",
            notify=pb.Notify(request=pb.HttpRequest(
                method=pb.HTTP_METHOD_POST, url=f"{target}/python/create",
                json_body='{"lang":"python","step":"create","note":"héllo ✓"}',
            )),
        ), timeout=10).notify  # fmt: skip
        print(f"created {created.id} ({pb.State.Name(created.state)})")

        # 2. Read it back until it is delivered.
        n = wait_final(stub, created.id)
        print(f"read back {n.id}: {pb.State.Name(n.state)}, {n.attempt_count} attempt(s), "
              f"last status {n.attempts[-1].status_code}")  # fmt: skip

        # 3. A notify waiting on a trigger key, then the trigger.
        key = f"python-example-{time.time_ns()}"
        waiting = stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(
            request=pb.HttpRequest(url=f"{target}/python/trigger", json_body='{"lang":"python","step":"trigger"}'),
            trigger_key=key,
        )), timeout=10).notify  # fmt: skip
        fired = stub.Trigger(api.TriggerRequest(trigger_key=key), timeout=10)
        print(f"trigger {key} fired {fired.triggered} notify")
        print(f"triggered {waiting.id}: {pb.State.Name(wait_final(stub, waiting.id).state)}")

        # 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
        try:
            stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(
                request=pb.HttpRequest(url="ftp://example.com/x"), retry=pb.RetryPolicy(max_attempts=5000),
            )), timeout=10)  # fmt: skip
            raise SystemExit("bad request was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            print(f"bad request: {e.code().name}")
            for detail in rpc_status.from_call(e).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    for v in bad.field_violations:
                        print(f"  {v.field}: {v.description}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: example.py TARGET_BASE_URL   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)")
    main(sys.argv[1])
