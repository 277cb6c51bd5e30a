#!/usr/bin/env python3
"""ferryd's command line: --version, --help, --check-config (valid config:
effective settings and exit 0; bad config: file:line on stderr and exit 1),
a bad option (exit 2), a listener that cannot bind (exit 1), and the
manual page rendering without warnings."""

import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

SOURCE = os.environ.get("FERRY_SOURCE_DIR",
                        os.path.join(os.path.dirname(__file__), "..", "..",
                                     ".."))


def ferryd(*args):
    return subprocess.run([ft.FERRYD] + list(args), capture_output=True,
                          text=True, timeout=30)


class CliTest(unittest.TestCase):

    def setUp(self):
        self.f = ft.Ferryd()
        self.addCleanup(self.f.cleanup)

    def test_version_and_help(self):
        r = ferryd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^ferryd \d+\.\d+")
        r = ferryd("--help")
        self.assertEqual(r.returncode, 0)
        for opt in ("--config", "--check-config", "--version", "--help"):
            self.assertIn(opt, r.stdout)

    def test_bad_option_exits_2(self):
        self.assertEqual(ferryd("--no-such-option").returncode, 2)

    def test_check_config_prints_effective_settings(self):
        r = ferryd("--check-config", "--config", self.f.config)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[smtp]", r.stdout)
        self.assertIn("max_recipients = 5", r.stdout)

    def test_check_config_names_file_and_line(self):
        with open(self.f.config, "a") as f:
            f.write("[smtp]\nmax_message_size = big\n")
        r = ferryd("--check-config", "--config", self.f.config)
        self.assertEqual(r.returncode, 1)
        with open(self.f.config) as f:
            n = sum(1 for _ in f)
        self.assertIn("ferry.conf:%d:" % n, r.stderr)
        self.assertIn("max_message_size", r.stderr)

    def test_listener_that_cannot_bind_is_fatal(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.f.ports["relay"]))
            s.listen()
            r = ferryd("--config", self.f.config)
        self.assertEqual(r.returncode, 1)
        self.assertIn("[listener relay]", r.stderr)

    def test_second_ferryd_on_the_same_spool_is_refused(self):
        self.f.start()
        r = ferryd("--config", self.f.config)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("in use by another ferryd (pid %d)" % self.f.proc.pid,
                      r.stderr)
        # The first one still serves.
        self.assertIsNone(self.f.proc.poll())

    def test_check_config_refuses_a_certificate_that_is_not_pem(self):
        with open(self.f.cert, "w") as f:
            f.write("not a certificate\n")
        r = ferryd("--check-config", "--config", self.f.config)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stderr, r"ferry\.conf:\d+: \[tls\] certificate: ")
        self.assertIn(self.f.cert, r.stderr)

    def test_man_page_renders_without_warnings(self):
        page = os.path.join(SOURCE, "man", "ferryd.8")
        r = subprocess.run(
            ["groff", "-man", "-ww", "-Tutf8", "-P-cbou", page],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stderr, "")
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS",
                        "FILES", "EXIT STATUS", "DIAGNOSTICS", "BUGS",
                        "SEE ALSO"):
            self.assertIn(section, r.stdout)


if __name__ == "__main__":
    ft.main()
