#!/usr/bin/env bash
# Run by .ci/run: the OpenAPI document the server serves, checked against the OpenAPI 3.1
# specification (openapi-spec-validator) and against the server itself (schemathesis:
# requests generated from the document, both anonymous and as a site administrator; any
# server error, answer that does not match its schema or status code the document does
# not list fails the step).
#
# Usage: .ci/openapi.sh [BINARY [EXAMPLES_DIR]] (default: the debug build under
# ${CARGO_TARGET_DIR:-target}). The server runs on a free port of 127.0.0.1 with its data
# directory in a temporary directory, seeded with a few packages, owners and an empty
# repository first. The tools are installed from PyPI into a virtualenv under
# ${ALPINE_REGISTRY_OPENAPI_VENV:-~/.cache/alpine-registry/openapi} when missing.
# OPENAPI_MAX_EXAMPLES (default 80) bounds the requests per operation and run.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
bin="${1:-$target/debug/alpine-registry}"
examples="${2:-$target/debug/examples}"
venv="${ALPINE_REGISTRY_OPENAPI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/alpine-registry/openapi}"
max_examples="${OPENAPI_MAX_EXAMPLES:-80}"

if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  echo "installing schemathesis and openapi-spec-validator into $venv"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "python3 with venv is needed (Debian: apt-get install python3-venv)" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'schemathesis>=4.32,<5' 'openapi-spec-validator>=0.7,<0.10'
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/alpine-registry-openapi.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 12000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  port=$((port + 1))
done
base="http://127.0.0.1:$port"
token="apkreg_openapi-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# The failure throttle is off (failure_delay_ms = 0; it has tests of its own): the
# generated requests include wrong credentials on purpose, and its 429s would stop the
# administrator's run from reaching anything.
ALPINE_REGISTRY_BOOTSTRAP_TOKEN="$token" ALPINE_REGISTRY__AUTH__FAILURE_DELAY_MS=0 \
  ALPINE_REGISTRY__SIGNING__KEY_BITS=2048 \
  "$bin" --data-dir "$work/data" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!
tries=0
until curl --silent --fail --output /dev/null "$base/readyz"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ] || ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the registry did not become ready on $base" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.5
done

# Something for the routes to find: packages of two architectures and noarch in a public
# owner, a private organisation with a package, an empty repository; and a user with a
# token that the administrator's run may delete and revoke (those operations are kept to
# them, so that no generated request can revoke the token the run signs in with).
post() {
  curl --silent --show-error --fail -H "Authorization: Bearer $token" "$@"
}
package() {
  "$examples/build_package" "$1" "$2" "$3" "$work/$1-$2-$3.apk" "${@:4}" >/dev/null
  echo "$work/$1-$2-$3.apk"
}
json=(-H 'Content-Type: application/json')
post "${json[@]}" -d '{"name": "vault", "private": true, "org": true}' "$base/api/v1/admin/owners" >/dev/null
post --upload-file "$(package hello 1.0-r0 x86_64 depend=libgreet provides=cmd:hello=1.0)" \
  "$base/admin/v3.21/main" >/dev/null
post --upload-file "$(package hello 1.1-r0 aarch64)" "$base/admin/v3.21/main" >/dev/null
post --upload-file "$(package libgreet 2.0-r0 x86_64 provides=so:libgreet.so.1=1)" \
  "$base/admin/v3.21/main" >/dev/null
post --upload-file "$(package greet-doc 2.0-r0 noarch)" "$base/admin/edge/community" >/dev/null
post --upload-file "$(package hush 1.0-r0 x86_64)" "$base/vault/v3.21/main" >/dev/null
"$bin" --data-dir "$work/data" repository create admin/v3.21/empty 2>/dev/null
post "${json[@]}" -d '{"name": "victim", "password": "victim password"}' \
  "$base/api/v1/admin/users" >/dev/null
victim_token=$(post "${json[@]}" -d '{"user": "victim", "scope": "read"}' "$base/api/v1/admin/tokens" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

curl --silent --show-error --fail "$base/api/v1/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

# Half of the names drawn are those seeded, so that requests reach packages, indexes and
# keys rather than stopping at 404; the others are generated from the document.
cat >"$work/schemathesis.toml" <<EOF
[dictionaries.owners]
values = ["admin", "vault"]
[dictionaries.branches]
values = ["v3.21", "edge"]
[dictionaries.repositories]
values = ["main", "community", "empty"]
[dictionaries.arches]
values = ["x86_64", "aarch64", "noarch", "riscv64"]
[dictionaries.files]
values = ["hello-1.0-r0.apk", "hello-1.1-r0.apk", "libgreet-2.0-r0.apk", "greet-doc-2.0-r0.apk", "hush-1.0-r0.apk"]
[dictionaries.names]
values = ["hello", "libgreet", "greet-doc", "hush"]
[dictionaries.users]
values = ["admin", "victim"]

[parameters]
owner = { dictionary = "owners", probability = 0.5 }
branch = { dictionary = "branches", probability = 0.5 }
repository = { dictionary = "repositories", probability = 0.5 }
arch = { dictionary = "arches", probability = 0.5 }
file = { dictionary = "files", probability = 0.5 }
name = { dictionary = "names", probability = 0.5 }
user = { dictionary = "users", probability = 0.5 }

[[operations]]
include-operation-id = "delete_user"
parameters = { user = "victim" }

[[operations]]
include-operation-id = "revoke_token"
parameters = { id = $victim_token }
EOF

# One worker: hypothesis parses lambdas with Python's ast, which is not thread-safe. Run in
# the temporary directory, where schemathesis keeps its cache.
st_run() {
  (cd "$work" && "$venv/bin/st" --config-file "$work/schemathesis.toml" run \
    "$base/api/v1/openapi.json" --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing --max-examples "$max_examples" --seed 1 \
    --workers 1 --suppress-health-check all --no-color "$@")
}
echo "schemathesis, anonymous:"
st_run
echo "schemathesis, as a site administrator:"
st_run -H "Authorization: Bearer $token"
