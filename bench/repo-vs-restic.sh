#!/usr/bin/env bash
# Tidemark vs restic, side by side in one run, on a generated mixed dataset. See bench/README.md.
#
#   bench/repo-vs-restic.sh                                    # full run: 2 GiB, both tools
#   BENCH_SIZE_MB=200 BENCH_TOOLS=restic bench/repo-vs-restic.sh   # quick run, restic only
#
# Environment: BENCH_DIR (/tmp/tidemark-bench), BENCH_SIZE_MB (2048), BENCH_SEED (42),
# BENCH_SMALL_FILES (20000), BENCH_TOOLS ("tidemark restic"), BENCH_STEP_TIMEOUT (3600 s),
# BENCH_KEEP (0: delete restored trees after verifying them), BENCH_SKIP_BUILD (0),
# TIDEMARK_BIN (target/release/tidemark), BENCH_PASSWORD.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/tidemark-bench}
BENCH_SIZE_MB=${BENCH_SIZE_MB:-2048}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_SMALL_FILES=${BENCH_SMALL_FILES:-20000}
BENCH_TOOLS=${BENCH_TOOLS:-tidemark restic}
BENCH_STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
TIDEMARK_BIN=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tidemark}
export RESTIC_PASSWORD=${BENCH_PASSWORD:-tidemark-bench-password}
export TIDEMARK_PASSWORD=$RESTIC_PASSWORD
GEN=(python3 "$HERE/benchdata.py")
CMDLINE="BENCH_DIR=$BENCH_DIR BENCH_SIZE_MB=$BENCH_SIZE_MB BENCH_SEED=$BENCH_SEED BENCH_SMALL_FILES=$BENCH_SMALL_FILES BENCH_TOOLS='$BENCH_TOOLS' $0 $*"

read -r -a TOOLS <<<"$BENCH_TOOLS"
for t in "${TOOLS[@]}"; do
  [[ $t == tidemark || $t == restic ]] || { echo "BENCH_TOOLS: unknown tool '$t' (use tidemark and/or restic)" >&2; exit 2; }
done
[[ $BENCH_SIZE_MB =~ ^[0-9]+$ && $BENCH_SIZE_MB -ge 50 ]] || { echo "BENCH_SIZE_MB must be an integer >= 50" >&2; exit 2; }

LOGS=$BENCH_DIR/logs RES=$BENCH_DIR/results.tsv META=$BENCH_DIR/meta.env
SRC=$BENCH_DIR/src
FAILED=() VERSIONS=() DATASET_LINE="(not generated)" DROP_CACHES=no
declare -A BROKEN=()
# log, apt_install, drop_caches, run_step (shared with the other benchmarks)
# shellcheck source=benchlib.sh
source "$HERE/benchlib.sh"

# ---------------------------------------------------------------- report (always, on exit)
finish() {
  local rc=$?
  trap - EXIT
  {
    echo
    echo "## Tidemark vs restic benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- dataset: $DATASET_LINE"
    echo "- machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), page caches dropped before each step: $DROP_CACHES"
    for v in "${VERSIONS[@]}"; do echo "- $v"; done
    echo "- every timed step includes a final \`sync\`; wall/CPU/peak RSS from /usr/bin/time; CPU = user + sys"
    echo
    if [[ -s $RES ]]; then "${GEN[@]}" report "$RES" "$META" || echo "(report failed)"; else echo "(no step ran)"; fi
    if ((${#FAILED[@]})); then
      echo; echo "FAILED:"; printf -- '- %s\n' "${FAILED[@]}"
    fi
    echo; echo "total bench time: ${SECONDS}s; logs in $LOGS"
  } | tee "$BENCH_DIR/report.md"
  ((rc == 0 && ${#FAILED[@]})) && rc=1
  exit "$rc"
}

mkdir -p "$BENCH_DIR"
rm -rf "$LOGS" "$RES" "$META" "$BENCH_DIR"/repo-* "$BENCH_DIR"/restore-* "$BENCH_DIR/cache" "$SRC"
mkdir -p "$LOGS" "$BENCH_DIR/cache"
: >"$RES"; : >"$META"
trap finish EXIT
export RESTIC_CACHE_DIR=$BENCH_DIR/cache/restic XDG_CACHE_HOME=$BENCH_DIR/cache/xdg

# ---------------------------------------------------------------- prerequisites
[[ -x /usr/bin/time ]] || apt_install time
command -v python3 >/dev/null || apt_install python3
[[ " ${TOOLS[*]} " == *" restic "* ]] && ! command -v restic >/dev/null && apt_install restic

if [[ " ${TOOLS[*]} " == *" tidemark "* ]]; then
  if [[ $BENCH_SKIP_BUILD != 1 ]]; then
    log "building tidemark (cargo build --release -p tidemark-cli)"
    if ! (cd "$ROOT" && cargo build --release -p tidemark-cli) >"$LOGS/build.log" 2>&1; then
      tail -n 20 "$LOGS/build.log" >&2
      FAILED+=("tidemark: cargo build failed (log $LOGS/build.log); tidemark dropped from this run")
      TOOLS=("${TOOLS[@]/tidemark/}"); read -r -a TOOLS <<<"${TOOLS[*]}"
    fi
  fi
  if [[ " ${TOOLS[*]} " == *" tidemark "* && ! -x $TIDEMARK_BIN ]]; then
    FAILED+=("tidemark: no binary at $TIDEMARK_BIN; tidemark dropped from this run")
    TOOLS=("${TOOLS[@]/tidemark/}"); read -r -a TOOLS <<<"${TOOLS[*]}"
  fi
fi
((${#TOOLS[@]})) || { echo "no tool left to benchmark" >&2; exit 1; }
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit yet")
[[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && rev+=" (work tree has uncommitted changes)"
VERSIONS+=("git rev: $rev")
for t in "${TOOLS[@]}"; do
  case $t in
    tidemark) VERSIONS+=("tidemark: $("$TIDEMARK_BIN" --version 2>&1 | head -n1) ($TIDEMARK_BIN)") ;;
    restic) VERSIONS+=("restic: $(restic version 2>&1 | head -n1) (repository format default, compression auto)") ;;
  esac
done

# ---------------------------------------------------------------- dataset
GEN_V=$("${GEN[@]}" version)
PRISTINE=$BENCH_DIR/dataset-${BENCH_SIZE_MB}mb-seed${BENCH_SEED}-n${BENCH_SMALL_FILES}-v${GEN_V}
if [[ ! -f $PRISTINE.done ]]; then
  rm -rf "$PRISTINE"
  log "generating dataset $PRISTINE"
  gen_start=$SECONDS
  "${GEN[@]}" generate "$PRISTINE" "$BENCH_SIZE_MB" "$BENCH_SEED" "$BENCH_SMALL_FILES"
  touch "$PRISTINE.done"
  log "dataset generated in $((SECONDS - gen_start)) s"
else
  log "reusing dataset $PRISTINE"
fi
log "copying the dataset to $SRC (the run modifies this copy)"
cp -a "$PRISTINE" "$SRC"
read -r BYTES1 FILES1 < <("${GEN[@]}" tree-bytes "$SRC")
echo "DATA_BYTES_1=$BYTES1" >>"$META"
DATASET_LINE="seed $BENCH_SEED, ${BENCH_SIZE_MB} MiB requested, $FILES1 files, $BYTES1 bytes ($((BYTES1 / 1048576)) MiB): $BENCH_SMALL_FILES small files (1-64 KiB, text and random binary) in small/, 4 incompressible files in large/ (1/8 of the size each), CSV and log text in text/ (1/5), plus empty files, an empty directory and symlinks in misc/"

# ---------------------------------------------------------------- measurement helpers


repo_of() { echo "$BENCH_DIR/repo-$1"; }
tool_cmd() {  # tool_cmd TOOL REPO -> CMD array
  case $1 in
    tidemark) CMD=("$TIDEMARK_BIN" -r "$2") ;;
    restic) CMD=(restic -r "$2") ;;
  esac
}

STEP_NO=0
# each_tool STEP FUNCTION: runs FUNCTION TOOL for every tool; the order alternates from step to step.
each_tool() {
  local step=$1 fn=$2 order=() i
  if ((STEP_NO++ % 2)); then for ((i = ${#TOOLS[@]} - 1; i >= 0; i--)); do order+=("${TOOLS[i]}"); done
  else order=("${TOOLS[@]}"); fi
  log "$step"
  for t in "${order[@]}"; do
    if [[ -n ${BROKEN[$t]:-} ]]; then
      printf '%s\t%s\tskipped\t0\t0\t0\t0\n' "$step" "$t" >>"$RES"; continue
    fi
    "$fn" "$t" "$step" || true
  done
}

do_init() { tool_cmd "$1" "$(repo_of "$1")"; run_step "$2" "$1" "${CMD[@]}" init || BROKEN[$1]=1; }
do_backup() { tool_cmd "$1" "$(repo_of "$1")"; run_step "$2" "$1" "${CMD[@]}" backup "$SRC"; }
do_check() { tool_cmd "$1" "$(repo_of "$1")"; run_step "$2" "$1" "${CMD[@]}" check --read-data; }
do_restore() {
  local target=$BENCH_DIR/restore-$1 root="" c
  tool_cmd "$1" "$(repo_of "$1")"
  run_step "$2" "$1" "${CMD[@]}" restore latest --target "$target" || return 0
  # Untimed verification. restic restores the absolute source path below the target.
  for c in "$target$SRC" "$target/$(basename "$SRC")" "$target"; do
    [[ -d $c/small ]] && { root=$c; break; }
  done
  if [[ -z $root ]]; then
    FAILED+=("$1: restore verification: no restored tree with small/ found under $target")
  elif ! diff -r --no-dereference -q "$SRC" "$root" >"$LOGS/$1-verify.log" 2>&1; then
    FAILED+=("$1: restore verification: restored tree differs from the source ($(wc -l <"$LOGS/$1-verify.log") lines in $LOGS/$1-verify.log)")
    head -n 5 "$LOGS/$1-verify.log" | sed 's/^/      | /' >&2
  else
    echo "      restored tree equals the source (diff -r); $("${GEN[@]}" meta-compare "$SRC" "$root" | tail -n1)" >&2
  fi
  [[ $BENCH_KEEP == 1 ]] || rm -rf "$target"
}

SMALL_SRC=$PRISTINE/small
do_20k_init() {
  tool_cmd "$1" "$BENCH_DIR/repo-20k-$1"
  "${CMD[@]}" init >"$LOGS/$1-20k-init.log" 2>&1 || { FAILED+=("$1: init of the 20k repository failed"); BROKEN[$1]=1; }
}
do_20k_backup() { tool_cmd "$1" "$BENCH_DIR/repo-20k-$1"; run_step "$2" "$1" "${CMD[@]}" backup "$SMALL_SRC"; }
do_20k_warm() { WARM=1 do_20k_backup "$@"; }

# ---------------------------------------------------------------- the run
log "tools: ${TOOLS[*]}; results in $RES"
each_tool "init" do_init
each_tool "first backup" do_backup
log "modifying ~5 % of the source deterministically (untimed)"
"${GEN[@]}" modify "$SRC" "$BENCH_SIZE_MB" "$BENCH_SEED" >&2
read -r BYTES2 FILES2 < <("${GEN[@]}" tree-bytes "$SRC")
echo "DATA_BYTES_2=$BYTES2" >>"$META"
DATASET_LINE+="; after the modification $FILES2 files, $BYTES2 bytes"
each_tool "second backup (~5 % changed)" do_backup
each_tool "no-change backup" do_backup
each_tool "restore" do_restore
each_tool "check --read-data" do_check
for t in "${TOOLS[@]}"; do
  [[ -d $(repo_of "$t") ]] && echo "REPO_BYTES_$t=$(du -sb "$(repo_of "$t")" | cut -f1)" >>"$META"
done

BROKEN=()
log "separate measurement: $BENCH_SMALL_FILES small files ($SMALL_SRC) in their own repositories"
for t in "${TOOLS[@]}"; do do_20k_init "$t"; done
each_tool "20k files: first backup" do_20k_backup
each_tool "20k files: no-change backup" do_20k_backup
each_tool "20k files: no-change backup (warm cache)" do_20k_warm
log "done"
