#!/usr/bin/env bash
# Tidemark's PostgreSQL protection vs pgBackRest (lz4, process-max 2, aes-256-cbc) and
# pg_basebackup, side by side in one run on one PostgreSQL 15 cluster filled by pgbench.
# See bench/README.md.
#
#   bench/pg-vs-pgbackrest.sh                                  # full run: pgbench scale 100
#   BENCH_PG_SCALE=5 BENCH_PGBENCH_SECONDS=10 bench/pg-vs-pgbackrest.sh   # quick run
#
# Environment: BENCH_DIR (/tmp/tidemark-pg-bench, must be reachable by the postgres user),
# BENCH_PG_SCALE (100), BENCH_PGBENCH_SECONDS (60), BENCH_WAL_SEGMENTS (20: archive-push latency
# sample), BENCH_STEP_TIMEOUT (3600 s), BENCH_KEEP (0), BENCH_SKIP_BUILD (0), TIDEMARK_BIN
# (target/release/tidemark), PG_BIN (/usr/lib/postgresql/15/bin).
set -euo pipefail
[[ ${BENCH_TRACE:-0} == 1 ]] && set -x

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/tidemark-pg-bench}
BENCH_PG_SCALE=${BENCH_PG_SCALE:-100}
BENCH_PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-60}
BENCH_WAL_SEGMENTS=${BENCH_WAL_SEGMENTS:-20}
BENCH_STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}
BENCH_KEEP=${BENCH_KEEP:-0}
TIDEMARK_BIN=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tidemark}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
CMDLINE="BENCH_PG_SCALE=$BENCH_PG_SCALE BENCH_PGBENCH_SECONDS=$BENCH_PGBENCH_SECONDS BENCH_WAL_SEGMENTS=$BENCH_WAL_SEGMENTS $0 $*"
for v in BENCH_PG_SCALE BENCH_PGBENCH_SECONDS BENCH_WAL_SEGMENTS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "run as root: PostgreSQL and the tools run as the postgres user through runuser" >&2; exit 2; }

LOGS=$BENCH_DIR/logs RES=$BENCH_DIR/results.tsv
DATA=$BENCH_DIR/data SOCK=$BENCH_DIR/sock
KEY=$BENCH_DIR/tidemark.key
TM_REPO=$BENCH_DIR/repo-tidemark PGBR_REPO=$BENCH_DIR/repo-pgbackrest
PGBR_CONF=$BENCH_DIR/pgbackrest.conf
STANZA=bench SOURCE=bench
FAILED=() VERSIONS=() TARGETS=() NOTES=() BYTES_ROWS=() PITR_ROWS=()
CLUSTERS=()
# shellcheck source=benchlib.sh
source "$HERE/benchlib.sh"

PGU=(runuser -u postgres --)
as_pg() { "${PGU[@]}" "$@"; }
pgctl() { as_pg "$PG_BIN/pg_ctl" "$@"; }
# psql_at DIR_OR_SOCKET PORT SQL: one query, unaligned, tuples only.
psql_on() { as_pg "$PG_BIN/psql" -X -h "$SOCK" -p "$1" -U postgres -d postgres -Atq -v ON_ERROR_STOP=1 -c "$2"; }
sql() { psql_on "$PORT" "$1"; }

# ---------------------------------------------------------------- report (always, on exit)
finish() {
  local rc=$? d
  trap - EXIT
  for d in "${CLUSTERS[@]}"; do
    [[ -f $d/postmaster.pid ]] && pgctl -D "$d" stop -m immediate -w >/dev/null 2>&1
  done
  {
    echo
    echo "## Tidemark vs pgBackRest and pg_basebackup on PostgreSQL 15 ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); page caches dropped before each step: $DROP_CACHES"
    echo "- load: before \`${LOAD_BEFORE:-?}\`, after \`$(uptime | sed 's/.*load/load/')\`"
    for v in "${VERSIONS[@]}"; do echo "- $v"; done
    for n in "${NOTES[@]}"; do echo "- $n"; done
    echo "- wall/CPU/peak RSS from /usr/bin/time (CPU = user + sys of the command and its children; peak = the largest single process, so pgBackRest's two worker processes are not added up); every timed step ends with \`sync\`"
    echo
    if [[ -s $RES ]]; then python3 "$HERE/benchtable.py" "$RES" tidemark pgbackrest pg_basebackup || echo "(table failed)"; else echo "(no step ran)"; fi
    if ((${#BYTES_ROWS[@]})); then
      echo
      echo "| bytes stored by the backup | tidemark | pgBackRest | pg_basebackup |"
      echo "| --- | ---: | ---: | ---: |"
      printf '%s\n' "${BYTES_ROWS[@]}"
    fi
    if ((${#PITR_ROWS[@]})); then
      echo
      echo "| restore to a point in time | tidemark | pgBackRest |"
      echo "| --- | --- | --- |"
      printf '%s\n' "${PITR_ROWS[@]}"
    fi
    if ((${#TARGETS[@]})); then echo; printf -- '- %s\n' "${TARGETS[@]}"; fi
    if ((${#FAILED[@]})); then echo; echo "FAILED:"; printf -- '- %s\n' "${FAILED[@]}"; fi
    echo; echo "total bench time: ${SECONDS}s; logs in $LOGS"
  } | tee "$BENCH_DIR/report.md"
  ((rc == 0 && ${#FAILED[@]})) && rc=1
  exit "$rc"
}

for d in "$BENCH_DIR"/data "$BENCH_DIR"/restore-*; do
  if [[ -f $d/postmaster.pid ]]; then pgctl -D "$d" stop -m immediate -w >/dev/null 2>&1 || true; fi
done
[[ $BENCH_DIR == /*/* ]] || { echo "BENCH_DIR must be an absolute path below a directory (it is wiped)" >&2; exit 2; }
rm -rf "$BENCH_DIR"
mkdir -p "$LOGS" "$SOCK" "$BENCH_DIR/wal-sample" "$BENCH_DIR/pgbr-tmp"
: >"$RES"
LOAD_BEFORE=$(uptime | sed 's/.*load/load/')
trap finish EXIT

# ---------------------------------------------------------------- prerequisites
[[ -x /usr/bin/time ]] || apt_install time
command -v bc >/dev/null || apt_install bc
command -v pgbackrest >/dev/null || apt_install pgbackrest
[[ -x $PG_BIN/initdb && -x $PG_BIN/pgbench ]] || apt_install postgresql-15
id postgres >/dev/null 2>&1 || { echo "no postgres user (install postgresql-15)" >&2; exit 1; }
build_tidemark
VERSIONS+=("pgBackRest: $(pgbackrest version) (compress-type=lz4, process-max=2, repo1-cipher-type=aes-256-cbc, start-fast=y; synchronous archive-push)")
VERSIONS+=("PostgreSQL: $("$PG_BIN/postgres" --version) (fsync on, wal_level=replica, archive_mode=on, track_commit_timestamp=on)")
# The postgres user runs every tool: the repositories and the cluster belong to it.
chmod 755 "$BENCH_DIR"
head -c 64 /dev/urandom >"$KEY"
chmod 600 "$KEY"
chown -R postgres:postgres "$BENCH_DIR"
chmod 755 "$LOGS"
TM=("$TIDEMARK_BIN" -r "$TM_REPO" --key-file "$KEY")

# ---------------------------------------------------------------- the cluster
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "initdb $DATA (port $PORT)"
as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >"$LOGS/initdb.log" 2>&1
ARCHIVE_CMD="${TM[*]} pg archive-push --source $SOURCE %p && pgbackrest --config=$PGBR_CONF --stanza=$STANZA archive-push %p"
cat >>"$DATA/postgresql.conf" <<EOF
# bench/pg-vs-pgbackrest.sh
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
wal_level = replica
max_wal_senders = 10
archive_mode = on
archive_command = '$ARCHIVE_CMD'
track_commit_timestamp = on
shared_buffers = 256MB
max_wal_size = 4GB
EOF
cat >"$DATA/pg_hba.conf" <<EOF
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$PGBR_REPO
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=tidemark-bench-pgbackrest-cipher-pass
compress-type=lz4
process-max=2
start-fast=y
lock-path=$BENCH_DIR/pgbr-tmp/lock
spool-path=$BENCH_DIR/pgbr-tmp/spool
log-path=$BENCH_DIR/pgbr-tmp/log
log-level-console=warn
log-level-file=info

[$STANZA]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$SOCK
EOF
chown postgres:postgres "$DATA/pg_hba.conf" "$PGBR_CONF"
CLUSTERS+=("$DATA")
pgctl -D "$DATA" -l "$LOGS/postgres.log" -w start >/dev/null
as_pg "${TM[@]}" init >"$LOGS/tidemark-init.log" 2>&1 || { echo "tidemark init failed (log $LOGS/tidemark-init.log)" >&2; exit 1; }
as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA stanza-create >"$LOGS/pgbackrest-stanza.log" 2>&1 \
  || { echo "pgbackrest stanza-create failed (log $LOGS/pgbackrest-stanza.log)" >&2; exit 1; }

# wait_archived: switch to a new WAL segment and wait until the archiver has pushed it (both tools).
wait_archived() {
  local name last failed
  name=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
  for _ in $(seq 1200); do
    IFS='|' read -r last failed < <(sql "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver")
    [[ $last > $name || $last == "$name" ]] && return 0
    sleep 0.25
  done
  FAILED+=("archiving stalled at ${last:-nothing} (waiting for $name; $failed failures; see $LOGS/postgres.log)")
  return 1
}

log "pgbench -i -s $BENCH_PG_SCALE"
init_start=$SECONDS
as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -i -s "$BENCH_PG_SCALE" -q postgres >"$LOGS/pgbench-init.log" 2>&1
sql "CHECKPOINT" >/dev/null
wait_archived
DB_BYTES=$(sql "SELECT pg_database_size('postgres')")
NOTES+=("cluster: pgbench scale $BENCH_PG_SCALE, database $((DB_BYTES / 1048576)) MiB, loaded and archived in $((SECONDS - init_start)) s")
NOTES+=("archive_command: \`tidemark ... pg archive-push && pgbackrest ... archive-push\` (both archives get every segment); tidemark uses a key file (no password KDF per process), its repository is encrypted as always (AES-256-GCM)")

# ---------------------------------------------------------------- backups
STEP_NO=0
stored_tm() {  # bytes the last tidemark pg backup stored (packed), from its --json summary
  python3 - "$1" <<'PY' 2>/dev/null
import json, sys
for line in open(sys.argv[1]):
    try:
        doc = json.loads(line)
    except ValueError:
        continue
    if isinstance(doc, dict) and "data_added_packed" in doc:
        print(doc["data_added_packed"])
PY
}
stored_pgbr() {  # bytes the newest pgBackRest backup stored in its repository
  as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA info --output=json 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["backup"][-1]["info"]["repository"]["delta"])' 2>/dev/null
}
# Each backup starts with an untimed CHECKPOINT, so that no tool pays for flushing buffers the
# workload dirtied before the previous tool's backup (all three request a fast checkpoint).
do_tm_backup() {
  sql CHECKPOINT >/dev/null
  run_step "$1" tidemark "${PGU[@]}" "${TM[@]}" --json pg backup --source $SOURCE --connect "host=127.0.0.1 port=$PORT user=postgres" \
    && TM_STORED=$(stored_tm "$LOGS/tidemark-${1//[^a-zA-Z0-9]/_}.log")
}
do_pgbr_backup() {
  sql CHECKPOINT >/dev/null
  run_step "$1" pgbackrest "${PGU[@]}" pgbackrest --config="$PGBR_CONF" --stanza=$STANZA backup --type="$2" && PGBR_STORED=$(stored_pgbr)
}
do_basebackup() {
  sql CHECKPOINT >/dev/null
  run_step "$1" pg_basebackup "${PGU[@]}" "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$BENCH_DIR/basebackup" \
    -Ft -c fast && BB_STORED=$(du -sb "$BENCH_DIR/basebackup" | cut -f1)
}
mib() { [[ -n $1 ]] && echo "scale=1; $1 / 1048576" | bc | sed 's/^\./0./'; true; }
# backup_step STEP PGBR_TYPE WITH_BASEBACKUP: tidemark and pgBackRest (alternating which goes first).
backup_step() {
  TM_STORED="" PGBR_STORED="" BB_STORED=""
  log "$1"
  wait_archived || true  # no WAL backlog competing with the backups
  if ((STEP_NO++ % 2)); then do_pgbr_backup "$1" "$2" || true; do_tm_backup "$1" || true
  else do_tm_backup "$1" || true; do_pgbr_backup "$1" "$2" || true; fi
  if [[ $3 == 1 ]]; then do_basebackup "$1" || true; fi
  BYTES_ROWS+=("| $1 | $(mib "$TM_STORED") MiB | $(mib "$PGBR_STORED") MiB | $( [[ $3 == 1 ]] && echo "$(mib "$BB_STORED") MiB (uncompressed tar)" || echo -) |")
}

backup_step "full backup" full 1
TM_FULL=$TM_STORED

ROWS=$((100000 * BENCH_PG_SCALE))
log "appending 1 % of the rows ($((ROWS / 100)) to pgbench_accounts)"
sql "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT a, 1 + (a - 1) / 100000, 0, '' FROM generate_series($((ROWS + 1)), $((ROWS + ROWS / 100))) a" >/dev/null
backup_step "second backup after 1 % rows appended (pgBackRest incr)" incr 0
TM_APPEND=$TM_STORED

log "pgbench for $BENCH_PGBENCH_SECONDS s (2 clients)"
as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres -c 2 -j 2 -T "$BENCH_PGBENCH_SECONDS" postgres >"$LOGS/pgbench-run.log" 2>&1
NOTES+=("pgbench run: $(grep -m1 'number of transactions actually processed' "$LOGS/pgbench-run.log" | sed 's/.*: //') transactions in $BENCH_PGBENCH_SECONDS s, $(grep -m1 '^tps' "$LOGS/pgbench-run.log" | sed 's/ (.*//')")
backup_step "backup after ${BENCH_PGBENCH_SECONDS} s of pgbench (pgBackRest incr)" incr 0
TM_BENCH=$TM_STORED PGBR_BENCH=$PGBR_STORED

# ---------------------------------------------------------------- restore (latest)
sql "CHECKPOINT" >/dev/null
wait_archived || true
do_tm_restore() { run_step "$1" tidemark "${PGU[@]}" "${TM[@]}" pg restore --source $SOURCE --target-dir "$BENCH_DIR/restore-tidemark"; }
do_pgbr_restore() {
  run_step "$1" pgbackrest "${PGU[@]}" pgbackrest --config="$PGBR_CONF" --stanza=$STANZA restore --pg1-path="$BENCH_DIR/restore-pgbackrest"
}
do_untar() {
  local t=$BENCH_DIR/restore-basebackup
  as_pg mkdir -m 700 "$t"
  run_step "$1" pg_basebackup "${PGU[@]}" bash -c "tar -xf '$BENCH_DIR/basebackup/base.tar' -C '$t' && tar -xf '$BENCH_DIR/basebackup/pg_wal.tar' -C '$t/pg_wal'"
}
log "restore (latest; files only, the servers are not started)"
if ((STEP_NO++ % 2)); then do_pgbr_restore "restore" || true; do_tm_restore "restore" || true
else do_tm_restore "restore" || true; do_pgbr_restore "restore" || true; fi
do_untar "restore" || true
for d in tidemark pgbackrest basebackup; do
  [[ -d $BENCH_DIR/restore-$d ]] && NOTES+=("restored data directory ($d): $(($(du -sb "$BENCH_DIR/restore-$d" | cut -f1) / 1048576)) MiB")
done
[[ $BENCH_KEEP == 1 ]] || rm -rf "$BENCH_DIR"/restore-tidemark "$BENCH_DIR"/restore-pgbackrest "$BENCH_DIR"/restore-basebackup

# ---------------------------------------------------------------- restore to a point in time
log "restore to a point in time: 200 commits 20 ms apart, then T between the 100th and the 101st"
sql "CREATE TABLE marks (id int PRIMARY KEY)" >/dev/null
for i in $(seq 200); do echo "INSERT INTO marks VALUES ($i); SELECT pg_sleep(0.02);"; done \
  | as_pg "$PG_BIN/psql" -X -h "$SOCK" -p "$PORT" -U postgres -d postgres -Atq -v ON_ERROR_STOP=1 >/dev/null
# Commit times straight from the server (track_commit_timestamp); T halfway between 100 and 101.
IFS='|' read -r T C100 C101 < <(sql "SET TIME ZONE 'UTC'; SELECT to_char(a + (b - a) / 2, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), a, b FROM
  (SELECT (SELECT pg_xact_commit_timestamp(xmin) FROM marks WHERE id = 100) a,
          (SELECT pg_xact_commit_timestamp(xmin) FROM marks WHERE id = 101) b) x")
NOTES+=("point in time T = $T: row 100 committed at $C100, row 101 at $C101 (UTC)")
wait_archived || true

# check_pitr TOOL DIR: start the restored cluster on another port, wait for recovery to end, and
# report which rows of marks it holds.
check_pitr() {
  local tool=$1 dir=$2 port start got last lag
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Its own port; it must not archive into the benchmark's repositories.
  as_pg bash -c "printf '%s\n' \"port = $port\" \"archive_mode = off\" >> '$dir/postgresql.auto.conf'"
  rm -f "$dir/postmaster.pid"
  CLUSTERS+=("$dir")
  start=$(date +%s.%N)
  if ! pgctl -D "$dir" -l "$LOGS/postgres-pitr-$tool.log" -w -t 600 start >/dev/null; then
    FAILED+=("$tool: the cluster restored to T did not start (log $LOGS/postgres-pitr-$tool.log)")
    PITR_ROWS+=("| $tool | did not start |"); return 1
  fi
  for _ in $(seq 2400); do
    [[ $(psql_on "$port" "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
    sleep 0.25
  done
  printf -v RECOVERY '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)"
  IFS='|' read -r got last lag < <(psql_on "$port" "SELECT count(*), max(id), round(extract(epoch FROM '$T'::timestamptz - max(pg_xact_commit_timestamp(xmin)))::numeric, 3) FROM marks" 2>/dev/null) || true
  pgctl -D "$dir" stop -m fast -w >/dev/null 2>&1 || true
  if [[ $got == 100 && $last == 100 ]]; then
    PITR_RESULT="rows 1-100 present, 101-200 absent: exact; the last commit restored is $lag s before T; start + recovery ${RECOVERY} s"
  else
    PITR_RESULT="WRONG: ${got:-?} rows, last ${last:-?} (expected exactly 1-100); start + recovery ${RECOVERY} s"
    FAILED+=("$tool: restore to T holds ${got:-?} rows up to ${last:-?}, expected 1-100")
  fi
  PITR_LAG=$lag
}
TM_PITR="" PGBR_PITR="" PITR_LAG_TM=""
if run_step "restore to T (files only)" tidemark "${PGU[@]}" "${TM[@]}" pg restore --source $SOURCE \
  --target-dir "$BENCH_DIR/restore-pitr-tidemark" --time "$T" --target-action promote; then
  PITR_RESULT="" PITR_LAG=""
  check_pitr tidemark "$BENCH_DIR/restore-pitr-tidemark" || true
  TM_PITR=$PITR_RESULT PITR_LAG_TM=$PITR_LAG
  record "start + recovery to T" tidemark "${RECOVERY:-0}"
fi
PG_T=${T/T/ }
if run_step "restore to T (files only)" pgbackrest "${PGU[@]}" pgbackrest --config="$PGBR_CONF" --stanza=$STANZA restore \
  --pg1-path="$BENCH_DIR/restore-pitr-pgbackrest" --type=time --target="${PG_T%Z}+00" --target-action=promote; then
  PITR_RESULT=""
  check_pitr pgbackrest "$BENCH_DIR/restore-pitr-pgbackrest" || true
  PGBR_PITR=$PITR_RESULT
  record "start + recovery to T" pgbackrest "${RECOVERY:-0}"
fi
PITR_ROWS+=("| result | ${TM_PITR:-failed} | ${PGBR_PITR:-failed} |")
[[ $BENCH_KEEP == 1 ]] || rm -rf "$BENCH_DIR"/restore-pitr-*

# ---------------------------------------------------------------- WAL push latency
N=$BENCH_WAL_SEGMENTS
log "WAL push latency: $N segments, each pushed by each tool into a fresh repository"
# Real segments: pgbench-style updates write them; tidemark's archive gives them back (untimed).
first=$(sql "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
aid=1
for _ in $(seq 10000); do
  cur=$(sql "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
  (( 16#${cur:16:8} + 16#${cur:8:8} * 256 - 16#${first:16:8} - 16#${first:8:8} * 256 >= N + 1 )) && break
  sql "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $aid AND $((aid + 49999))" >/dev/null
  aid=$(((aid + 50000) % ROWS))
done
wait_archived || true
SEGS=()
seg=$first
for ((i = 0; i < N; i++)); do
  as_pg "${TM[@]}" pg archive-get --source $SOURCE "$seg" "$BENCH_DIR/wal-sample/$seg" >>"$LOGS/wal-sample.log" 2>&1 \
    || { FAILED+=("archive-get $seg for the latency sample failed (log $LOGS/wal-sample.log)"); break; }
  SEGS+=("$seg")
  n=$((16#${seg:16:8} + 1))
  seg=${seg:0:16}$(printf '%08X' "$n")
  ((n >= 256)) && seg=${seg:0:8}$(printf '%08X' $((16#${seg:8:8} + 1)))00000000
done
WTM=("$TIDEMARK_BIN" -r "$BENCH_DIR/repo-tidemark-wal" --key-file "$KEY")
as_pg "${WTM[@]}" init >"$LOGS/tidemark-wal-init.log" 2>&1
sed -e "s|^repo1-path=.*|repo1-path=$BENCH_DIR/repo-pgbackrest-wal|" "$PGBR_CONF" >"$BENCH_DIR/pgbackrest-wal.conf"
chown postgres:postgres "$BENCH_DIR/pgbackrest-wal.conf"
as_pg pgbackrest --config="$BENCH_DIR/pgbackrest-wal.conf" --stanza=$STANZA stanza-create >"$LOGS/pgbackrest-wal-stanza.log" 2>&1
TM_LAT=() PGBR_LAT=() TM_RSS=0 PGBR_RSS=0 TM_CPU=0 PGBR_CPU=0
push_one() {  # push_one TOOL SEGMENT: appends the latency (ms) to the tool's list
  local t0 t1 tf rss user sys rc=0
  tf=$(mktemp)
  sync
  t0=$(date +%s%N)
  case $1 in
    tidemark) /usr/bin/time -f '%U %S %M' -o "$tf" runuser -u postgres -- "${WTM[@]}" pg archive-push --source $SOURCE "$BENCH_DIR/wal-sample/$2" || rc=$? ;;
    pgbackrest) /usr/bin/time -f '%U %S %M' -o "$tf" runuser -u postgres -- pgbackrest --config="$BENCH_DIR/pgbackrest-wal.conf" --stanza=$STANZA archive-push "$BENCH_DIR/wal-sample/$2" || rc=$? ;;
  esac
  t1=$(date +%s%N)
  read -r user sys rss < <(tail -n1 "$tf"); rm -f "$tf"
  ((rc == 0)) || { FAILED+=("$1: archive-push of $2 exited $rc"); return 0; }
  if [[ $1 == tidemark ]]; then
    TM_LAT+=($(((t1 - t0) / 1000))); ((rss > TM_RSS)) && TM_RSS=$rss; TM_CPU=$(echo "$TM_CPU + $user + $sys" | bc)
  else
    PGBR_LAT+=($(((t1 - t0) / 1000))); ((rss > PGBR_RSS)) && PGBR_RSS=$rss; PGBR_CPU=$(echo "$PGBR_CPU + $user + $sys" | bc)
  fi
  return 0
}
for ((i = 0; i < ${#SEGS[@]}; i++)); do
  if ((i % 2)); then push_one pgbackrest "${SEGS[i]}"; push_one tidemark "${SEGS[i]}"
  else push_one tidemark "${SEGS[i]}"; push_one pgbackrest "${SEGS[i]}"; fi
done
stats() {  # stats MICROSECONDS...: "median p90 max" in ms
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f %.1f %.1f\n", v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.5)] / 1000, v[NR] / 1000 }'
}
TM_MED="" PGBR_MED=""
if ((${#TM_LAT[@]})); then
  read -r TM_MED TM_P90 TM_MAX < <(stats "${TM_LAT[@]}")
  printf '%s\t%s\tok\t%s\t%s\t0\t%s\n' "WAL push per segment: median wall, mean CPU, peak RSS" tidemark "$(echo "scale=4; $TM_MED / 1000" | bc)" "$(echo "scale=4; $TM_CPU / ${#TM_LAT[@]}" | bc)" "$TM_RSS" >>"$RES"
  NOTES+=("tidemark archive-push of a 16 MiB segment: median $TM_MED ms, p90 $TM_P90 ms, max $TM_MAX ms (${#TM_LAT[@]} real segments, each pushed by both tools into fresh repositories, alternating which goes first; \`sync\` before each push, segment in the page cache as after PostgreSQL wrote it; runuser included)")
fi
if ((${#PGBR_LAT[@]})); then
  read -r PGBR_MED PGBR_P90 PGBR_MAX < <(stats "${PGBR_LAT[@]}")
  printf '%s\t%s\tok\t%s\t%s\t0\t%s\n' "WAL push per segment: median wall, mean CPU, peak RSS" pgbackrest "$(echo "scale=4; $PGBR_MED / 1000" | bc)" "$(echo "scale=4; $PGBR_CPU / ${#PGBR_LAT[@]}" | bc)" "$PGBR_RSS" >>"$RES"
  NOTES+=("pgBackRest archive-push: median $PGBR_MED ms, p90 $PGBR_P90 ms, max $PGBR_MAX ms")
fi

# ---------------------------------------------------------------- sizes and targets
TM_REPO_BYTES=$(du -sb "$TM_REPO" | cut -f1) PGBR_REPO_BYTES=$(du -sb "$PGBR_REPO" | cut -f1)
BYTES_ROWS+=("| repository at the end (3 backups + the WAL archive) | $(mib "$TM_REPO_BYTES") MiB | $(mib "$PGBR_REPO_BYTES") MiB | - |")
F="full backup"
verdict "full backup at least as fast as pgBackRest (aim 1.5x)" \
  "tidemark $(val "$F" tidemark wall) s vs pgBackRest $(val "$F" pgbackrest wall) s ($(ratio "$(val "$F" pgbackrest wall)" "$(val "$F" tidemark wall)")x)" \
  "$(val "$F" tidemark wall)" '<=' "$(val "$F" pgbackrest wall)"
verdict "restore at least as fast as pgBackRest (aim 1.5x)" \
  "tidemark $(val restore tidemark wall) s vs pgBackRest $(val restore pgbackrest wall) s ($(ratio "$(val restore pgbackrest wall)" "$(val restore tidemark wall)")x)" \
  "$(val restore tidemark wall)" '<=' "$(val restore pgbackrest wall)"
tenth() { [[ -n $1 ]] && echo "$1 / 10" | bc; true; }
verdict "after 1 % rows appended, the second base backup stores < 10 % of the first's bytes" \
  "$(mib "$TM_APPEND") of $(mib "$TM_FULL") MiB ($(ratio "$((${TM_APPEND:-0} * 100))" "$TM_FULL") %)" "$TM_APPEND" '<' "$(tenth "$TM_FULL")"
verdict "after ${BENCH_PGBENCH_SECONDS} s of pgbench, stores no more than pgBackRest's incremental" \
  "tidemark $(mib "$TM_BENCH") MiB vs pgBackRest $(mib "$PGBR_BENCH") MiB" "$TM_BENCH" '<=' "$PGBR_BENCH"
verdict "a restore to time T lands within one second before it (and holds exactly the commits up to T)" \
  "the last commit restored is ${PITR_LAG_TM:-?} s before T" "$( [[ $TM_PITR == rows* ]] && echo "${PITR_LAG_TM:-}")" '<=' 1
log "done"
