"""Calls over the route exec: a command's stdin and stdout are the link.

Office a reaches office b through `socat - TCP:127.0.0.1:<b's link
port>` (standing in for `ssh office-b socat ...`); b listens on its
[link] address and holds a's mail for pickup.  One `ferryctl dial b
--wait` on a carries mail both ways, byte-identical in the Maildirs.  A
command that ends before the far end's greeting (`exit 7`, a program
that does not exist) is a failed call: ferryctl says why and exits
non-zero, a's log has the command's exit status, the mail stays queued
and `ferryctl calls` lists the attempt.
"""
import base64
import json
import os
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ferrytest import free_port  # noqa: E402
from offices import Office, body_of, normalize_eol  # noqa: E402

NO_ANSWER = 11  # ferryctl's exit status for a call not answered


def message(sender, rcpt, subject, size=3000):
    """A message whose body barely compresses (base64 of random bytes)."""
    raw = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    body = "".join(raw[i:i + 76] + "\r\n" for i in range(0, len(raw), 76))
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <%s@test.example>\r\n\r\n%s" %
            (sender, rcpt, subject, subject.replace(" ", "."),
             body)).encode()


class ExecRoute(unittest.TestCase):
    """Office a calls b through a command; b answers on its link port."""

    def setUp(self):
        if not shutil.which("socat"):
            self.skipTest("socat not installed")
        self.a = Office("a")
        self.addCleanup(self.a.cleanup)
        self.b = Office("b")
        self.addCleanup(self.b.cleanup)
        self.link_port = free_port()

    def start_offices(self, command, with_b=True, extra=""):
        self.a.configure(peers="\n".join([
            "[peer b]",
            "domains = " + self.b.domain,
            "fingerprint = " + self.b.fingerprint,
            "routes = exec",
            "command = " + command,
            "min_messages = 1000",
            extra]))
        self.b.configure(peers="\n".join([
            "[peer a]",
            "domains = " + self.a.domain,
            "fingerprint = " + self.a.fingerprint,
            "dial = no"]),
            link_listen="127.0.0.1:%d" % self.link_port)
        if with_b:
            self.b.start()
        self.a.start()

    def calls(self, office):
        r = office.ctl_run("--json", "calls")
        self.assertEqual(r.returncode, 0, r.stderr)
        data = json.loads(r.stdout)
        return data["calls"] if isinstance(data, dict) else data

    def queued_for(self, office, address):
        r = office.ctl_run("--json", "queue")
        self.assertEqual(r.returncode, 0, r.stderr)
        return address in r.stdout

    def assert_failed_call_keeps_mail(self, command, status_text):
        self.start_offices(command, with_b=False)
        m = message("alice@a.example", "bob@b.example", "stays queued")
        self.a.send("alice@a.example", ["bob@b.example"], m)
        r = self.a.ctl_run("dial", "b", "--wait", timeout=120)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, NO_ANSWER, out + self.a.log()[-3000:])
        self.assertIn(status_text, out)
        self.a.wait_for(lambda: "b: event=exec-exit " in self.a.log(), 10,
                        "the exec-exit line")
        # Nothing lost: the mail waits for the next call.
        self.assertTrue(self.queued_for(self.a, "bob@b.example"))
        calls = self.calls(self.a)
        self.assertGreaterEqual(len(calls), 1, calls)
        self.assertEqual(calls[0]["route"], "exec", calls)
        self.assertEqual(calls[0]["result"], "no_answer", calls)
        r = self.a.ctl_run("calls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\n\S+ \S+ +b .* no_answer\n")
        # ferryd carries on: it still answers its control socket and
        # left no zombie behind.
        self.assertIsNone(self.a.proc.poll())
        self.assertEqual(zombies_of(self.a.proc.pid), [])


def zombies_of(pid):
    """Zombie children of `pid` (unreaped exec commands)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


class ExecCallTest(ExecRoute):

    def test_one_call_through_socat_carries_mail_both_ways(self):
        self.start_offices("socat - TCP:127.0.0.1:%d" % self.link_port)
        sent_ba = [message("bob@b.example", "alice@a.example",
                           "b to a %d" % i, 2000 + 4000 * i)
                   for i in range(2)]
        sent_ab = [message("alice@a.example", "bob@b.example",
                           "a to b %d" % i, 1000 + 9000 * i)
                   for i in range(3)]
        # b's mail waits for a's call (b never dials: dial = no).
        for m in sent_ba:
            self.b.send("bob@b.example", ["alice@a.example"], m)
        for m in sent_ab:
            self.a.send("alice@a.example", ["bob@b.example"], m)

        r = self.a.ctl_run("dial", "b", "--wait", timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr +
                         self.a.log()[-4000:])
        self.b.wait_for(lambda: len(self.b.maildir("bob")) >= 3, 30,
                        "bob's mail")
        self.a.wait_for(lambda: len(self.a.maildir("alice")) >= 2, 30,
                        "alice's mail")
        self.assertEqual(sorted(normalize_eol(body_of(x))
                                for x in self.b.maildir("bob")),
                         sorted(normalize_eol(x) for x in sent_ab))
        self.assertEqual(sorted(normalize_eol(body_of(x))
                                for x in self.a.maildir("alice")),
                         sorted(normalize_eol(x) for x in sent_ba))

        # One call, recorded with its route; the command ended cleanly
        # (socat exits on the hang-up) and was reaped.
        self.a.wait_for(lambda: "b: event=exec-exit status=0" in
                        self.a.log(), 15, "socat's exit")
        calls = self.calls(self.a)
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(calls[0]["result"], "ok", calls)
        self.assertEqual(calls[0]["route"], "exec", calls)
        self.assertEqual(calls[0]["messages_out"], 3, calls)
        self.assertEqual(calls[0]["messages_in"], 2, calls)
        self.assertFalse(self.queued_for(self.a, "bob@b.example"))
        self.assertEqual(zombies_of(self.a.proc.pid), [])


class ExecFailureTest(ExecRoute):

    def test_command_exiting_before_greeting_is_no_answer(self):
        self.assert_failed_call_keeps_mail("exit 7", "status 7")
        self.assertIn("b: event=exec-exit status=7", self.a.log())

    def test_missing_program_reads_command_not_found(self):
        self.assert_failed_call_keeps_mail(
            "ferry-no-such-program --to office-b",
            "status 127 (command not found)")
        log = self.a.log()
        self.assertIn("b: event=exec-exit status=127", log)
        # The shell's complaint is in the log under the peer's name.
        self.assertRegex(log, r"b: event=exec-stderr text=\".*"
                         r"ferry-no-such-program.*not found")


class ExecStopTest(ExecRoute):

    def test_stopping_ferryd_mid_call_leaves_no_process_behind(self):
        # A far end that greets, notes the caller's EHLO and then says
        # nothing more, ignoring the hang-up and SIGTERM: only SIGKILL
        # ends it.
        pidfile = os.path.join(self.a.dir, "command.pid")
        heard = os.path.join(self.a.dir, "command.heard")
        self.start_offices(
            "echo $$ > %s; printf '220 stall\\r\\n'; read -r line; "
            "echo \"$line\" > %s; trap '' TERM; exec sleep 60"
            % (pidfile, heard), with_b=False)
        self.a.send("alice@a.example", ["bob@b.example"],
                    message("alice@a.example", "bob@b.example", "stalled"))
        r = self.a.ctl_run("dial", "b", timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.a.wait_for(lambda: "EHLO" in read_text(heard), 20,
                        "the session's EHLO through the command")
        pid = int(read_text(pidfile))
        rc = self.a.stop()
        self.assertEqual(rc, 0, self.a.log()[-3000:])
        self.assertFalse(os.path.exists("/proc/%d" % pid) and
                         not is_zombie(pid), "the command survived ferryd")
        log = self.a.log()
        self.assertIn("b: event=exec-kill signal=TERM", log)
        self.assertIn("b: event=exec-kill signal=KILL", log)
        self.assertIn("b: event=exec-exit signal=KILL", log)
        # The session was cut, so the message is still queued (a's spool
        # is read again by the next ferryd).
        self.assertNotIn("messages_out=1", log)

    def test_max_call_hangs_up_a_stalled_command(self):
        # The far end greets and then only listens: the session waits for
        # a reply that never comes until max_call ends the call.
        self.start_offices("printf '220 stall\\r\\n'; exec cat >/dev/null",
                           with_b=False, extra="max_call = 2s")
        self.a.send("alice@a.example", ["bob@b.example"],
                    message("alice@a.example", "bob@b.example", "stalled"))
        t0 = time.monotonic()
        r = self.a.ctl_run("dial", "b", "--wait", timeout=60)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(took, 30, r.stdout + r.stderr)
        # cat ends on the hang-up's end of file: no signal needed.
        self.a.wait_for(lambda: "b: event=exec-exit status=0" in
                        self.a.log(), 10, "the command's exit")
        self.assertNotIn("b: event=exec-kill", self.a.log())
        self.assertTrue(self.queued_for(self.a, "bob@b.example"))
        self.assertEqual(zombies_of(self.a.proc.pid), [])


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].startswith("Z")


if __name__ == "__main__":
    unittest.main(verbosity=2)
