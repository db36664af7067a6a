#!/usr/bin/env bash
# Generate, compile and run the Java example with Debian's grpc-java:
#   apt-get install protobuf-compiler protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libguava-java \
#     libnetty-java libperfmark-java libgoogle-gson-java libgeronimo-annotation-1.3-spec-java default-jdk-headless
#   clients/java/run.sh http://127.0.0.1:9000        (NOTIFY_GRPC_ADDR: the scheduler)
# NotifyAgent's classes come from `buf generate`; com.google.rpc (Status,
# BadRequest) from protoc on the .proto files that the googleapis-common-protos
# wheel ships (Debian packages no Java build of them). The generated stubs carry
# @javax.annotation.Generated, gone from the JDK since 11: geronimo-annotation has it.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=clients/java
buf=${BUF:-$(command -v buf || echo .venv/bin/buf)}
python=${PYTHON:-.venv/bin/python}
googleapis=$("$python" -c 'import google.rpc, pathlib; print(pathlib.Path(google.rpc.__path__[0]).parent.parent)')
rm -rf "$here/gen" "$here/classes" && mkdir -p "$here/gen" "$here/classes"
"$buf" generate --template "$here/buf.gen.yaml"
protoc -I"$googleapis" -I/usr/include --java_out="$here/gen" google/rpc/status.proto google/rpc/error_details.proto
cp=$(printf '/usr/share/java/%s.jar:' grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite \
  grpc-stub protobuf guava gson perfmark-api netty-buffer netty-codec netty-codec-http netty-codec-http2 \
  netty-codec-socks netty-common netty-handler netty-handler-proxy netty-resolver netty-transport \
  geronimo-annotation-1.3-spec)
javac -nowarn -encoding UTF-8 -d "$here/classes" -cp "$cp" $(find "$here/gen" "$here/src" -name '*.java') 2>&1 \
  | { grep -v -E '^Note: ' || true; }
exec java -cp "$here/classes:$cp" example.Example "$@"
