#!/usr/bin/env python3
"""man/ferry-modemsim.1 renders without warnings and cannot drift from the
program: every option of --help, every fault kind and every section the
project asks for is in it."""

import os
import re
import shutil
import subprocess
import unittest

import simlib

SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION",
            "CONTROL SOCKET", "FILES", "EXIT STATUS", "DIAGNOSTICS", "BUGS",
            "SEE ALSO", "EXAMPLES")
FAULTS = ("busy", "no-answer", "no-dialtone", "no-carrier", "mute",
          "slow-answer", "drop-after-bytes", "drop-after-ms", "ber",
          "delayed", "blacklisted")


class ManPage(unittest.TestCase):
    def setUp(self):
        self.page = os.path.join(simlib.SOURCE_DIR, "man", "ferry-modemsim.1")
        with open(self.page) as f:
            self.source = f.read()
        if not shutil.which("groff"):
            self.skipTest("groff is not installed")
        self.text = subprocess.run(
            ["groff", "-man", "-Tascii", "-P-cbou", self.page],
            capture_output=True, check=True).stdout.decode()

    def test_renders_without_warnings(self):
        proc = subprocess.run(["groff", "-man", "-ww", "-Tutf8", self.page],
                              capture_output=True)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(proc.stderr, b"")

    def test_sections_in_order(self):
        found = [s for s in re.findall(r"^\.SH (.+)$", self.source, re.M)]
        self.assertEqual(tuple(x.strip('"') for x in found), SECTIONS)

    def test_every_option_documented(self):
        help_text = subprocess.run([simlib.BINARY, "--help"],
                                   capture_output=True,
                                   check=True).stdout.decode()
        options = re.findall(r"--([a-z-]+)", help_text)
        self.assertGreater(len(options), 10)
        for opt in options:
            self.assertIn("--" + opt, self.text, opt)

    def test_every_fault_documented(self):
        for kind in FAULTS:
            self.assertIn(kind, self.text, kind)


if __name__ == "__main__":
    simlib.main()
