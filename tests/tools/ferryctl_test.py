"""ferryctl against a live ferryd.

Usage: ferryctl_test.py FERRYCTL FERRYD SOURCE_DIR [FERRY_MODEMSIM]

Every test starts a real ferryd in a fresh temporary directory (config,
users, spool, control socket), puts mail in its spool over SMTP, and runs
the real ferryctl binary the way a postmaster would, checking what a
person reads (human output), what a script reads (--json, parsed) and the
exit status.  Runs inside tests/netns-run.sh: loopback only.
"""

import json
import pty
import threading
import re
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

FERRYCTL, FERRYD, SOURCE = sys.argv[1:4]
del sys.argv[1:4]
# The emulator, for the one test that needs a call in progress.
MODEMSIM = None
if len(sys.argv) > 1 and os.path.isfile(sys.argv[1]):
    MODEMSIM = sys.argv.pop(1)

NOBODY = 65534
# Becoming another user needs real root (not a user namespace's).
AS_ROOT = os.geteuid() == 0 and shutil.which("setpriv") is not None
# ferryctl's documented exit codes (man/ferryctl.1).
EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3
EXIT_PERMISSION, EXIT_NOT_AVAILABLE = 4, 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One ferryd with its own directory (mode 0755 so that other users
    can reach the socket and the file permissions decide)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ferryctl-test-")
        os.chmod(self.dir, 0o755)
        self.spool = os.path.join(self.dir, "spool")
        self.sock = os.path.join(self.dir, "run", "ctl.sock")
        os.makedirs(self.spool)
        os.makedirs(os.path.dirname(self.sock), mode=0o755)
        os.makedirs(os.path.join(self.dir, "mail"))
        self.port = free_port()
        for name in ("users", "aliases"):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write("alice:!\n" if name == "users" else "")
        self.config = os.path.join(self.dir, "ferry.conf")
        with open(self.config, "w") as f:
            f.write("\n".join([
                "[ferryd]",
                "hostname = mx.office.example",
                "spool = " + self.spool,
                "control_socket = " + self.sock,
                "lock_dir = " + self.dir,
                "[listener relay]",
                "address = 127.0.0.1:%d" % self.port,
                "[smtp]",
                "greeting_pause = 0s",
                "[local]",
                "domains = office.example",
                "mail_root = " + os.path.join(self.dir, "mail"),
                "users_file = " + os.path.join(self.dir, "users"),
                "aliases_file = " + os.path.join(self.dir, "aliases"),
                "[rules]",
                "office_networks = 127.0.0.0/8",
            ]) + "\n")
        self.log_path = os.path.join(self.dir, "ferryd.log")
        self.proc = None

    def start(self, expect_ok=True):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([FERRYD, "--config", self.config],
                                     stdout=self._log, stderr=self._log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                if expect_ok:
                    raise AssertionError("ferryd exited:\n" + self.log())
                return self.proc.returncode
            if " control socket=" in self.log():
                return 0
            time.sleep(0.05)
        raise AssertionError("ferryd did not start:\n" + self.log())

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc, self.proc = self.proc.returncode, None
        return rc

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def cleanup(self):
        self.stop()
        log = self.log() if os.path.exists(self.log_path) else ""
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:"):
            if marker in log:
                raise AssertionError(marker + " in ferryd's log:\n" + log)
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, sender, rcpts, subject="test"):
        body = ("From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" %
                (sender, ", ".join(rcpts), subject))
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
            s.sendmail(sender, rcpts, body)


class FerryctlTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon()
        self.addCleanup(self.d.cleanup)

    def ctl(self, *args, user=None, groups=None):
        cmd = [FERRYCTL, "-S", self.d.sock] + list(args)
        if user is not None:
            # A non-root user, as setpriv(1) makes one.
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user,
                   ("--groups=" + ",".join(map(str, groups))) if groups
                   else "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=60)

    def ctl_path(self, sock, *args):
        return subprocess.run([FERRYCTL, "-S", sock] + list(args),
                              capture_output=True, text=True, timeout=60)

    def ctl_json(self, *args):
        r = self.ctl("--json", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def fill(self):
        """Three messages waiting for the smarthost route."""
        self.d.send("alice@office.example", ["x@remote.example"], "one")
        self.d.send("bob@office.example",
                    ["y@remote.example", "z@far.example"], "two")
        self.d.send("alice@office.example", ["w@far.example"], "three")
        return [m["id"] for m in self.ctl_json("queue")["messages"]]

    # ---- listing and detail -------------------------------------------

    def test_status_human_and_json(self):
        self.d.start()
        self.fill()
        r = self.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("modems: no modems configured", r.stdout)
        self.assertIn("smarthost", r.stdout)
        self.assertIn("spool: 3 messages", r.stdout)
        s = self.ctl_json("status")
        self.assertEqual(s["spool"]["messages"], 3)
        self.assertEqual(s["spool"]["recipients"]["queued"], 4)
        self.assertEqual(s["modems"], [])
        peers = {p["name"]: p for p in s["peers"]}
        self.assertEqual(peers["smarthost"]["messages"], 3)
        self.assertEqual(peers["smarthost"]["recipients"], 4)
        self.assertIsNone(peers["smarthost"]["next_call"])
        self.assertEqual(s["ferryd"]["pid"], self.d.proc.pid)

    def test_queue_listing_and_filters(self):
        self.d.start()
        ids = self.fill()
        self.assertEqual(len(ids), 3)
        r = self.ctl("queue")
        self.assertEqual(r.returncode, 0, r.stderr)
        for qid in ids:
            self.assertIn(qid, r.stdout)
        self.assertIn("z@far.example (queued, smarthost)", r.stdout)
        self.assertIn("3 messages", r.stdout)

        def count(*f):
            return self.ctl_json("queue", "list", *f)["count"]
        self.assertEqual(count("--sender", "alice@office.example"), 2)
        self.assertEqual(count("--sender", "@OFFICE.example"), 3)
        self.assertEqual(count("--recipient", "@far.example"), 2)
        self.assertEqual(count("--recipient", "y@remote.example"), 1)
        self.assertEqual(count("--peer", "smarthost"), 3)
        self.assertEqual(count("--peer", "branch"), 0)
        self.assertEqual(count("--older-than", "2h"), 0)
        time.sleep(1.2)
        self.assertEqual(count("--older-than", "1s"), 3)
        r = self.ctl("queue", "--peer", "branch")
        self.assertIn("nothing matches", r.stdout)

    def test_queue_show(self):
        self.d.start()
        self.fill()
        qid = self.ctl_json("queue", "--sender", "bob@office.example")[
            "messages"][0]["id"]
        m = self.ctl_json("queue", "show", qid)
        self.assertEqual(m["id"], qid)
        self.assertEqual(m["sender"], "bob@office.example")
        self.assertEqual([r["address"] for r in m["recipients"]],
                         ["y@remote.example", "z@far.example"])
        self.assertTrue(all(r["state"] == "queued" for r in m["recipients"]))
        self.assertGreater(m["size"], 0)
        self.assertTrue(m["events"], "the submit logs an event")
        r = self.ctl("queue", "show", qid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("from:     <bob@office.example>", r.stdout)
        self.assertIn("z@far.example\n    state queued, route smarthost",
                      r.stdout)
        self.assertIn("events:", r.stdout)
        r = self.ctl("queue", "show", "0000NOSUCHQUEUE0")
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn("no message 0000NOSUCHQUEUE0", r.stderr)

    # ---- actions --------------------------------------------------------

    def test_hold_release_retry_delete(self):
        self.d.start()
        ids = self.fill()
        r = self.ctl("queue", "hold", ids[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hold: 1 message, 1 recipient", r.stdout)
        m = self.ctl_json("queue", "show", ids[0])
        self.assertEqual(m["recipients"][0]["state"], "held")
        self.assertEqual(
            self.ctl_json("status")["spool"]["recipients"]["held"], 1)

        # A filter with --all: every alice message.
        a = self.ctl_json("queue", "hold", "--all", "--sender",
                          "alice@office.example")
        self.assertEqual(a["messages"], 1)  # the other one is held already
        self.assertEqual(a["skipped"], 1)
        a = self.ctl_json("queue", "release", "--all")
        self.assertEqual(a["recipients"], 2)
        self.assertEqual(
            self.ctl_json("status")["spool"]["recipients"]["held"], 0)

        a = self.ctl_json("queue", "retry", ids[1])
        self.assertEqual(a["recipients"], 2)

        r = self.ctl("queue", "delete", ids[2])
        self.assertEqual(r.returncode, 0, r.stderr)
        left = [m["id"] for m in self.ctl_json("queue")["messages"]]
        self.assertEqual(sorted(left), sorted(ids[:2]))
        # Its history stays readable after it left.
        m = self.ctl_json("queue", "show", ids[2])
        self.assertTrue(m["gone"])
        self.assertIn("deleted by the postmaster",
                      " ".join(e["text"] for e in m["events"]))

        r = self.ctl("queue", "hold", "0000NOSUCHQUEUE0")
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn("0000NOSUCHQUEUE0", r.stderr)

    # ---- calls, dial, why -----------------------------------------------

    def test_calls_dial_why(self):
        self.d.start()
        r = self.ctl("calls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no calls recorded", r.stdout)
        self.assertEqual(self.ctl_json("calls", "--limit", "5"),
                         {"calls": []})
        for args in (["dial", "branch"], ["dial", "branch", "--wait"],
                     ["why", "branch"]):
            r = self.ctl(*args)
            self.assertEqual(r.returncode, EXIT_NOT_AVAILABLE, args)
            self.assertIn("not available yet: the dial scheduler is not "
                          "running in this ferryd", r.stderr)
        r = self.ctl("--json", "dial", "branch")
        self.assertEqual(json.loads(r.stdout)["code"], "not_available")
        r = self.ctl("help")
        for name in ("status", "queue.list", "queue.show", "queue.hold",
                     "calls", "dial", "why"):
            self.assertIn(name, r.stdout)

    # ---- errors and permissions ------------------------------------------

    def test_ferryd_not_running(self):
        r = self.ctl("status")
        self.assertEqual(r.returncode, EXIT_NOT_RUNNING)
        self.assertIn("ferryd is not running: start it with 'ferryd "
                      "--config", r.stderr)
        self.assertIn("systemctl start ferryd", r.stderr)
        # The socket name from -C CONFIG, and the config in the advice.
        r = subprocess.run([FERRYCTL, "-C", self.d.config, "queue"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, EXIT_NOT_RUNNING)
        self.assertIn(self.d.sock, r.stderr)
        self.assertIn("ferryd --config " + self.d.config, r.stderr)
        # After a stop the socket is gone again, same message.
        self.d.start()
        self.assertEqual(self.ctl("status").returncode, 0)
        self.assertEqual(self.d.stop(), 0)
        self.assertFalse(os.path.exists(self.d.sock))
        self.assertEqual(self.ctl("status").returncode, EXIT_NOT_RUNNING)

    def test_config_and_usage_errors(self):
        r = subprocess.run([FERRYCTL, "-C", self.d.config + ".missing",
                            "status"], capture_output=True, text=True)
        self.assertEqual(r.returncode, EXIT_USAGE)
        self.assertIn(".missing", r.stderr)
        for args in ([], ["frobnicate"], ["queue", "hold"],
                     ["queue", "show"], ["queue", "--older-than", "soon"],
                     ["dial"], ["calls", "--limit", "x"]):
            r = self.ctl(*args)
            self.assertEqual(r.returncode, EXIT_USAGE, args)
            self.assertIn("usage:", r.stderr, args)

    def test_json_errors_are_one_object_with_the_same_exit_status(self):
        # Failures found by ferryctl itself (no ferryd, a bad command
        # line, a bad configuration, a keygen file) print the same shape
        # as ferryd's errors, {"code","message"}, on stdout with --json,
        # and exit as they do without it.
        plain_file = os.path.join(self.d.dir, "plain")
        with open(plain_file, "w"):
            pass
        cases = [
            (["-S", self.d.sock, "status"], EXIT_NOT_RUNNING,
             "not_running", "ferryd is not running"),
            (["-S", self.d.sock, "frobnicate"], EXIT_USAGE, "usage",
             "unknown command 'frobnicate'"),
            (["-S", self.d.sock, "queue", "--older-than", "soon"],
             EXIT_USAGE, "usage", "--older-than"),
            (["--bogus", "status"], EXIT_USAGE, "usage",
             "unknown option --bogus"),
            ([], EXIT_USAGE, "usage", "no command given"),
            (["-C", self.d.config + ".missing", "status"], EXIT_USAGE,
             "config", ".missing"),
            (["-S", plain_file, "status"], EXIT_USAGE, "usage",
             "not a socket"),
            (["keygen", "--show", self.d.dir + "/none"], EXIT_FAILED,
             "failed", "/none"),
        ]
        for args, status, code, words in cases:
            for where in ("first", "last"):
                argv = (["--json"] + args if where == "first"
                        else args + ["--json"])
                r = subprocess.run([FERRYCTL] + argv, capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(r.returncode, status, (argv, r.stderr))
                lines = r.stdout.splitlines()
                self.assertEqual(len(lines), 1, (argv, r.stdout))
                e = json.loads(lines[0])
                self.assertEqual(sorted(e), ["code", "message"], argv)
                self.assertEqual(e["code"], code, argv)
                self.assertIn(words, e["message"], argv)
                self.assertIn(words, r.stderr, argv)
            # Without --json: the same status, nothing on stdout.
            r = subprocess.run([FERRYCTL] + args, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, status, args)
            self.assertEqual(r.stdout, "", args)

    def test_socket_path_that_is_no_socket_is_named_as_such(self):
        # A regular file or a directory at -S is a wrong path, not a
        # stopped ferryd.
        for path, kind in ((self.d.config, "a regular file"),
                           (self.d.spool, "a directory")):
            r = self.ctl_path(path, "status")
            self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
            self.assertIn("control socket %s: not a socket (%s)"
                          % (path, kind), r.stderr)
            self.assertNotIn("not running", r.stderr)

    def test_lowercase_c_reads_the_configuration_like_C(self):
        # ferryd's spelling works here too: same socket, same advice.
        for flag in ("-c", "-C", "--config"):
            r = subprocess.run([FERRYCTL, flag, self.d.config, "queue"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, EXIT_NOT_RUNNING, flag)
            self.assertIn(self.d.sock, r.stderr, flag)
            self.assertIn("ferryd --config " + self.d.config, r.stderr)
        self.d.start()
        r = subprocess.run([FERRYCTL, "-c", self.d.config, "--json",
                            "status"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["ferryd"]["pid"],
                         self.d.proc.pid)

    @unittest.skipUnless(MODEMSIM, "needs ferry-modemsim")
    def test_dial_without_wait_during_a_call_says_a_call_is_in_progress(self):
        # A real call: ferryd dials through the emulator to a far end
        # that answers and then says nothing, so the call stays up while
        # ferryctl asks again.
        line = os.path.join(self.d.dir, "line")
        os.mkdir(line)
        sim_log = open(os.path.join(self.d.dir, "modemsim.log"), "wb")
        sim = subprocess.Popen([MODEMSIM, "--dir", line, "--modem", "m:1",
                                "--train-ms", "10",
                                "--route", "555=exec:sleep 120"],
                               stdout=subprocess.PIPE, stderr=sim_log)

        def stop_sim():
            sim.terminate()
            sim.wait(20)
            sim.stdout.close()
            sim_log.close()
        self.addCleanup(stop_sim)
        self.assertEqual(sim.stdout.readline(), b"ready\n")
        ident = os.path.join(self.d.dir, "id")
        for args in (["--name", "office", "--out", ident],
                     ["--psk", os.path.join(self.d.dir, "branch.psk")]):
            r = subprocess.run([FERRYCTL, "keygen"] + args,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.d.config, "a") as f:
            f.write("\n".join([
                "[link]",
                "certificate = " + os.path.join(ident, "link.crt"),
                "key = " + os.path.join(ident, "link.key"),
                "[peer branch]",
                "domains = branch.example",
                "psk_file = " + os.path.join(self.d.dir, "branch.psk"),
                "routes = 555",
                "line = m",
                "[modem m]",
                "device = " + os.path.join(line, "m"),
                "answer = no",
            ]) + "\n")
        self.d.start()
        r = self.ctl("dial", "branch")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "branch: call requested\n")
        deadline = time.time() + 30
        while "connected" not in self.ctl("status").stdout:
            self.assertLess(time.time(), deadline, self.d.log())
            time.sleep(0.1)
        r = self.ctl("dial", "branch")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "branch: a call is already in progress\n")
        self.assertEqual(r.stderr, "")
        r = self.ctl("--json", "dial", "branch")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), {
            "outcome": "ok", "text": "branch: a call is already in progress"})

    @unittest.skipUnless(AS_ROOT, "needs root and setpriv")
    def test_socket_mode_and_non_root_user(self):
        self.d.start()
        st = os.stat(self.d.sock)
        self.assertEqual(st.st_mode & 0o777, 0o660)
        self.assertEqual(st.st_uid, os.geteuid())
        # A user outside the group cannot even open it: the file mode
        # refuses, and ferryctl explains the group.
        r = self.ctl("status", user=NOBODY)
        self.assertEqual(r.returncode, EXIT_PERMISSION, r.stderr)
        self.assertIn("permission denied on the control socket", r.stderr)
        self.assertIn("add you to group", r.stderr)
        # A member of ferryd's group is served.
        r = self.ctl("--json", "status", user=NOBODY,
                     groups=[os.getegid()])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("spool", json.loads(r.stdout))
        # Even with the file opened to everybody, SO_PEERCRED refuses
        # the outsider.
        os.chmod(self.d.sock, 0o666)
        r = self.ctl("status", user=NOBODY)
        self.assertEqual(r.returncode, EXIT_PERMISSION, r.stderr)
        self.assertIn("permission denied", r.stderr)
        self.assertIn("refused uid=%d" % NOBODY, self.d.log())

    @unittest.skipUnless(AS_ROOT, "needs root to chown")
    def test_refuses_unsafe_socket_places(self):
        # A world-writable directory.
        os.chmod(os.path.dirname(self.d.sock), 0o777)
        self.assertEqual(self.d.start(expect_ok=False), 1)
        self.assertIn("world-writable", self.d.log())
        self.d.stop()
        os.chmod(os.path.dirname(self.d.sock), 0o755)
        # A socket that belongs to somebody else.
        s = socket.socket(socket.AF_UNIX)
        s.bind(self.d.sock)
        s.close()
        os.chown(self.d.sock, NOBODY, NOBODY)
        self.assertEqual(self.d.start(expect_ok=False), 1)
        self.assertIn("belongs to uid %d" % NOBODY, self.d.log())
        self.d.stop()
        # A stale socket of our own is replaced.
        os.chown(self.d.sock, os.geteuid(), os.getegid())
        self.d.start()
        self.assertEqual(self.ctl("status").returncode, 0)

    def test_second_ferryd_on_same_socket_is_refused(self):
        self.d.start()
        other = subprocess.run([FERRYD, "--config", self.d.config],
                               capture_output=True, text=True, timeout=30)
        # The listener port is taken first, or the socket: either way the
        # second one stops with 1 and the first keeps serving.
        self.assertEqual(other.returncode, 1)
        self.assertEqual(self.ctl("status").returncode, 0)

    def test_bare_word_and_bad_requests(self):
        self.d.start()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.d.sock)
            f = s.makefile("rwb")
            f.write(b"ping\n{\"cmd\":\"nope\"}\nnot json\n")
            f.flush()
            replies = [json.loads(f.readline()) for _ in range(3)]
        self.assertTrue(replies[0]["ok"])
        self.assertEqual(replies[1]["error"]["code"], "unknown_command")
        self.assertEqual(replies[2]["error"]["code"], "bad_request")

    def test_dial_progress_rendering_and_outcome_codes(self):
        # ferryd cannot make calls yet, so a stand-in control socket
        # streams what the call manager will send (gateway/control.h).
        # Not a tty: one plain line per event; the outcome sets the exit
        # status.  On a pty: one line rewritten with \r.
        events = [{"peer": "office", "phase": "dialling"},
                  {"peer": "office", "phase": "sending", "bytes_out": 2048,
                   "bytes_in": 0, "messages_done": 1, "messages_total": 3,
                   "rate": 240, "eta": 12}]

        def serve(srv, outcome):
            c, _ = srv.accept()
            with c:
                req = json.loads(c.makefile("rb").readline())
                got.append(req)
                for e in events:
                    c.sendall((json.dumps({"progress": e}) + "\n").encode())
                c.sendall((json.dumps({"ok": True, "result": {
                    "outcome": outcome, "text": "call " + outcome}})
                    + "\n").encode())

        for outcome, code in (("ok", 0), ("busy", 10), ("no_answer", 11),
                              ("line_down", 12), ("auth_failed", 13),
                              ("partial", 14)):
            got = []
            if os.path.exists(self.d.sock):
                os.unlink(self.d.sock)
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(self.d.sock)
            srv.listen(1)
            t = threading.Thread(target=serve, args=(srv, outcome))
            t.start()
            r = self.ctl("dial", "office", "--wait")
            t.join(10)
            srv.close()
            self.assertEqual(r.returncode, code, (outcome, r.stderr))
            self.assertEqual(got[0], {"cmd": "dial", "args": {
                "peer": "office", "wait": True}})
            lines = r.stdout.splitlines()
            self.assertEqual(lines[0], "office: dialling")
            self.assertEqual(lines[1], "office: sending  out 2.0K in 0B  "
                             "msg 1/3  240B/s  eta 12s")
            self.assertEqual(lines[2], "call " + outcome)
            # --json: the same exit status, the outcome as JSON.
            os.unlink(self.d.sock)
            srv = socket.socket(socket.AF_UNIX)
            srv.bind(self.d.sock)
            srv.listen(1)
            t = threading.Thread(target=serve, args=(srv, outcome))
            t.start()
            r = self.ctl("--json", "dial", "office", "--wait")
            t.join(10)
            srv.close()
            self.assertEqual(r.returncode, code, (outcome, r.stderr))
            self.assertEqual(json.loads(r.stdout.splitlines()[-1])["outcome"],
                             outcome)

        # On a terminal: \r and erase-line, one final newline.
        os.unlink(self.d.sock)
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(self.d.sock)
        srv.listen(1)
        got = []
        t = threading.Thread(target=serve, args=(srv, "ok"))
        t.start()
        master, slave = pty.openpty()
        p = subprocess.Popen([FERRYCTL, "-S", self.d.sock, "dial", "office",
                              "--wait"], stdout=slave,
                             stderr=subprocess.PIPE)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        self.assertEqual(p.wait(30), 0)
        p.stderr.close()
        os.close(master)
        t.join(10)
        srv.close()
        self.assertIn(b"\r\x1b[Koffice: dialling\r\x1b[Koffice: sending",
                      out)
        self.assertTrue(out.endswith(b"eta 12s\r\ncall ok\r\n"), out)

    def test_manpage(self):
        page = os.path.join(SOURCE, "man", "ferryctl.1")
        r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", page],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stderr, "")
        text = re.sub(".\b", "", r.stdout)  # overstrike bold/underline
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS",
                        "OPTIONS", "EXIT STATUS", "FILES", "DIAGNOSTICS",
                        "BUGS", "SEE ALSO", "EXAMPLES"):
            self.assertIn("\n" + section, text)
        for word in ("status", "show", "hold", "release", "retry", "delete",
                     "calls", "dial", "why", "--json", "--older-than",
                     "--peer", "--sender", "--recipient", "--wait"):
            self.assertIn(word, text)


if __name__ == "__main__":
    unittest.main()
