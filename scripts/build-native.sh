#!/usr/bin/env bash
# Builds native/spawn.c (the posix_spawn start, see src/process/posix-spawn.ts) with node-gyp
# when the addon is missing or older than its sources. Run by `npm run build`, where npm puts
# its own node-gyp on PATH and passes its nodedir setting (Node's headers) to it.
#
# Without a C compiler the emperor still works: it starts vassals with child_process (fork),
# only slower, so a failed build warns instead of failing `npm start`. `npm test` checks that
# the addon is used.
set -u
cd "$(dirname "$0")/.."
addon=build/Release/emperor_spawn.node
if [ -f "$addon" ] && [ "$addon" -nt native/spawn.c ] && [ "$addon" -nt binding.gyp ]; then exit 0; fi
if ! command -v node-gyp > /dev/null; then
  echo "build-native: node-gyp not found (run through npm); vassals will be started with fork" >&2
  exit 0
fi
if ! node-gyp rebuild --loglevel=warn > build-native.log 2>&1; then
  echo "build-native: the posix_spawn addon did not build (see build-native.log); vassals will be started with fork" >&2
  exit 0
fi
rm -f build-native.log
