#!/usr/bin/env python3
"""ferryd refuses what it must, with the exact reply codes: talk before
the greeting, bare LF/CR and the SMTP-smuggling shapes, NUL bytes, over-
size messages, over-long lines, too many recipients, idle and slow
clients, STARTTLS command injection.  The client here is a raw socket,
because no real client sends these on purpose."""

import os
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

D = ft.LOCAL_DOMAIN


class RefusalsTest(ft.FerrydTestCase):

    def setUp(self):
        self.before = len(self.ferryd.maildir("alice"))

    def assertNothingDelivered(self):
        time.sleep(0.2)
        self.assertEqual(len(self.ferryd.maildir("alice")), self.before)

    def send_data(self, c, body):
        """DATA, then `body` as raw bytes; returns the reply after it."""
        code, lines = c.cmd("DATA")
        self.assertEqual(code, 354, lines)
        c.send(body)
        return c.reply()

    def assertRefusedThenUsable(self, c, reply, code, enhanced):
        self.assertEqual(reply[0], code, reply[1])
        self.assertTrue(reply[1][0].startswith("%d %s" % (code, enhanced)),
                        reply[1])
        # The session goes on: the refusal is for the message only.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertNothingDelivered()

    # -- line endings and smuggling ---------------------------------------

    def test_bare_lf_in_message_is_refused_after_real_end(self):
        c = self.raw_ready()
        r = self.send_data(c, b"Subject: x\r\n\r\nline one\nline two\r\n"
                              b".\r\n")
        self.assertRefusedThenUsable(c, r, 554, "5.5.2")

    def test_bare_cr_in_message_is_refused(self):
        c = self.raw_ready()
        r = self.send_data(c, b"Subject: x\r\n\r\nline\rone\r\n.\r\n")
        self.assertRefusedThenUsable(c, r, 554, "5.5.2")

    def test_smuggling_shapes_never_end_data(self):
        for fake in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n"):
            with self.subTest(fake=fake):
                c = self.raw_ready()
                # If the fake end ended the data, the MAIL/RCPT/DATA after
                # it would be a second, smuggled message with its own
                # replies.
                r = self.send_data(
                    c, b"Subject: x\r\n\r\nhello" + fake +
                    b"MAIL FROM:<evil@remote.example>\r\n"
                    b"RCPT TO:<alice@" + D.encode() + b">\r\n"
                    b"DATA\r\n\r\nsmuggled\r\n.\r\n")
                self.assertRefusedThenUsable(c, r, 554, "5.5.2")
                c.close()

    def test_nul_byte_is_refused(self):
        c = self.raw_ready()
        r = self.send_data(c, b"Subject: x\r\n\r\na\0b\r\n.\r\n")
        self.assertRefusedThenUsable(c, r, 554, "5.6.0")

    def test_bare_lf_command_line_is_refused(self):
        c = self.raw()
        c.send(b"EHLO client.example\n")
        code, lines = c.reply()
        self.assertEqual(code, 500, lines)
        self.assertIn("5.5.2", lines[0])

    def test_helo_with_control_bytes_cannot_break_received_header(self):
        c = self.raw()
        self.assertEqual(c.cmd("EHLO evil\rX-Injected: yes")[0], 250)
        c.cmd("MAIL FROM:<s@remote.example>")
        c.cmd("RCPT TO:<alice@%s>" % D)
        r = self.send_data(c, b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(r[0], 250, r[1])
        got = self.ferryd.wait_maildir("alice", self.before + 1)
        received, rest = ft.strip_received(got[-1])
        self.assertIn(b"from evil?X-Injected:?yes ([127.0.0.1])", received)
        self.assertEqual(rest, b"Subject: x\r\n\r\nbody\r\n")

    # -- sizes ---------------------------------------------------------------

    def test_message_over_size_limit_is_552_after_the_end(self):
        c = self.raw_ready()
        line = b"x" * 1000 + b"\r\n"
        r = self.send_data(c, b"Subject: big\r\n\r\n" + line * 2200 +
                           b".\r\n")
        self.assertRefusedThenUsable(c, r, 552, "5.3.4")

    def test_declared_size_over_limit_is_552_at_mail(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        code, lines = c.cmd("MAIL FROM:<s@remote.example> SIZE=99999999")
        self.assertEqual(code, 552, lines)
        self.assertIn("5.3.4", lines[0])

    def test_long_lines_up_to_limit_are_kept_whole(self):
        c = self.raw_ready()
        body = b"Subject: long\r\n\r\n" + b"y" * 3000 + b"\r\n"
        r = self.send_data(c, body + b".\r\n")
        self.assertEqual(r[0], 250, r[1])
        got = self.ferryd.wait_maildir("alice", self.before + 1)
        self.assertEqual(ft.strip_received(got[-1])[1], body)

    def test_line_over_limit_refuses_whole_message_after_end(self):
        c = self.raw_ready()
        r = self.send_data(c, b"Subject: long\r\n\r\n" + b"y" * 5000 +
                           b"\r\nmore\r\n.\r\n")
        self.assertRefusedThenUsable(c, r, 554, "5.6.0")

    def test_too_many_recipients_is_452(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        c.cmd("MAIL FROM:<s@remote.example>")
        for i in range(5):
            self.assertEqual(c.cmd("RCPT TO:<alice@%s>" % D)[0], 250)
        code, lines = c.cmd("RCPT TO:<bob@%s>" % D)
        self.assertEqual(code, 452, lines)
        self.assertIn("4.5.3", lines[0])

    def test_over_long_command_line_is_500(self):
        c = self.raw()
        code, lines = c.cmd("NOOP " + "z" * 20000)
        self.assertEqual(code, 500, lines)
        self.assertIn("5.5.6", lines[0])
        self.assertEqual(c.cmd("NOOP")[0], 250)

    # -- sequence errors -----------------------------------------------------

    def test_sequence_errors(self):
        c = self.raw()
        self.assertEqual(c.cmd("MAIL FROM:<s@remote.example>")[0], 503)
        c.cmd("EHLO client.example")
        self.assertEqual(c.cmd("RCPT TO:<alice@%s>" % D)[0], 503)
        self.assertEqual(c.cmd("DATA")[0], 503)
        c.cmd("MAIL FROM:<s@remote.example>")
        self.assertEqual(c.cmd("MAIL FROM:<s@remote.example>")[0], 503)
        self.assertEqual(c.cmd("RCPT TO:<nobody@%s>" % D)[0], 550)
        code, lines = c.cmd("DATA")
        self.assertEqual(code, 554, lines)
        self.assertEqual(c.cmd("XYZZY")[0], 500)
        self.assertEqual(c.cmd("MAIL FROM:<s@remote.example> FOO=1")[0],
                         503)  # still inside the first transaction
        c.cmd("RSET")
        self.assertEqual(c.cmd("MAIL FROM:<s@remote.example> FOO=1")[0],
                         555)
        self.assertEqual(c.cmd("MAIL FROM:<bad address>")[0], 501)

    def test_non_ascii_address_without_smtputf8_is_553(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        code, lines = c.cmd("MAIL FROM:<zoé@remote.example>")
        self.assertEqual(code, 553, lines)
        self.assertIn("5.6.7", lines[0])

    def test_bdat_with_bare_lf_is_refused(self):
        c = self.raw_ready()
        body = b"Subject: x\r\n\r\nbare\nlf\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        self.assertRefusedThenUsable(c, c.reply(), 554, "5.5.2")

    def test_auth_cancelled_with_star_is_501(self):
        c = self.raw("trusted")
        c.cmd("EHLO client.example")
        self.assertEqual(c.cmd("AUTH LOGIN")[0], 334)
        code, lines = c.cmd("*")
        self.assertEqual(code, 501, lines)
        self.assertIn("5.0.0", lines[0])

    def test_three_failed_logins_end_the_session(self):
        c = self.raw("trusted")
        c.cmd("EHLO client.example")
        bad = ft.base64.b64encode(b"\0alice\0nope").decode()
        self.assertEqual(c.cmd("AUTH PLAIN " + bad)[0], 535)
        self.assertEqual(c.cmd("AUTH PLAIN " + bad)[0], 535)
        self.assertEqual(c.cmd("AUTH PLAIN " + bad)[0], 535)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(c.closed())

    # -- TLS -------------------------------------------------------------------

    def test_starttls_discards_pipelined_plaintext(self):
        c = self.raw()
        c.cmd("EHLO client.example")
        # The RSET rides in the clear after STARTTLS: it must be dropped.
        c.send(b"STARTTLS\r\nRSET\r\n")
        code, _ = c.reply()
        self.assertEqual(code, 220)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock)
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(code, 250, lines)
        self.assertIn("250-PIPELINING", lines)
        self.assertEqual(c.cmd("NOOP")[1][0], "250 2.0.0 Ok")


class TimeoutTest(ft.FerrydTestCase):
    SMTP = {"command_timeout": "1s", "data_block_timeout": "1s",
            "data_done_timeout": "4s"}

    def test_idle_client_gets_421_and_is_closed(self):
        c = self.raw()
        t0 = time.time()
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.4.2", lines[0])
        self.assertTrue(c.closed())
        self.assertLess(time.time() - t0, 10)

    def test_stalled_data_gets_421(self):
        c = self.raw_ready()
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: slow\r\n\r\nstart")
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.4.2", lines[0])

    def test_trickling_data_is_cut_at_data_done_timeout(self):
        c = self.raw_ready()
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.sock.settimeout(0.5)
        t0 = time.time()
        code = None
        while time.time() - t0 < 12 and code is None:
            try:
                c.send(b"x")
                data = c.sock.recv(4096)
                if data:
                    c.buf += data
                    c.sock.settimeout(5)
                    code, lines = c.reply()
            except (TimeoutError, OSError):
                # socket.timeout on recv: keep trickling
                time.sleep(0.3)
        self.assertEqual(code, 421)


class SessionLimitTest(ft.FerrydTestCase):
    SMTP = {"max_sessions": "2"}

    def test_sessions_over_the_limit_get_421(self):
        a = self.raw()
        b = self.raw()
        c = self.raw(greet=False)
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertIn("4.7.0", lines[0])
        self.assertTrue(c.closed())
        self.assertEqual(a.cmd("NOOP")[0], 250)
        self.assertEqual(b.cmd("NOOP")[0], 250)


class GreetingPauseTest(ft.FerrydTestCase):
    PAUSE = "1s"

    def test_talk_before_greeting_is_554_and_closed(self):
        c = self.raw(greet=False)
        c.send(b"EHLO eager.example\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 554, lines)
        self.assertIn("5.5.0", lines[0])
        self.assertTrue(c.closed())

    def test_patient_client_is_greeted_after_pause(self):
        t0 = time.time()
        c = self.raw()
        self.assertGreaterEqual(time.time() - t0, 0.9)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)


if __name__ == "__main__":
    ft.main()
