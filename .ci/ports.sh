# Sourced by .ci/postgres.sh and .ci/s3.sh: a port of 127.0.0.1 for a test server.

# Prints a port nothing listens on, below the kernel's range of ephemeral ports: a port in
# that range may be the local end of one of the tests' own connections at any moment,
# and then a server cannot bind it although nothing answers there.
free_loopback_port() {
  local low=32768 high port
  if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
    read -r low high </proc/sys/net/ipv4/ip_local_port_range
  fi
  [ "$low" -gt 21024 ] || low=41024
  port=$((20000 + RANDOM % (low - 21024)))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}
