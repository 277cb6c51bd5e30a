#!/usr/bin/env python3
"""ferry-modemsim throughput benchmark (not a test).

Runs the emulator at time scale 1, connects two emulated modems at each of
1200, 9600, 33600 and 56000 bit/s and pushes data one way for about
SECONDS seconds, then prints the measured rate against the line rate
(bytes per second = bit/s / 10, async framing).

usage: modemsim_bench.py FERRY_MODEMSIM [SECONDS]
"""

import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import serial  # python3-serial

RATES = (1200, 9600, 33600, 56000)


def wait_for(port, needle, timeout):
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf:
        if time.monotonic() > end:
            raise SystemExit("timeout waiting for %r (got %r)" % (needle, buf))
        buf += port.read(4096)
    return buf


def run(binary, rate, seconds):
    d = tempfile.mkdtemp(prefix="modemsim-bench-")
    proc = subprocess.Popen([binary, "--dir", d, "--modem", "A:1",
                             "--modem", "B:2", "--rate", str(rate),
                             "--train-ms", "200"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        select.select([proc.stdout], [], [], 10)
        assert proc.stdout.readline() == b"ready\n"
        a = serial.Serial(os.path.join(d, "A"), timeout=0.02)
        b = serial.Serial(os.path.join(d, "B"), timeout=0.02)
        a.write(b"ATE0\r")
        wait_for(a, b"OK", 5)
        b.write(b"ATE0S0=1\r")
        wait_for(b, b"OK", 5)
        a.write(b"ATD2\r")
        wait_for(a, b"CONNECT", 30)
        wait_for(b, b"CONNECT", 5)
        time.sleep(0.2)
        b.read(4096)
        size = int(rate / 10 * seconds)
        payload = os.urandom(size)
        sender = threading.Thread(target=a.write, args=(payload,))
        got = 0
        first_time = first_len = None
        sender.start()
        end = time.monotonic() + seconds * 3 + 10
        while got < size and time.monotonic() < end:
            chunk = b.read(65536)
            if chunk:
                if first_time is None:
                    first_time, first_len = time.monotonic(), len(chunk)
                got += len(chunk)
        last_time = time.monotonic()
        sender.join()
        a.close()
        b.close()
        measured = (got - first_len) * 10 / (last_time - first_time)
        return got, measured
    finally:
        proc.terminate()
        proc.wait()
        proc.stdout.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    binary = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    print("%8s %10s %12s %8s" % ("line", "bytes", "measured", "ratio"))
    worst = 0.0
    for rate in RATES:
        got, measured = run(binary, rate, seconds)
        ratio = measured / rate
        worst = max(worst, abs(1 - ratio))
        print("%8d %10d %12.1f %7.2f%%" % (rate, got, measured, ratio * 100))
    print("worst deviation from line rate: %.2f%%" % (worst * 100))
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
