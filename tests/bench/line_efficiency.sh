#!/bin/bash
# Line efficiency of ferry's link session next to the peers (issue 6), all
# over the peers' emulated line (linesim.py: 33,600 bit/s = 3,360 B/s each
# way, 50 ms one-way latency), in one run:
#   1. ferry: two ferry-link-bench processes, one per PTY end of
#      `linesim.py pty` (a direct serial line at each end), for each payload;
#   2. 23-line-calibrate.sh: the ideal sender that only streams bytes;
#   3. unless SKIP_PEERS=1: Taylor UUCP `i`, NNCP, Postfix SMTP
#      (20-, 21-, 22-line-*.sh) for the peers' payloads (mail, bin).
# Then prints one table with the issue's goals.  Not a test (minutes long).
#
#   tests/bench/line_efficiency.sh
#   PAYLOADS="inc64 corpus" SKIP_PEERS=1 tests/bench/line_efficiency.sh
#
# Payloads (PAYLOADS, default "mail inc4 inc64 corpus bin"):
#   mail   the peers' 50 x 4,096-byte text messages (mkpayload.py)
#   bin    the peers' 1 MiB PRNG binary as a raw mail body (+ a small header)
#   corpus the ~100 messages named in tests/bench/corpus_sample.txt
#   inc64  20 messages of 65,536 bytes: a short header + PRNG bytes
#   inc4   50 messages of 4,096 bytes: a short header + PRNG bytes
# Env: LINK_BENCH (ferry-link-bench; default build-sim/ next to the tree),
#      FERRY_SHARED_DIR (default ../shared beside the tree), SKIP_PEERS=1,
#      PEER_PAYLOADS (default "mail bin"), CHUNK / WINDOW (LinkOptions
#      chunk_size / window_chunks), MAXSEC (per call, default 1500),
#      OUT (default /tmp/ferry-bench; removed and recreated).
# Everything runs in a loopback-only network namespace (the peers'
# netns.sh); files go under $OUT only: the peers' scripts are copied to
# $OUT/peers with their /tmp/peers paths pointed at $OUT/peers.
# Output: the table on stdout and in $OUT/table.md; every row in
# $OUT/rows.jsonl; per-run logs and stats under $OUT/run-*.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${FERRY_SHARED_DIR:-$ROOT/../shared}
PEERS_SRC=$SHARED/peers
[ -d "$PEERS_SRC" ] || { echo "line_efficiency: no $PEERS_SRC" >&2; exit 1; }
[ "${IN_BENCH_NETNS:-}" = 1 ] || exec "$PEERS_SRC/netns.sh" "$HERE/$(basename "$0")" "$@"

OUT=${OUT:-/tmp/ferry-bench}
case "$OUT" in /tmp/*) ;; *) echo "line_efficiency: OUT must be under /tmp" >&2; exit 1;; esac
LINK_BENCH=${LINK_BENCH:-$ROOT/build-sim/ferry-link-bench}
PAYLOADS=${PAYLOADS:-mail inc4 inc64 corpus bin}
PEER_PAYLOADS=${PEER_PAYLOADS:-mail bin}
MAXSEC=${MAXSEC:-1500}
PY=/usr/bin/python3
[ -x "$LINK_BENCH" ] || { echo "line_efficiency: build $LINK_BENCH first (-DFERRY_BENCHMARKS=ON)" >&2; exit 1; }

rm -rf "$OUT"; mkdir -p "$OUT"
ROWS=$OUT/rows.jsonl; : > "$ROWS"
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# The peers' scripts, writing under $OUT/peers instead of /tmp/peers.
P=$OUT/peers
mkdir -p "$P"
cp "$PEERS_SRC"/*.sh "$PEERS_SRC"/*.py "$P"/
sed -i "s#/tmp/peers#$P#g" "$P"/*.sh "$P"/*.py

# ---- payloads ------------------------------------------------------------
PL=$OUT/payload
PAYLOAD_DIR=$PL/peers $PY "$P/mkpayload.py" >/dev/null
mkdir -p "$PL/lists"
$PY - "$PL" "$SHARED/corpus/messages" "$HERE/corpus_sample.txt" <<'EOF'
import glob, os, random, sys
pl, corpus, sample = sys.argv[1:4]
def lst(name, paths):
    with open(f"{pl}/lists/{name}", "w") as f:
        f.write("".join(p + "\n" for p in paths))
lst("mail", sorted(glob.glob(f"{pl}/peers/mail/*.eml")))
def header(tag, i):
    return (f"From: Bench <bench@a.example>\nTo: <bench@b.example>\n"
            f"Subject: {tag} {i:04d}\nMessage-ID: <{tag}-{i:04d}@a.example>\n"
            f"MIME-Version: 1.0\nContent-Type: application/octet-stream\n\n"
            ).encode()
def incompressible(tag, n, size, seed):
    d = f"{pl}/{tag}"; os.makedirs(d, exist_ok=True); rnd = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        h = header(tag, i)
        p = f"{d}/{i:04d}.eml"
        with open(p, "wb") as f:
            f.write(h + rnd.randbytes(size - len(h)))
        out.append(p)
    lst(tag, out)
incompressible("inc64", 20, 65536, 64)
incompressible("inc4", 50, 4096, 4)
os.makedirs(f"{pl}/bin", exist_ok=True)
blob = open(f"{pl}/peers/bin/blob-1MiB.bin", "rb").read()
with open(f"{pl}/bin/blob.eml", "wb") as f:
    f.write(header("bin", 1) + blob)
lst("bin", [f"{pl}/bin/blob.eml"])
names = [l.strip() for l in open(sample) if l.strip() and not l.startswith("#")]
paths = [os.path.join(corpus, n) for n in names]
if all(os.path.isfile(p) for p in paths):
    lst("corpus", paths)
EOF

# ---- ferry ---------------------------------------------------------------
IDS=$OUT/ids
"$LINK_BENCH" keygen a "$IDS"
"$LINK_BENCH" keygen b "$IDS"
TUNE=""
[ -n "${CHUNK:-}" ] && TUNE="$TUNE --chunk-size $CHUNK"
[ -n "${WINDOW:-}" ] && TUNE="$TUNE --window $WINDOW"

run_ferry() {  # PAYLOAD: one call a -> b over a fresh line and fresh spools
  local pl=$1 list=$PL/lists/$1 R=$OUT/run-ferry-$1
  if [ ! -s "$list" ]; then echo "ferry $pl: no payload (corpus absent?), skipped" >&2; return; fi
  mkdir -p "$R/line"
  "$LINK_BENCH" fill --spool "$R/a/spool" --list "$list" \
    --rcpt bench@b.example --route b --domain a.example 2>"$R/fill.err"
  $PY "$P/linesim.py" pty --link-a "$R/line/A" --link-b "$R/line/B" \
    --stats "$R/line.json" --max-seconds $((MAXSEC * 2 + 120)) 2>"$R/linesim.err" &
  local ls=$!; PIDS="$PIDS $ls"
  for i in $(seq 50); do [ -e "$R/line/B" ] && break; sleep 0.1; done
  # the answerer waits on its end, as uucico -l does in 20-line-uucp.sh
  "$LINK_BENCH" answer --device "$R/line/B" --spool "$R/b/spool" --name b \
    --domain b.example --peer a --peer-domain a.example --id-dir "$IDS" \
    --user bench --mail-root "$R/b/mail" --list "$list" --stats "$R/b.json" \
    --timeout 300 $TUNE 2>"$R/b.err" &
  local bp=$!; PIDS="$PIDS $bp"
  sleep 0.3
  # the whole call, measured as the peers' scripts do: dial to hang-up
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  timeout "$MAXSEC" "$LINK_BENCH" call --device "$R/line/A" --spool "$R/a/spool" \
    --name a --domain a.example --peer b --peer-domain b.example --id-dir "$IDS" \
    --stats "$R/a.json" --timeout 300 $TUNE 2>"$R/a.err" || rc=$?
  t1=$(date +%s.%N)
  local brc=0
  for i in $(seq 100); do kill -0 $bp 2>/dev/null || break; sleep 0.2; done
  kill $bp 2>/dev/null || true
  wait $bp 2>/dev/null || brc=$?
  sleep 0.3   # linesim rewrites its stats every second and at exit
  kill $ls 2>/dev/null || true; wait $ls 2>/dev/null || true
  $PY - "$pl" "$list" "$t0" "$t1" "$rc" "$brc" "$R" >>"$ROWS" <<'EOF'
import json, os, sys
pl, lst, t0, t1, rc, brc, R = sys.argv[1:8]
files = [l.strip() for l in open(lst) if l.strip()]
a = json.load(open(f"{R}/a.json")) if os.path.exists(f"{R}/a.json") else {}
b = json.load(open(f"{R}/b.json")) if os.path.exists(f"{R}/b.json") else {}
line = json.load(open(f"{R}/line.json"))
v = b.get("verify", {})
print(json.dumps(dict(
    impl="ferry", payload=pl, messages=len(files),
    payload_bytes=sum(os.path.getsize(f) for f in files),
    stored_bytes=a.get("queued_stored_bytes"),
    call_s=float(t1) - float(t0), call_s_inside=a.get("call_s"),
    transfer_s=a.get("transfer_s"), bps=line["bps"],
    line_ab=line["bytes_ab"], line_ba=line["bytes_ba"],
    raw_out=a.get("bytes_out"), raw_in=a.get("bytes_in"),
    pre_first_out=a.get("pre_first_out"), pre_first_in=a.get("pre_first_in"),
    result=a.get("result"), rc=int(rc), answerer_rc=int(brc),
    left_in_spool=a.get("left_in_spool"),
    received_unique=v.get("received_unique"), duplicates=v.get("duplicates"),
    missing=v.get("missing"), unexpected=v.get("unexpected"),
    chunk_size=a.get("chunk_size"), window_chunks=a.get("window_chunks"))))
EOF
  tail -1 "$ROWS" >&2
}

# ---- the ideal sender ----------------------------------------------------
calibrate() {  # LABEL: 23-line-calibrate.sh, its pty row into rows.jsonl
  # bounded: its tcp step waits forever when its relay was not yet
  # listening (a 0.3 s sleep, too short on a loaded machine)
  timeout 300 "$P/23-line-calibrate.sh" >"$OUT/calibrate-$1.out" 2>&1 || true
  $PY - "$OUT/calibrate-$1.out" "$1" >>"$ROWS" <<'EOF'
import json, re, sys
for l in open(sys.argv[1]):
    if "proto=pty one-way stream" in l:
        kv = dict(re.findall(r"(\w+)=([^,]*)", l))
        print(json.dumps(dict(impl="ideal", payload="raw", when=sys.argv[2],
                              payload_bytes=int(kv["payload_bytes"]),
                              call_s=float(kv["seconds"]),
                              efficiency=float(kv["efficiency"]))))
EOF
  tail -1 "$ROWS" >&2
}

# ---- the peers -----------------------------------------------------------
peer() {  # NAME SCRIPT ENV...: one peer run, its row into rows.jsonl
  local name=$1 script=$2; shift 2
  env "$@" MAXSEC="$MAXSEC" "$P/$script" >"$OUT/peer-$name.out" 2>&1 || true
  $PY - "$name" "$OUT/peer-$name.out" >>"$ROWS" <<'EOF'
import json, re, sys
name = sys.argv[1]; row = None
for l in open(sys.argv[2], errors="replace"):
    if l.startswith("peer=") and "payload_bytes=" in l:
        row = dict(re.findall(r"(\w+)=([^,]*)", l))
if row is None:
    print(json.dumps(dict(impl=name, payload="?", failed=True))); sys.exit()
notes = row.get("notes", "")
m = re.search(r"to_last_ack_s=([\d.]+)", notes)
print(json.dumps(dict(impl=name, payload=row["payload"], payload_bytes=int(row["payload_bytes"]),
    call_s=float(row["seconds"]), to_last_ack_s=float(m.group(1)) if m else None,
    line_ab=int(row["line_bytes_ab"]), line_ba=int(row["line_bytes_ba"]),
    received_unique=int(row["received_unique"]), duplicates=int(row["duplicates"]),
    missing=int(row["missing"]), bps=3360.0)))
EOF
  tail -1 "$ROWS" >&2
}
run_peers() {
if [ "${SKIP_PEERS:-0}" != 1 ]; then
  for pl in $PEER_PAYLOADS; do
    if command -v uucico >/dev/null; then peer "uucp-i" 20-line-uucp.sh PROTO=i PAYLOAD=$pl
    else echo "uucp: not installed (peers' 00-install.sh), skipped" >&2; fi
    if command -v nncp-call >/dev/null; then peer "nncp" 21-line-nncp.sh PAYLOAD=$pl
    else echo "nncp: not installed (peers' 00-install.sh), skipped" >&2; fi
    if command -v postfix >/dev/null && command -v smtp-sink >/dev/null; then
      peer "smtp-postfix" 22-line-smtp.sh PAYLOAD=$pl
    else echo "postfix: not installed, skipped" >&2; fi
  done
fi
}

# ---- the table -----------------------------------------------------------
table() {
$PY - "$ROWS" <<'EOF' | tee "$OUT/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ideals = [r for r in rows if r["impl"] == "ideal"]
ideal = sum(r["efficiency"] for r in ideals) / len(ideals) if ideals else None
goal = {"inc64": 0.99, "inc4": 0.93, "corpus": 1.75}
print(f"Line: 3,360 B/s each way, 50 ms one-way latency (linesim.py pty).")
print("Ideal sender (23-line-calibrate.sh, pty, 100,800 B): "
      + (f"{ideal:.3f} (mean of "
         + ", ".join(f"{r['efficiency']:.3f} {r['when']}" for r in ideals) + ")"
         if ideal else "not measured"))
print("wire eff = payload bytes / line bytes in the sending direction "
      "(independent of how fast the emulator ran)")
print()
print("| impl | payload | msgs | payload B | line B out / in | wire eff | call s | call eff "
      "| transfer s | transfer eff | share of ideal | goal | before 1st msg byte out / in | delivered |")
print("|" + "---|" * 14)
def f(x, fmt):
    return "-" if x is None else format(x, fmt)
for r in rows:
    if r["impl"] == "ideal":
        continue
    if r.get("failed"):
        print(f"| {r['impl']} | {r['payload']} | failed: see its .out |" + " |" * 11)
        continue
    bps = r.get("bps", 3360.0); pb = r["payload_bytes"]
    ce = pb / (bps * r["call_s"]) if r.get("call_s") else None
    ts = r.get("transfer_s") or None
    te = pb / (bps * ts) if ts else None
    share = te / ideal if te and ideal else None
    g = goal.get(r["payload"]) if r["impl"] == "ferry" else None
    gtxt = "-"
    if g is not None and share is not None:
        gtxt = f">= {g:.0%}: {'met' if share >= g else 'MISSED'}"
    pre = "-"
    if r.get("pre_first_out") is not None:
        ok = r["pre_first_out"] < 2048 and r["pre_first_in"] < 2048
        pre = f"{r['pre_first_out']} / {r['pre_first_in']} ({'< 2 KiB' if ok else 'OVER 2 KiB'})"
    n = r.get("messages", "-")
    dl = f"{r.get('received_unique')}, dup {r.get('duplicates')}, missing {r.get('missing')}"
    if r["impl"] == "ferry" and (r.get("rc") or r.get("answerer_rc")):
        dl += f" (exit {r.get('rc')}/{r.get('answerer_rc')})"
    we = pb / r["line_ab"] if r.get("line_ab") else None
    print(f"| {r['impl']} | {r['payload']} | {n} | {pb:,} | {r.get('line_ab', 0):,} / {r.get('line_ba', 0):,} "
          f"| {f(we, '.3f')} | {f(r.get('call_s'), '.1f')} | {f(ce, '.3f')} | {f(ts, '.1f')} | {f(te, '.3f')} "
          f"| {f(share, '.1%')} | {gtxt} | {pre} | {dl} |")
EOF
}

# ---- the run -------------------------------------------------------------
# The ideal sender before and after ferry (the box's load drifts; the
# table uses their mean), ferry's payloads, a first table, then the peers.
calibrate before
for pl in $PAYLOADS; do run_ferry "$pl"; done
calibrate after
table
run_peers
echo; table
