# Sourced by .ci/run: a private, throwaway S3-compatible server on loopback for the tests.
#
# start_s3 installs moto's server (PyPI moto[server], in a virtualenv under
# ${ALPINE_REGISTRY_S3_VENV:-~/.cache/alpine-registry/moto}) when it is missing, starts it
# on a free port of 127.0.0.1 with its log in a temporary directory, waits until it
# answers, creates a bucket and exports the ALPINE_REGISTRY_TEST_S3_* variables the tests
# read (endpoint, bucket, access and secret key). moto keeps objects in memory and checks
# no signatures: any key pair is accepted. stop_s3 stops the server and removes the
# directory.
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

S3_DIR=""
S3_PID=""
S3_VENV="${ALPINE_REGISTRY_S3_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/alpine-registry/moto}"

install_moto() {
  if [ -x "$S3_VENV/bin/moto_server" ]; then
    return 0
  fi
  echo "installing moto[server] into $S3_VENV"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "python3 with venv is needed for the S3 tests (Debian: apt-get install python3-venv)" >&2
      return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$S3_VENV"
  python3 -m venv "$S3_VENV"
  "$S3_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6'
}

start_s3() {
  local port tries
  install_moto
  S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/alpine-registry-s3.XXXXXX")
  port=$(free_loopback_port)
  "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$S3_DIR/server.log" 2>&1 &
  S3_PID=$!
  tries=0
  until curl --silent --output /dev/null "http://127.0.0.1:$port/"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ] || ! kill -0 "$S3_PID" 2>/dev/null; then
      echo "the S3 server did not become ready on 127.0.0.1:$port" >&2
      cat "$S3_DIR/server.log" >&2
      return 1
    fi
    sleep 0.5
  done
  export ALPINE_REGISTRY_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export ALPINE_REGISTRY_TEST_S3_BUCKET="alpine-registry-test"
  export ALPINE_REGISTRY_TEST_S3_ACCESS_KEY="test-access-key"
  export ALPINE_REGISTRY_TEST_S3_SECRET_KEY="test-secret-key"
  curl --silent --show-error --fail --output /dev/null --request PUT \
    "$ALPINE_REGISTRY_TEST_S3_ENDPOINT/$ALPINE_REGISTRY_TEST_S3_BUCKET" || {
    echo "creating the bucket failed" >&2
    cat "$S3_DIR/server.log" >&2
    return 1
  }
  echo "moto $("$S3_VENV/bin/pip" show moto 2>/dev/null | awk '/^Version:/ {print $2}') (S3) on 127.0.0.1:$port"
}

stop_s3() {
  if [ -n "$S3_PID" ]; then
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
  fi
  if [ -n "$S3_DIR" ]; then
    rm -rf "$S3_DIR"
  fi
  S3_PID=""
  S3_DIR=""
  unset ALPINE_REGISTRY_TEST_S3_ENDPOINT ALPINE_REGISTRY_TEST_S3_BUCKET \
    ALPINE_REGISTRY_TEST_S3_ACCESS_KEY ALPINE_REGISTRY_TEST_S3_SECRET_KEY
}
