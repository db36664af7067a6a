#!/usr/bin/env bash
# Generate the PHP classes and run the grpc-extension example:
#   apt-get install protobuf-compiler protobuf-compiler-grpc php-cli php-google-protobuf
#   clients/php/build-grpc-ext.sh /opt/php-grpc          (once; see that script)
#   GRPC_PHP=/opt/php-grpc clients/php/run-grpc.sh http://127.0.0.1:9000   (NOTIFY_GRPC_ADDR: the scheduler)
# NotifyAgent's classes come from `buf generate`; Google\Rpc (Status,
# BadRequest) from protoc on the .proto files of the googleapis-common-protos wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
ext=${GRPC_PHP:?set GRPC_PHP to the directory build-grpc-ext.sh filled}
buf=${BUF:-$(command -v buf || echo .venv/bin/buf)}
python=${PYTHON:-.venv/bin/python}
googleapis=$("$python" -c 'import google.rpc, pathlib; print(pathlib.Path(google.rpc.__path__[0]).parent.parent)')
rm -rf clients/php/gen
"$buf" generate --template clients/php/buf.gen.yaml
protoc -I"$googleapis" -I/usr/include --php_out=clients/php/gen google/rpc/status.proto google/rpc/error_details.proto
GRPC_PHP_LIB="$ext/src/php/lib" exec php -d extension="$ext/grpc.so" clients/php/grpc_example.php "$@"
