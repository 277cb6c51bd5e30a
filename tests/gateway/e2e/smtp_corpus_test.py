#!/usr/bin/env python3
"""Real messages from ${FERRY_SHARED_DIR}/corpus arrive in a Maildir byte
for byte as the client sent them, apart from the Received: field ferry
puts in front.  A fixed selection of 32: every message with a line over
998 octets, and 24 spread evenly over the size range (205 B .. 1.8 MiB;
8-bit bodies among them).  LF-only files are converted to CRLF, as a
client must before sending; smtplib does the dot-stuffing."""

import os
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

LONG_LINES = ["0037", "0279", "0686", "0835", "0884", "0983", "0997",
              "1014"]
BY_SIZE = ["0596", "0288", "0587", "0386", "0572", "0613", "0122", "0528",
           "0212", "0400", "0559", "1003", "0968", "0624", "0904", "1017",
           "0917", "0989", "1000", "0915", "0758", "0732", "0843", "0923"]
CORPUS = os.path.join(ft.SHARED, "corpus", "messages") if ft.SHARED else ""


def as_sent(raw):
    """The bytes a client puts on the wire (before stuffing): CRLF lines,
    ending in CRLF."""
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    return crlf


@unittest.skipUnless(CORPUS and os.path.isdir(CORPUS),
                     "corpus not present (FERRY_SHARED_DIR)")
class CorpusTest(ft.FerrydTestCase):
    SMTP = {"max_message_size": "35M", "max_line_length": "64K"}

    def test_corpus_messages_arrive_byte_identical(self):
        names = LONG_LINES + BY_SIZE
        sent = {}
        with smtplib.SMTP("127.0.0.1", self.port(), timeout=60) as s:
            s.ehlo("client.example")
            for name in names:
                with open(os.path.join(CORPUS, name + ".eml"), "rb") as f:
                    body = as_sent(f.read())
                opts = []
                if any(b > 127 for b in body):
                    opts = ["BODY=8BITMIME"]
                s.sendmail("corpus@remote.example",
                           ["alice@" + ft.LOCAL_DOMAIN], body,
                           mail_options=opts)
                sent[name] = body
        got = self.ferryd.wait_maildir("alice", len(names))
        self.assertEqual(len(got), len(names), self.ferryd.log()[-3000:])
        stored = sorted(ft.strip_received(g)[1] for g in got)
        expected = sorted(sent.values())
        for want, have in zip(expected, stored):
            self.assertEqual(len(want), len(have))
            self.assertTrue(want == have, "a message changed in transit")


if __name__ == "__main__":
    ft.main()
