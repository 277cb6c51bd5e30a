#!/usr/bin/python3
"""ferry's main job, shown end to end: two offices exchange real mail over
an emulated telephone line.

What it does, all under one working folder (default /tmp/ferry-demo, wiped
at the start of every run so that a second run needs no clean-up):

  1. starts ferry-modemsim with two modems, a (5551001) and b (5552002);
  2. makes two offices, branch-a (branch-a.example, users alice, bob,
     carol) and branch-b (branch-b.example, users dave, erin, frank), each
     with its config, users, aliases, Maildirs, spool, control socket and
     link key, and starts a ferryd for each (`ferryd --check-config`
     first);
  3. hands mail to each office over SMTP with Python's smtplib (a standard
     client, not ferry's code): messages from ../shared/corpus when it is
     there (tools/demo/corpus_selection.txt), else the samples in
     tools/demo/samples; each is re-addressed to a demo user of the other
     office (To: and the envelope), its body left as it is.  branch-b's
     mail is handed over first: branch-b never dials (it holds the mail
     until branch-a calls), and branch-a's call threshold is its number of
     messages, so the last message handed to branch-a makes the scheduler
     call;
  4. while the call runs, shows `ferryctl dial branch-b --wait` (attached
     to the scheduler's call), then `ferryctl status` and `ferryctl calls`;
  5. checks that every message arrived once, in the right Maildir, byte for
     byte as the client sent it apart from the trace fields ferry puts in
     front (Received, Return-Path, Delivered-To), that nothing else arrived
     (no bounces) and that both spools are empty; prints a summary;
  6. stops everything it started, by process id, and exits 0 only if every
     check passed (1: a check failed; 2: bad command line or working
     folder; 3: a program could not be started or set up).

It must run inside a loopback-only network namespace; when it is not in one
it re-runs itself through tests/netns-run.sh.  Run it as root (the
namespace needs it, or unprivileged user namespaces).

--drop-after-bytes N injects a carrier drop N bytes into branch-a's first
call (ferry-modemsim's admin socket) and clears it when that call has
ended; the demo then shows the scheduler's next call finishing the
exchange with nothing lost or duplicated.
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
MARKER = ".ferry-demo-work"  # a folder with this file may be wiped

# The two offices.  Users get mail round-robin; "postmaster" is an alias.
OFFICES = {
    "a": {"name": "branch-a", "domain": "branch-a.example",
          "users": ["alice", "bob", "carol"], "number": "5551001"},
    "b": {"name": "branch-b", "domain": "branch-b.example",
          "users": ["dave", "erin", "frank"], "number": "5552002"},
}
OTHER = {"a": "b", "b": "a"}
DIRECTIONS = ("a2b", "b2a")  # a2b: handed to branch-a, for branch-b users

# Trace fields a receiving MTA puts in front of a message (RFC 5321 4.4,
# RFC 9228); nothing else may differ between what a client sent and what
# a Maildir holds.
TRACE_FIELDS = (b"received", b"return-path", b"delivered-to")

# The demo's own exit statuses.
EXIT_CHECKS, EXIT_USAGE, EXIT_SETUP = 1, 2, 3

_print_lock = threading.Lock()


def say(text=""):
    with _print_lock:
        print(text, flush=True)


def step(text):
    say("")
    say("== " + text)


class SetupError(Exception):
    """A program could not be started or set up (exit status 3)."""


class UsageError(Exception):
    """The working folder cannot be used (exit status 2)."""


# ---------------------------------------------------------------------------
# Messages


def as_sent(raw):
    """The bytes an SMTP client puts on the wire before dot-stuffing: CRLF
    line ends, ending in CRLF."""
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    return crlf


def unusable(raw):
    """Why ferry (or any SMTP server) cannot take `raw` unchanged, or None."""
    if b"\0" in raw:
        return "NUL byte"
    if b"\r" in raw.replace(b"\r\n", b""):
        return "bare CR"
    body = as_sent(raw)
    if b"\r\n\r\n" not in body:
        return "no empty line between header and body"
    if any(len(line) > 998 for line in body.split(b"\r\n")):
        return "line over 998 octets"
    return None


def readdress(sent, to_addr):
    """`sent` (CRLF) with every To: field replaced by one To: naming
    `to_addr`, at the place of the first; added at the end of the header
    when there was none.  The body and every other field stay as they are."""
    head, sep, body = sent.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out, placed, skipping = [], False, False
    new_to = b"To: " + to_addr.encode() + b""
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue  # folded rest of a To: field
        skipping = False
        if line[:3].lower() == b"to:":
            skipping = True
            if not placed:
                out.append(new_to)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append(new_to)
    return b"\r\n".join(out) + sep + body


def trace_only(prefix):
    """True when `prefix` consists only of whole trace header fields."""
    if not prefix:
        return True
    if not prefix.endswith(b"\r\n"):
        return False
    for line in prefix[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # continuation of the field before
        name = line.split(b":", 1)[0].strip().lower()
        if b":" not in line or name not in TRACE_FIELDS:
            return False
    return not prefix.startswith((b" ", b"\t"))


class Message:
    def __init__(self, direction, source, raw):
        self.direction = direction  # "a2b" or "b2a"
        self.source = source        # file name it came from
        self.raw = raw
        self.sender = self.recipient = self.user = ""
        self.sent = b""             # the bytes handed to the client
        self.refused = ""           # SMTP reply when the office refused it

    @property
    def eightbit(self):
        return any(b > 127 for b in self.sent)


def read_selection(path):
    picks = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            direction, name = line.split()
            if direction not in DIRECTIONS:
                raise ValueError("%s: bad direction %r" % (path, direction))
            picks.append((direction, name))
    return picks


def spread(items, n):
    """n items at evenly spaced ranks of `items` (all when n >= len)."""
    if n >= len(items):
        return list(items)
    return [items[int((i + 0.5) * len(items) / n)] for i in range(n)]


def corpus_messages(corpus, per_way):
    """From the corpus: the fixed selection, or (for more than it holds)
    an evenly spaced pick by size from every eligible message under
    64 KiB."""
    msgdir = os.path.join(corpus, "messages")
    picks = read_selection(os.path.join(HERE, "corpus_selection.txt"))
    by_dir = {d: [n for dd, n in picks if dd == d] for d in DIRECTIONS}
    if per_way > min(len(v) for v in by_dir.values()):
        eligible = []
        for name in sorted(os.listdir(msgdir)):
            path = os.path.join(msgdir, name)
            size = os.path.getsize(path)
            if not name.endswith(".eml") or size >= 64 << 10:
                continue
            with open(path, "rb") as f:
                if unusable(f.read()) is None:
                    eligible.append((size, name))
        eligible.sort()
        chosen = [n for _, n in spread(eligible, 2 * per_way)]
        by_dir = {"a2b": chosen[0::2], "b2a": chosen[1::2]}
    out = []
    for d in DIRECTIONS:
        for name in spread(by_dir[d], per_way):
            with open(os.path.join(msgdir, name), "rb") as f:
                out.append(Message(d, name, f.read()))
    return out


def folder_messages(folder, per_way):
    """Every .eml file of `folder` in name order.  A file whose From: names
    one of the demo domains goes from that office; the others alternate."""
    out, turn = [], 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".eml"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            raw = f.read()
        why = unusable(raw)
        if why:
            say("demo: leaving out %s (%s)" % (name, why))
            continue
        head = as_sent(raw).partition(b"\r\n\r\n")[0].lower()
        from_line = b""
        for line in head.split(b"\r\n"):
            if line.startswith(b"from:"):
                from_line = line
        if b"@" + OFFICES["a"]["domain"].encode() in from_line:
            d = "a2b"
        elif b"@" + OFFICES["b"]["domain"].encode() in from_line:
            d = "b2a"
        else:
            d = DIRECTIONS[turn % 2]
            turn += 1
        out.append(Message(d, name, raw))
    if per_way:
        out = [m for d in DIRECTIONS
               for m in [x for x in out if x.direction == d][:per_way]]
    return out


def address_messages(msgs):
    """Envelope and To: for each message: from the office's users in turn,
    to the other office's users in turn."""
    for d in DIRECTIONS:
        src, dst = OFFICES[d[0]], OFFICES[d[2]]
        for i, m in enumerate(x for x in msgs if x.direction == d):
            m.sender = "%s@%s" % (src["users"][i % len(src["users"])],
                                  src["domain"])
            m.user = dst["users"][i % len(dst["users"])]
            m.recipient = "%s@%s" % (m.user, dst["domain"])
            m.sent = readdress(as_sent(m.raw), m.recipient)


# ---------------------------------------------------------------------------
# Processes


class Proc:
    """A program the demo started; stopped by its process id only."""

    def __init__(self, name, argv, log_path, stdout=None):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                argv, stdout=stdout if stdout else self.log, stderr=self.log,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        except OSError as e:
            self.log.close()
            raise SetupError("%s: cannot start %s: %s" % (name, argv[0], e))
        self.pid = self.popen.pid
        self.status = None

    def alive(self):
        return self.popen.poll() is None

    def stop(self, timeout=20):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.status is None:
            if self.popen.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.popen.wait()
            self.status = self.popen.returncode
            self.log.close()
        return self.status

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def _die_with_parent():
    # Runs in the child before exec: if the demo itself is killed (a test
    # runner's timeout sends SIGKILL), the child gets SIGTERM instead of
    # living on.  prctl(PR_SET_PDEATHSIG, SIGTERM).
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pbkdf2_hash(password, iterations=100000):
    """A users-file hash in the format etc/users.sample describes."""
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations,
                              32)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations,
                                       base64.b64encode(salt).decode(),
                                       base64.b64encode(key).decode())


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------
# The demo


class Demo:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        self.procs = []
        self.failures = []
        self.messages = []
        self.sim = None
        self.ferryd = {}
        self.office = {}  # key -> dict of paths and ports
        self.scale = args.time_scale
        self.summary = {"checks": [], "pids": []}
        self.fault_armed = threading.Event()
        self.fault_cleared = threading.Event()
        self.stop_watch = threading.Event()
        self.compressed = False

    # -- helpers --

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def fail(self, text):
        self.failures.append(text)
        say("demo: CHECK FAILED: " + text)

    def passed(self, text):
        self.summary["checks"].append(text)
        say("demo: ok: " + text)

    def ctl(self, key, *words, json_out=False, timeout=30):
        argv = [self.args.ferryctl, "-S", self.office[key]["ctl"]]
        if json_out:
            argv.append("--json")
        return run(argv + list(words), timeout=timeout)

    def ctl_json(self, key, *words):
        r = self.ctl(key, *words, json_out=True)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def show(self, key, *words):
        """Runs ferryctl against office `key` and prints what it says."""
        r = self.ctl(key, *words)
        text = "$ ferryctl -S %s %s\n" % (self.office[key]["ctl"],
                                          " ".join(words))
        text += "\n".join("  " + line for line in
                          (r.stdout + r.stderr).rstrip("\n").split("\n"))
        say(text)
        return r

    def admin(self, command):
        """One command on ferry-modemsim's admin socket; its one-line reply."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.path("modems", "admin"))
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode().strip()

    def calls_on_line(self):
        """Calls in progress in the emulator: [(caller, number, phase)]."""
        try:
            reply = self.admin("status")
        except OSError:
            return []
        out = []
        for tok in reply.split()[2:]:
            if ">" in tok and "=" in tok:
                who = tok.split("=", 1)[1]
                parts = who.split(":")
                caller, number = parts[0].split(">", 1)
                phase = parts[1] if len(parts) > 1 else ""
                out.append((caller, number, phase))
        return out

    # -- 0. working folder --

    def prepare_work(self):
        w = self.work
        if os.path.lexists(w):
            if os.path.islink(w) or not os.path.isdir(w):
                raise UsageError("%s exists and is not a folder" % w)
            if os.listdir(w) and not os.path.exists(os.path.join(w, MARKER)):
                raise UsageError(
                    "%s is not empty and was not made by the demo; "
                    "choose another with --work" % w)
            shutil.rmtree(w)
        os.makedirs(w)
        with open(os.path.join(w, MARKER), "w") as f:
            f.write("made by tools/demo/demo.py; wiped at its next run\n")
        for d in ("modems", "transcripts", "logs", "sent/a2b", "sent/b2a"):
            os.makedirs(self.path(d))

    # -- 1. modems --

    def start_modems(self):
        step("1. ferry-modemsim: two modems, a (%s) and b (%s), %d bit/s%s"
             % (OFFICES["a"]["number"], OFFICES["b"]["number"],
                self.args.rate,
                "" if self.scale == 1 else
                ", time sped up %gx" % self.scale))
        argv = [self.args.modemsim, "--dir", self.path("modems"),
                "--modem", "a:" + OFFICES["a"]["number"],
                "--modem", "b:" + OFFICES["b"]["number"],
                "--rate", str(self.args.rate),
                "--time-scale", "%g" % self.scale,
                "--control", self.path("modems", "admin"),
                "--transcripts", self.path("transcripts")]
        ready = open(self.path("logs", "modemsim.ready"), "wb")
        self.sim = Proc("ferry-modemsim", argv,
                        self.path("logs", "modemsim.log"), stdout=ready)
        ready.close()
        self.procs.append(self.sim)
        deadline = time.time() + 15
        while time.time() < deadline:
            with open(self.path("logs", "modemsim.ready"), "rb") as f:
                if b"ready" in f.read():
                    say("demo: modems ready: %s, %s (admin socket %s)" % (
                        self.path("modems", "a"), self.path("modems", "b"),
                        self.path("modems", "admin")))
                    return
            if not self.sim.alive():
                break
            time.sleep(0.05)
        raise SetupError("ferry-modemsim did not start:\n" +
                         self.sim.log_text()[-2000:])

    # -- 2. offices --

    def make_keys(self, key):
        """Our link key and certificate, made with `ferryctl keygen`; with
        a ferryctl that has no keygen yet, the same kind of identity with
        openssl.  The fingerprint is read back with openssl either way (and
        must agree with keygen's).  Returns (cert, key, fingerprint, how)."""
        o = OFFICES[key]
        kdir = self.path(o["name"], "keys")
        r = run([self.args.ferryctl, "--json", "keygen", "--name", o["name"],
                 "--out", kdir])
        made = {}
        if r.returncode == 0:
            try:
                made = json.loads(r.stdout)
            except ValueError:
                made = {}
        cert, pkey = made.get("certificate", ""), made.get("key", "")
        how = "ferryctl keygen"
        if not (cert and pkey and os.path.exists(cert) and
                os.path.exists(pkey)):
            # A self-signed Ed25519 certificate, as gateway/peer_tls.h
            # expects.
            os.makedirs(kdir, exist_ok=True)
            pkey = os.path.join(kdir, "link.key")
            cert = os.path.join(kdir, "link.crt")
            for argv in (["openssl", "genpkey", "-algorithm", "ed25519",
                          "-out", pkey],
                         ["openssl", "req", "-x509", "-new", "-key", pkey,
                          "-subj", "/CN=" + o["name"], "-days", "36500",
                          "-out", cert]):
                r2 = run(argv)
                if r2.returncode != 0:
                    raise SetupError("%s: %s" % (" ".join(argv), r2.stderr))
            os.chmod(pkey, 0o600)
            how = "openssl (ferryctl keygen: %s)" % (
                (r.stderr or r.stdout).strip().split("\n")[0][:60])
        r = run(["openssl", "x509", "-noout", "-fingerprint", "-sha256",
                 "-in", cert])
        if r.returncode != 0 or "=" not in r.stdout:
            raise SetupError("cannot read the fingerprint of %s: %s" %
                             (cert, r.stderr))
        fp = "sha256:" + r.stdout.strip().split("=", 1)[1].replace(
            ":", "").lower()
        if made.get("fingerprint") and made["fingerprint"] != fp:
            raise SetupError("ferryctl keygen says %s is %s, openssl says %s"
                             % (cert, made["fingerprint"], fp))
        return cert, pkey, fp, how

    def make_office(self, key):
        o = OFFICES[key]
        base = self.path(o["name"])
        for d in ("spool", "mail", "lock"):
            os.makedirs(os.path.join(base, d))
        info = {"base": base, "smtp": free_port(), "pop3": free_port(),
                "ctl": os.path.join(base, "ctl.sock"),
                "conf": os.path.join(base, "ferry.conf"),
                "mail": os.path.join(base, "mail")}
        cert, pkey, fp, how = self.make_keys(key)
        info.update(cert=cert, key=pkey, fingerprint=fp, keys_by=how)
        passwords = {u: "%s-demo-password" % u for u in o["users"]}
        with open(os.path.join(base, "users"), "w") as f:
            f.write("# demo users; passwords in passwords.txt\n")
            for u in o["users"]:
                f.write("%s:%s\n" % (u, pbkdf2_hash(passwords[u])))
        os.chmod(os.path.join(base, "users"), 0o600)
        with open(os.path.join(base, "passwords.txt"), "w") as f:
            for u in o["users"]:
                f.write("%s %s\n" % (u, passwords[u]))
        with open(os.path.join(base, "aliases"), "w") as f:
            f.write("postmaster: %s\n" % o["users"][0])
        self.office[key] = info
        return info

    def write_config(self, key, threshold):
        o, info = OFFICES[key], self.office[key]
        other_key = OTHER[key]
        other, oinfo = OFFICES[other_key], self.office[other_key]
        a = self.args
        lines = [
            "# %s, written by tools/demo/demo.py; see ferry.conf(5)." %
            o["name"],
            "[ferryd]",
            "hostname = mail.%s" % o["domain"],
            "spool = " + os.path.join(info["base"], "spool"),
            "control_socket = " + info["ctl"],
            "lock_dir = " + os.path.join(info["base"], "lock"),
            "",
            "# The office's clients (loopback only in the demo).",
            "[listener office]",
            "address = 127.0.0.1:%d" % info["smtp"],
            "mode = relay",
            "",
            "[local]",
            "domains = " + o["domain"],
            "mail_root = " + info["mail"],
            "users_file = " + os.path.join(info["base"], "users"),
            "aliases_file = " + os.path.join(info["base"], "aliases"),
            "",
            "[rules]",
            "office_networks = 127.0.0.0/8",
            "",
            "# Read the Maildirs with any POP3 client (passwords.txt).",
            "[pop3]",
            "listen = 127.0.0.1:%d" % info["pop3"],
            "trusted_local = yes",
            "",
            "# Who we are on calls between ferry peers.",
            "[link]",
            "certificate = " + info["cert"],
            "key = " + info["key"],
            "",
            "[peer %s]" % other["name"],
            "domains = " + other["domain"],
            "fingerprint = " + oinfo["fingerprint"],
        ]
        if key == "a":
            lines += [
                "routes = " + other["number"],
                "line = a",
                "windows = always",
                "# Call when every message of the demo is queued.",
                "min_messages = %d" % threshold,
            ]
            if a.drop_after_bytes:
                lines += [
                    "# After the injected carrier drop, call again soon; the",
                    "# messages left are fewer than min_messages, so their",
                    "# age makes the call.",
                    "retry_dropped = %s" % a.retry_dropped,
                    "max_age = %s" % a.max_age,
                ]
        else:
            lines += [
                "# branch-b never dials: mail for branch-a waits until",
                "# branch-a calls and turns the line around.",
                "dial = no",
            ]
        lines += [
            "",
            "[modem %s]" % key,
            "device = " + self.path("modems", key),
        ]
        if key == "a":
            lines.append("answer = no")
        else:
            lines.append("answer = yes")
        if a.modem_time_scale != 1:
            lines.append("time_scale = %g" % a.modem_time_scale)
        with open(info["conf"], "w") as f:
            f.write("\n".join(lines) + "\n")

    def check_config(self, key):
        info = self.office[key]
        conf = info["conf"]
        device = self.path("modems", key)
        if not os.path.exists(device):
            # ferry-modemsim is not running yet (--configs-only): check
            # everything else, with /dev/null standing in for its port.
            conf = os.path.join(info["base"], "check.conf")
            with open(info["conf"]) as f:
                text = f.read()
            with open(conf, "w") as f:
                f.write(text.replace("device = " + device,
                                     "device = /dev/null"))
        r = run([self.args.ferryd, "--check-config", "--config", conf])
        if r.returncode != 0:
            raise SetupError(
                "ferryd --check-config refused %s:\n%s%s" %
                (info["conf"], r.stderr, r.stdout[-1500:]))
        with open(os.path.join(info["base"], "effective.conf"), "w") as f:
            f.write(r.stdout)

    def start_ferryd(self, key):
        o, info = OFFICES[key], self.office[key]
        p = Proc(o["name"], [self.args.ferryd, "--config", info["conf"]],
                 self.path("logs", o["name"] + ".log"))
        self.procs.append(p)
        self.ferryd[key] = p
        deadline = time.time() + 30
        while time.time() < deadline:
            if not p.alive():
                raise SetupError("ferryd %s exited %s:\n%s" % (
                    o["name"], p.popen.returncode, p.log_text()[-3000:]))
            if os.path.exists(info["ctl"]):
                try:
                    with smtplib.SMTP("127.0.0.1", info["smtp"],
                                      timeout=10) as s:
                        s.noop()
                    return
                except (OSError, smtplib.SMTPException):
                    pass
            time.sleep(0.1)
        raise SetupError("ferryd %s did not start:\n%s" %
                         (o["name"], p.log_text()[-3000:]))

    def start_offices(self):
        step("2. two offices, each with its own ferryd")
        for key in ("a", "b"):
            self.make_office(key)
        thresholds = {"a": len([m for m in self.messages
                                if m.direction == "a2b"]), "b": 1}
        for key in ("a", "b"):
            self.write_config(key, thresholds[key])
            self.check_config(key)
            o, info = OFFICES[key], self.office[key]
            say("demo: %s (%s, users %s): %s passes ferryd --check-config;"
                " link key by %s, fingerprint %s..." % (
                    o["name"], o["domain"], ", ".join(o["users"]),
                    info["conf"], info["keys_by"],
                    info["fingerprint"][:23]))
        if self.args.configs_only:
            return
        for key in ("a", "b"):
            self.start_ferryd(key)
            info = self.office[key]
            say("demo: ferryd %s running, pid %d: SMTP 127.0.0.1:%d, "
                "POP3 127.0.0.1:%d, control socket %s" % (
                    OFFICES[key]["name"], self.ferryd[key].pid,
                    info["smtp"], info["pop3"], info["ctl"]))
        self.summary["pids"] = [p.pid for p in self.procs]

    # -- 3. mail from the office clients --

    def submit(self, key, msgs):
        try:
            return self._submit(key, msgs)
        except (OSError, smtplib.SMTPException) as e:
            p = self.ferryd[key]
            raise SetupError("SMTP session with %s broke: %s%s\n%s" % (
                OFFICES[key]["name"], e.__class__.__name__,
                ": %s" % e if str(e) else "",
                "" if p.alive() else "ferryd exited %s; its log ends:\n%s" %
                (p.popen.returncode, p.log_text()[-2000:])))

    def _submit(self, key, msgs):
        o, info = OFFICES[key], self.office[key]
        sent_bytes = 0
        with smtplib.SMTP("127.0.0.1", info["smtp"], timeout=120) as s:
            s.ehlo("client." + o["domain"])
            for m in msgs:
                opts = ["BODY=8BITMIME"] if m.eightbit else []
                try:
                    refused = s.sendmail(m.sender, [m.recipient], m.sent,
                                         mail_options=opts)
                except smtplib.SMTPResponseException as e:
                    m.refused = "%d %s" % (e.smtp_code,
                                           e.smtp_error.decode("utf-8",
                                                               "replace"))
                    s.rset()
                except smtplib.SMTPRecipientsRefused as e:
                    m.refused = str(e.recipients)
                else:
                    if refused:
                        m.refused = str(refused)
                if m.refused:
                    self.fail("%s refused %s (from %s): %s" % (
                        o["name"], m.source, m.sender, m.refused))
                    continue
                sent_bytes += len(m.sent)
                name = "%03d-%s" % (self.messages.index(m), m.source)
                with open(self.path("sent", m.direction, name), "wb") as f:
                    f.write(m.sent)
        return sent_bytes

    def hand_over_mail(self):
        source = self.summary["source"]
        step("3. office clients hand over mail over SMTP (Python smtplib); "
             "source: " + source)
        # branch-b first: it holds its mail for branch-a; the last message
        # handed to branch-a then reaches branch-a's call threshold.
        for key, d in (("b", "b2a"), ("a", "a2b")):
            msgs = [m for m in self.messages if m.direction == d]
            t0 = time.time()
            n = self.submit(key, msgs)
            ok = len([m for m in msgs if not m.refused])
            say("demo: %d messages (%s) handed to %s for %s in %.1f s" % (
                ok, kib(n), OFFICES[key]["name"],
                OFFICES[OTHER[key]]["name"], time.time() - t0))
            self.summary[d + "_sent"] = ok
            self.summary[d + "_bytes"] = n

    # -- 4. the call --

    def fault_watch(self):
        """Arms the carrier drop before branch-a's first call and clears it
        as soon as that call has ended, so the next call goes through."""
        try:
            reply = self.admin("fault a drop-after-bytes %d" %
                               self.args.drop_after_bytes)
        except OSError as e:
            reply = "error " + str(e)
        if not reply.startswith("ok"):
            self.fail("ferry-modemsim did not take the fault: " + reply)
            return
        self.fault_armed.set()
        say("demo: carrier drop armed: modem a drops the line after %d "
            "bytes of its next call" % self.args.drop_after_bytes)
        seen = False
        while not self.stop_watch.is_set():
            calls = [c for c in self.calls_on_line() if c[0] == "a"]
            if calls:
                seen = True
            elif seen:
                reply = self.admin("clear a")
                self.fault_cleared.set()
                say("demo: first call over; fault cleared (%s); the "
                    "scheduler places the next call" % reply)
                return
            time.sleep(0.05)

    def delivered_counts(self):
        out = {}
        for d in DIRECTIONS:
            dst = self.office[d[2]]
            n = 0
            for u in OFFICES[d[2]]["users"]:
                for sub in ("new", "cur"):
                    p = os.path.join(dst["mail"], u, sub)
                    if os.path.isdir(p):
                        n += len(os.listdir(p))
            out[d] = n
        return out

    def all_arrived(self):
        got = self.delivered_counts()
        return all(got[d] >= self.summary.get(d + "_sent", 0)
                   for d in DIRECTIONS)

    def attach(self):
        """`ferryctl dial branch-b --wait` on branch-a while the scheduler's
        call runs: progress lines as they come (at most one a second unless
        the phase changes), and once, mid-call, `ferryctl status`."""
        peer = OFFICES["b"]["name"]
        say("$ ferryctl -S %s dial %s --wait" % (self.office["a"]["ctl"],
                                                 peer))
        p = subprocess.Popen(
            [self.args.ferryctl, "-S", self.office["a"]["ctl"], "dial", peer,
             "--wait"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        last_phase, last_time, status_shown = None, 0.0, False
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            phase = line.split()[0] if line.split() else ""
            now = time.time()
            if phase != last_phase or now - last_time >= 1.0:
                say("  | " + line)
                last_phase, last_time = phase, now
            if not status_shown and "sending" in line:
                status_shown = True
                threading.Thread(target=self.show,
                                 args=("a", "status"), daemon=True).start()
        rc = p.wait()
        say("demo: ferryctl dial --wait exited %d (%s)" % (
            rc, DIAL_EXIT.get(rc, "see ferryctl(1)")))
        return rc

    def run_calls(self):
        step("4. the scheduler places the call; progress as ferryctl shows it")
        a = self.args
        deadline = time.time() + self.exchange_timeout()
        started = None
        attached = 0
        while time.time() < deadline:
            if self.all_arrived():
                break
            for key, p in self.ferryd.items():
                if not p.alive():
                    raise SetupError("ferryd %s died (status %s):\n%s" % (
                        OFFICES[key]["name"], p.popen.returncode,
                        p.log_text()[-3000:]))
            calls = [c for c in self.calls_on_line() if c[0] == "a"]
            if calls:
                if started is None:
                    started = time.time()
                say("demo: the scheduler's call %d: branch-a dials %s" % (
                    attached + 1, calls[0][1]))
                attached += 1
                self.attach()
                # Attach again only to a new call: wait for this one to
                # leave the line (a dial to a peer not in a call would
                # place a call of our own).
                gone = time.time() + 60 / self.scale + 10
                while time.time() < gone and [
                        c for c in self.calls_on_line() if c[0] == "a"]:
                    time.sleep(0.05)
                continue
            if started is None and time.time() - self.submitted > \
                    a.call_wait:
                self.fail("branch-a did not call within %d s of the last "
                          "message" % a.call_wait)
                self.show("a", "why", OFFICES["b"]["name"])
                break
            time.sleep(0.1)
        else:
            self.fail("the exchange did not finish within %d s" %
                      self.exchange_timeout())
        # Let the call end (the hang-up) and its record reach the history.
        settle = time.time() + 60 / self.scale + 10
        while time.time() < settle and [
                c for c in self.calls_on_line() if c[0] == "a"]:
            time.sleep(0.1)
        settle = time.time() + 10
        while time.time() < settle:
            doc = self.ctl_json("a", "calls", "--limit", "0") or {}
            if len(doc.get("calls", [])) >= max(attached, 1):
                break
            time.sleep(0.2)
        self.stop_watch.set()
        say("")
        self.show("a", "status")
        self.show("a", "calls")
        self.show("b", "calls")

    def exchange_timeout(self):
        if self.args.timeout:
            return self.args.timeout
        total = sum(len(m.sent) for m in self.messages)
        line = total * 10.0 / (self.args.rate * self.scale)
        # Dialling, rings, training and TLS; twice the line time for the
        # protocol and a busy machine; a second call when a drop is asked.
        calls = 2 if self.args.drop_after_bytes else 1
        return int(calls * (60 / self.scale + 30) + 2.5 * line + 60)

    # -- 5. checks --

    def check_maildirs(self):
        step("5. checks: every message in the right Maildir, once, intact")
        for d in DIRECTIONS:
            dkey = d[2]
            dst, names = self.office[dkey], OFFICES[dkey]
            want = [m for m in self.messages
                    if m.direction == d and not m.refused]
            matched = {id(m): 0 for m in want}
            unexpected = []
            for u in names["users"]:
                files = []
                for sub in ("new", "cur"):
                    p = os.path.join(dst["mail"], u, sub)
                    if os.path.isdir(p):
                        files += [os.path.join(p, f)
                                  for f in sorted(os.listdir(p))]
                mine = [m for m in want if m.user == u]
                for path in files:
                    with open(path, "rb") as f:
                        got = f.read()
                    hit = None
                    for m in mine:
                        if got.endswith(m.sent) and \
                                trace_only(got[:len(got) - len(m.sent)]):
                            hit = m
                            if matched[id(m)] == 0:
                                break
                    if hit is None:
                        unexpected.append(path)
                    else:
                        matched[id(hit)] += 1
            missing = [m for m in want if matched[id(m)] == 0]
            dups = [m for m in want if matched[id(m)] > 1]
            label = "%s -> %s" % (OFFICES[d[0]]["name"], names["name"])
            self.summary[d + "_delivered"] = len(want) - len(missing)
            self.summary[d + "_duplicates"] = len(dups)
            self.summary[d + "_unexpected"] = len(unexpected)
            if missing:
                self.fail("%s: %d of %d messages missing or changed: %s" % (
                    label, len(missing), len(want),
                    ", ".join(m.source for m in missing[:10])))
            if dups:
                self.fail("%s: delivered more than once: %s" % (
                    label, ", ".join(m.source for m in dups[:10])))
            if unexpected:
                self.fail("%s: %d files that no client sent (bounces or "
                          "changed messages), e.g. %s" % (
                              label, len(unexpected), unexpected[0]))
            if not (missing or dups or unexpected):
                self.passed("%s: all %d messages delivered once, "
                            "byte-identical apart from trace fields" %
                            (label, len(want)))

    def check_spools(self):
        for key in ("a", "b"):
            q = self.ctl_json(key, "queue")
            name = OFFICES[key]["name"]
            if q is None:
                self.fail("%s: ferryctl --json queue failed" % name)
                continue
            left = q.get("messages", q) if isinstance(q, dict) else q
            if left:
                self.fail("%s: %d messages still in the spool" %
                          (name, len(left)))
            else:
                self.passed("%s: spool empty" % name)

    def check_calls(self):
        doc = self.ctl_json("a", "calls", "--limit", "0")
        calls = (doc or {}).get("calls", [])
        self.summary["calls"] = calls
        if not calls:
            self.fail("branch-a has no call in its history")
            return
        if calls[-1].get("result") != "ok":
            self.fail("branch-a's last call ended %r" %
                      calls[-1].get("result"))
        else:
            self.passed("branch-a's call history: %d call(s), the last "
                        "one ok" % len(calls))
        if self.args.drop_after_bytes:
            if len(calls) < 2 or calls[0].get("result") == "ok":
                self.fail("the injected carrier drop did not cut the "
                          "first call (results: %s)" %
                          [c.get("result") for c in calls])
            else:
                self.passed("first call cut by the carrier drop (%s); "
                            "call %d finished the exchange" % (
                                calls[0].get("result"), len(calls)))

    def check_logs(self):
        for p in self.procs:
            text = p.log_text()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                           "runtime error:"):
                if marker in text:
                    self.fail("%s in %s" % (marker, p.log_path))
            if p.status not in (0, None):
                self.fail("%s exited with status %s" % (p.name, p.status))

    # -- summary --

    def print_summary(self, elapsed):
        step("summary")
        s = self.summary
        for d in DIRECTIONS:
            say("  %s -> %s: %d of %d messages delivered (%s handed over)" % (
                OFFICES[d[0]]["name"], OFFICES[d[2]]["name"],
                s.get(d + "_delivered", 0), s.get(d + "_sent", 0),
                kib(s.get(d + "_bytes", 0))))
        for n, c in enumerate(s.get("calls", []), 1):
            line_bytes = c.get("bytes_out", 0) + c.get("bytes_in", 0)
            eff = c.get("efficiency")
            if eff is not None and self.scale != 1:
                eff = eff / self.scale  # ferryd counts the unscaled rate
            self.compressed = self.compressed or (eff or 0) > 1
            say("  call %d to %s: %s, %.1f s, %s bytes on the line "
                "(%s out, %s in), messages %s out / %s in, line "
                "efficiency %s" % (
                    n, c.get("peer", "?"),
                    c.get("result", "?"), c.get("duration", 0.0),
                    fmt_int(line_bytes), fmt_int(c.get("bytes_out", 0)),
                    fmt_int(c.get("bytes_in", 0)),
                    c.get("messages_out", "?"), c.get("messages_in", "?"),
                    "-" if eff is None else "%.0f%%" % (100 * eff)))
        if self.compressed:
            say("  (line efficiency: message bytes moved / what the line "
                "could carry in the call's time; over 100% because the "
                "link compresses)")
        if self.scale != 1:
            say("  (the line ran %gx faster than %d bit/s; efficiency is "
                "against the sped-up line)" % (self.scale, self.args.rate))
        say("  demo time: %.0f s" % elapsed)
        say("  where to look:")
        say("    logs        %s/*.log" % self.path("logs"))
        say("    Maildirs    %s/mail/USER/new, %s/mail/USER/new" % (
            self.path("branch-a"), self.path("branch-b")))
        say("    spools      %s/spool (ferryd --config %s, then ferryctl)" %
            (self.path("branch-*"), self.path("branch-a", "ferry.conf")))
        say("    configs     %s/ferry.conf" % self.path("branch-*"))
        say("    line        %s (one transcript per call)" %
            self.path("transcripts"))
        say("    as sent     %s/{a2b,b2a}" % self.path("sent"))
        with open(self.path("summary.json"), "w") as f:
            s["failures"] = self.failures
            s["work"] = self.work
            json.dump(s, f, indent=1)

    # -- the whole run --

    def pick_messages(self):
        a = self.args
        if a.eml_dir:
            msgs = folder_messages(a.eml_dir, a.messages)
            source = a.eml_dir
        elif a.corpus and os.path.isdir(os.path.join(a.corpus, "messages")):
            msgs = corpus_messages(a.corpus, a.messages or 30)
            source = "corpus " + a.corpus
        else:
            msgs = folder_messages(os.path.join(HERE, "samples"), a.messages)
            source = "the samples in tools/demo/samples (no corpus at %s)" % (
                a.corpus or "../shared/corpus")
        for d in DIRECTIONS:
            if not [m for m in msgs if m.direction == d]:
                raise SetupError("no messages for %s in %s" % (d, source))
        address_messages(msgs)
        self.messages = msgs
        self.summary["source"] = source

    def run(self):
        t0 = time.time()
        self.prepare_work()
        self.pick_messages()
        if self.args.configs_only:
            self.start_offices()
            self.summary["offices"] = self.office
            with open(self.path("summary.json"), "w") as f:
                json.dump(self.summary, f, indent=1)
            return
        self.start_modems()
        self.start_offices()
        watcher = None
        if self.args.drop_after_bytes:
            watcher = threading.Thread(target=self.fault_watch, daemon=True)
            watcher.start()
            self.fault_armed.wait(10)
        self.hand_over_mail()
        self.submitted = time.time()
        self.run_calls()
        self.check_maildirs()
        self.check_spools()
        self.check_calls()
        if watcher:
            self.stop_watch.set()
            watcher.join(5)
        self.stop_all()
        self.check_logs()
        self.print_summary(time.time() - t0)

    def stop_all(self):
        self.stop_watch.set()
        for p in reversed(self.procs):
            p.stop()


DIAL_EXIT = {0: "everything exchanged", 1: "ferryd refused the request",
             3: "ferryd not running", 5: "dial not available in this ferryd",
             10: "busy", 11: "no answer", 12: "line down",
             13: "authentication refused",
             14: "call ended part-way; some mail waits"}


def kib(n):
    return "%.1f KiB" % (n / 1024.0)


def fmt_int(n):
    return "{:,}".format(int(n))


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="ferry's two-office demo over emulated modems.")
    p.add_argument("--work", default="/tmp/ferry-demo",
                   help="working folder, wiped first (default %(default)s)")
    p.add_argument("--bin", default=os.path.join(TOP, "build"),
                   help="build folder with ferryd, ferryctl and "
                   "ferry-modemsim (default %(default)s)")
    p.add_argument("--ferryd")
    p.add_argument("--ferryctl")
    p.add_argument("--modemsim")
    shared = os.environ.get("FERRY_SHARED_DIR") or os.path.join(
        os.path.dirname(TOP), "shared")
    p.add_argument("--corpus", default=os.path.join(shared, "corpus"),
                   help="corpus folder (default %(default)s)")
    p.add_argument("--eml-dir", help="send the .eml files of this folder")
    p.add_argument("--messages", type=int, default=0,
                   help="messages each way (default: 30 from the corpus, "
                   "all of a folder)")
    p.add_argument("--rate", type=int, default=33600,
                   help="line rate in bit/s (default %(default)s)")
    p.add_argument("--time-scale", type=float, default=0.0,
                   help="run the line and modem timings F times faster")
    p.add_argument("--fast", action="store_true",
                   help="for tests: --time-scale 10 unless given")
    p.add_argument("--modem-time-scale", type=float, default=0.0,
                   help="ferryd's [modem] time_scale (default 2/F, at "
                   "most 1)")
    p.add_argument("--drop-after-bytes", type=int, default=0,
                   help="drop the carrier N bytes into branch-a's first "
                   "call")
    p.add_argument("--retry-dropped", default="3s",
                   help="branch-a's retry_dropped with --drop-after-bytes")
    p.add_argument("--max-age", default="20s",
                   help="branch-a's max_age with --drop-after-bytes")
    p.add_argument("--configs-only", action="store_true",
                   help="make the two offices (keys, users, configs), "
                   "check the configs with ferryd --check-config, stop")
    p.add_argument("--call-wait", type=int, default=60,
                   help="seconds to wait for the scheduler's first call")
    p.add_argument("--timeout", type=int, default=0,
                   help="seconds for the whole exchange (default: from "
                   "the bytes and the line rate)")
    a = p.parse_args(argv)
    for tool, name in (("ferryd", "ferryd"), ("ferryctl", "ferryctl"),
                       ("modemsim", "ferry-modemsim")):
        if not getattr(a, tool):
            setattr(a, tool, os.path.join(a.bin, name))
        path = getattr(a, tool)
        if not os.access(path, os.X_OK):
            p.error("%s not found at %s (build first: tools/build.sh, or "
                    "give --bin)" % (name, path))
    if not a.time_scale:
        a.time_scale = 10.0 if a.fast else 1.0
    if a.time_scale <= 0 or a.rate <= 0 or a.messages < 0:
        p.error("--time-scale, --rate and --messages must be positive")
    if not a.modem_time_scale:
        # The emulator's --time-scale F pairs with time_scale = 1/F
        # (modem/profile.h); twice that keeps the proportions that matter
        # (guard times, ring gaps) and leaves a margin on a busy machine.
        a.modem_time_scale = min(1.0, 2.0 / a.time_scale)
    if a.eml_dir and not os.path.isdir(a.eml_dir):
        p.error("--eml-dir %s is not a folder" % a.eml_dir)
    return a


def main(argv):
    if os.environ.get("FERRY_IN_NETNS") != "1":
        # Everything the demo starts listens on loopback; a private network
        # namespace makes sure nothing else is reachable.
        wrapper = os.path.join(TOP, "tests", "netns-run.sh")
        os.execv(wrapper, [wrapper, sys.executable or "/usr/bin/python3",
                           os.path.abspath(__file__)] + argv)
    args = parse_args(argv)
    demo = Demo(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        try:
            demo.run()
        except SetupError as e:
            say("demo: " + str(e).rstrip())
            status = EXIT_SETUP
        except UsageError as e:
            say("demo: " + str(e).rstrip())
            return EXIT_USAGE
        except KeyboardInterrupt:
            say("demo: interrupted")
            status = EXIT_SETUP
        except Exception:  # a bug of the demo: still stop what it started
            import traceback
            traceback.print_exc()
            status = EXIT_SETUP
    finally:
        demo.stop_all()
    if status == 0 and demo.failures:
        status = EXIT_CHECKS
    say("")
    if status == 0:
        say("ferry demo: PASS -- every check passed")
    else:
        say("ferry demo: FAIL (%d failed checks%s)" % (
            len(demo.failures), "" if status == EXIT_CHECKS else
            ", set-up stopped early"))
        for f in demo.failures:
            say("  - " + f)
        say("  logs: %s" % demo.path("logs"))
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except SetupError as e:
        print("demo: " + str(e), file=sys.stderr)
        sys.exit(EXIT_SETUP)
