#!/usr/bin/env python3
"""HAYES.md §18 command layer (ACC-01 .. ACC-10), typed through pyserial
and through picocom(1)."""

import os
import pty
import shutil
import signal
import time

import simlib
from simlib import command, read_for, read_until


class CommandLayer(simlib.SimCase):
    modems = ("A:111",)

    def setUp(self):
        super().setUp()
        self.a = self.sim.open("A")

    def test_acc01_echo_then_ok(self):
        self.assertEqual(command(self.a, b"AT", b"OK\r\n"), b"AT\r\r\nOK\r\n")
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertEqual(command(self.a, b"AT", b"OK\r\n"), b"\r\nOK\r\n")

    def test_acc02_numeric_and_quiet(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertEqual(command(self.a, b"ATV0", b"\r"), b"0\r")
        command(self.a, b"ATV1", b"\r")
        self.a.write(b"ATQ1\r")
        self.assertEqual(read_for(self.a, 0.3), b"")
        self.assertEqual(command(self.a, b"ATS0?", b"\r\n000\r\n",
                                 settle=0.2), b"\r\n000\r\n")

    def test_acc03_registers(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertEqual(command(self.a, b"ATS0=1", b"OK\r\n"), b"\r\nOK\r\n")
        self.assertEqual(command(self.a, b"ATS0?", b"OK\r\n"),
                         b"\r\n001\r\n\r\nOK\r\n")
        self.assertEqual(command(self.a, b"ATS300?", b"\r\n", settle=0.1),
                         b"\r\nERROR\r\n")

    def test_acc04_error_stops_line_earlier_commands_kept(self):
        self.assertEqual(command(self.a, b"ATE0 V1 X9 Q1", b"ERROR\r\n"),
                         b"ATE0 V1 X9 Q1\r\r\nERROR\r\n")
        # E0 took effect, Q1 did not.
        self.assertEqual(command(self.a, b"AT", b"OK\r\n"), b"\r\nOK\r\n")

    def test_acc05_a_slash_repeats(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.a.write(b"A/")
        data, _ = read_until(self.a, b"OK\r\n")
        self.assertEqual(data, b"\r\nOK\r\n")
        command(self.a, b"ATS7?", b"OK\r\n")
        self.a.reset_input_buffer()
        self.a.write(b"A/")
        data, _ = read_until(self.a, b"OK\r\n")
        self.assertEqual(data, b"\r\n050\r\n\r\nOK\r\n")

    def test_acc05_a_slash_before_any_line_is_ok(self):
        self.a.write(b"A/")
        data, _ = read_until(self.a, b"OK\r\n")
        self.assertTrue(data.endswith(b"\r\nOK\r\n"), data)

    def test_acc06_s3_change_applies_to_result(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertEqual(command(self.a, b"ATS3=64", b"OK@\n"), b"@\nOK@\n")
        self.a.write(b"AT@")
        data, _ = read_until(self.a, b"OK@\n")
        self.assertEqual(data, b"@\nOK@\n")

    def test_acc07_backspace_edits(self):
        command(self.a, b"ATE0", b"OK\r\n")
        command(self.a, b"ATS0=2\x081", b"OK\r\n")
        self.assertIn(b"001", command(self.a, b"ATS0?", b"OK\r\n"))

    def test_acc07_backspace_echo_erases(self):
        data = command(self.a, b"ATS0=2\x081", b"OK\r\n")
        self.assertTrue(data.startswith(b"ATS0=2\x08 \x081\r"), data)

    def test_acc08_stored_profile(self):
        command(self.a, b"ATE0", b"OK\r\n")
        command(self.a, b"ATV0&W", b"\r")
        command(self.a, b"ATV1", b"\r")
        self.assertEqual(command(self.a, b"ATZ", b"\r"), b"0\r")
        # &F: factory profile, verbose again (the line ran with E0).
        self.assertEqual(command(self.a, b"AT&F", b"OK\r\n"), b"\r\nOK\r\n")
        # Stored profile 0 still says V0.
        self.assertEqual(command(self.a, b"ATZ", b"\r"), b"ATZ\r0\r")

    def test_acc08_factory_reset_restores_verbose(self):
        command(self.a, b"ATE0V0", b"\r")
        data = command(self.a, b"AT&F", b"OK\r\n")
        self.assertTrue(data.endswith(b"\r\nOK\r\n"), data)

    def test_acc09_line_too_long(self):
        command(self.a, b"ATE0", b"OK\r\n")
        long_line = b"AT" + b"S0=1" * 12
        self.assertEqual(command(self.a, long_line, b"\r\n", settle=0.1),
                         b"\r\nERROR\r\n")

    def test_acc10_identification_and_wvdialconf_init(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertTrue(
            command(self.a, b"ATI0", b"OK\r\n").endswith(b"OK\r\n"))
        self.assertIn(b"FERRY-MODEMSIM",
                      command(self.a, b"ATI3", b"OK\r\n"))
        self.assertEqual(command(self.a, b"AT+FCLASS=0", b"\r\n",
                                 settle=0.1), b"\r\nOK\r\n")
        self.assertEqual(
            command(self.a, b"ATQ0 V1 E1 S0=0 &C1 &D2 +FCLASS=0", b"OK\r\n"),
            b"\r\nOK\r\n")

    def test_init_strings_from_the_wild(self):
        command(self.a, b"ATE0", b"OK\r\n")
        for line in (b"AT S7=45 S0=0 L1 V1 X4 &c1 E1 Q0",   # minicom
                     b"ATQ0V1H0", b"ATS0=0Q0&D3&C1",         # mgetty
                     b"AT&F S0=1 &C1 &D3 &H1&R2 &B1 &M4 &K1",  # Cisco/USR
                     b"ATE0"):
            self.assertTrue(command(self.a, line, b"OK\r\n").endswith(
                b"OK\r\n"), line)

    def test_junk_outside_lines_ignored(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.a.write(b"\r\r\nhello\r")
        self.assertEqual(read_for(self.a, 0.3), b"")

    def test_mixed_case_prefix_ignored(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.a.write(b"At\r")
        self.assertEqual(read_for(self.a, 0.3), b"")
        self.assertEqual(command(self.a, b"at", b"OK\r\n"), b"\r\nOK\r\n")

    def test_o_without_call_is_error(self):
        command(self.a, b"ATE0", b"OK\r\n")
        self.assertEqual(command(self.a, b"ATO", b"\r\n", settle=0.1),
                         b"\r\nERROR\r\n")

    def test_answer_with_nobody_calling_gives_no_carrier_after_s7(self):
        command(self.a, b"ATE0S7=2", b"OK\r\n")
        start = time.monotonic()
        self.a.write(b"ATA\r")
        read_until(self.a, b"NO CARRIER", 5)
        self.assertGreater(time.monotonic() - start, self.sim.secs(2) * 0.8)


class Picocom(simlib.SimCase):
    """picocom(1), an interactive terminal we did not write, on the port."""

    def setUp(self):
        if not shutil.which("picocom"):
            self.skipTest("picocom is not installed")
        super().setUp()
        self.pid = None

    def tearDown(self):
        if self.pid:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
        super().tearDown()

    def start_picocom(self, port):
        # --nolock: no lock file in the global /var/lock.
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp("picocom", ["picocom", "-q", "--nolock",
                                  self.sim.path(port)])
        os.set_blocking(self.fd, False)
        time.sleep(0.5)

    def screen_until(self, needle, timeout=5):
        buf = b""
        deadline = time.monotonic() + timeout
        while needle not in buf:
            if time.monotonic() > deadline:
                raise AssertionError("no %r on screen: %r" % (needle, buf))
            try:
                buf += os.read(self.fd, 4096)
            except BlockingIOError:
                time.sleep(0.02)
        return buf

    def type(self, text):
        for c in text:
            os.write(self.fd, bytes([c]))
            time.sleep(0.01)

    def test_acc01_typing_at_shows_ok(self):
        self.start_picocom("A")
        self.type(b"AT\r")
        screen = self.screen_until(b"OK")
        self.assertIn(b"AT", screen)

    def test_call_from_picocom_carries_bytes_both_ways(self):
        b = self.sim.open("B")
        command(b, b"ATE0S0=1", b"OK\r\n")
        self.start_picocom("A")
        self.type(b"ATDT555\r")
        self.screen_until(b"CONNECT 33600")
        read_until(b, b"CONNECT", 5)
        self.type(b"typed in picocom")
        read_until(b, b"typed in picocom", 5)
        b.write(b"sent by pyserial")
        self.screen_until(b"sent by pyserial")


if __name__ == "__main__":
    simlib.main()
