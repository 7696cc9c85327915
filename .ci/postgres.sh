# Sourced by .ci/run: a private, throwaway PostgreSQL server on loopback for the tests.
#
# start_postgres installs PostgreSQL from the distribution's packages when it is missing
# (Debian: apt-get install postgresql, as root), creates a cluster in a temporary
# directory, starts it on a free port of 127.0.0.1, creates a role with a password that
# may CREATE DATABASE, and sets POSTGRES_TEST_URL to it. stop_postgres stops the server
# and removes the directory. Nothing here touches another cluster on the machine.
#
# start_postgres --tls does the same with a server that requires TLS, as managed services
# do: a CA and a server certificate (for IP:127.0.0.1 and DNS:localhost) are made with
# openssl in the directory, the server runs with ssl = on, and its pg_hba.conf accepts TCP
# connections over TLS only. POSTGRES_TEST_CA is then the CA's certificate, for
# sslmode=verify-full&sslrootcert=$POSTGRES_TEST_CA.
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

POSTGRES_DIR=""
POSTGRES_TEST_CA=""

postgres_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  fi
}

# Runs a command as the owner of the cluster: the postgres user when we are root (the
# server refuses to run as root), else ourselves.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# A throwaway CA and a certificate it signed for the server on loopback, in $1 (the key
# readable by the server only).
make_postgres_certificates() {
  local dir=$1
  if ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "openssl is needed to make the TLS test server's certificates (Debian: apt-get install openssl)" >&2
      return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  fi
  mkdir -p "$dir"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=alpine-registry test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
        >"$dir/server.ext" &&
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt"
  } >"$dir/openssl.log" 2>&1 || {
    cat "$dir/openssl.log" >&2
    return 1
  }
  chmod 600 "$dir/server.key"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir/server.key" "$dir/server.crt"
  fi
}

start_postgres() {
  local bindir port password tls="" options
  if [ "${1:-}" = "--tls" ]; then
    tls=1
  fi
  bindir=$(postgres_bindir)
  if [ -z "$bindir" ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "PostgreSQL is needed for the tests: install it (Debian: apt-get install postgresql)" >&2
      return 1
    fi
    echo "installing PostgreSQL"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    bindir=$(postgres_bindir)
    if [ -z "$bindir" ]; then
      echo "no initdb under /usr/lib/postgresql/*/bin after installing postgresql" >&2
      return 1
    fi
  fi

  POSTGRES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/alpine-registry-postgres.XXXXXX")
  chmod 755 "$POSTGRES_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$POSTGRES_DIR"
  fi
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

  # The superuser reaches the server through the socket in the directory only; the tests
  # log in over TCP with a password (SCRAM).
  as_postgres "$bindir/initdb" --pgdata="$POSTGRES_DIR/data" --username=postgres \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
    >"$POSTGRES_DIR/initdb.log" 2>&1 || {
    cat "$POSTGRES_DIR/initdb.log" >&2
    return 1
  }
  # A throwaway server for tests: durability is not wanted, speed is.
  options="-k $POSTGRES_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ -n "$tls" ]; then
    make_postgres_certificates "$POSTGRES_DIR/tls" || return 1
    options="$options -c ssl=on -c ssl_cert_file=$POSTGRES_DIR/tls/server.crt \
-c ssl_key_file=$POSTGRES_DIR/tls/server.key"
    # Over TCP, TLS or nothing: a plain connection matches no line and is refused.
    printf '%s\n' "local all all trust" "hostssl all all 127.0.0.1/32 scram-sha-256" |
      as_postgres tee "$POSTGRES_DIR/data/pg_hba.conf" >/dev/null
    POSTGRES_TEST_CA="$POSTGRES_DIR/tls/ca.crt"
  fi
  # A port can still be taken between the look and the bind: then another one.
  local attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_loopback_port)
    rm -f "$POSTGRES_DIR/server.log"
    if as_postgres "$bindir/pg_ctl" --pgdata="$POSTGRES_DIR/data" \
      --log="$POSTGRES_DIR/server.log" --options="-p $port $options" --wait --timeout=60 \
      start >/dev/null 2>&1; then
      break
    fi
    if [ "$attempt" -eq 5 ] || ! grep -q "Address already in use" "$POSTGRES_DIR/server.log"; then
      cat "$POSTGRES_DIR/server.log" >&2
      return 1
    fi
    echo "127.0.0.1:$port was taken: trying another port" >&2
  done
  local tries=0
  until "$bindir/pg_isready" --quiet --host=127.0.0.1 --port="$port"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
      echo "PostgreSQL did not become ready on 127.0.0.1:$port" >&2
      cat "$POSTGRES_DIR/server.log" >&2
      return 1
    fi
    sleep 0.5
  done
  as_postgres "$bindir/psql" --quiet --no-psqlrc --host="$POSTGRES_DIR" --port="$port" \
    --username=postgres --dbname=postgres --set=ON_ERROR_STOP=1 \
    --command="CREATE ROLE registry LOGIN CREATEDB PASSWORD '$password'" >/dev/null
  POSTGRES_TEST_URL="postgres://registry:$password@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port${tls:+ (TLS only)}"
}

stop_postgres() {
  if [ -n "$POSTGRES_DIR" ] && [ -d "$POSTGRES_DIR/data" ]; then
    as_postgres "$(postgres_bindir)/pg_ctl" --pgdata="$POSTGRES_DIR/data" --mode=immediate \
      stop >/dev/null 2>&1 || true
  fi
  if [ -n "$POSTGRES_DIR" ]; then
    rm -rf "$POSTGRES_DIR"
  fi
  POSTGRES_DIR=""
  POSTGRES_TEST_CA=""
}
