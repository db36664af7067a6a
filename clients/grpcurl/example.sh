#!/usr/bin/env bash
# NotifyAgent from the shell with grpcurl (server reflection: no .proto files
# needed) and jq: create a notify, read it back, fire a trigger, and show the
# field violations of a bad request. (grpcurl prints JSON in lowerCamelCase.)
#
#   clients/grpcurl/example.sh http://127.0.0.1:9000   (NOTIFY_GRPC_ADDR: the scheduler)
set -euo pipefail
target=${1:?usage: example.sh TARGET_BASE_URL}
addr=${NOTIFY_GRPC_ADDR:-127.0.0.1:50051}
grpcurl=${GRPCURL:-grpcurl}
api() { "$grpcurl" -plaintext -d "$2" "$addr" "notifyagent.v1.NotifyService/$1"; }

wait_final() {  # polls GetNotify until the notify ends; prints it
  for _ in $(seq 600); do
    notify=$(api GetNotify "{\"id\": \"$1\"}" | jq -c .notify)
    case $(jq -r .state <<<"$notify") in
      STATE_SUCCEEDED) echo "$notify"; return 0 ;;
      STATE_FAILED | STATE_CANCELLED) echo "notify $1 ended $(jq -r .state <<<"$notify")" >&2; return 1 ;;
    esac
    sleep 0.1
  done
  echo "notify $1 did not end" >&2; return 1
}

# 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
body='{"lang":"grpcurl","step":"create","note":"héllo ✓"}'
id=$(api CreateNotify "$(jq -n --arg url "$target/grpcurl/create" --arg body "$body" --arg rid "grpcurl-example-$$-$RANDOM" \
  '{notify: {request: {method: "HTTP_METHOD_POST", url: $url, json_body: $body}}, request_id: $rid}')" | jq -r .notify.id)
echo "created $id"

# 2. Read it back until it is delivered.
notify=$(wait_final "$id")
echo "read back $id: $(jq -r '.state + ", " + (.attemptCount|tostring) + " attempt(s), last status " + (.attempts[-1].statusCode|tostring)' <<<"$notify")"

# 3. A notify waiting on a trigger key, then the trigger.
key="grpcurl-example-$$-$RANDOM"
waiting=$(api CreateNotify "$(jq -n --arg url "$target/grpcurl/trigger" --arg key "$key" \
  '{notify: {request: {url: $url, json_body: "{\"lang\":\"grpcurl\",\"step\":\"trigger\"}"}, trigger_key: $key}}')" | jq -r .notify.id)
echo "trigger $key fired $(api Trigger "{\"trigger_key\": \"$key\"}" | jq -r '.triggered // 0') notify"
echo "triggered $waiting: $(wait_final "$waiting" | jq -r .state)"

# 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail (-format-error prints it as JSON).
if error=$("$grpcurl" -plaintext -format-error -d '{"notify": {"request": {"url": "ftp://example.com/x"}, "retry": {"max_attempts": 5000}}}' \
  "$addr" notifyagent.v1.NotifyService/CreateNotify 2>&1); then
  echo "bad request was accepted" >&2; exit 1
fi
echo "bad request: $(jq -r 'if .code == 3 then "INVALID_ARGUMENT" else .code end' <<<"$error")"
jq -r '.details[] | select(."@type" == "type.googleapis.com/google.rpc.BadRequest") | .field_violations[] | "  \(.field): \(.description)"' <<<"$error"
