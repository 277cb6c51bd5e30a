"""Several peers for one domain, tried in turn as MX records are.

Office a knows two routes for b.example: office b itself (preference 10)
and office c, b's backup (preference 20), which holds b's mail until b
calls it.  Links are loopback TCP (the route kind does not matter to the
failover; the modem routes are covered by calls_test.py).

  1. b is down: a's call to b fails, the mail moves to c at once, a calls
     c and c holds it for b (a's log has the event=reroute line).
  2. b comes up and calls c: the message reaches b's Maildir exactly once
     and byte-identical.
  3. Once a's backoff for b has run out, new mail goes to b directly
     again: each retry starts from the top.
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ferrytest import free_port  # noqa: E402
from offices import Office, body_of, normalize_eol  # noqa: E402


def message(sender, rcpt, subject):
    body = "".join("line %03d of %s\r\n" % (i, subject) for i in range(40))
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
            "Message-ID: <%s@test.example>\r\n\r\n%s" %
            (sender, rcpt, subject, subject.replace(" ", "."),
             body)).encode()


def peer(office, *extra):
    return "\n".join(["[peer %s]" % office.name,
                      "fingerprint = " + office.fingerprint] + list(extra))


class FailoverTest(unittest.TestCase):

    def status(self, office, name):
        r = office.ctl_run("--json", "status")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for p in json.loads(r.stdout)["peers"]:
            if p["name"] == name:
                return p
        self.fail("no peer %s in %s's status" % (name, office.name))

    def test_mail_for_a_failing_peer_goes_to_the_next_and_comes_back(self):
        a, b, c = Office("a"), Office("b"), Office("c")
        for o in (a, b, c):
            self.addCleanup(o.cleanup)
        b_port, c_port = free_port(), free_port()
        a.configure(peers="\n\n".join([
            peer(b, "domains = b.example",
                 "routes = tcp:127.0.0.1:%d" % b_port,
                 # a short backoff (scaled: about 9 s) keeps the test quick
                 "retry_no_answer = 3m"),
            peer(c, "domains = b.example c.example", "preference = 20",
                 "routes = tcp:127.0.0.1:%d" % c_port),
        ]))
        # c: b's backup; b collects its mail by calling c.
        c.configure(peers="\n\n".join([
            peer(a, "domains = a.example", "dial = no"),
            peer(b, "domains = b.example", "dial = no"),
        ]), link_listen="127.0.0.1:%d" % c_port)
        b.configure(peers="\n\n".join([
            peer(c, "domains = c.example",
                 "routes = tcp:127.0.0.1:%d" % c_port,
                 "min_messages = 1000"),
            peer(a, "domains = a.example", "dial = no"),
        ]), link_listen="127.0.0.1:%d" % b_port)
        c.start()
        a.start()

        # 1. b is down: the mail fails over to c.
        m1 = message("alice@a.example", "bob@b.example", "via the backup")
        a.send("alice@a.example", ["bob@b.example"], m1)
        a.wait_for(lambda: "event=reroute" in a.log(), 60,
                   "the reroute to c")
        line = [x for x in a.log().splitlines() if "event=reroute" in x][0]
        self.assertIn("to=<bob@b.example> from=b route=c", line)
        self.assertIn("reason=", line)
        a.wait_for(lambda: self.status(a, "c")["messages"] == 0 and
                   self.status(a, "b")["messages"] == 0 and
                   "c: event=call route=" in a.log(), 60,
                   "a's queue emptied by the call to c")
        self.assertTrue(self.status(a, "b")["failing"])
        r = a.ctl_run("why", "b")
        self.assertIn("other peers also serve goes to them", r.stdout)
        c.wait_for(lambda: self.status(c, "b")["messages"] == 1, 30,
                   "c holding the message for b")

        # 2. b comes up and collects from c.
        b.start()
        r = b.ctl_run("dial", "c", "--wait", timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = b.maildir("bob")
        self.assertEqual(len(got), 1)
        self.assertEqual(normalize_eol(body_of(got[0])), normalize_eol(m1))
        self.assertEqual(self.status(c, "b")["messages"], 0)

        # 3. When a's backoff for b has passed, b is preferred again.
        a.wait_for(lambda: not self.status(a, "b")["failing"], 60,
                   "a's backoff for b to end")
        m2 = message("alice@a.example", "bob@b.example", "direct again")
        a.send("alice@a.example", ["bob@b.example"], m2)
        b.wait_for(lambda: len(b.maildir("bob")) >= 2, 60,
                   "the second message, straight from a")
        got = b.maildir("bob")
        self.assertEqual(len(got), 2)
        self.assertIn(normalize_eol(m2), [normalize_eol(body_of(x))
                                          for x in got])
        # It went on the call to b, not through c.
        time.sleep(1)
        self.assertEqual(self.status(c, "b")["messages"], 0)
        self.assertEqual(
            len([x for x in a.log().splitlines() if "event=reroute" in x]),
            1, a.log())


class RestartTest(unittest.TestCase):
    """The scheduler's memory survives a restart: a peer backing off
    after a failed call is not redialled because ferryd restarted."""

    def test_backoff_survives_a_restart(self):
        a, b = Office("a"), Office("b")
        for o in (a, b):
            self.addCleanup(o.cleanup)
        dead = free_port()  # nothing listens there
        a.configure(peers=peer(b, "domains = b.example",
                               "routes = tcp:127.0.0.1:%d" % dead,
                               "retry_no_answer = 2h"))
        a.start(scaled=False)
        a.send("alice@a.example", ["bob@b.example"],
               message("alice@a.example", "bob@b.example", "kept back"))
        a.wait_for(lambda: "outcome=no_answer" in a.log(), 30,
                   "the failed call")
        a.wait_for(lambda: os.path.exists(
            os.path.join(a.spool, "scheduler.json")), 10,
            "the scheduler state file")
        self.assertEqual(a.stop(), 0)
        a.start(scaled=False)
        a.wait_for(lambda: "scheduler state loaded peers=1" in a.log(), 10,
                   "the state loaded")
        time.sleep(3)  # three scheduler ticks
        self.assertEqual(a.log().count("b: event=call "), 1, a.log())
        r = a.ctl_run("why", "b")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("backing off", r.stdout)
        # The mail is still there, waiting for the retry.
        r = a.ctl_run("--json", "status")
        peers = {p["name"]: p for p in json.loads(r.stdout)["peers"]}
        self.assertEqual(peers["b"]["messages"], 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
