#!/usr/bin/env bash
# Where the time of one `tidemark pg archive-push` goes: a 16 MiB WAL segment pushed through the
# CLI, each a new process as under archive_command, with a key file against a password (Argon2id
# per process), the repository opened alone, and the push latency as the repository grows (every
# push adds a pack and an index file; until November 2026 every push also loaded the whole index
# and listed the packs, so each push was slower than the one before).
#
#   bench/pg-push-latency.sh                       # as root; needs PostgreSQL 15 and python3
#   BENCH_WAL_SEGMENTS=32 BENCH_GROW=1000 TIDEMARK_BIN=target/release/tidemark bench/pg-push-latency.sh
#
# Real segments come from a scratch cluster under pgbench; the growth series pushes synthetic
# segments (a real one with its page address rewritten and 4 KiB per MiB randomized).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TIDEMARK_BIN:-${CARGO_TARGET_DIR:-target}/release/tidemark}
DIR=${BENCH_DIR:-/tmp/tidemark-push-bench}
N=${BENCH_WAL_SEGMENTS:-16}
GROW=${BENCH_GROW:-400}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[[ -x $BIN ]] || { echo "no tidemark binary at $BIN: cargo build --release -p tidemark-cli" >&2; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR/pg" "$DIR/segs" && chown postgres: "$DIR/pg"
cp "$BIN" "$DIR/tidemark"

echo "== generating WAL with pgbench" >&2
runuser -u postgres -- "$PGBIN/initdb" -D "$DIR/pg/data" -A trust >/dev/null
printf "port=55998\nunix_socket_directories='%s'\nlisten_addresses=''\nfsync=off\nmax_wal_size=4GB\n" \
  "$DIR/pg" >>"$DIR/pg/data/postgresql.conf"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/log" -w start >/dev/null
trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DIR/pg/data" -m fast stop >/dev/null 2>&1 || true' EXIT
PGB=(runuser -u postgres -- "$PGBIN/pgbench" -h "$DIR/pg" -p 55998 postgres)
"${PGB[@]}" -i -s 20 -q >/dev/null 2>&1
while (($(ls "$DIR/pg/data/pg_wal" | grep -cE '^[0-9A-F]{24}$') < N + 2)); do "${PGB[@]}" -T 10 -c 2 >/dev/null 2>&1; done
runuser -u postgres -- psql -h "$DIR/pg" -p 55998 -Atc 'SELECT pg_switch_wal()' postgres >/dev/null
for f in $(ls "$DIR/pg/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$N"); do cp "$DIR/pg/data/pg_wal/$f" "$DIR/segs/"; done
head -c 64 /dev/urandom >"$DIR/key" && printf 'bench password' >"$DIR/pw"

echo "== pushing" >&2
DIR="$DIR" GROW="$GROW" python3 - <<'EOF'
import os, statistics, struct, subprocess, time
D = os.environ["DIR"]; T = D + "/tidemark"; GROW = int(os.environ["GROW"]); SEG = 16 << 20
def run(repo, cred, *args):
    t = time.perf_counter()
    r = subprocess.run([T, "-r", f"{D}/{repo}", *cred, *args], capture_output=True)
    if r.returncode: raise SystemExit(f"{args}: {r.stderr.decode()}")
    return (time.perf_counter() - t) * 1000
key, pw = ["--key-file", f"{D}/key"], ["--password-file", f"{D}/pw"]
for repo, cred in (("repo-key", key), ("repo-pw", pw)): run(repo, cred, "init")
segs = sorted(os.listdir(f"{D}/segs"))
res = {k: [] for k in ("push, key file", "push, password", "open only, key file", "open only, password")}
for i, s in enumerate(segs):
    order = [("key file", "repo-key", key), ("password", "repo-pw", pw)]
    for name, repo, cred in (order if i % 2 == 0 else order[::-1]):
        os.sync()
        res[f"push, {name}"].append(run(repo, cred, "pg", "archive-push", "--source", "db", f"{D}/segs/{s}"))
        res[f"open only, {name}"].append(run(repo, cred, "snapshots"))
print("| measurement | median ms | min | max | n |\n| --- | --- | --- | --- | --- |")
for k, v in res.items():
    print(f"| {k} | {statistics.median(v):.0f} | {min(v):.0f} | {max(v):.0f} | {len(v)} |")
# Growth: synthetic segments into one key-file repository.
base = bytearray(open(f"{D}/segs/{segs[0]}", "rb").read())
run("repo-grow", key, "init")
lat, path = [], f"{D}/synth"
os.makedirs(path)
for n in range(0x100, 0x100 + GROW):
    b = bytearray(base); struct.pack_into("<Q", b, 8, n * SEG)
    for off in range(64 * 1024, SEG, 1 << 20): b[off:off + 4096] = os.urandom(4096)
    f = f"{path}/00000001{n >> 8:08X}{n & 0xFF:08X}"
    open(f, "wb").write(b)
    lat.append(run("repo-grow", key, "pg", "archive-push", "--source", "db", f)); os.remove(f)
print("\n| pushes so far (= index files) | median push ms, key file | min | p90 |\n| --- | --- | --- | --- |")
step = max(1, GROW // 8)
for a in range(0, GROW, step):
    w = sorted(lat[a:a + step])
    print(f"| {a}-{min(a + step, GROW) - 1} | {statistics.median(w):.0f} | {w[0]:.0f} | {w[int(0.9 * (len(w) - 1))]:.0f} |")
first, last = lat[:step], lat[-step:]
print(f"\ngrowth: median of the last {len(last)} pushes / the first {len(first)}: "
      f"{statistics.median(last) / statistics.median(first):.2f}x")
packs = sum(len(f) for _, _, f in os.walk(f"{D}/repo-grow/data"))
print(f"packs after {GROW} pushes: {packs}")
EOF
