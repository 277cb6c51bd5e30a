#!/usr/bin/env python3
"""ferryd with real SMTP clients (swaks, Python's smtplib): plain, STARTTLS,
AUTH PLAIN and LOGIN, pipelining, BDAT, 8-bit and UTF-8 mail, DSN, IPv6,
Maildir delivery and spooling, graceful stop."""

import re
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

D = ft.LOCAL_DOMAIN


def swaks(port, *args, server="127.0.0.1"):
    cmd = ["swaks", "--server", server, "--port", str(port),
           "--helo", "client.example", "--timeout", "20"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


MESSAGE = (b"From: Sender <sender@remote.example>\r\n"
           b"To: alice@" + D.encode() + b"\r\n"
           b"Subject: plain\r\n"
           b"Message-ID: <plain-1@remote.example>\r\n"
           b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
           b"\r\n"
           b"Hello Alice.\r\n"
           b".leading dot line\r\n"
           b".\r\n"  # a line that is a single dot (sent stuffed)
           b"end\r\n")


class SmtpClientsTest(ft.FerrydTestCase):

    def setUp(self):
        # Each test looks at the Maildirs afresh.
        shutil.rmtree(self.ferryd.mail_root, ignore_errors=True)
        os.makedirs(self.ferryd.mail_root)

    def assertDelivered(self, user, body, count=1):
        got = self.ferryd.wait_maildir(user, count)
        self.assertEqual(len(got), count, self.ferryd.log())
        received, rest = ft.strip_received(got[-1])
        self.assertIn(b"by mx.office.example (ferry)", received)
        self.assertEqual(rest, body)
        return received

    # -- smtplib ---------------------------------------------------------

    def test_smtplib_plain_message_is_stored_byte_identical(self):
        with smtplib.SMTP("127.0.0.1", self.port(), timeout=20) as s:
            s.ehlo("client.example")
            s.sendmail("sender@remote.example", ["alice@" + D], MESSAGE)
        received = self.assertDelivered("alice", MESSAGE)
        self.assertIn(b"with ESMTP id ", received)
        self.assertIn(b"for <alice@office.example>", received)
        self.assertIn(b"from client.example ([127.0.0.1])", received)

    def test_smtplib_starttls_auth_plain_on_submission(self):
        with smtplib.SMTP("127.0.0.1", self.port("submission"),
                          timeout=20) as s:
            s.ehlo("client.example")
            self.assertNotIn("auth", s.esmtp_features)  # not before TLS
            s.starttls(context=tls_context())
            s.ehlo("client.example")
            self.assertIn("PLAIN", s.esmtp_features["auth"])
            s.user, s.password = "alice", ft.PASSWORDS["alice"]
            code, _ = s.auth("PLAIN", s.auth_plain)
            self.assertEqual(code, 235)
            body = b"Subject: no date, no id\r\n\r\nhi\r\n"
            s.sendmail("alice@" + D, ["bob@" + D], body)
        got = self.ferryd.wait_maildir("bob", 1)
        self.assertEqual(len(got), 1, self.ferryd.log())
        received, rest = ft.strip_received(got[0])
        self.assertIn(b"with ESMTPSA id ", received)
        self.assertIn(b"using TLS", received)
        # Submission adds Date: and Message-ID: before the client's bytes.
        self.assertTrue(rest.startswith(b"Date: "), rest)
        self.assertIn(b"\r\nMessage-ID: <", rest)
        self.assertTrue(rest.endswith(body))

    def test_submission_refuses_mail_without_auth(self):
        with smtplib.SMTP("127.0.0.1", self.port("submission"),
                          timeout=20) as s:
            s.ehlo("client.example")
            code, msg = s.mail("alice@" + D)
            self.assertEqual(code, 530, msg)
            self.assertTrue(msg.startswith(b"5.7.0"), msg)

    def test_auth_refused_in_clear_on_untrusted_listener(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        code, lines = c.cmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==")
        self.assertEqual(code, 538, lines)
        self.assertIn("5.7.11", lines[0])

    def test_auth_wrong_password_is_535(self):
        c = self.raw("trusted")
        c.cmd("EHLO client.example")
        code, lines = c.cmd("AUTH PLAIN " + ft.base64.b64encode(
            b"\0alice\0wrong").decode())
        self.assertEqual(code, 535, lines)
        self.assertIn("5.7.8", lines[0])

    def test_auth_login_with_username_on_first_line(self):
        c = self.raw("trusted")
        c.cmd("EHLO client.example")
        user = ft.base64.b64encode(b"alice").decode()
        code, lines = c.cmd("AUTH LOGIN " + user)
        self.assertEqual(code, 334)
        self.assertEqual(lines[0], "334 UGFzc3dvcmQ6")  # "Password:"
        code, lines = c.cmd(ft.base64.b64encode(
            ft.PASSWORDS["alice"].encode()).decode())
        self.assertEqual(code, 235, lines)

    def test_smtplib_pipelined_bdat_by_hand(self):
        # smtplib has no BDAT; send the chunks over its socket.
        c = self.raw()
        c.cmd("EHLO client.example")
        body = b"Subject: chunked\r\n\r\n.not stuffed in BDAT\r\nbye\r\n"
        first, second = body[:10], body[10:]
        c.send(b"MAIL FROM:<sender@remote.example>\r\n"
               b"RCPT TO:<alice@" + D.encode() + b">\r\n"
               b"BDAT %d\r\n" % len(first) + first +
               b"BDAT %d LAST\r\n" % len(second) + second)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertIn("10 octets", lines[0])
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertIn("queued as", lines[0])
        self.assertDelivered("alice", body)

    def test_smtplib_utf8_and_8bit(self):
        body = ("From: Zoé <zoe@remote.example>\r\nSubject: Grüße\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n"
                "Ünïcödé body, 山田 太郎\r\n").encode()
        with smtplib.SMTP("127.0.0.1", self.port(), timeout=20) as s:
            s.ehlo("client.example")
            self.assertTrue(s.has_extn("smtputf8"))
            s.sendmail("zoé@remote.example", ["alice@" + D], body,
                       mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        received = self.assertDelivered("alice", body)
        self.assertIn(b"with UTF8SMTP id", received)

    def test_one_bad_recipient_is_refused_alone(self):
        with smtplib.SMTP("127.0.0.1", self.port(), timeout=20) as s:
            s.ehlo("client.example")
            refused = s.sendmail("sender@remote.example",
                                 ["alice@" + D, "nobody@" + D, "bob@" + D],
                                 MESSAGE)
        self.assertEqual(list(refused), ["nobody@" + D])
        self.assertEqual(refused["nobody@" + D][0], 550)
        self.assertEqual(len(self.ferryd.wait_maildir("alice", 1)), 1)
        self.assertEqual(len(self.ferryd.wait_maildir("bob", 1)), 1)

    def test_alias_expands_and_remote_part_is_spooled(self):
        with smtplib.SMTP("127.0.0.1", self.port(), timeout=20) as s:
            s.ehlo("client.example")
            s.sendmail("sender@remote.example", ["mixed@" + D], MESSAGE,
                       rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                     "ORCPT=rfc822;mixed@" + D],
                       mail_options=["RET=HDRS", "ENVID=env+2B1"])
        self.assertDelivered("alice", MESSAGE)
        # One queue id from the Received: header to the spool record.
        received = self.ferryd.wait_maildir("alice", 1)[0]
        m = re.search(rb"\bid ([0-9A-Z]{16})\b", received)
        self.assertIsNotNone(m, received[:400])
        qid = m.group(1).decode()
        log = self.ferryd.log()
        self.assertRegex(log, qid + r": .*status=queued")
        self.assertNotIn("spool_id=", log)

    # -- swaks -----------------------------------------------------------

    def test_swaks_plain_pipelined(self):
        r = swaks(self.port(), "--to", "bob@" + D, "--from",
                  "sender@remote.example", "--pipeline",
                  "--header", "Subject: swaks pipelined")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = self.ferryd.wait_maildir("bob", 1)
        self.assertEqual(len(got), 1)
        self.assertIn(b"Subject: swaks pipelined", got[0])

    def test_swaks_starttls_auth_login(self):
        r = swaks(self.port("submission"), "--to", "friend@remote.example",
                  "--from", "alice@" + D, "--tls", "--auth", "LOGIN",
                  "--auth-user", "alice", "--auth-password",
                  ft.PASSWORDS["alice"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("235 2.7.0", r.stdout)
        self.assertIn("queued as", r.stdout)

    def test_swaks_auth_plain_on_trusted_local_without_tls(self):
        r = swaks(self.port("trusted"), "--to", "alice@" + D, "--from",
                  "bob@" + D, "--auth", "PLAIN", "--auth-user", "bob",
                  "--auth-password", ft.PASSWORDS["bob"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = self.ferryd.wait_maildir("alice", 1)
        self.assertIn(b"with ESMTPA id", got[0])

    def test_swaks_ipv6_listener(self):
        if not self.ferryd.has_v6:
            self.skipTest("no IPv6 loopback")
        r = swaks(self.port("v6"), "--to", "alice@" + D, "--from",
                  "sender@remote.example", server="::1")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = self.ferryd.wait_maildir("alice", 1)
        self.assertIn(b"([::1])", got[0])

    def test_vrfy_off_by_default_is_252(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        code, lines = c.cmd("VRFY alice")
        self.assertEqual(code, 252, lines)

    def test_multi_line_ehlo_and_lower_case_verbs(self):
        c = self.raw()
        code, lines = c.cmd("ehlo client.example")
        self.assertEqual(code, 250)
        for kw in ("PIPELINING", "SIZE 2097152", "8BITMIME", "SMTPUTF8",
                   "DSN", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS"):
            self.assertIn("250-" + kw if kw != "STARTTLS" else
                          "250 STARTTLS", lines)
        self.assertEqual(c.cmd("mail from: <sender@remote.example>")[0],
                         250)
        self.assertEqual(c.cmd("rcpt to:alice@" + D)[0], 250)
        self.assertEqual(c.cmd("rset")[0], 250)
        self.assertEqual(c.cmd("noop")[0], 250)
        self.assertEqual(c.cmd("quit")[0], 221)


class GracefulStopTest(unittest.TestCase):

    def test_sigterm_closes_sessions_with_421_and_exits_0(self):
        f = ft.Ferryd().start()
        try:
            c = ft.RawClient(f.ports["relay"])
            c.cmd("EHLO client.example")
            rc = f.stop()
            self.assertEqual(rc, 0, f.log())
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertIn("4.3.2", lines[0])
            self.assertIn("ferryd: stopped", f.log())
            c.close()
        finally:
            f.cleanup()


if __name__ == "__main__":
    ft.main()
