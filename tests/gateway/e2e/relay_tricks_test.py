#!/usr/bin/env python3
"""Every classic relay trick, end to end, from a client outside the
office networks: ferryd's [rules] office_networks is 10.9.9.0/24 (only a
config value: no traffic goes there) while the client connects from
127.0.0.1.  Each trick gets its exact refusal at RCPT, nothing for those
recipients reaches a Maildir or the spool, and a local user in the same
transaction is still accepted and delivered once.

smtplib's rcpt() would rewrite source routes and quoted local parts
(it parses the address), so the RCPT commands go through docmd(): still
smtplib's session, with the address exactly as an attacker writes it."""

import os
import smtplib
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

D = ft.LOCAL_DOMAIN

# (what it is, RCPT argument, reply code, enhanced code)
TRICKS = [
    ("percent hack", "<alice%remote.example@office.example>", 550,
     "5.7.1"),
    ("percent hack, quoted", '<"alice%remote.example"@office.example>',
     550, "5.7.1"),
    ("bang path", "<remote.example!alice@office.example>", 550, "5.7.1"),
    ("quoted local part with @",
     '<"alice@remote.example"@office.example>', 550, "5.7.1"),
    ("source route via us to outside",
     "<@office.example:alice@remote.example>", 550, "5.7.1"),
    ("source route, two hops", "<@office.example,@mx.office.example:"
     "alice@remote.example>", 550, "5.7.1"),
    ("trailing dot on a local domain", "<alice@office.example.>", 501,
     "5.1.3"),
    ("trailing dot on a remote domain", "<alice@remote.example.>", 501,
     "5.1.3"),
    ("trailing dot on the local part", "<alice.@office.example>", 501,
     "5.1.3"),
    ("bang path without a domain", "<remote.example!alice>", 501,
     "5.1.3"),
    ("percent hack without a domain", "<alice%remote.example>", 501,
     "5.1.3"),
    ("case trick, remote domain", "<alice@Remote.EXAMPLE>", 550, "5.7.1"),
    ("case trick, percent hack", "<alice%REMOTE.example@OFFICE.Example>",
     550, "5.7.1"),
    ("local domain as a prefix", "<alice@office.example.remote.example>",
     550, "5.7.1"),
    ("address literal", "<alice@[127.0.0.1]>", 550, "5.7.1"),
    ("plain relay", "<alice@remote.example>", 550, "5.7.1"),
]

# Local recipients in disguise that are NOT relay attempts: accepted, and
# all of them reach alice's one Maildir copy.
LOCAL_FORMS = ["<alice@office.example>", "<ALICE@OFFICE.EXAMPLE>",
               "<Alice@Office.Example>",
               # RFC 5321 4.1.2 / C: a source route is accepted and ignored
               "<@remote.example:alice@office.example>"]


def spool_entries(spool, table):
    """Entries in one of the spool's LMDB tables (lmdb-utils' mdb_stat)."""
    out = subprocess.run(["mdb_stat", "-s", table, spool],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Entries:"):
            return int(line.split()[1])
    raise AssertionError("no entry count from mdb_stat:\n" + out)


class RelayTricksTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ferryd = ft.Ferryd(office_networks="10.9.9.0/24").start()

    @classmethod
    def tearDownClass(cls):
        cls.ferryd.cleanup()

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.ferryd.ports["relay"],
                         timeout=20)
        self.addCleanup(s.close)
        s.ehlo("client.example")
        return s

    def assertNothingStored(self):
        self.assertEqual(os.listdir(self.ferryd.mail_root), [])
        for table in ("msg", "rcpt", "body"):
            self.assertEqual(spool_entries(self.ferryd.spool, table), 0,
                             table)

    def test_1_each_trick_is_refused_and_nothing_is_stored(self):
        for what, rcpt, code, enhanced in TRICKS:
            with self.subTest(what, rcpt=rcpt):
                # A session per trick: ferryd ends a session after 20
                # errors (smtp_session.cc kMaxErrors).
                s = self.smtp()
                self.assertEqual(s.mail("sender@remote.example")[0], 250)
                got, text = s.docmd("RCPT TO:" + rcpt)
                self.assertEqual(got, code, text)
                self.assertTrue(text.startswith(enhanced.encode() + b" "),
                                text)
                # With no recipient left, the message itself is refused.
                got, text = s.docmd("DATA")
                self.assertEqual(got, 554, text)
                s.quit()
        self.assertNotIn(" queued qid=", self.ferryd.log())
        self.assertNothingStored()

    def test_2_local_user_accepted_beside_every_trick(self):
        s = self.smtp()
        self.assertEqual(s.mail("sender@remote.example")[0], 250)
        for what, rcpt, code, _ in TRICKS:
            self.assertEqual(s.docmd("RCPT TO:" + rcpt)[0], code, what)
        for rcpt in LOCAL_FORMS:
            got, text = s.docmd("RCPT TO:" + rcpt)
            self.assertEqual(got, 250, text)
        body = b"Subject: tricks\r\n\r\nonly alice gets this\r\n"
        got, text = s.data(body)
        self.assertEqual(got, 250, text)
        s.quit()
        got = self.ferryd.wait_maildir("alice", 1)
        self.assertEqual(len(got), 1)
        self.assertEqual(ft.strip_received(got[0])[1], body)
        # Only alice's Maildir exists, and nothing went to the spool
        # (which holds remote recipients only).
        self.assertEqual(os.listdir(self.ferryd.mail_root), ["alice"])
        for table in ("msg", "rcpt"):
            self.assertEqual(spool_entries(self.ferryd.spool, table), 0)

    def test_3_authenticated_user_still_cannot_use_routing_characters(self):
        # Relaying is allowed after AUTH, but a routed local address is
        # refused from everyone (policy.h): no later stage sees it.
        c = ft.RawClient(self.ferryd.ports["trusted"])
        self.addCleanup(c.close)
        c.cmd("EHLO client.example")
        auth = ft.base64.b64encode(
            b"\0alice\0" + ft.PASSWORDS["alice"].encode()).decode()
        self.assertEqual(c.cmd("AUTH PLAIN " + auth)[0], 235)
        self.assertEqual(c.cmd("MAIL FROM:<alice@%s>" % D)[0], 250)
        for rcpt in ("<bob%remote.example@office.example>",
                     "<remote.example!bob@office.example>",
                     '<"bob@remote.example"@office.example>'):
            code, lines = c.cmd("RCPT TO:" + rcpt)
            self.assertEqual(code, 550, lines)
            self.assertTrue(lines[0].startswith("550 5.7.1 "), lines)


if __name__ == "__main__":
    ft.main()
