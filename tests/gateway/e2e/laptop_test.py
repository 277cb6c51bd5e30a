"""The field engineer's laptop dials the office with one command.

The laptop runs its own ferryd; the office holds the laptop's mail until
it calls (hold for pickup).  `ferryctl dial office --wait` runs in a real
terminal (tmux) while the call crosses ferry-modemsim: its live progress
line is read off the screen, the laptop's queue reaches the office, the
office's held mail comes back in the same call, and the exit status is 0.
"""
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from offices import FERRYCTL, SCALE, Line, Office, body_of, normalize_eol  # noqa: E402,E501
from calls_test import message  # noqa: E402


@unittest.skipUnless(shutil.which("tmux"), "tmux not installed")
class LaptopDialTest(unittest.TestCase):
    def setUp(self):
        # A slower line than the other call tests, so the call lasts long
        # enough to watch.
        self.line = Line([("office", "5551000"), ("laptop", "5559000")])
        self.addCleanup(self.line.stop)
        self.office = Office("office")
        self.addCleanup(self.office.cleanup)
        self.laptop = Office("laptop")
        self.addCleanup(self.laptop.cleanup)
        self.office.configure(
            peers="\n".join([
                "[peer laptop]",
                "domains = laptop.example",
                "fingerprint = " + self.laptop.fingerprint,
                "dial = no"]),
            modems="\n".join([
                "[modem office]",
                "device = " + self.line.device("office"),
                "time_scale = %g" % (1.0 / SCALE)]))
        self.laptop.configure(
            peers="\n".join([
                "[peer office]",
                "domains = office.example",
                "fingerprint = " + self.office.fingerprint,
                "routes = 5551000",
                "min_messages = 1000"]),
            modems="\n".join([
                "[modem laptop]",
                "device = " + self.line.device("laptop"),
                "answer = no",
                "time_scale = %g" % (1.0 / SCALE)]))
        self.office.start()
        self.laptop.start()
        self.session = "ferry-laptop-%d" % os.getpid()

    def tearDown(self):
        subprocess.run(["tmux", "kill-session", "-t", self.session],
                       stderr=subprocess.DEVNULL)

    def screen(self):
        r = subprocess.run(["tmux", "capture-pane", "-p", "-t",
                            self.session], capture_output=True, text=True)
        return r.stdout

    def test_dial_wait_shows_progress_and_exchanges_both_ways(self):
        out_mail = [message("alice@laptop.example", "bob@office.example",
                            "from the field %d" % i, 120000)
                    for i in range(4)]
        held = [message("bob@office.example", "alice@laptop.example",
                        "for the laptop %d" % i, 20000) for i in range(2)]
        for m in held:
            self.office.send("bob@office.example", ["alice@laptop.example"], m)
        for m in out_mail:
            self.laptop.send("alice@laptop.example", ["bob@office.example"],
                             m)
        done = os.path.join(self.laptop.dir, "dial.status")
        cmd = "%s -S %s dial office --wait; echo $? > %s; sleep 60" % (
            FERRYCTL, self.laptop.ctl, done)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session,
                        "-x", "160", "-y", "10", cmd], check=True)
        seen = []
        deadline = time.time() + 120
        while time.time() < deadline and not os.path.exists(done):
            text = self.screen()
            if text.strip():
                seen.append(text)
            time.sleep(0.05)
        self.assertTrue(os.path.exists(done), "ferryctl did not finish:\n" +
                        "\n".join(seen[-3:]) + self.laptop.log()[-3000:])
        time.sleep(0.2)
        with open(done) as f:
            status = f.read().strip()
        final = self.screen()
        everything = "\n".join(seen + [final])
        self.assertEqual(status, "0", everything)
        # The live line showed the phases a person follows.
        self.assertIn("office: ", everything)
        self.assertRegex(everything, r"connected at 33600|sending")
        self.assertIn("sent 4, received 2 messages", final)

        got_office = self.office.maildir("bob")
        got_laptop = self.laptop.maildir("alice")
        self.assertEqual(sorted(normalize_eol(body_of(x)) for x in got_office),
                         sorted(normalize_eol(x) for x in out_mail))
        self.assertEqual(sorted(normalize_eol(body_of(x)) for x in got_laptop),
                         sorted(normalize_eol(x) for x in held))


if __name__ == "__main__":
    unittest.main(verbosity=2)
