#!/usr/bin/env bash
# Builds the Dockerfile's build stage without a container engine: the build context is
# the repository less what .dockerignore leaves out; exactly the paths the stage's COPY
# lines name are copied from it into a temporary directory laid out under its WORKDIR,
# and the stage's cargo command runs there. A file the build needs but no COPY line
# brings (a template, an example the manifest names, a migration) fails it here as it
# would fail `docker build`. The built binary is run once (`print-default-config`).
#
# The build goes to $DOCKERFILE_CHECK_TARGET_DIR, by default the repository's own target
# directory (or $CARGO_TARGET_DIR), as a debug build unless DOCKERFILE_CHECK_RELEASE=1
# (see below): it reuses every dependency the tests compiled. The copied sources live in
# <target>/dockerfile-check/image, always the same path, with the files' times kept: a run
# on unchanged sources compiles nothing, and one after a change compiles the registry
# alone, in place of its previous build.
#
# Understood: one WORKDIR, `COPY [--chown=...] SRC... DEST` (shell form) and `RUN cargo
# ...` in the first stage, simple .dockerignore patterns (no `!` exceptions). Anything
# else in the first stage fails the check, so that it never passes by not knowing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
target_dir=${DOCKERFILE_CHECK_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}}

fail() {
  echo "dockerfile-check: $*" >&2
  exit 1
}

# The first stage, one instruction per line (continuations joined, comments dropped).
stage=$(awk '
  /^[[:space:]]*#/ { next }
  { line = line $0 }
  /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, " ", line); next }
  { if (line ~ /[^[:space:]]/) print line; line = "" }
' Dockerfile | awk 'toupper($1) == "FROM" { stages++ } stages == 1')
[ -n "$stage" ] || fail "no FROM in the Dockerfile"

workdir=/
copies=()
commands=()
while read -r instruction rest; do
  case "${instruction^^}" in
    FROM | LABEL) ;;
    WORKDIR) workdir=$rest ;;
    COPY)
      case "$rest" in
        --from=* | *' --from='* | '['*) fail "COPY form not understood: COPY $rest" ;;
      esac
      copies+=("$rest")
      ;;
    RUN)
      case "$rest" in
        cargo\ *) commands+=("$rest") ;;
        *) fail "a RUN other than cargo in the build stage is not understood: RUN $rest" ;;
      esac
      ;;
    *) fail "instruction not understood in the build stage: $instruction $rest" ;;
  esac
done <<<"$stage"
[ "${#copies[@]}" -gt 0 ] || fail "the build stage copies nothing"
[ "${#commands[@]}" -eq 1 ] || fail "expected one RUN cargo ... in the build stage, found ${#commands[@]}"
case "$workdir" in /*) ;; *) fail "WORKDIR $workdir is not absolute" ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/alpine-registry-dockerfile.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
image=$target_dir/dockerfile-check/image
rm -rf "$image"
mkdir -p "$image"

# The build context: the repository less the .dockerignore patterns, anchored at its root
# (as Docker reads them: a leading / or ./ and a trailing / mean nothing).
excludes=$tmp/excludes
: >"$excludes"
if [ -f .dockerignore ]; then
  while IFS= read -r pattern || [ -n "$pattern" ]; do
    pattern=${pattern%%[[:space:]]}
    case "$pattern" in '' | '#'*) continue ;; '!'*) fail ".dockerignore exceptions (!) are not understood: $pattern" ;; esac
    pattern=${pattern#/}
    pattern=${pattern#./}
    pattern=${pattern%/}
    echo "$pattern" >>"$excludes"
  done <.dockerignore
fi
mkdir "$tmp/context"
shopt -s dotglob nullglob
top=(*)
shopt -u dotglob nullglob
tar -cf - --anchored --exclude-from="$excludes" "${top[@]}" | tar -xf - -C "$tmp/context"

image_workdir=$image${workdir%/}
mkdir -p "$image_workdir"
for copy in "${copies[@]}"; do
  read -ra words <<<"$copy"
  args=()
  for word in "${words[@]}"; do
    case "$word" in --chown=* | --chmod=*) ;; *) args+=("$word") ;; esac
  done
  [ "${#args[@]}" -ge 2 ] || fail "COPY needs a source and a destination: COPY $copy"
  dest=${args[-1]}
  sources=("${args[@]:0:${#args[@]}-1}")
  case "$dest" in /*) dest_path=$image$dest ;; *) dest_path=$image_workdir/$dest ;; esac
  for source in "${sources[@]}"; do
    if [ ! -e "$tmp/context/$source" ]; then
      if [ -e "$repo/$source" ]; then
        fail "COPY $source: .dockerignore leaves it out of the build context"
      fi
      fail "COPY $source: not in the build context"
    fi
    if [ -d "$tmp/context/$source" ]; then
      # A directory's content goes into the destination directory.
      mkdir -p "$dest_path"
      cp -a "$tmp/context/$source/." "$dest_path/"
    elif [ "${#sources[@]}" -gt 1 ] || [[ "$dest" == */ ]] || [ -d "$dest_path" ]; then
      mkdir -p "$dest_path"
      cp -a "$tmp/context/$source" "$dest_path/"
    else
      mkdir -p "$(dirname "$dest_path")"
      cp -a "$tmp/context/$source" "$dest_path"
    fi
  done
done

command=${commands[0]}
# Which files a build needs does not depend on its profile: unless
# DOCKERFILE_CHECK_RELEASE=1 asks for the exact command, the build is the debug build the
# tests made (`cargo build --locked --bins --examples`, whose dependencies have the same
# features as the tests'), so only the registry itself is compiled, in a minute or two,
# where a release build from nothing takes ten. It needs every file the Dockerfile's
# command needs, and the examples too.
profile=release
if [ "${DOCKERFILE_CHECK_RELEASE:-0}" != 1 ]; then
  [[ "$command" == "cargo build "* ]] || fail "the build stage's command is not a cargo build: $command"
  command="cargo build --locked --bins --examples"
  profile=debug
fi
echo "dockerfile-check: in WORKDIR $workdir with $(cd "$image_workdir" && ls -A | tr '\n' ' ')"
# The debug build runs in a target directory of its own, made of hard links to the
# compiled dependencies of the repository's (no copy, no disk): sharing the directory
# itself would let this build's binary replace the repository's at target/debug.
build_target=$target_dir
if [ "$profile" = debug ]; then
  build_target=$target_dir/dockerfile-check/target
  rm -rf "$build_target"
  mkdir -p "$build_target"
  if [ -d "$target_dir/debug" ]; then
    cp -al "$target_dir/debug" "$build_target/debug"
    # Its own lock (a hard link would share the repository build's) and no incremental
    # state of the repository's crate.
    rm -rf "$build_target/debug/.cargo-lock" "$build_target/debug/incremental"
  fi
  trap 'rm -rf "$tmp" "$build_target"' EXIT
fi
echo "dockerfile-check: $command (CARGO_TARGET_DIR=$build_target)"
started=$SECONDS
(cd "$image_workdir" && CARGO_TARGET_DIR=$build_target bash -c "$command")
echo "dockerfile-check: built in $((SECONDS - started))s"

binary=$build_target/$profile/alpine-registry
[ -x "$binary" ] || fail "no binary at $binary after the build"
"$binary" print-default-config | grep -q '^\[server\]' || fail "$binary print-default-config printed no configuration"
echo "dockerfile-check: the Dockerfile's build stage builds"
