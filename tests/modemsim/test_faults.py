#!/usr/bin/env python3
"""Every fault of the admin socket, observed from the dialling side
(HAYES.md §18 ACC-17 .. ACC-22, plus mute, delayed, blacklisted)."""

import math
import os
import signal
import socket
import tempfile
import termios
import time

import simlib
from simlib import command, read_for, read_until


class Faults(simlib.SimCase):
    scale = 10.0

    def dialer(self, setup=b"ATE0"):
        a = self.sim.open("A")
        command(a, setup, b"OK\r\n")
        return a

    def fault(self, line):
        self.assertTrue(self.sim.admin(line).startswith("ok"), line)

    def test_acc17_busy_x4_reports_busy(self):
        self.fault("fault B busy")
        a = self.dialer()
        a.write(b"ATDT555\r")
        self.assertEqual(read_until(a, b"BUSY\r\n", 5)[0], b"\r\nBUSY\r\n")

    def test_acc17_busy_x0_reports_no_carrier_after_s7(self):
        self.fault("fault B busy")
        a = self.dialer(b"ATE0X0S7=5")
        start = time.monotonic()
        a.write(b"ATDT555\r")
        read_until(a, b"NO CARRIER", 5)
        self.assertGreater(time.monotonic() - start, self.sim.secs(5))

    def test_acc18_no_dialtone(self):
        self.fault("fault A no-dialtone")
        a = self.dialer()
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nNO DIALTONE\r\n", 5)
        # X3: blind dial, NO CARRIER after S7.
        command(a, b"ATX3S7=4", b"OK\r\n")
        start = time.monotonic()
        a.write(b"ATDT555\r")
        read_until(a, b"NO CARRIER", 5)
        self.assertGreater(time.monotonic() - start, self.sim.secs(4))
        # W asks for a dial tone even at X0.
        command(a, b"ATX0", b"OK\r\n")
        a.write(b"ATDTW555\r")
        read_until(a, b"NO DIALTONE", 5)

    def test_acc19_no_answer(self):
        self.fault("fault B no-answer")
        a = self.dialer(b"ATE0S7=3")
        a.write(b"ATDT555@\r")
        read_until(a, b"\r\nNO ANSWER\r\n", 5)
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nNO CARRIER\r\n", 5)

    def test_acc20_drop_after_ms_both_sides_and_dcd(self):
        self.fault("fault A drop-after-ms 3000")
        a, b = self.connect_pair()
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.connect(self.sim.path("B.ctl"))
        ctl.settimeout(5)
        self.assertIn(b"DCD=1", ctl.recv(4096))
        start = time.monotonic()
        read_until(a, b"NO CARRIER", 5)
        read_until(b, b"NO CARRIER", 5)
        elapsed = time.monotonic() - start
        self.assertAlmostEqual(elapsed, self.sim.secs(3.0 + 1.4),
                               delta=self.sim.secs(1.0) + 0.2)
        got = b""
        while b"DCD=0" not in got:
            got += ctl.recv(4096)
        ctl.close()

    def test_acc20_drop_after_bytes_cuts_at_offset(self):
        a, b = self.connect_pair()
        self.fault("fault A drop-after-bytes 1000")
        a.write(bytes(3000))
        data, _ = read_until(b, b"NO CARRIER", 5)
        self.assertEqual(data.index(b"\r\nNO CARRIER"), 1000)
        read_until(a, b"NO CARRIER", 5)

    def hangup_scenario(self, extra_args):
        self.sim.stop()
        self.sim = simlib.Sim(("A:111", "B:555"), self.scale, extra_args)
        self.fault("fault A drop-after-ms 2000")
        b = self.sim.open("B")
        command(b, b"ATE0S0=1", b"OK\r\n")
        # A child with the PTY as controlling tty and CLOCAL clear, like
        # pppd with "modem": a carrier drop must reach it as SIGHUP + EOF.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            hup = []
            signal.signal(signal.SIGHUP, lambda *_: hup.append(1))
            os.setsid()
            fd = os.open(self.sim.path("A"), os.O_RDWR)  # becomes ctty
            attrs = termios.tcgetattr(fd)
            attrs[2] &= ~termios.CLOCAL
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            os.write(fd, b"ATE0DT555\r")
            buf = b""
            eof = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    eof = True
                    break
                buf += chunk
            time.sleep(0.3)  # EOF can overtake the signal
            report = b"hup=%d eof=%d " % (len(hup) > 0, eof) + buf
            os.write(w, report)
            os._exit(0)
        os.close(w)
        report = b""
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            report += chunk
        os.close(r)
        os.waitpid(pid, 0)
        self.assertTrue(report.startswith(b"hup=1 eof=1 "), report)
        self.assertIn(b"CONNECT 33600", report)
        self.assertTrue(report.endswith(b"\r\nNO CARRIER\r\n"), report)
        # The port works again afterwards, under the same name.
        a = self.sim.open("A")
        self.assertIn(b"OK", command(a, b"AT", b"OK\r\n"))

    def test_acc20_sighup_privileged_vhangup(self):
        if os.geteuid() != 0:
            self.skipTest("TIOCVHANGUP needs CAP_SYS_ADMIN")
        self.hangup_scenario([])

    def test_acc20_sighup_unprivileged_recreate(self):
        self.hangup_scenario(["--hangup", "recreate"])

    def test_acc21_slow_answer(self):
        self.fault("fault B slow-answer 4")
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0", b"OK\r\n")
        command(b, b"ATE0S0=1", b"OK\r\n")
        start = time.monotonic()
        a.write(b"ATDT555\r")
        read_until(a, b"CONNECT", 10)
        elapsed = time.monotonic() - start
        # Four full ring cycles pass before the slow party picks up.
        self.assertGreater(elapsed, self.sim.secs(4 * 6.0))
        time.sleep(self.sim.secs(1.2))
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        command(a, b"ATH", b"OK\r\n")
        read_until(b, b"NO CARRIER", 5)
        # With S7=20 the caller gives up before the answer.
        command(a, b"ATS7=20", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(a, b"NO CARRIER", 10)
        self.assertNotIn(b"CONNECT", read_for(b, 0.2))

    def test_acc22_bit_errors_raw_not_ec(self):
        self.sim.stop()
        self.sim = simlib.Sim(("A:111", "B:555"), 20.0,
                              ["--profile", "raw", "--seed", "7"])
        self.fault("fault A ber 1e-3")
        a, b = self.connect_pair()
        size = 16000
        a.write(bytes(size))
        got, _ = read_until(b, b"", 1)
        deadline = time.monotonic() + 15
        while len(got) < size and time.monotonic() < deadline:
            got += b.read(8192)
        got = got[:size]
        flipped = sum(bin(x).count("1") for x in got)
        expected = size * 8 * 1e-3
        sigma = math.sqrt(expected)
        self.assertLess(abs(flipped - expected), 3 * sigma + 1,
                        "%d bit errors, expected %.0f" % (flipped, expected))

    def test_acc22_ec_profile_has_no_errors(self):
        self.fault("fault A ber 1e-3")
        a, b = self.connect_pair()
        payload = bytes(range(256)) * 32
        a.write(payload)
        got, _ = read_until(b, payload, 10)
        self.assertEqual(got, payload)

    def test_mute_modem_says_nothing(self):
        self.fault("fault A mute")
        a = self.sim.open("A")
        a.write(b"AT\r")
        self.assertEqual(read_for(a, 0.5), b"")
        self.fault("clear A")
        self.assertIn(b"OK", command(a, b"AT", b"OK\r\n"))

    def test_delayed_and_blacklisted(self):
        a = self.dialer()
        self.fault("fault A delayed")
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nDELAYED\r\n", 5)
        self.fault("fault A blacklisted")
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nBLACKLISTED\r\n", 5)

    def test_repeated_failures_give_delayed_then_blacklisted(self):
        fd, cfg = tempfile.mkstemp(prefix="modemsim-test-", suffix=".conf")
        self.addCleanup(os.unlink, cfg)
        with os.fdopen(fd, "w") as f:
            f.write("delay-after = 2\ndelay-s = 10\nblacklist-after = 3\n")
        self.sim.stop()
        self.sim = simlib.Sim(("A:111", "B:555"), self.scale,
                              ["--config", cfg])
        self.fault("fault B busy")
        a = self.dialer()
        for _ in range(2):
            a.write(b"ATDT555\r")
            read_until(a, b"\r\nBUSY\r\n", 5)
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nDELAYED\r\n", 5)
        time.sleep(self.sim.secs(10) + 0.2)
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nBUSY\r\n", 5)
        a.write(b"ATDT555\r")
        read_until(a, b"\r\nBLACKLISTED\r\n", 5)
        # Other numbers are not affected; clear forgets the history.
        a.write(b"ATDT999@\r")
        self.assertNotIn(b"BLACKLISTED", read_for(a, 0.3))
        a.write(b"\r")
        read_until(a, b"NO CARRIER", 5)
        self.fault("clear A")
        self.fault("clear B")
        b = self.sim.open("B")
        command(b, b"ATS0=1", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(a, b"CONNECT", 5)

    def test_no_carrier_fault(self):
        self.fault("fault B no-carrier")
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0S7=5", b"OK\r\n")
        command(b, b"ATE0S0=1", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(a, b"NO CARRIER", 5)
        read_until(b, b"NO CARRIER", 5)

    def test_admin_errors_and_status(self):
        self.assertTrue(self.sim.admin("fault Z busy").startswith("error"))
        self.assertTrue(self.sim.admin("fault A bogus").startswith("error"))
        self.assertTrue(self.sim.admin("nonsense").startswith("error"))
        a, b = self.connect_pair()
        a.write(b"x" * 100)
        read_until(b, b"x" * 100, 5)
        status = self.sim.admin("status")
        self.assertTrue(status.startswith("ok calls=1"), status)
        self.assertIn(":online:out=100:", status)


if __name__ == "__main__":
    simlib.main()
