"""Calls between two real ferryd processes over ferry-modemsim.

Each test builds its offices and line, hands mail over with smtplib, lets
ferryd's scheduler (or `ferryctl dial`) place the call, and checks what a
user would: messages in the right Maildirs, byte-identical apart from the
trace headers, exactly once; the call history; ferryctl's exit status.
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from offices import SCALE, Line, Office, body_of, normalize_eol  # noqa: E402

NUMBERS = {"a": "5551001", "b": "5552002", "c": "5553003"}


def message(sender, rcpt, subject, size=600):
    """A message of about `size` bytes whose body barely compresses
    (base64 of random bytes), so the line carries about `size` bytes."""
    import base64
    raw = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    body = "".join(raw[i:i + 76] + "\r\n" for i in range(0, len(raw), 76))
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <%s@test.example>\r\n\r\n%s" %
            (sender, rcpt, subject, subject.replace(" ", "."),
             body)).encode()


def peer_section(office, name, me_line, extra=""):
    return "\n".join([
        "[peer %s]" % office.name,
        "domains = " + office.domain,
        "fingerprint = " + office.fingerprint,
        "routes = " + NUMBERS[office.name],
        "line = " + me_line,
        extra,
    ])


def modem_section(line, name, answer=True):
    return "\n".join([
        "[modem %s]" % name,
        "device = " + line.device(name),
        "answer = " + ("yes" if answer else "no"),
        "time_scale = %g" % (1.0 / SCALE),
    ])


class TwoOffices(unittest.TestCase):
    """Offices a and b, one modem each on one emulated line."""

    A_PEER = "min_messages = 1000"
    B_PEER = "min_messages = 1000"

    def setUp(self):
        # Each part is cleaned up even if a later one fails to start.
        self.line = Line([("a", NUMBERS["a"]), ("b", NUMBERS["b"])])
        self.addCleanup(self.line.stop)
        self.a = Office("a")
        self.addCleanup(self.a.cleanup)
        self.b = Office("b")
        self.addCleanup(self.b.cleanup)
        self.a.configure(peers=peer_section(self.b, "b", "a", self.A_PEER),
                         modems=modem_section(self.line, "a"))
        self.b.configure(peers=peer_section(self.a, "a", "b", self.B_PEER),
                         modems=modem_section(self.line, "b"))
        self.a.start()
        self.b.start()

    def wait_mail(self, office, user, count, timeout=90):
        office.wait_for(lambda: len(office.maildir(user)) >= count,
                        timeout, "%d messages for %s" % (count, user))
        return office.maildir(user)

    def wait_last_call_ok(self, office, timeout=30):
        # The receiver may file the mail a moment before the caller
        # records its call.
        office.wait_for(lambda: (self.calls(office) or [{}])[-1]
                        .get("result") == "ok", timeout, "a call record ok")
        return [c["result"] for c in self.calls(office)]

    def calls(self, office):
        r = office.ctl_run("--json", "calls")
        self.assertEqual(r.returncode, 0, r.stderr)
        data = json.loads(r.stdout)
        return data["calls"] if isinstance(data, dict) else data


class SchedulerCallTest(TwoOffices):
    A_PEER = ("min_messages = 3\nretry_busy = 30s\n"
              "cost_per_call = 0.10\ncost_per_minute = 0.05")

    def test_threshold_call_exchanges_both_ways_then_b_dials(self):
        sent_ab = [message("alice@a.example", "bob@b.example",
                           "a to b %d" % i, 400 + 900 * i) for i in range(3)]
        sent_ba = [message("bob@b.example", "alice@a.example",
                           "b to a %d" % i, 700 + 500 * i) for i in range(2)]
        # b's mail waits first: it travels back in a's call (ATRN).
        for m in sent_ba:
            self.b.send("bob@b.example", ["alice@a.example"], m)
        for m in sent_ab:
            self.a.send("alice@a.example", ["bob@b.example"], m)

        got_b = self.wait_mail(self.b, "bob", 3)
        got_a = self.wait_mail(self.a, "alice", 2)
        self.assertEqual(sorted(normalize_eol(body_of(x)) for x in got_b),
                         sorted(normalize_eol(x) for x in sent_ab))
        self.assertEqual(sorted(normalize_eol(body_of(x)) for x in got_a),
                         sorted(normalize_eol(x) for x in sent_ba))
        calls = self.calls(self.a)
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(calls[0]["result"], "ok")
        self.assertEqual(calls[0]["messages_out"], 3)
        self.assertEqual(calls[0]["messages_in"], 2)
        # The tariff: a connected call under a minute costs 0.10 + 0.05.
        self.assertAlmostEqual(calls[0]["cost"], 0.15)
        self.assertIsNotNone(calls[0]["efficiency"])
        r = self.a.ctl_run("calls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("0.15", r.stdout)
        self.assertIn("event=decide call=yes", self.a.log())

        # Now b places the call by hand; a's reply mail comes back in it.
        more_ba = [message("bob@b.example", "alice@a.example",
                           "b again %d" % i) for i in range(2)]
        more_ab = [message("alice@a.example", "bob@b.example", "a again")]
        for m in more_ba:
            self.b.send("bob@b.example", ["alice@a.example"], m)
        for m in more_ab:
            self.a.send("alice@a.example", ["bob@b.example"], m)
        r = self.b.ctl_run("dial", "a", "--wait", timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr +
                         self.b.log()[-4000:])
        self.assertEqual(len(self.wait_mail(self.a, "alice", 4)), 4)
        self.assertEqual(len(self.wait_mail(self.b, "bob", 4)), 4)
        # Nothing twice.
        self.assertEqual(len(self.a.maildir("alice")), 4)
        self.assertEqual(len(self.b.maildir("bob")), 4)

        r = self.a.ctl_run("why", "b")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("b:", r.stdout)


class BusyTest(TwoOffices):
    A_PEER = "min_messages = 1\nretry_busy = 30s"

    def test_busy_twice_then_answers_delivers(self):
        self.line.admin("fault b busy")
        m = message("alice@a.example", "bob@b.example", "busy test")
        self.a.send("alice@a.example", ["bob@b.example"], m)
        self.a.wait_for(lambda: self.a.log().count("outcome=busy") >= 2,
                        120, "two busy calls")
        self.line.admin("clear b")
        got = self.wait_mail(self.b, "bob", 1, timeout=120)
        self.assertEqual(normalize_eol(body_of(got[0])), normalize_eol(m))
        results = self.wait_last_call_ok(self.a)
        self.assertGreaterEqual(results.count("busy"), 2, results)
        self.assertEqual(results[-1], "ok", results)
        # The retry waited: at least the busy backoff between attempts.
        r = self.a.ctl_run("why", "b")
        self.assertEqual(r.returncode, 0, r.stderr)


class DropTest(TwoOffices):
    A_PEER = "min_messages = 4\nretry_dropped = 30s"

    def test_carrier_drop_mid_call_second_call_delivers_exactly_once(self):
        sent = [message("alice@a.example", "bob@b.example",
                        "drop %d" % i, 12000 + 3000 * i) for i in range(4)]
        # Drop after ~25 kB on the line: inside the transfer.
        self.line.admin("fault a drop-after-bytes 25000")
        for m in sent:
            self.a.send("alice@a.example", ["bob@b.example"], m)
        got = self.wait_mail(self.b, "bob", 4, timeout=180)
        self.assertEqual(sorted(normalize_eol(body_of(x)) for x in got),
                         sorted(normalize_eol(x) for x in sent))
        results = self.wait_last_call_ok(self.a)
        self.assertGreaterEqual(len(results), 2, results)
        self.assertNotEqual(results[0], "ok", results)
        self.assertEqual(results[-1], "ok", results)


class ModemResetTest(TwoOffices):
    """a's modem stops answering commands mid-life: the call fails as
    modem_not_responding, ferryd resets the modem (closes it and opens it
    again with its init string), and once the modem answers again the
    retry delivers the mail."""
    A_PEER = "min_messages = 1\nretry_modem_not_responding = 1m"

    def test_dead_modem_is_reset_and_the_retry_delivers(self):
        def idle():
            r = self.a.ctl_run("--json", "status")
            return r.returncode == 0 and any(
                x["name"] == "a" and x["state"].startswith("idle")
                for x in json.loads(r.stdout)["modems"])
        self.a.wait_for(idle, 60, "modem a initialised and idle")
        self.line.admin("fault a mute")
        m = message("alice@a.example", "bob@b.example", "after a reset")
        self.a.send("alice@a.example", ["bob@b.example"], m)
        self.a.wait_for(lambda: "modem a: event=reset" in self.a.log(), 120,
                        "the modem reset")
        self.assertIn("outcome=failed", self.a.log())
        self.assertEqual(self.b.maildir("bob"), [])
        self.line.admin("clear a")
        got = self.wait_mail(self.b, "bob", 1, timeout=150)
        self.assertEqual(normalize_eol(body_of(got[0])), normalize_eol(m))
        results = self.wait_last_call_ok(self.a)
        self.assertEqual(results[-1], "ok", results)
        # The wait for the modem was logged once, not every second.
        self.assertLessEqual(
            self.a.log().count("event=decide call=wait"), 2, self.a.log())


class NeverAnswersTest(TwoOffices):
    """b's modem never answers: the sender hears of the delay, then gets
    the message back with its headers."""
    A_PEER = ("min_messages = 1\nretry_no_answer = 30s\nretry_cap = 1m\n"
              "warn_after = 2m\nlifetime = 6m\nlifetime_missed = 0")

    def test_delay_warning_then_bounce_with_original_headers(self):
        self.line.admin("fault b no-answer")
        m = message("alice@a.example", "bob@b.example", "never answered")
        self.a.send("alice@a.example", ["bob@b.example"], m)

        def dsn_with(action):
            return [x for x in self.a.maildir("alice")
                    if b"Action: " + action in x]
        self.a.wait_for(lambda: dsn_with(b"delayed"), 120, "a delay DSN")
        self.a.wait_for(lambda: dsn_with(b"failed"), 180, "a failure DSN")
        self.assertEqual(len(dsn_with(b"delayed")), 1)
        failed = dsn_with(b"failed")[0]
        self.assertIn(b"multipart/report", failed)
        self.assertIn(b"report-type=delivery-status", failed)
        self.assertRegex(failed, rb"Final-Recipient: rfc822; ?bob@b.example")
        self.assertIn(b"Status: 5.4.7", failed)
        self.assertIn(b"Subject: never answered", failed)  # original headers
        self.assertEqual(self.b.maildir("bob"), [])
        # Nothing left queued for b.
        r = self.a.ctl_run("--json", "queue")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("bob@b.example", r.stdout)


class DirectLineTest(unittest.TestCase):
    """A null-modem cable (two PTYs joined by socat): no dialling, the
    line is always up; a's threshold call crosses both ways."""

    def test_direct_serial_line_exchanges_both_ways(self):
        import shutil
        import subprocess
        import tempfile
        import time
        if not shutil.which("socat"):
            self.skipTest("socat not installed")
        d = tempfile.mkdtemp(prefix="ferry-cable-")
        self.addCleanup(shutil.rmtree, d, True)
        cable = subprocess.Popen(
            ["socat", "pty,link=%s/a,raw,echo=0" % d,
             "pty,link=%s/b,raw,echo=0" % d],
            stderr=subprocess.DEVNULL)
        self.addCleanup(cable.wait)
        self.addCleanup(cable.terminate)
        a = Office("a")
        self.addCleanup(a.cleanup)
        b = Office("b")
        self.addCleanup(b.cleanup)
        if True:  # (the body was a try: block; cleanups are registered)
            deadline = time.time() + 10
            while not (os.path.exists(d + "/a") and os.path.exists(d + "/b")):
                self.assertLess(time.time(), deadline, "socat made no PTYs")
                time.sleep(0.05)

            def direct(office, me, peer_min):
                return "\n".join([
                    "[peer %s]" % office.name,
                    "domains = " + office.domain,
                    "fingerprint = " + office.fingerprint,
                    "routes = direct",
                    "line = cable",
                    peer_min]), "\n".join([
                    "[modem cable]",
                    "device = %s/%s" % (d, me),
                    "direct = yes",
                    "answer = yes"])
            pa, ma = direct(b, "a", "min_messages = 2")
            pb, mb = direct(a, "b", "min_messages = 1000")
            a.configure(peers=pa, modems=ma)
            b.configure(peers=pb, modems=mb)
            a.start()
            b.start()
            sent_ba = message("bob@b.example", "alice@a.example", "cable ba")
            b.send("bob@b.example", ["alice@a.example"], sent_ba)
            sent_ab = [message("alice@a.example", "bob@b.example",
                               "cable ab %d" % i, 3000) for i in range(2)]
            for m in sent_ab:
                a.send("alice@a.example", ["bob@b.example"], m)
            b.wait_for(lambda: len(b.maildir("bob")) >= 2, 60, "bob's mail")
            a.wait_for(lambda: len(a.maildir("alice")) >= 1, 60,
                       "alice's mail")
            self.assertEqual(sorted(normalize_eol(body_of(x))
                                    for x in b.maildir("bob")),
                             sorted(normalize_eol(x) for x in sent_ab))
            self.assertEqual(normalize_eol(body_of(a.maildir("alice")[0])),
                             normalize_eol(sent_ba))


class AnyFreeModemTest(unittest.TestCase):
    """Office a has two modems and line = any; the first one is dead
    (mute), so the call goes out on the second."""

    def test_call_uses_the_modem_that_works(self):
        line = Line([("a1", "5551011"), ("a2", "5551012"),
                     ("b", NUMBERS["b"])])
        self.addCleanup(line.stop)
        line.admin("fault a1 mute")
        a = Office("a")
        self.addCleanup(a.cleanup)
        b = Office("b")
        self.addCleanup(b.cleanup)
        a.configure(
            peers=peer_section(b, "b", "any", "min_messages = 1"),
            modems="\n\n".join([modem_section(line, "a1", answer=False),
                                modem_section(line, "a2", answer=False)]))
        b.configure(peers=peer_section(a, "a", "b", "dial = no"),
                    modems=modem_section(line, "b"))
        a.start()
        b.start()
        m = message("alice@a.example", "bob@b.example", "second modem")
        a.send("alice@a.example", ["bob@b.example"], m)
        b.wait_for(lambda: len(b.maildir("bob")) >= 1, 90, "bob's mail")
        self.assertEqual(normalize_eol(body_of(b.maildir("bob")[0])),
                         normalize_eol(m))
        self.assertIn("modem a2: event=dial", a.log())
        self.assertNotIn("modem a1: event=dial", a.log())
        r = a.ctl_run("--json", "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        states = {x["name"]: x["state"] for x in json.loads(r.stdout)["modems"]}
        self.assertNotIn(states["a1"], ("idle", "connected"), states)


class StrangerTest(unittest.TestCase):
    """A third office whose key b does not know dials b."""

    def test_stranger_is_refused_and_learns_nothing(self):
        line = Line([("b", NUMBERS["b"]), ("c", NUMBERS["c"])])
        self.addCleanup(line.stop)
        a = Office("a")  # only its identity: b trusts a, not c
        self.addCleanup(a.cleanup)
        b = Office("b")
        self.addCleanup(b.cleanup)
        c = Office("c")
        self.addCleanup(c.cleanup)
        if True:  # (the body was a try: block; cleanups are registered)
            b.configure(peers=peer_section(a, "a", "b", "dial = no"),
                        modems=modem_section(line, "b"))
            c.configure(peers=peer_section(b, "b", "c", "min_messages = 1000"),
                        modems=modem_section(line, "c"))
            b.start()
            c.start()
            c.send("alice@c.example", ["bob@b.example"],
                   message("alice@c.example", "bob@b.example", "stranger"))
            r = c.ctl_run("dial", "b", "--wait", timeout=120)
            self.assertEqual(r.returncode, 13, r.stdout + r.stderr)  # auth
            self.assertEqual(b.maildir("bob"), [])
            b.wait_for(lambda: "auth failed" in b.log() or
                       "auth=failed" in b.log(), 30, "b logs the refusal")
            # c's postmaster (alice, by alias) hears that calls to b stop.
            c.wait_for(lambda: any(b"need attention" in x
                                   for x in c.maildir("alice")),
                       30, "a note to c's postmaster")
            r = c.ctl_run("why", "b")
            self.assertIn("b:", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
