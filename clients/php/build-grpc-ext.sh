#!/usr/bin/env bash
# Build the PHP grpc extension from Debian's grpc source package, against
# Debian's libgrpc-dev (PECL not needed): only src/php/ext/grpc is compiled.
#   apt-get install php-dev php-cli libgrpc-dev dpkg-dev   (and a deb-src line for apt-get source)
#   clients/php/build-grpc-ext.sh DEST
# DEST gets grpc.so, the extension's PHP library (src/php/lib/Grpc) and
# etc/roots.pem (which that library reads), all from the same source version.
set -euo pipefail
dest=${1:?usage: build-grpc-ext.sh DEST}
version=$(dpkg-query -W -f='${source:Version}' libgrpc-dev)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(cd "$build" && apt-get source -qq "grpc=$version" >/dev/null 2>&1) || {
  echo "apt-get source grpc=$version failed: is a deb-src line configured (and apt-get update run)?" >&2; exit 1; }
src=$(echo "$build"/grpc-*/)
(cd "$src/src/php/ext/grpc" && phpize && ./configure -q --enable-grpc=/usr && make -s -j"$(nproc)") >"$build/build.log" 2>&1 \
  || { tail -n 30 "$build/build.log" >&2; exit 1; }
mkdir -p "$dest/src/php" "$dest/etc"
cp "$src/src/php/ext/grpc/modules/grpc.so" "$dest/grpc.so"
rm -rf "$dest/src/php/lib" && cp -r "$src/src/php/lib" "$dest/src/php/lib"
cp "$src/etc/roots.pem" "$dest/etc/roots.pem"
echo "$version" > "$dest/VERSION"
