// A NotifyAgent client in Java: create a notify, read it back, fire a trigger,
// and read the field violations of a bad request. See clients/java/run.sh for
// how it is generated, compiled and run with Debian's grpc-java.
package example;

import com.google.rpc.BadRequest;
import com.notifyagent.v1.CreateNotifyRequest;
import com.notifyagent.v1.GetNotifyRequest;
import com.notifyagent.v1.HttpMethod;
import com.notifyagent.v1.HttpRequest;
import com.notifyagent.v1.Notify;
import com.notifyagent.v1.NotifyServiceGrpc;
import com.notifyagent.v1.RetryPolicy;
import com.notifyagent.v1.State;
import com.notifyagent.v1.TriggerRequest;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.concurrent.TimeUnit;

public final class Example {
  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: Example TARGET_BASE_URL   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)");
      System.exit(2);
    }
    String target = args[0];
    String addr = System.getenv().getOrDefault("NOTIFY_GRPC_ADDR", "127.0.0.1:50051");
    ManagedChannel channel = ManagedChannelBuilder.forTarget(addr).usePlaintext().build();
    try {
      NotifyServiceGrpc.NotifyServiceBlockingStub api = NotifyServiceGrpc.newBlockingStub(channel);

      // 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
      Notify created = api.withDeadlineAfter(10, TimeUnit.SECONDS).createNotify(CreateNotifyRequest.newBuilder()
          .setRequestId("java-example-" + System.nanoTime())
          .setNotify(Notify.newBuilder().setRequest(HttpRequest.newBuilder()
              .setMethod(HttpMethod.HTTP_METHOD_POST)
              .setUrl(target + "/java/create")
              .setJsonBody("{\"lang\":\"java\",\"step\":\"create\",\"note\":\"h\u00e9llo \u2713\"}")))
          .build()).getNotify();
      System.out.println("created " + created.getId() + " (" + created.getState() + ")");

      // 2. Read it back until it is delivered.
      Notify n = waitFinal(api, created.getId());
      System.out.println("read back " + n.getId() + ": " + n.getState() + ", " + n.getAttemptCount()
          + " attempt(s), last status " + n.getAttempts(n.getAttemptsCount() - 1).getStatusCode());

      // 3. A notify waiting on a trigger key, then the trigger.
      String key = "java-example-" + System.nanoTime();
      Notify waiting = api.withDeadlineAfter(10, TimeUnit.SECONDS).createNotify(CreateNotifyRequest.newBuilder()
          .setNotify(Notify.newBuilder().setTriggerKey(key).setRequest(HttpRequest.newBuilder()
              .setUrl(target + "/java/trigger").setJsonBody("{\"lang\":\"java\",\"step\":\"trigger\"}")))
          .build()).getNotify();
      int fired = api.withDeadlineAfter(10, TimeUnit.SECONDS)
          .trigger(TriggerRequest.newBuilder().setTriggerKey(key).build()).getTriggered();
      System.out.println("trigger " + key + " fired " + fired + " notify");
      System.out.println("triggered " + waiting.getId() + ": " + waitFinal(api, waiting.getId()).getState());

      // 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
      try {
        api.withDeadlineAfter(10, TimeUnit.SECONDS).createNotify(CreateNotifyRequest.newBuilder()
            .setNotify(Notify.newBuilder()
                .setRequest(HttpRequest.newBuilder().setUrl("ftp://example.com/x"))
                .setRetry(RetryPolicy.newBuilder().setMaxAttempts(5000)))
            .build());
        throw new IllegalStateException("bad request was accepted");
      } catch (StatusRuntimeException e) {
        if (e.getStatus().getCode() != Status.Code.INVALID_ARGUMENT) {
          throw e;
        }
        System.out.println("bad request: " + e.getStatus().getCode());
        for (com.google.protobuf.Any detail : StatusProto.fromThrowable(e).getDetailsList()) {
          if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              System.out.println("  " + v.getField() + ": " + v.getDescription());
            }
          }
        }
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** Polls GetNotify until the notify has ended; it must have succeeded. */
  private static Notify waitFinal(NotifyServiceGrpc.NotifyServiceBlockingStub api, String id) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (true) {
      Notify n = api.withDeadlineAfter(10, TimeUnit.SECONDS)
          .getNotify(GetNotifyRequest.newBuilder().setId(id).build()).getNotify();
      if (n.getState() == State.STATE_SUCCEEDED) {
        return n;
      }
      if (n.getState() == State.STATE_FAILED || n.getState() == State.STATE_CANCELLED || System.nanoTime() > deadline) {
        throw new IllegalStateException("notify " + id + " is " + n.getState());
      }
      Thread.sleep(50);
    }
  }
}
