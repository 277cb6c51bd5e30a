#!/usr/bin/python3
"""The two-office demo (tools/demo/demo.py) as a test.

PartsTest needs no daemon: the demo's re-addressing keeps bodies intact,
its Maildir check notices a changed, a duplicated and an unexpected
message, and the shipped selection and samples are what the demo needs.

FlowTest runs the demo's whole flow with the built binaries and the line
sped up (--fast), then runs it again in the same working folder (a second
run needs no clean-up).  DropTest injects a carrier drop into branch-a's
first call and expects the scheduler's next call to finish the exchange
with nothing lost or duplicated.  Both look at what a user would: the exit
status, the files in the Maildirs, the call history, and that no process
the demo started is left running.

Binaries come from $FERRYD, $FERRYCTL and $FERRY_MODEMSIM; the corpus from
$FERRY_SHARED_DIR/corpus when it is there (else the demo's samples).
FlowTest and DropTest run inside tests/netns-run.sh.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
import unittest

sys.dont_write_bytecode = True
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEMO_DIR = os.path.join(SOURCE, "tools", "demo")
sys.path.insert(0, DEMO_DIR)
import demo  # noqa: E402

SHARED = os.environ.get("FERRY_SHARED_DIR", "")
CORPUS = os.path.join(SHARED, "corpus") if SHARED else ""
HAVE_CORPUS = bool(CORPUS) and os.path.isdir(os.path.join(CORPUS,
                                                          "messages"))
BINARIES = {"ferryd": os.environ.get("FERRYD", ""),
            "ferryctl": os.environ.get("FERRYCTL", ""),
            "modemsim": os.environ.get("FERRY_MODEMSIM", "")}


class PartsTest(unittest.TestCase):
    def test_readdress_replaces_folded_to_and_keeps_the_rest(self):
        sent = (b"From: x@example.org\r\nTo: a@example.org,\r\n"
                b" b@example.org\r\n\tc@example.org\r\nSubject: s\r\n"
                b"TO: d@example.org\r\n\r\nTo: not a header\r\n")
        out = demo.readdress(sent, "dave@branch-b.example")
        self.assertEqual(out, b"From: x@example.org\r\n"
                         b"To: dave@branch-b.example\r\nSubject: s\r\n"
                         b"\r\nTo: not a header\r\n")
        self.assertEqual(
            demo.readdress(b"Subject: s\r\n\r\nbody\r\n", "e@x.example"),
            b"Subject: s\r\nTo: e@x.example\r\n\r\nbody\r\n")

    def test_trace_only_accepts_only_trace_fields(self):
        self.assertTrue(demo.trace_only(b""))
        self.assertTrue(demo.trace_only(
            b"Return-Path: <a@b>\r\nReceived: from x\r\n\tby y; date\r\n"
            b"Delivered-To: d@e\r\n"))
        self.assertFalse(demo.trace_only(b"X-Spam: yes\r\n"))
        self.assertFalse(demo.trace_only(b"Received: from x"))
        self.assertFalse(demo.trace_only(b" folded\r\n"))

    def test_unusable_names_what_smtp_cannot_carry(self):
        self.assertIsNone(demo.unusable(b"A: b\n\nbody\n"))
        self.assertEqual(demo.unusable(b"A: b\n\nx\0y\n"), "NUL byte")
        self.assertEqual(demo.unusable(b"A: b\n\nx\ry\n"), "bare CR")
        self.assertEqual(demo.unusable(b"A: b\n"),
                         "no empty line between header and body")
        self.assertEqual(demo.unusable(b"A: b\n\n" + b"x" * 999 + b"\n"),
                         "line over 998 octets")

    def test_maildir_check_finds_changed_duplicated_and_unexpected(self):
        tmp = tempfile.mkdtemp(prefix="ferry-demo-parts-")
        self.addCleanup(shutil.rmtree, tmp)
        d = demo.Demo(types.SimpleNamespace(work=tmp, time_scale=1.0))
        d.office = {k: {"mail": os.path.join(tmp, k)} for k in ("a", "b")}
        d.messages = [demo.Message(dr, "m%d" % i,
                                   b"Subject: %d\n\nbody %d\n" % (i, i))
                      for i, dr in enumerate(["a2b"] * 4 + ["b2a"] * 2)]
        demo.address_messages(d.messages)
        trace = b"Received: from x\r\n\tby y; now\r\n"

        def deliver(m, data, name):
            key = m.direction[2]
            path = os.path.join(tmp, key, m.user, "new")
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)

        a2b = [m for m in d.messages if m.direction == "a2b"]
        deliver(a2b[0], trace + a2b[0].sent, "1")
        deliver(a2b[0], trace + a2b[0].sent, "2")        # duplicate
        deliver(a2b[1], trace + a2b[1].sent.replace(b"body", b"b0dy"),
                "3")                                       # changed
        deliver(a2b[2], b"X-Added: 1\r\n" + a2b[2].sent, "4")  # not trace
        deliver(a2b[3], a2b[3].sent, "5")                  # no trace: fine
        for m in d.messages[4:]:
            deliver(m, trace + m.sent, "6")
        d.check_maildirs()
        text = "\n".join(d.failures)
        self.assertIn("2 of 4 messages missing or changed: m1, m2", text)
        self.assertIn("delivered more than once: m0", text)
        self.assertIn("2 files that no client sent", text)
        self.assertEqual(len(d.failures), 3, text)
        self.assertEqual(d.summary["b2a_delivered"], 2)

    def test_selection_is_about_30_small_usable_files_per_direction(self):
        picks = demo.read_selection(os.path.join(DEMO_DIR,
                                                 "corpus_selection.txt"))
        for direction in demo.DIRECTIONS:
            n = len([1 for dr, _ in picks if dr == direction])
            self.assertTrue(25 <= n <= 35, (direction, n))
        self.assertEqual(len(set(name for _, name in picks)), len(picks))
        if not HAVE_CORPUS:
            return
        for _, name in picks:
            path = os.path.join(CORPUS, "messages", name)
            self.assertLess(os.path.getsize(path), 64 << 10, name)
            with open(path, "rb") as f:
                self.assertIsNone(demo.unusable(f.read()), name)

    def test_samples_are_our_own_usable_messages_both_ways(self):
        msgs = demo.folder_messages(os.path.join(DEMO_DIR, "samples"), 0)
        self.assertGreaterEqual(len(msgs), 10)
        for direction in demo.DIRECTIONS:
            self.assertTrue([m for m in msgs if m.direction == direction])


def run_demo(work, *extra, timeout=600):
    argv = [sys.executable, os.path.join(DEMO_DIR, "demo.py"),
            "--work", work, "--ferryd", BINARIES["ferryd"],
            "--ferryctl", BINARIES["ferryctl"],
            "--modemsim", BINARIES["modemsim"], "--fast"]
    if not HAVE_CORPUS:
        argv += ["--corpus", os.path.join(work, "no-corpus")]
    r = subprocess.run(argv + list(extra), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    summary = {}
    path = os.path.join(work, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            summary = json.load(f)
    return r.returncode, out, summary


def maildir_count(work, office, users):
    n = 0
    for u in users:
        for sub in ("new", "cur"):
            p = os.path.join(work, office, "mail", u, sub)
            if os.path.isdir(p):
                n += len(os.listdir(p))
    return n


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running; our own children are reaped by the demo.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@unittest.skipUnless(all(BINARIES.values()),
                     "FERRYD, FERRYCTL and FERRY_MODEMSIM must name the "
                     "built programs")
class FlowBase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ferry-demo-test-")
        self.work = os.path.join(self.tmp, "work")
        if os.environ.get("FERRY_KEEP_TMP"):
            print("keeping", self.tmp)
        else:
            self.addCleanup(shutil.rmtree, self.tmp, True)

    def assert_everything_arrived(self, out, summary):
        self.assertIn("ferry demo: PASS", out)
        self.assertEqual(summary.get("failures"), [])
        for d, office, users in (
                ("a2b", "branch-b", demo.OFFICES["b"]["users"]),
                ("b2a", "branch-a", demo.OFFICES["a"]["users"])):
            sent = summary[d + "_sent"]
            self.assertGreater(sent, 0, d)
            self.assertEqual(summary[d + "_delivered"], sent, d)
            self.assertEqual(summary[d + "_duplicates"], 0, d)
            self.assertEqual(maildir_count(self.work, office, users), sent,
                             d)
        for pid in summary["pids"]:
            self.assertFalse(alive(pid), "process %d left running" % pid)


class ConfigTest(FlowBase):
    def test_both_offices_pass_check_config_and_pin_each_other(self):
        rc, out, summary = run_demo(self.work, "--configs-only")
        self.assertEqual(rc, 0, "demo --configs-only failed")
        self.assertEqual(out.count("passes ferryd --check-config"), 2, out)
        offices = summary["offices"]
        for key, other in (("a", "b"), ("b", "a")):
            info = offices[key]
            self.assertRegex(info["fingerprint"], r"^sha256:[0-9a-f]{64}$")
            self.assertEqual(os.stat(info["key"]).st_mode & 0o077, 0,
                             "link key readable by others")
            with open(info["conf"]) as f:
                conf = f.read()
            # Each pins the other's certificate, never its own.
            self.assertIn("fingerprint = " + offices[other]["fingerprint"],
                          conf)
            self.assertNotIn(info["fingerprint"], conf)
            with open(os.path.join(info["base"], "effective.conf")) as f:
                effective = f.read()
            self.assertIn(demo.OFFICES[other]["domain"], effective)
        with open(offices["b"]["conf"]) as f:
            self.assertRegex(f.read(), r"(?m)^dial = no$")
        self.assertFalse(os.path.exists(os.path.join(self.work, "logs",
                                                     "branch-a.log")),
                         "--configs-only started ferryd")


class FlowTest(FlowBase):
    def test_two_offices_exchange_mail_in_one_call_and_rerun(self):
        rc, out, summary = run_demo(self.work)
        self.assertEqual(rc, 0, "demo failed")
        self.assert_everything_arrived(out, summary)
        calls = summary["calls"]
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(calls[0]["result"], "ok")
        self.assertEqual(calls[0]["messages_out"], summary["a2b_sent"])
        self.assertEqual(calls[0]["messages_in"], summary["b2a_sent"])
        self.assertIn("ferryctl -S", out)
        self.assertIn("dial branch-b --wait", out)

        # A second run in the same folder starts from scratch.
        rc, out, summary = run_demo(self.work, "--messages", "3")
        self.assertEqual(rc, 0, "second run failed")
        self.assert_everything_arrived(out, summary)
        self.assertEqual(summary["a2b_sent"], 3)

    def test_refuses_a_folder_it_did_not_make(self):
        os.makedirs(self.work)
        with open(os.path.join(self.work, "precious"), "w") as f:
            f.write("keep me\n")
        rc, out, _ = run_demo(self.work)
        self.assertEqual(rc, 2)
        self.assertIn("was not made by the demo", out)
        self.assertTrue(os.path.exists(os.path.join(self.work, "precious")))


class DropTest(FlowBase):
    def test_carrier_drop_then_the_next_call_finishes_the_exchange(self):
        # Well inside what branch-a sends first (about 200 KB from the
        # corpus, 3 KB from the samples), after the TLS handshake.
        drop = "60000" if HAVE_CORPUS else "4000"
        rc, out, summary = run_demo(self.work, "--drop-after-bytes", drop)
        self.assertEqual(rc, 0, "demo failed")
        self.assert_everything_arrived(out, summary)
        calls = summary["calls"]
        self.assertGreaterEqual(len(calls), 2, calls)
        self.assertNotEqual(calls[0]["result"], "ok")
        self.assertEqual(calls[-1]["result"], "ok")
        self.assertIn("fault cleared", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
