#!/usr/bin/env python3
"""Dataset generator, deterministic modifier and report printer for bench/repo-vs-restic.sh.

Python 3.11 standard library only. Every file's content comes from random.Random seeded with
"<seed>:<file name>", so the dataset is byte-identical for the same parameters no matter how the
work is split across processes.

  benchdata.py generate DIR SIZE_MB SEED [SMALL_FILES]   pristine dataset into DIR (must not exist)
  benchdata.py modify DIR SIZE_MB SEED                    change ~5 % of DIR in place
  benchdata.py tree-bytes DIR                             "<bytes> <files>" of regular files
  benchdata.py meta-compare SRC RESTORED                  compare type/mode/mtime (warn only)
  benchdata.py report RESULTS_TSV META_ENV                markdown report on stdout
"""

import math
import multiprocessing
import os
import random
import stat
import sys

GEN_VERSION = 1  # bump when the dataset layout or content changes (forces regeneration)
KiB, MiB = 1024, 1024 * 1024
SMALL_DIRS = (20, 10)  # small/aNN/bNN: 200 leaf directories


def rng(seed, name):
    return random.Random(f"{seed}:{name}")


def vocab(seed):
    r = rng(seed, "vocab")
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    weights = [13, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    return ["".join(r.choices(letters, weights, k=r.randint(2, 10))) for _ in range(3000)]


def text_bytes(r, words, n):
    """About-n bytes of word text with line breaks, cut to exactly n bytes."""
    out, size = [], 0
    while size < n:
        line = " ".join(r.choices(words, k=r.randint(4, 16))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def write_random(path, r, n):
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 4 * MiB)
            f.write(r.randbytes(k))
            n -= k


def csv_lines(r, start, count, ts):
    regions = ("eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "sa-east-1")
    status = ("ok", "ok", "ok", "failed", "pending", "refunded")
    rows = []
    for i in range(start, start + count):
        ts += r.random() * 3
        rows.append(f"{i},{ts:.3f},user{r.randrange(50000):05d},{r.choice(regions)},"
                    f"{r.randrange(1000000) / 100:.2f},{r.choice(status)},sku-{r.randrange(9999):04d}\n")
    return "".join(rows), ts


def log_lines(r, start, count, ts):
    levels = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
    paths = ("/api/v1/items", "/api/v1/users", "/api/v2/orders", "/healthz", "/api/v1/search", "/login")
    rows = []
    for i in range(start, start + count):
        ts += r.random() * 0.05
        rows.append(f"{ts:.6f} {r.choice(levels)} [worker-{r.randrange(16)}] req={r.getrandbits(48):012x} "
                    f"path={r.choice(paths)} status={r.choice((200, 200, 200, 201, 404, 500))} "
                    f"dur_ms={r.randrange(2000)} seq={i}\n")
    return "".join(rows), ts


def write_lines(path, r, kind, target, mode="w", start=0):
    gen = csv_lines if kind == "csv" else log_lines
    size, ts = 0, 1.7e9 + start
    with open(path, mode) as f:
        if kind == "csv" and start == 0:
            f.write("id,ts,user,region,amount,status,sku\n")
        while size < target:
            chunk, ts = gen(r, start, 2000, ts)
            start += 2000
            f.write(chunk)
            size += len(chunk)


def small_file(path, r, words, n):
    if path.endswith(".bin"):
        write_random(path, r, n)
    else:
        with open(path, "wb") as f:
            f.write(text_bytes(r, words, n))


def gen_task(task):
    kind, path, seed, n = task
    r = rng(seed, os.path.basename(path))
    if kind == "large":
        write_random(path, r, n)
    elif kind in ("csv", "log"):
        write_lines(path, r, kind, n)
    else:  # a batch of small files: n is a list of (path, size)
        words = vocab(seed)
        for p, size in n:
            small_file(p, rng(seed, p), words, size)


def layout(size_mb, seed, small_files):
    total = size_mb * MiB
    large_each, text_total = total // 8, total // 5
    small_budget = total - 4 * large_each - text_total
    tasks = [("large", f"large/large-{i:02d}.bin", seed, large_each) for i in range(4)]
    tasks += [("csv", f"text/csv/orders-{i:02d}.csv", seed, text_total // 8) for i in range(4)]
    tasks += [("log", f"text/logs/app-{i:02d}.log", seed, text_total // 16) for i in range(8)]
    r = rng(seed, "small-sizes")
    mean = small_budget / small_files
    hi = max(KiB, min(64 * KiB, int(2 * mean) - KiB))
    sizes = [r.randint(KiB, hi) for _ in range(small_files)]
    factor = small_budget / sum(sizes)
    sizes = [max(KiB, min(64 * KiB, math.ceil(s * factor))) for s in sizes]
    names = []
    for i, s in enumerate(sizes):
        a, b = i % SMALL_DIRS[0], (i // SMALL_DIRS[0]) % SMALL_DIRS[1]
        ext = (".txt", ".bin", ".md", ".bin", ".json")[r.randrange(5)]
        names.append((f"small/a{a:02d}/b{b:02d}/f{i:05d}{ext}", s))
    for k in range(0, len(names), 500):
        tasks.append(("small", f"batch-{k}", seed, names[k:k + 500]))
    return tasks


def generate(root, size_mb, seed, small_files):
    os.makedirs(root)
    os.chdir(root)
    tasks = layout(size_mb, seed, small_files)
    dirs = {os.path.dirname(t[1]) for t in tasks if t[0] != "small"}
    dirs |= {os.path.dirname(p) for t in tasks if t[0] == "small" for p, _ in t[3]}
    for d in sorted(dirs):
        os.makedirs(d, exist_ok=True)
    with multiprocessing.Pool(os.cpu_count() or 2) as pool:
        pool.map(gen_task, sorted(tasks, key=lambda t: -t[3] if isinstance(t[3], int) else 0), chunksize=1)
    # edge cases: empty files, empty directories, relative symlinks
    os.makedirs("misc/empty-dir/nested-empty")
    for i in range(10):
        open(f"misc/empty-{i}.txt", "wb").close()
    for i in range(5):
        d = f"small/a{i:02d}/b00"
        os.symlink(os.path.join("..", d, sorted(os.listdir(d))[0]), f"misc/link-{i}")


def small_files_of(root):
    out = []
    for dp, _, fs in os.walk(os.path.join(root, "small")):
        out += [os.path.join(dp, f) for f in fs]
    return sorted(out)


def modify(root, size_mb, seed):
    """Change ~5 % of the data: rewrite 5 % of small files, delete 1 %, append to every log and CSV,
    insert 64 KiB in the middle of one large file, add new small files and one new random file."""
    r, words, total = rng(seed, "modify"), vocab(seed), size_mb * MiB
    os.chdir(root)
    small = small_files_of(".")
    picked = r.sample(small, len(small) * 6 // 100)
    rewrite, delete = picked[: len(small) * 5 // 100], picked[len(small) * 5 // 100:]
    changed = 0
    for p in rewrite:
        n = max(KiB, int(os.path.getsize(p) * r.uniform(0.8, 1.2)))
        small_file(p, rng(seed, "rw:" + p), words, n)
        changed += n
    for p in delete:
        os.unlink(p)
    text = sorted(os.path.join(dp, f) for dp, _, fs in os.walk("text") for f in fs)
    for i, p in enumerate(text):
        n = total // 100 // len(text)
        write_lines(p, rng(seed, "app:" + p), "csv" if p.endswith(".csv") else "log", n, "a", 10**8 + i)
        changed += n
    big = os.path.join("large", "large-01.bin")
    with open(big, "r+b") as f:
        mid = os.path.getsize(big) // 2 + 12345
        f.seek(mid)
        tail = f.read()
        f.seek(mid)
        f.write(rng(seed, "insert").randbytes(64 * KiB))
        f.write(tail)
    changed += 64 * KiB
    os.makedirs("new")
    for i in range(20):
        n = r.randint(KiB, 16 * KiB)
        small_file(os.path.join("new", f"new-{i:02d}" + (".txt", ".bin")[i % 2]), rng(seed, f"new{i}"), words, n)
        changed += n
    n = total * 2 // 100
    write_random(os.path.join("new", "new-blob.bin"), rng(seed, "blob"), n)
    changed += n
    print(f"modified: rewrote {len(rewrite)} small files, deleted {len(delete)}, appended to {len(text)} "
          f"text files, inserted 64 KiB into large/large-01.bin, added 21 files; ~{changed / MiB:.1f} MiB new data")


def tree_bytes(root):
    n = files = 0
    for dp, _, fs in os.walk(root):
        for f in fs:
            st = os.lstat(os.path.join(dp, f))
            if stat.S_ISREG(st.st_mode):
                n, files = n + st.st_size, files + 1
    print(n, files)


def meta_compare(src, dst):
    def scan(root):
        out = {}
        for dp, ds, fs in os.walk(root):
            for name in ds + fs:
                p = os.path.join(dp, name)
                st = os.lstat(p)
                mt = None if stat.S_ISLNK(st.st_mode) else int(st.st_mtime)
                out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), mt)
        return out
    a, b = scan(src), scan(dst)
    bad = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
    for k in bad[:5]:
        print(f"  metadata differs: {k}: source {a.get(k)} restored {b.get(k)}")
    print(f"metadata (type, mode, mtime s): {len(bad)} of {len(a)} entries differ")


def report(results, meta_env):
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(meta_env) if "=" in line)
    rows, order = {}, []
    for line in open(results):
        step, tool, status, wall, user, sys_, rss = line.rstrip("\n").split("\t")
        if step not in order:
            order.append(step)
        rows[step, tool] = (status, float(wall), float(user) + float(sys_), int(rss) / 1024)

    def cells(step, tool):
        v = rows.get((step, tool))
        if v is None:
            return ["-"] * 3
        if v[0] != "ok":
            return [v[0], "-", "-"]
        return [f"{v[1]:.2f}", f"{v[2]:.2f}", f"{v[3]:.0f}"]

    def ok(step, tool):
        v = rows.get((step, tool))
        return v if v and v[0] == "ok" else None

    print("| step | tidemark wall s | tidemark CPU s | tidemark peak MiB | restic wall s | restic CPU s "
          "| restic peak MiB | ratio (restic wall / tidemark wall) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for step in order:
        t, r = ok(step, "tidemark"), ok(step, "restic")
        ratio = f"{r[1] / t[1]:.2f}x" if t and r and t[1] > 0 else "-"
        print(f"| {step} | " + " | ".join(cells(step, "tidemark") + cells(step, "restic")) + f" | {ratio} |")
    print()
    b1, b2 = int(meta.get("DATA_BYTES_1", 0)), int(meta.get("DATA_BYTES_2", 0))
    for tool in ("tidemark", "restic"):
        line = []
        if v := ok("first backup", tool):
            line.append(f"first backup {b1 / MiB / v[1]:.1f} MiB/s, {v[2] * 1e9 / b1:.2f} CPU ns/byte")
        if v := ok("restore", tool):
            line.append(f"restore {b2 / MiB / v[1]:.1f} MiB/s")
        if size := meta.get(f"REPO_BYTES_{tool}"):
            line.append(f"repository {int(size) / MiB:.1f} MiB ({int(size) / b2:.3f} of source)")
        if line:
            print(f"- {tool}: " + "; ".join(line))
    t, r = ok("first backup", "tidemark"), ok("first backup", "restic")
    if not (t and r):
        return
    print("\nTargets (tidemark vs restic):")
    verdict = lambda c: "PASS" if c else "FAIL"
    print(f"- first backup throughput >= 3x: {r[1] / t[1]:.2f}x {verdict(r[1] / t[1] >= 3)}; "
          f"CPU <= 1/3: {t[2] / r[2]:.2f} {verdict(t[2] <= r[2] / 3)}")
    if (t2 := ok("restore", "tidemark")) and (r2 := ok("restore", "restic")):
        print(f"- restore >= 2x: {r2[1] / t2[1]:.2f}x {verdict(r2[1] / t2[1] >= 2)}")
    if t3 := ok("20k files: no-change backup", "tidemark"):
        print(f"- no-change backup of 20k files < 1 s: {t3[1]:.2f} s {verdict(t3[1] < 1)}")
    tp = max(v[3] for (s, tool), v in rows.items() if tool == "tidemark" and v[0] == "ok")
    rp = max(v[3] for (s, tool), v in rows.items() if tool == "restic" and v[0] == "ok")
    print(f"- peak memory <= restic (max over steps): {tp:.0f} vs {rp:.0f} MiB {verdict(tp <= rp)}")
    if (ts := meta.get("REPO_BYTES_tidemark")) and (rs := meta.get("REPO_BYTES_restic")):
        print(f"- repository size <= restic: {int(ts) / MiB:.1f} vs {int(rs) / MiB:.1f} MiB "
              f"{verdict(int(ts) <= int(rs))}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "generate":
        generate(args[0], int(args[1]), int(args[2]), int(args[3]) if len(args) > 3 else 20000)
    elif cmd == "modify":
        modify(args[0], int(args[1]), int(args[2]))
    elif cmd == "tree-bytes":
        tree_bytes(args[0])
    elif cmd == "meta-compare":
        meta_compare(args[0], args[1])
    elif cmd == "report":
        report(args[0], args[1])
    elif cmd == "version":
        print(GEN_VERSION)
    else:
        sys.exit(f"unknown command {cmd}")
