# shellcheck shell=bash disable=SC2034
# Shared helpers for the bench/*.sh scripts (sourced, not run).
#
# The caller sets: BENCH_DIR, LOGS (log directory), RES (results TSV), BENCH_STEP_TIMEOUT, ROOT
# (checkout), and the arrays FAILED=() and VERSIONS=(). Results rows are
# "step<TAB>tool<TAB>status<TAB>wall s<TAB>user s<TAB>sys s<TAB>peak RSS KiB".

log() { printf '== %s\n' "$*" >&2; }

apt_install() {
  log "installing Debian package(s): $*"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >>"$LOGS/apt.log" 2>&1 \
    || { echo "apt-get install $* failed (see $LOGS/apt.log); install it by hand" >&2; exit 1; }
}

DROP_CACHES=no
drop_caches() {
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then DROP_CACHES=yes; fi
}

# build_tidemark: cargo build --release -p tidemark-cli unless BENCH_SKIP_BUILD=1; exits when no binary.
build_tidemark() {
  if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building tidemark (cargo build --release -p tidemark-cli)"
    if ! (cd "$ROOT" && cargo build --release -p tidemark-cli) >"$LOGS/build.log" 2>&1; then
      tail -n 20 "$LOGS/build.log" >&2
      echo "cargo build failed (log $LOGS/build.log)" >&2
      exit 1
    fi
  fi
  [[ -x $TIDEMARK_BIN ]] || { echo "no tidemark binary at $TIDEMARK_BIN (set TIDEMARK_BIN)" >&2; exit 1; }
  local rev
  rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit yet")
  [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && rev+=" (work tree has uncommitted changes)"
  VERSIONS+=("git rev: $rev")
  VERSIONS+=("tidemark: $("$TIDEMARK_BIN" --version 2>&1 | sed -n 1p) ($TIDEMARK_BIN)")
}

# run_step STEP TOOL CMD...: times CMD followed by sync (caches dropped first unless WARM=1) and
# appends a results row; returns non-zero on failure. The command's output goes to the step's log.
run_step() {
  local step=$1 tool=$2 rc=0 tf wall user sys rss status=ok
  shift 2
  local logf="$LOGS/$tool-${step//[^a-zA-Z0-9]/_}.log"
  [[ ${WARM:-0} == 1 ]] || drop_caches
  tf=$(mktemp)
  printf '   %-14s %-44s' "$tool" "$step" >&2
  /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$BENCH_STEP_TIMEOUT" bash -c '"$@" && sync' _ "$@" \
    >"$logf" 2>&1 || rc=$?
  read -r wall user sys rss < <(tail -n1 "$tf") || true
  rm -f "$tf"
  ((rc == 0)) || status="FAIL($rc)"
  ((rc == 124)) && status=TIMEOUT
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$status" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" >>"$RES"
  if ((rc)); then
    echo " $status" >&2
    tail -n 5 "$logf" | sed 's/^/      | /' >&2
    FAILED+=("$tool: $step exited $rc (log $logf)")
    return 1
  fi
  printf ' %8.2f s wall %8.2f s CPU %6d MiB\n' "$wall" "$(echo "$user + $sys" | bc)" "$(((rss + 512) / 1024))" >&2
}

# record STEP TOOL WALL: a row for a time measured some other way (no CPU or memory figure).
record() { printf '%s\t%s\tok\t%s\t0\t0\t0\n' "$1" "$2" "$3" >>"$RES"; }

# val STEP TOOL wall|cpu|mib: one figure of a successful step, empty when missing or failed.
val() {
  awk -F'\t' -v s="$1" -v t="$2" -v f="$3" '$1 == s && $2 == t && $3 == "ok" {
    if (f == "wall") v = $4; else if (f == "cpu") v = $5 + $6; else v = int(($7 + 512) / 1024)
  } END { if (v != "") print v }' "$RES"
}

# verdict NAME DETAIL A OP B: a "PASS"/"FAIL" line in TARGETS for A OP B (bc); "n/a" when A or B is empty.
verdict() {
  local name=$1 detail=$2 a=$3 op=$4 b=$5
  if [[ -z $a || -z $b ]]; then TARGETS+=("$name: n/a (a step failed)"); return; fi
  if (($(echo "$a $op $b" | bc))); then TARGETS+=("$name: $detail PASS"); else TARGETS+=("$name: $detail FAIL"); fi
}

# ratio A B: A / B with two decimals, empty when either is empty or B is zero.
ratio() { [[ -n $1 && -n $2 ]] && (($(echo "$2 != 0" | bc))) && echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; true; }
