// A NotifyAgent client in Node: create a notify, read it back, fire a trigger,
// and read the field violations of a bad request.
//
// The .proto files are loaded at run time: NotifyAgent's from proto/ in this
// repository, google/rpc/*.proto from the google-proto-files package.
// keepCase: true keeps the proto field names (json_body, field_violations).
//
//   npm --prefix clients/node install && node clients/node/example.js http://127.0.0.1:9000
//   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = process.env.NOTIFY_PROTO_ROOT || path.join(__dirname, '..', '..', 'proto');
const GOOGLE_PROTOS = path.dirname(require.resolve('google-proto-files/package.json'));

const definition = protoLoader.loadSync('notifyagent/v1/notify_service.proto', {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT],
});
const { NotifyService } = grpc.loadPackageDefinition(definition).notifyagent.v1;

// google.rpc.Status and BadRequest, to decode the grpc-status-details-bin trailer.
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (origin, target) => path.join(GOOGLE_PROTOS, target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcTypes.lookupType('google.rpc.Status');
const BadRequest = rpcTypes.lookupType('google.rpc.BadRequest');

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10000 }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

async function waitFinal(client, id) {
  const deadline = Date.now() + 60000;
  for (;;) {
    const { notify } = await call(client, 'GetNotify', { id });
    if (notify.state === 'STATE_SUCCEEDED') return notify;
    if (['STATE_FAILED', 'STATE_CANCELLED'].includes(notify.state) || Date.now() > deadline) {
      throw new Error(`notify ${id} is ${notify.state}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(target) {
  const addr = process.env.NOTIFY_GRPC_ADDR || '127.0.0.1:50051';
  const client = new NotifyService(addr, grpc.credentials.createInsecure());

  // 1. Create: a POST with a JSON body, delivered now. request_id makes a retried create safe.
  const { notify: created } = await call(client, 'CreateNotify', {
    request_id: `node-example-${process.hrtime.bigint()}`,
    notify: { request: {
      method: 'HTTP_METHOD_POST', url: `${target}/node/create`,
      json_body: '{"lang":"node","step":"create","note":"héllo ✓"}',
    } },
  });
  console.log(`created ${created.id} (${created.state})`);

  // 2. Read it back until it is delivered.
  const n = await waitFinal(client, created.id);
  const last = n.attempts[n.attempts.length - 1];
  console.log(`read back ${n.id}: ${n.state}, ${n.attempt_count} attempt(s), last status ${last.status_code}`);

  // 3. A notify waiting on a trigger key, then the trigger.
  const key = `node-example-${process.hrtime.bigint()}`;
  const { notify: waiting } = await call(client, 'CreateNotify', { notify: {
    request: { url: `${target}/node/trigger`, json_body: '{"lang":"node","step":"trigger"}' },
    trigger_key: key,
  } });
  const { triggered } = await call(client, 'Trigger', { trigger_key: key });
  console.log(`trigger ${key} fired ${triggered} notify`);
  console.log(`triggered ${waiting.id}: ${(await waitFinal(client, waiting.id)).state}`);

  // 4. Bad input: INVALID_ARGUMENT with a google.rpc.BadRequest detail, one violation per problem.
  try {
    await call(client, 'CreateNotify', { notify: {
      request: { url: 'ftp://example.com/x' }, retry: { max_attempts: 5000 },
    } });
    throw new Error('bad request was accepted');
  } catch (err) {
    if (err.code !== grpc.status.INVALID_ARGUMENT) throw err;
    console.log('bad request: INVALID_ARGUMENT');
    const [raw] = err.metadata.get('grpc-status-details-bin');
    for (const detail of Status.decode(raw).details) {
      if (detail.type_url === 'type.googleapis.com/google.rpc.BadRequest') {
        for (const v of BadRequest.decode(detail.value).field_violations) {
          console.log(`  ${v.field}: ${v.description}`);
        }
      }
    }
  }
  client.close();
}

if (process.argv.length !== 3) {
  console.error('usage: node example.js TARGET_BASE_URL   (NOTIFY_GRPC_ADDR: the scheduler, default 127.0.0.1:50051)');
  process.exit(2);
}
main(process.argv[2]).catch((err) => {
  console.error(`node client: ${err.message}`);
  process.exit(1);
});
