#!/usr/bin/env python3
"""pppd's chat(8) dials through the emulator (HAYES.md §18 ACC-23): exit 0
on CONNECT, 4 on BUSY (first ABORT string), 5 on NO CARRIER (second ABORT
string), 3 when the modem is mute (timeout)."""

import os
import shutil
import subprocess
import time

import simlib
from simlib import command, read_until

CHAT = shutil.which("chat") or "/usr/sbin/chat"


class Chat(simlib.SimCase):
    scale = 10.0

    def setUp(self):
        if not os.access(CHAT, os.X_OK):
            self.skipTest("chat (package ppp) is not installed")
        super().setUp()

    def run_chat(self, timeout=5):
        """chat on A's PTY as its stdin/stdout, like pppd's connect."""
        script = ["-v", "-t", str(timeout), "ABORT", "BUSY",
                  "ABORT", "NO CARRIER", "", "ATZ", "OK", "ATDT555",
                  "CONNECT"]
        with open(self.sim.path("A"), "r+b", buffering=0) as tty:
            proc = subprocess.run([CHAT] + script, stdin=tty, stdout=tty,
                                  stderr=subprocess.PIPE, timeout=60)
        return proc.returncode, proc.stderr.decode(errors="replace")

    def answer_on_b(self):
        b = self.sim.open("B")
        command(b, b"ATE0S0=1", b"OK\r\n")
        return b

    def test_connect_exits_0(self):
        b = self.answer_on_b()
        rc, log = self.run_chat()
        self.assertEqual(rc, 0, log)
        read_until(b, b"CONNECT 33600", 5)

    def test_busy_exits_4(self):
        self.sim.admin("fault B busy")
        rc, log = self.run_chat()
        self.assertEqual(rc, 4, log)

    def test_no_carrier_exits_5(self):
        self.answer_on_b()
        self.sim.admin("fault B no-carrier")
        rc, log = self.run_chat(timeout=20)
        self.assertEqual(rc, 5, log)

    def test_mute_modem_exits_3(self):
        self.sim.admin("fault A mute")
        start = time.monotonic()
        rc, log = self.run_chat(timeout=2)
        self.assertEqual(rc, 3, log)
        self.assertGreater(time.monotonic() - start, 1.5)


if __name__ == "__main__":
    simlib.main()
