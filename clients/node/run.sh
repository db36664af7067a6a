#!/usr/bin/env bash
# Install the npm packages (package-lock.json) and run the Node example; the
# .proto files are loaded at run time, nothing is generated.
#   clients/node/run.sh http://127.0.0.1:9000        (NOTIFY_GRPC_ADDR: the scheduler)
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
exec node example.js "$@"
