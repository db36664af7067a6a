// A NotifyAgent client in Go: create a notify, read it back, fire a trigger,
// and read the field violations of a bad request.
//
// Generate, then run (GOPATH mode, with Debian's golang-google-grpc-dev and
// golang-google-genproto-dev in /usr/share/gocode):
//
//	buf generate --template clients/go/buf.gen.yaml
//	GO111MODULE=off GOPATH=$PWD/clients/go/gopath:/usr/share/gocode go run ./clients/go http://127.0.0.1:9000
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	notifyagentv1 "notifyagent/gen/go/notifyagent/v1"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./clients/go TARGET_BASE_URL   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "go client:", err)
		os.Exit(1)
	}
}

func run(target string) error {
	addr := os.Getenv("NOTIFY_GRPC_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	client := notifyagentv1.NewNotifyServiceClient(conn)

	// 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
	created, err := client.CreateNotify(ctx, &notifyagentv1.CreateNotifyRequest{
		RequestId: fmt.Sprintf("go-example-%d", time.Now().UnixNano()),
		Notify: &notifyagentv1.Notify{
			Request: &notifyagentv1.HttpRequest{
				Method:   notifyagentv1.HttpMethod_HTTP_METHOD_POST,
				Url:      target + "/go/create",
				JsonBody: `{"lang":"go","step":"create","note":"héllo ✓"}`,
			},
		},
	})
	if err != nil {
		return fmt.Errorf("CreateNotify: %w", err)
	}
	fmt.Printf("created %s (%s)\n", created.Notify.Id, created.Notify.State)

	// 2. Read it back until it is delivered.
	n, err := waitFinal(ctx, client, created.Notify.Id)
	if err != nil {
		return err
	}
	fmt.Printf("read back %s: %s, %d attempt(s), last status %d\n", n.Id, n.State, n.AttemptCount, n.Attempts[len(n.Attempts)-1].StatusCode)

	// 3. A notify waiting on a trigger key, then the trigger.
	key := fmt.Sprintf("go-example-%d", time.Now().UnixNano())
	waiting, err := client.CreateNotify(ctx, &notifyagentv1.CreateNotifyRequest{Notify: &notifyagentv1.Notify{
		Request:  &notifyagentv1.HttpRequest{Url: target + "/go/trigger", JsonBody: `{"lang":"go","step":"trigger"}`},
		Schedule: &notifyagentv1.Notify_TriggerKey{TriggerKey: key},
	}})
	if err != nil {
		return fmt.Errorf("CreateNotify (trigger): %w", err)
	}
	fired, err := client.Trigger(ctx, &notifyagentv1.TriggerRequest{TriggerKey: key})
	if err != nil {
		return fmt.Errorf("Trigger: %w", err)
	}
	fmt.Printf("trigger %s fired %d notify\n", key, fired.Triggered)
	if n, err = waitFinal(ctx, client, waiting.Notify.Id); err != nil {
		return err
	}
	fmt.Printf("triggered %s: %s\n", n.Id, n.State)

	// 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
	_, err = client.CreateNotify(ctx, &notifyagentv1.CreateNotifyRequest{Notify: &notifyagentv1.Notify{
		Request: &notifyagentv1.HttpRequest{Url: "ftp://example.com/x"},
		Retry:   &notifyagentv1.RetryPolicy{MaxAttempts: 5000},
	}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return fmt.Errorf("bad request answered %v, expected InvalidArgument", st.Code())
	}
	fmt.Printf("bad request: %s\n", st.Code())
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				fmt.Printf("  %s: %s\n", v.Field, v.Description)
			}
		}
	}
	return nil
}

// waitFinal polls GetNotify until the notify has ended; it must have succeeded.
func waitFinal(ctx context.Context, client notifyagentv1.NotifyServiceClient, id string) (*notifyagentv1.Notify, error) {
	for {
		got, err := client.GetNotify(ctx, &notifyagentv1.GetNotifyRequest{Id: id})
		if err != nil {
			return nil, fmt.Errorf("GetNotify: %w", err)
		}
		switch got.Notify.State {
		case notifyagentv1.State_STATE_SUCCEEDED:
			return got.Notify, nil
		case notifyagentv1.State_STATE_FAILED, notifyagentv1.State_STATE_CANCELLED:
			return nil, fmt.Errorf("notify %s ended %s", id, got.Notify.State)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("notify %s still %s: %w", id, got.Notify.State, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
