#!/usr/bin/env bash
# Tidemark bucket snapshots vs rclone sync (+ restic of the synced directory), side by side in one
# run, on a local S3 server (moto) holding a generated bucket. See bench/README.md.
#
#   bench/bucket-vs-rclone.sh                                          # full run: 50,000 objects
#   BENCH_OBJECTS=5000 BENCH_SMALL_OBJECTS=1000 bench/bucket-vs-rclone.sh   # quick run
#
# Environment: BENCH_DIR (/tmp/tidemark-bucket-bench), BENCH_OBJECTS (50000), BENCH_SMALL_OBJECTS
# (10000: the second bucket for the memory comparison), BENCH_SEED (42), BENCH_CONCURRENCY (8:
# tidemark --concurrency and rclone --transfers), BENCH_RCLONE_FLAGS, BENCH_STEP_TIMEOUT (3600 s),
# BENCH_KEEP (0), BENCH_SKIP_BUILD (0), TIDEMARK_BIN (target/release/tidemark), BENCH_PASSWORD.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/tidemark-bucket-bench}
BENCH_OBJECTS=${BENCH_OBJECTS:-50000}
BENCH_SMALL_OBJECTS=${BENCH_SMALL_OBJECTS:-10000}
BENCH_SEED=${BENCH_SEED:-42}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-8}
BENCH_RCLONE_FLAGS=${BENCH_RCLONE_FLAGS:---fast-list --use-server-modtime --checkers 16}
BENCH_STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}
BENCH_KEEP=${BENCH_KEEP:-0}
TIDEMARK_BIN=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tidemark}
export RESTIC_PASSWORD=${BENCH_PASSWORD:-tidemark-bench-password}
export TIDEMARK_PASSWORD=$RESTIC_PASSWORD
# moto accepts any credentials; tidemark, rclone and boto3 all sign with these.
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
DATA=(python3 "$HERE/bucketdata.py")
CMDLINE="BENCH_OBJECTS=$BENCH_OBJECTS BENCH_SMALL_OBJECTS=$BENCH_SMALL_OBJECTS BENCH_SEED=$BENCH_SEED BENCH_CONCURRENCY=$BENCH_CONCURRENCY BENCH_RCLONE_FLAGS='$BENCH_RCLONE_FLAGS' $0 $*"
for v in BENCH_OBJECTS BENCH_SMALL_OBJECTS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 100 ]] || { echo "$v must be an integer >= 100" >&2; exit 2; }
done
[[ $BENCH_CONCURRENCY =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_CONCURRENCY must be a positive integer" >&2; exit 2; }

LOGS=$BENCH_DIR/logs RES=$BENCH_DIR/results.tsv
MIRROR=$BENCH_DIR/mirror
FAILED=() VERSIONS=() TARGETS=() NOTES=()
MOTO_PID=""
# shellcheck source=benchlib.sh
source "$HERE/benchlib.sh"

# ---------------------------------------------------------------- report (always, on exit)
finish() {
  local rc=$?
  trap - EXIT
  [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  {
    echo
    echo "## Tidemark bucket snapshots vs rclone sync and restic ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); page caches dropped before each step: $DROP_CACHES"
    echo "- load: before \`${LOAD_BEFORE:-?}\`, after \`$(uptime | sed 's/.*load/load/')\`"
    for v in "${VERSIONS[@]}"; do echo "- $v"; done
    for n in "${NOTES[@]}"; do echo "- $n"; done
    echo "- wall/CPU/peak RSS from /usr/bin/time (CPU = user + sys); every timed step ends with \`sync\`"
    echo
    if [[ -s $RES ]]; then python3 "$HERE/benchtable.py" "$RES" tidemark rclone restic || echo "(table failed)"; else echo "(no step ran)"; fi
    if ((${#TARGETS[@]})); then echo; printf -- '- %s\n' "${TARGETS[@]}"; fi
    if ((${#FAILED[@]})); then echo; echo "FAILED:"; printf -- '- %s\n' "${FAILED[@]}"; fi
    echo; echo "total bench time: ${SECONDS}s; logs in $LOGS"
  } | tee "$BENCH_DIR/report.md"
  ((rc == 0 && ${#FAILED[@]})) && rc=1
  exit "$rc"
}

mkdir -p "$BENCH_DIR"
rm -rf "$LOGS" "$RES" "$BENCH_DIR/tidemark.key" "$BENCH_DIR"/repo-* "$BENCH_DIR"/restore-* "$BENCH_DIR/cache" "$MIRROR"
mkdir -p "$LOGS" "$BENCH_DIR/cache"
: >"$RES"
LOAD_BEFORE=$(uptime | sed 's/.*load/load/')
trap finish EXIT
# rclone's copy, two repositories and two restores: ~5x the bucket (about 21 KiB per object).
need_mib=$((BENCH_OBJECTS * 21 * 5 / 1024)) free_mib=$(($(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }') / 1024))
((free_mib >= need_mib)) || { echo "$BENCH_DIR has $free_mib MiB free; this run needs about $need_mib MiB" >&2; exit 1; }
export RESTIC_CACHE_DIR=$BENCH_DIR/cache/restic XDG_CACHE_HOME=$BENCH_DIR/cache/xdg

# ---------------------------------------------------------------- prerequisites
[[ -x /usr/bin/time ]] || apt_install time
command -v bc >/dev/null || apt_install bc
command -v rclone >/dev/null || apt_install rclone
command -v restic >/dev/null || apt_install restic
"$ROOT/scripts/install-test-deps" s3 >"$LOGS/install-moto.log" 2>&1 \
  || { echo "moto is missing and scripts/install-test-deps s3 failed (log $LOGS/install-moto.log)" >&2; exit 1; }
build_tidemark
VERSIONS+=("rclone: $(rclone version 2>&1 | sed -n 1p), flags \`--transfers $BENCH_CONCURRENCY $BENCH_RCLONE_FLAGS\`")
VERSIONS+=("restic: $(restic version 2>&1 | sed -n 1p)")
VERSIONS+=("S3 server: moto $(python3 -c 'import moto; print(moto.__version__)') on 127.0.0.1 (in-memory; ListObjectsV2 pages of 1,000)")

# ---------------------------------------------------------------- the S3 server and the buckets
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT=http://127.0.0.1:$PORT
MOTO=(moto_server)
command -v moto_server >/dev/null || MOTO=(python3 -m moto.server)
log "starting moto on $ENDPOINT"
"${MOTO[@]}" -H 127.0.0.1 -p "$PORT" >"$LOGS/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "$ENDPOINT/" && break
  sleep 0.2
done
curl -s -o /dev/null "$ENDPOINT/" || { echo "moto did not answer on $ENDPOINT (log $LOGS/moto.log)" >&2; exit 1; }

BUCKET=bench SMALL_BUCKET=bench-small
url_of() { echo "s3://$1?endpoint=$ENDPOINT&region=us-east-1&path_style=true"; }
URL=$(url_of "$BUCKET") SMALL_URL=$(url_of "$SMALL_BUCKET")
fill_start=$SECONDS
log "filling s3://$BUCKET with $BENCH_OBJECTS objects and s3://$SMALL_BUCKET with $BENCH_SMALL_OBJECTS (PUTs, 16 at a time)"
read -r COUNT BYTES < <("${DATA[@]}" fill-s3 "$ENDPOINT" "$BUCKET" "$BENCH_OBJECTS" "$BENCH_SEED")
read -r SCOUNT SBYTES < <("${DATA[@]}" fill-s3 "$ENDPOINT" "$SMALL_BUCKET" "$BENCH_SMALL_OBJECTS" "$BENCH_SEED")
log "filled in $((SECONDS - fill_start)) s"
NOTES+=("tidemark repositories are opened with a key file (no Argon2id key derivation, whose 64 MiB would hide the snapshot's own memory); restic uses a password")
NOTES+=("bucket: $COUNT objects, $BYTES bytes ($((BYTES / 1048576)) MiB): 2/3 random-byte .jpg, 1/3 word-text .txt; 94 % 1-16 KiB, 5.9 % 16-256 KiB, 0.1 % 1-8 MiB; 200 objects per key prefix (seed $BENCH_SEED); second bucket for the memory comparison: $SCOUNT objects, $((SBYTES / 1048576)) MiB")

# rclone remote "bench" from the environment (no config file).
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
  RCLONE_CONFIG_BENCH_ENDPOINT=$ENDPOINT RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
  RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY RCLONE_CONFIG_BENCH_REGION=us-east-1 \
  RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
read -r -a RCLONE_FLAGS <<<"$BENCH_RCLONE_FLAGS"
# rclone 1.60 fails on any AWS_CA_BUNDLE ("LoadCustomCABundleError ... unsupported transport").
RCLONE=(env -u AWS_CA_BUNDLE rclone)

# tidemark opens its repositories with a key file: no password KDF (Argon2id, 64 MiB) in the
# measured memory, so the peaks show what the snapshot itself needs.
KEY=$BENCH_DIR/tidemark.key
head -c 64 /dev/urandom >"$KEY"
TM=("$TIDEMARK_BIN" -r "$BENCH_DIR/repo-tidemark" --key-file "$KEY")
RS=(restic -r "$BENCH_DIR/repo-restic")
"${TM[@]}" init >"$LOGS/tidemark-init.log" 2>&1 || { echo "tidemark init failed (log $LOGS/tidemark-init.log)" >&2; exit 1; }
"${RS[@]}" init >"$LOGS/restic-init.log" 2>&1 || { echo "restic init failed (log $LOGS/restic-init.log)" >&2; exit 1; }

# ---------------------------------------------------------------- the run
do_tidemark() { run_step "$1" tidemark "${TM[@]}" backup "$URL" --concurrency "$BENCH_CONCURRENCY" || true; }
do_rclone() {
  run_step "$1" rclone "${RCLONE[@]}" sync "bench:$BUCKET" "$MIRROR" --transfers "$BENCH_CONCURRENCY" "${RCLONE_FLAGS[@]}" || true
}
do_restic() { run_step "$1" restic "${RS[@]}" backup "$MIRROR" || true; }
STEP_NO=0
# snapshot_step STEP: tidemark and rclone (alternating which goes first), then restic of rclone's copy.
snapshot_step() {
  log "$1"
  if ((STEP_NO++ % 2)); then do_rclone "$1"; do_tidemark "$1"; else do_tidemark "$1"; do_rclone "$1"; fi
  do_restic "$1"
}

snapshot_step "first snapshot / sync / backup"
log "changing 1 % of the objects (untimed PUTs)"
read -r CHANGED CBYTES < <("${DATA[@]}" change-s3 "$ENDPOINT" "$BUCKET" "$BENCH_OBJECTS" "$BENCH_SEED")
NOTES+=("1 % change: $CHANGED objects rewritten with new content of the same size ($((CBYTES / 1048576)) MiB)")
snapshot_step "after 1 % changed"
snapshot_step "no change"

log "bare listings"
run_step "bare listing: rclone lsf -R --fast-list" rclone "${RCLONE[@]}" lsf -R --fast-list "bench:$BUCKET" || true
run_step "bare listing: boto3 ListObjectsV2 loop" restic "${DATA[@]}" list "$ENDPOINT" "$BUCKET" || true
NOTES+=("the boto3 listing row (a Python ListObjectsV2 loop, 1,000 keys a page) is in the restic columns for lack of a column of its own")

log "full restore to a directory"
if run_step "full restore to a directory" tidemark "${TM[@]}" restore latest --source "$URL" \
  --target "$BENCH_DIR/restore-tidemark"; then
  if out=$("${DATA[@]}" compare "$MIRROR" "$BENCH_DIR/restore-tidemark" 2>"$LOGS/tidemark-verify.log"); then
    log "tidemark's restore equals rclone's copy of the bucket ($out)"
  else
    FAILED+=("tidemark: the restored directory differs from the bucket (rclone's copy): $(head -n3 "$LOGS/tidemark-verify.log" | tr '\n' ' ')")
  fi
fi
if run_step "full restore to a directory" restic "${RS[@]}" restore latest --target "$BENCH_DIR/restore-restic"; then
  "${DATA[@]}" compare "$MIRROR" "$BENCH_DIR/restore-restic$MIRROR" >/dev/null 2>"$LOGS/restic-verify.log" \
    || FAILED+=("restic: the restored directory differs from rclone's copy (log $LOGS/restic-verify.log)")
fi
[[ $BENCH_KEEP == 1 ]] || rm -rf "$BENCH_DIR/restore-tidemark" "$BENCH_DIR/restore-restic"

log "memory: the same snapshots of a $BENCH_SMALL_OBJECTS-object bucket into a fresh repository"
TMS=("$TIDEMARK_BIN" -r "$BENCH_DIR/repo-tidemark-small" --key-file "$KEY")
"${TMS[@]}" init >"$LOGS/tidemark-small-init.log" 2>&1
run_step "$SCOUNT objects: first snapshot" tidemark "${TMS[@]}" backup "$SMALL_URL" --concurrency "$BENCH_CONCURRENCY" || true
run_step "$SCOUNT objects: no-change snapshot" tidemark "${TMS[@]}" backup "$SMALL_URL" --concurrency "$BENCH_CONCURRENCY" || true

# ---------------------------------------------------------------- sizes and targets
mib() { echo $(($(du -sb "$1" | cut -f1) / 1048576)); }
NOTES+=("sizes: tidemark repository $(mib "$BENCH_DIR/repo-tidemark") MiB, rclone's copy $(mib "$MIRROR") MiB, restic repository $(mib "$BENCH_DIR/repo-restic") MiB")
F="first snapshot / sync / backup"
t_first=$(val "$F" tidemark wall) r_first=$(val "$F" rclone wall)
verdict "first snapshot at least as fast as rclone sync" "tidemark $t_first s vs rclone $r_first s" "$t_first" '<=' "$r_first"
l1=$(val "bare listing: rclone lsf -R --fast-list" rclone wall) l2=$(val "bare listing: boto3 ListObjectsV2 loop" restic wall)
listing=$l1
[[ -z $listing || (-n $l2 && $(echo "$l2 < $listing" | bc) == 1) ]] && listing=$l2
t_nc=$(val "no change" tidemark wall)
twice() { [[ -n $1 ]] && echo "$2 * $1" | bc; true; }
verdict "no-change snapshot within 2x a bare listing" \
  "tidemark $t_nc s vs the faster bare listing $listing s ($(ratio "$t_nc" "$listing")x)" "$t_nc" '<=' "$(twice "$listing" 2)"
m_big=$(val "$F" tidemark mib) m_small=$(val "$SCOUNT objects: first snapshot" tidemark mib)
m_nc_big=$(val "no change" tidemark mib) m_nc_small=$(val "$SCOUNT objects: no-change snapshot" tidemark mib)
verdict "memory flat (peak of the $COUNT-object first snapshot <= 1.25x the $SCOUNT-object one)" \
  "$m_big vs $m_small MiB (no-change: $m_nc_big vs $m_nc_small MiB)" "$m_big" '<=' "$(twice "$m_small" 1.25)"
log "done"
