<?php
// A NotifyAgent client in PHP with the grpc extension: create a notify, read
// it back, fire a trigger, and read the field violations of a bad request.
// See clients/php/run-grpc.sh for how the extension is built and the code generated.
//
//   php -d extension=grpc.so clients/php/grpc_example.php http://127.0.0.1:9000   (NOTIFY_GRPC_ADDR: the scheduler)
declare(strict_types=1);
require __DIR__ . '/autoload.php';

use Google\Rpc\BadRequest;
use Google\Rpc\Status;
use NotifyAgent\V1\CreateNotifyRequest;
use NotifyAgent\V1\GetNotifyRequest;
use NotifyAgent\V1\HttpMethod;
use NotifyAgent\V1\HttpRequest;
use NotifyAgent\V1\Notify;
use NotifyAgent\V1\NotifyServiceClient;
use NotifyAgent\V1\RetryPolicy;
use NotifyAgent\V1\State;
use NotifyAgent\V1\TriggerRequest;

/** Waits for a unary call; throws unless it answered OK. Returns [response, status]. */
function call($unaryCall): array
{
    [$response, $status] = $unaryCall->wait();
    return [$response, $status];
}

function must($unaryCall)
{
    [$response, $status] = call($unaryCall);
    if ($status->code !== Grpc\STATUS_OK) {
        throw new RuntimeException("gRPC status {$status->code}: {$status->details}");
    }
    return $response;
}

/** Polls GetNotify until the notify has ended; it must have succeeded. */
function waitFinal(NotifyServiceClient $client, string $id): Notify
{
    $deadline = microtime(true) + 60;
    while (true) {
        $n = must($client->GetNotify(new GetNotifyRequest(['id' => $id]), [], ['timeout' => 10_000_000]))->getNotify();
        if ($n->getState() === State::STATE_SUCCEEDED) {
            return $n;
        }
        if (in_array($n->getState(), [State::STATE_FAILED, State::STATE_CANCELLED], true) || microtime(true) > $deadline) {
            throw new RuntimeException("notify $id is " . State::name($n->getState()));
        }
        usleep(50_000);
    }
}

if ($argc !== 2) {
    fwrite(STDERR, "usage: grpc_example.php TARGET_BASE_URL   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)\n");
    exit(2);
}
$target = $argv[1];
$client = new NotifyServiceClient(getenv('NOTIFY_GRPC_ADDR') ?: '127.0.0.1:50051', [
    'credentials' => Grpc\ChannelCredentials::createInsecure(),
]);

// 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
$created = must($client->CreateNotify(new CreateNotifyRequest([
    'request_id' => 'php-grpc-example-' . hrtime(true),
    'notify' => new Notify(['request' => new HttpRequest([
        'method' => HttpMethod::HTTP_METHOD_POST,
        'url' => "$target/php-grpc/create",
        'json_body' => '{"lang":"php-grpc","step":"create","note":"héllo ✓"}',
    ])]),
])))->getNotify();
echo "created {$created->getId()} (" . State::name($created->getState()) . ")\n";

// 2. Read it back until it is delivered.
$n = waitFinal($client, $created->getId());
$attempts = $n->getAttempts();
echo "read back {$n->getId()}: " . State::name($n->getState()) . ", {$n->getAttemptCount()} attempt(s), last status "
    . $attempts[count($attempts) - 1]->getStatusCode() . "\n";

// 3. A notify waiting on a trigger key, then the trigger.
$key = 'php-grpc-example-' . hrtime(true);
$waiting = must($client->CreateNotify(new CreateNotifyRequest(['notify' => new Notify([
    'request' => new HttpRequest(['url' => "$target/php-grpc/trigger", 'json_body' => '{"lang":"php-grpc","step":"trigger"}']),
    'trigger_key' => $key,
])])))->getNotify();
$fired = must($client->Trigger(new TriggerRequest(['trigger_key' => $key])))->getTriggered();
echo "trigger $key fired $fired notify\n";
echo "triggered {$waiting->getId()}: " . State::name(waitFinal($client, $waiting->getId())->getState()) . "\n";

// 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
[, $status] = call($client->CreateNotify(new CreateNotifyRequest(['notify' => new Notify([
    'request' => new HttpRequest(['url' => 'ftp://example.com/x']),
    'retry' => new RetryPolicy(['max_attempts' => 5000]),
])])));
if ($status->code !== Grpc\STATUS_INVALID_ARGUMENT) {
    throw new RuntimeException("bad request answered {$status->code}, expected INVALID_ARGUMENT");
}
echo "bad request: INVALID_ARGUMENT\n";
$rpcStatus = new Status();
$rpcStatus->mergeFromString($status->metadata['grpc-status-details-bin'][0]);
foreach ($rpcStatus->getDetails() as $detail) {
    if ($detail->getTypeUrl() === 'type.googleapis.com/google.rpc.BadRequest') {
        $bad = new BadRequest();
        $bad->mergeFromString($detail->getValue());
        foreach ($bad->getFieldViolations() as $v) {
            echo "  {$v->getField()}: {$v->getDescription()}\n";
        }
    }
}
$client->close();
