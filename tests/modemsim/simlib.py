"""Helpers for the ferry-modemsim scenario tests.

Each test starts a real ferry-modemsim in a fresh temporary directory and
talks to its PTYs with pyserial (python3-serial, a program we did not
write), to its sockets with plain socket calls, and to third-party programs
(pppd's chat) through subprocess.  Nothing is written outside the temporary
directory, which is removed at the end.

Usage from a test script:  test_x.py FERRY_MODEMSIM_BINARY SOURCE_DIR
"""

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import serial  # python3-serial
except ImportError:  # pragma: no cover
    serial = None

BINARY = None
SOURCE_DIR = None


def main():
    """Runs the unittest cases of the calling script."""
    global BINARY, SOURCE_DIR
    if len(sys.argv) < 3:
        print("usage: %s FERRY_MODEMSIM SOURCE_DIR" % sys.argv[0])
        sys.exit(2)
    BINARY, SOURCE_DIR = sys.argv[1], sys.argv[2]
    if serial is None:
        print("SKIP: python3-serial is not installed")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0], "-v"])


class Sim:
    """One running ferry-modemsim with its own directory."""

    def __init__(self, modems=("A:111", "B:555"), scale=20.0, args=()):
        self.dir = tempfile.mkdtemp(prefix="modemsim-test-")
        self.control = os.path.join(self.dir, "admin.sock")
        self.transcripts = os.path.join(self.dir, "transcripts")
        os.mkdir(self.transcripts)
        self.scale = scale
        cmd = [BINARY, "--dir", self.dir, "--time-scale", str(scale),
               "--control", self.control, "--transcripts", self.transcripts]
        for m in modems:
            cmd += ["--modem", m]
        cmd += list(args)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else b""
        if line != b"ready\n":
            self.proc.kill()
            raise AssertionError("no ready line: %r; stderr: %s" %
                                 (line, self.log()))
        self.ports = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def open(self, name, **kw):
        kw.setdefault("timeout", 0.05)
        s = serial.Serial(self.path(name), **kw)
        self.ports.append(s)
        return s

    def admin(self, line):
        """Sends one admin command, returns the reply line."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.control)
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.decode().strip()

    def secs(self, real_seconds):
        """Wall-clock time of a modem duration at this time scale."""
        return real_seconds / self.scale

    def log(self):
        self._stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def transcript_files(self):
        return sorted(os.listdir(self.transcripts))

    def stop(self):
        for s in self.ports:
            try:
                s.close()
            except Exception:
                pass
        self.proc.terminate()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._stderr.close()
        self.proc.stdout.close()
        leftovers = [n for n in os.listdir(self.dir)
                     if n not in ("stderr.log", "transcripts")]
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, leftovers


def read_until(port, needle, timeout=5.0):
    """Reads from port until needle (bytes) is seen; returns (data, secs).

    Raises AssertionError with what arrived on timeout."""
    start = time.monotonic()
    buf = b""
    while True:
        if needle in buf:
            return buf, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("timeout waiting for %r, got %r" %
                                 (needle, buf))
        buf += port.read(4096)


def read_for(port, seconds):
    """Everything that arrives within seconds."""
    end = time.monotonic() + seconds
    buf = b""
    while time.monotonic() < end:
        buf += port.read(4096)
    return buf


def command(port, line, needle=b"\r\n", timeout=3.0, settle=0.0):
    """Sends line (bytes, CR added) and returns what came back."""
    port.reset_input_buffer()
    port.write(line + b"\r")
    data, _ = read_until(port, needle, timeout)
    if settle:
        data += read_for(port, settle)
    return data


class SimCase(unittest.TestCase):
    """A test case with a fresh emulator per test."""

    modems = ("A:111", "B:555")
    scale = 20.0
    args = ()

    def setUp(self):
        self.sim = Sim(self.modems, self.scale, self.args)

    def tearDown(self):
        rc, leftovers = self.sim.stop()
        self.assertEqual(rc, 0, "ferry-modemsim exit status")
        self.assertEqual(leftovers, [], "symlinks/sockets left behind")

    def connect_pair(self, a="A", b="B", number=b"555", setup_b=b"S0=1"):
        """Dials from a to b (b auto-answers); returns both open ports."""
        pa, pb = self.sim.open(a), self.sim.open(b)
        command(pa, b"ATE0", b"OK\r\n")
        command(pb, b"ATE0" + setup_b, b"OK\r\n")
        pa.write(b"ATDT" + number + b"\r")
        read_until(pa, b"CONNECT", 10)
        read_until(pb, b"CONNECT", 10)
        pa.read(4096)
        pb.read(4096)
        return pa, pb
