#!/usr/bin/env python3
"""Modem lines: the per-port control socket (HAYES.md §17 Layer 1), DTR
inferred from port close and B0 (Layer 0), and port hygiene (ACC-29)."""

import socket
import termios
import time

import simlib
from simlib import command, read_for, read_until


class LineSocket:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(0.05)
        self.buf = b""

    def wait(self, text, timeout=5):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError("no %r in %r" % (text, self.buf))
            try:
                self.buf += self.s.recv(4096)
            except socket.timeout:
                pass
        return self.buf

    def send(self, line):
        self.s.sendall(line.encode() + b"\n")

    def close(self):
        self.s.close()


class Lines(simlib.SimCase):
    scale = 10.0

    def test_lines_on_connect_and_dcd_follows_call(self):
        ctl = LineSocket(self.sim.path("B.ctl"))
        self.assertTrue(ctl.wait("\n").startswith(
            b"LINES DCD=0 DSR=1 CTS=1 RI=0\n"))
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0", b"OK\r\n")
        command(b, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        ctl.wait("RI=1")           # ring burst
        read_until(b, b"RING", 5)
        ctl.buf = b""
        ctl.wait("RI=0", 5)        # burst over (2 s of 6)
        b.write(b"ATA\r")
        ctl.wait("DCD=1")
        read_until(a, b"CONNECT", 5)
        time.sleep(self.sim.secs(1.2))
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        command(a, b"ATH", b"OK\r\n")
        ctl.buf = b""
        ctl.wait("DCD=0")
        read_until(b, b"NO CARRIER", 5)
        ctl.close()

    def test_amp_c0_dcd_always_on(self):
        b = self.sim.open("B")
        ctl = LineSocket(self.sim.path("B.ctl"))
        ctl.wait("DCD=0")
        command(b, b"AT&C0", b"OK\r\n")
        ctl.wait("DCD=1")
        ctl.close()

    def test_acc29_rings_while_closed_not_delivered(self):
        a = self.sim.open("A")
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        time.sleep(self.sim.secs(13))   # three rings, B closed
        b = self.sim.open("B")
        # Stale RINGs would arrive in a burst on open; at most one fresh
        # ring can fall into this window.
        data = read_for(b, self.sim.secs(2))
        self.assertLessEqual(data.count(b"RING"), 1, data)

    def test_port_close_drops_dtr_and_hangs_up_under_d2(self):
        a, b = self.connect_pair()
        b.close()     # HUPCL is set: DTR goes down, &D2 hangs up
        read_until(a, b"NO CARRIER", 5)

    def test_b0_drops_dtr_amp_d2(self):
        a, b = self.connect_pair()
        attrs = termios.tcgetattr(b.fileno())
        attrs[4] = attrs[5] = termios.B0
        termios.tcsetattr(b.fileno(), termios.TCSANOW, attrs)
        read_until(a, b"NO CARRIER", 5)
        attrs[4] = attrs[5] = termios.B9600
        termios.tcsetattr(b.fileno(), termios.TCSANOW, attrs)
        self.assertIn(b"OK", command(b, b"AT", b"OK\r\n"))

    def test_control_dtr_overrides_port_state(self):
        a, b = self.connect_pair()
        ctl = LineSocket(self.sim.path("B.ctl"))
        ctl.wait("DCD=1")
        ctl.send("DTR 1")
        b.close()     # the control client says DTR stays up
        self.assertNotIn(b"NO CARRIER", read_for(a, self.sim.secs(3)))
        ctl.send("DTR 0")
        read_until(a, b"NO CARRIER", 5)
        ctl.close()


if __name__ == "__main__":
    simlib.main()
