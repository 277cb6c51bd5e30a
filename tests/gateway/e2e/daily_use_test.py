#!/usr/bin/env python3
"""ferryd as the office uses it every day: mail handed over by SMTP is
collected with POP3 from ferryd's own [pop3] listener, and mail written by
ferry-sendmail (a script's /usr/sbin/sendmail) is picked up by the running
ferryd and delivered."""

import os
import poplib
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

D = ft.LOCAL_DOMAIN
SENDMAIL = os.environ.get("FERRY_SENDMAIL", "")


class DailyUseTest(unittest.TestCase):
    def setUp(self):
        self.pop3_port = ft.free_port()
        self.ferryd = ft.Ferryd(extra="\n[pop3]\nlisten = 127.0.0.1:%d\n"
                                "trusted_local = yes\n" % self.pop3_port)
        self.addCleanup(self.ferryd.cleanup)
        self.ferryd.start()
        deadline = time.time() + 10
        while "listening pop3" not in self.ferryd.log():
            self.assertLess(time.time(), deadline, self.ferryd.log())
            time.sleep(0.05)

    def test_mail_sent_by_smtp_is_collected_by_pop3_and_removed_at_quit(self):
        body = (b"From: sender@remote.example\r\nTo: alice@" + D.encode() +
                b"\r\nSubject: pop3 through ferryd\r\n\r\n.leading dot\r\n"
                b"second line\r\n")
        with smtplib.SMTP("127.0.0.1", self.ferryd.ports["relay"],
                          timeout=20) as s:
            s.sendmail("sender@remote.example", ["alice@" + D], body)
        stored = self.ferryd.wait_maildir("alice", 1)
        self.assertEqual(len(stored), 1)

        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=20)
        p.user("alice")
        p.pass_(ft.PASSWORDS["alice"])
        count, size = p.stat()
        self.assertEqual((count, size), (1, len(stored[0])))
        _, lines, _ = p.retr(1)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", stored[0])
        p.dele(1)
        p.quit()
        self.assertEqual(self.ferryd.maildir("alice"), [])
        cur = os.path.join(self.ferryd.mail_root, "alice", "cur")
        self.assertEqual(os.listdir(cur) if os.path.isdir(cur) else [], [])

    def test_wrong_pop3_password_is_refused(self):
        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=20)
        p.user("alice")
        with self.assertRaises(poplib.error_proto) as e:
            p.pass_("not the password")
        self.assertIn(b"[AUTH]", e.exception.args[0])

    @unittest.skipUnless(SENDMAIL, "FERRY_SENDMAIL not set")
    def test_sendmail_message_is_picked_up_by_the_running_ferryd(self):
        msg = (b"To: bob@" + D.encode() + b"\n"
               b"Subject: from a cron job\n\nnightly report\n")
        r = subprocess.run([SENDMAIL, "-C", self.ferryd.config, "-i",
                            "-f", "cron@" + D, "-t"],
                           input=msg, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = self.ferryd.wait_maildir("bob", 1, timeout=20)
        self.assertEqual(len(got), 1, self.ferryd.log())
        self.assertIn(b"nightly report\r\n", got[0])
        self.assertIn(b"Subject: from a cron job\r\n", got[0])
        # The Maildir file comes first; the run's log line a moment later.
        deadline = time.time() + 20
        while "pickup messages=1" not in self.ferryd.log() and \
                time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("pickup messages=1", self.ferryd.log())

    @unittest.skipUnless(SENDMAIL, "FERRY_SENDMAIL not set")
    def test_sendmail_q_without_peers_says_nobody_to_call(self):
        r = subprocess.run([SENDMAIL, "-C", self.ferryd.config, "-q"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 69, r.stdout + r.stderr)
        self.assertIn(b"nobody to call", r.stdout + r.stderr)


if __name__ == "__main__":
    ft.main()
