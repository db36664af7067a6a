<?php
// A NotifyAgent client in PHP over plain HTTP/JSON with curl: no grpc
// extension, no generated code. Create a notify, read it back, fire a
// trigger, and read the field violations of a bad request.
//
//   php clients/php/http_example.php http://127.0.0.1:9000   (NOTIFY_HTTP_ADDR: the API, default 127.0.0.1:8080)
//
// Bodies and answers are proto3 JSON with the proto field names; errors are
// {"error": {"code": HTTP, "status": "INVALID_ARGUMENT", "message": ..., "details": [...]}}.
declare(strict_types=1);

/** One API call: returns [HTTP status, decoded JSON answer]. */
function api(string $method, string $path, ?array $body = null): array
{
    $base = 'http://' . (getenv('NOTIFY_HTTP_ADDR') ?: '127.0.0.1:8080');
    $curl = curl_init($base . $path);
    curl_setopt_array($curl, [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 10,
        CURLOPT_HTTPHEADER => ['Content-Type: application/json', 'Accept: application/json'],
    ]);
    if ($body !== null) {
        curl_setopt($curl, CURLOPT_POSTFIELDS, json_encode($body, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR));
    }
    $text = curl_exec($curl);
    if ($text === false) {
        throw new RuntimeException("$method $path: " . curl_error($curl));
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    curl_close($curl);
    return [$status, json_decode($text, true, 512, JSON_THROW_ON_ERROR)];
}

/** Like api(), but any answer other than 200 is an error. */
function must(string $method, string $path, ?array $body = null): array
{
    [$status, $answer] = api($method, $path, $body);
    if ($status !== 200) {
        throw new RuntimeException("$method $path answered $status: " . ($answer['error']['message'] ?? ''));
    }
    return $answer;
}

/** Polls GET /v1/notifies/{id} until the notify has ended; it must have succeeded. */
function waitFinal(string $id): array
{
    $deadline = microtime(true) + 60;
    while (true) {
        $n = must('GET', '/v1/notifies/' . rawurlencode($id))['notify'];
        if ($n['state'] === 'STATE_SUCCEEDED') {
            return $n;
        }
        if (in_array($n['state'], ['STATE_FAILED', 'STATE_CANCELLED'], true) || microtime(true) > $deadline) {
            throw new RuntimeException("notify $id is {$n['state']}");
        }
        usleep(50_000);
    }
}

if ($argc !== 2) {
    fwrite(STDERR, "usage: http_example.php TARGET_BASE_URL   (NOTIFY_HTTP_ADDR: the API, default 127.0.0.1:8080)\n");
    exit(2);
}
$target = $argv[1];

// 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
$created = must('POST', '/v1/notifies', [
    'request_id' => 'php-http-example-' . hrtime(true),
    'notify' => ['request' => [
        'method' => 'HTTP_METHOD_POST',
        'url' => "$target/php-http/create",
        'json_body' => '{"lang":"php-http","step":"create","note":"héllo ✓"}',
    ]],
])['notify'];
echo "created {$created['id']} ({$created['state']})\n";

// 2. Read it back until it is delivered.
$n = waitFinal($created['id']);
$last = end($n['attempts']);
echo "read back {$n['id']}: {$n['state']}, {$n['attempt_count']} attempt(s), last status {$last['status_code']}\n";

// 3. A notify waiting on a trigger key, then the trigger.
$key = 'php-http-example-' . hrtime(true);
$waiting = must('POST', '/v1/notifies', ['notify' => [
    'request' => ['url' => "$target/php-http/trigger", 'json_body' => '{"lang":"php-http","step":"trigger"}'],
    'trigger_key' => $key,
]])['notify'];
$fired = must('POST', '/v1/notifies:trigger', ['trigger_key' => $key])['triggered'];
echo "trigger $key fired $fired notify\n";
echo "triggered {$waiting['id']}: " . waitFinal($waiting['id'])['state'] . "\n";

// 4. Bad input: 400 INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
[$status, $answer] = api('POST', '/v1/notifies', ['notify' => [
    'request' => ['url' => 'ftp://example.com/x'],
    'retry' => ['max_attempts' => 5000],
]]);
if ($status !== 400 || ($answer['error']['status'] ?? '') !== 'INVALID_ARGUMENT') {
    throw new RuntimeException("bad request answered $status, expected 400 INVALID_ARGUMENT");
}
echo "bad request: {$answer['error']['status']}\n";
foreach ($answer['error']['details'] as $detail) {
    if ($detail['@type'] === 'type.googleapis.com/google.rpc.BadRequest') {
        foreach ($detail['field_violations'] as $v) {
            echo "  {$v['field']}: {$v['description']}\n";
        }
    }
}
