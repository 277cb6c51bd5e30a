#!/usr/bin/env bash
# SMTP ingest benchmark: ferryd against a loopback-only Postfix, both
# durable (ferryd: spool commit with sync before 250; Postfix: queue file
# fsynced into the hold queue), both driven by Postfix's smtp-source with
# the same 4 KiB message to a remote recipient (ferryd spools it).
# Sessions 1, 10, 50; a new connection per message (CONN=new) and one
# connection per session (CONN=reuse, smtp-source -d).  Prints messages/s
# and the ratio ferryd/Postfix per case.  A benchmark, never a test.
#
#   tests/bench/smtp_ingest.sh                 # N=2000, RUNS=1, both CONN
#   N=500 SESSIONS="1 10" CONNS=reuse RUNS=3 tests/bench/smtp_ingest.sh
#   FERRYD=build/ferryd PEERS=/work/shared/peers tests/bench/smtp_ingest.sh
#
# Needs: root (network namespace), smtp-source and postfix
# (tools/install-bench-deps.sh), the peers' scripts from the shared
# directory (they run Postfix under /tmp/peers).  Everything listens on
# 127.0.0.1 inside private loopback-only network namespaces.  Each
# smtp-source run is bounded by MAXSEC seconds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${N:-2000}
SESSIONS=${SESSIONS:-"1 10 50"}
CONNS=${CONNS:-"new reuse"}
RUNS=${RUNS:-1}
MAXSEC=${MAXSEC:-300}
PEERS=${PEERS:-$ROOT/../shared/peers}
FERRYD=${FERRYD:-$ROOT/build/ferryd}
OUT=${OUT:-/tmp/ferry-bench}
export N SESSIONS RUNS MAXSEC PEERS FERRYD OUT

ferry_side() {
  # Runs inside a loopback-only namespace (re-executed below).
  local port conf msg csv
  work=$(mktemp -d /tmp/ferry-bench-XXXXXX)
  trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' \
    EXIT
  port=$(python3 -c 'import socket; s=socket.socket(); \
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  msg=/tmp/peers/payload/mail/0001.eml
  : > "$work/users"
  : > "$work/aliases"
  mkdir -p "$work/mail"
  conf=$work/ferry.conf
  cat > "$conf" <<CONF
[ferryd]
hostname = bench.ferry.example
spool = $work/spool
control_socket = $work/ctl.sock
lock_dir = $work
[listener bench]
address = 127.0.0.1:$port
[smtp]
# smtp-source talks straight away after connecting; no pre-greet test,
# like the Postfix it is compared with.
greeting_pause = 0s
max_sessions = 500
[local]
domains = gw-a.example
mail_root = $work/mail
users_file = $work/users
aliases_file = $work/aliases
[rules]
office_networks = 127.0.0.0/8
CONF
  mkdir -p "$work/spool" "$OUT"
  csv=$OUT/ingest-ferryd.csv
  # Log through a pipe, as under systemd's journal: a log file on the
  # spool's disk would make each log write wait for the spool's fsyncs.
  "$FERRYD" --config "$conf" 2> >(cat > "$work/ferryd.log") &
  pid=$!
  for _ in $(seq 100); do
    grep -q ' listening ' "$work/ferryd.log" 2>/dev/null && break
    sleep 0.1
  done
  for conn in $CONNS; do
    local dflag=""
    [[ $conn == reuse ]] && dflag=-d
    for s in $SESSIONS; do
      for r in $(seq "$RUNS"); do
        local before after t0 t1
        before=$(grep -c ' queued qid=' "$work/ferryd.log" || true)
        sync
        t0=$(date +%s.%N)
        timeout "$MAXSEC" smtp-source -s "$s" -m "$N" $dflag -F "$msg" \
          -f bench@gw-a.example -t rcpt@gw-b.example "127.0.0.1:$port"
        t1=$(date +%s.%N)
        sleep 0.3  # let the log pipe catch up
        after=$(grep -c ' queued qid=' "$work/ferryd.log" || true)
        python3 -c "dt=$t1-$t0; print(f'ferryd,$conn,$s,$r,$N,\
$((after - before)),{dt:.3f},{$N/dt:.1f}')" | tee -a "$csv"
      done
    done
  done
}

if [[ ${1:-} == --ferry-side ]]; then
  ferry_side
  exit 0
fi

# --- main ------------------------------------------------------------------
command -v smtp-source >/dev/null || {
  echo "smtp-source missing: run tools/install-bench-deps.sh" >&2
  exit 1
}
[[ -x $FERRYD ]] || { echo "no ferryd at $FERRYD" >&2; exit 1; }
[[ -d $PEERS ]] || { echo "no peers' scripts at $PEERS" >&2; exit 1; }
mkdir -p "$OUT"
python3 "$PEERS/mkpayload.py" > /dev/null
echo "peer,conn,sessions,run,msgs,accepted,seconds,rate" \
  > "$OUT/ingest-ferryd.csv"

echo "== ferryd"
"$ROOT/tests/netns-run.sh" "$0" --ferry-side

echo "== postfix (peers' script, MODE=hold)"
for conn in $CONNS; do
  CONN=$conn MODE=hold "$PEERS/10-smtp-ingest-postfix.sh" > /dev/null
done

echo "== ratios (median messages/s; ferryd / postfix)"
python3 - "$OUT/ingest-ferryd.csv" /tmp/peers/results <<'PY'
import csv, statistics, sys, os
ours = {}
for row in csv.DictReader(open(sys.argv[1])):
    ours.setdefault((row["conn"], int(row["sessions"])), []).append(
        float(row["rate"]))
theirs = {}
for conn in ("new", "reuse"):
    path = os.path.join(sys.argv[2], f"ingest-postfix-hold-{conn}.csv")
    if not os.path.exists(path):
        continue
    for row in csv.DictReader(open(path)):
        theirs.setdefault((conn, int(row["sessions"])), []).append(
            float(row["rate"]))
print(f"{'conn':6} {'sessions':>8} {'ferryd':>10} {'postfix':>10} "
      f"{'ratio':>6}")
for key in sorted(ours):
    a = statistics.median(ours[key])
    b = statistics.median(theirs[key]) if key in theirs else float("nan")
    print(f"{key[0]:6} {key[1]:8d} {a:10.1f} {b:10.1f} {a / b:6.2f}")
PY
