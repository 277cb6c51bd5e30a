#!/usr/bin/env python3
"""Calls between emulated modems, to TCP and to commands (HAYES.md §18
ACC-11 .. ACC-16, ACC-27, ACC-28), driven through pyserial."""

import os
import socket
import threading
import time

import simlib
from simlib import command, read_for, read_until


class Calls(simlib.SimCase):
    scale = 10.0

    def test_acc11_ring_cadence_and_auto_answer_on_second_ring(self):
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0", b"OK\r\n")
        command(b, b"ATE0S0=2", b"OK\r\n")
        a.write(b"ATDT555\r")
        rings = []
        buf = b""
        deadline = time.monotonic() + 10
        while b"CONNECT" not in buf and time.monotonic() < deadline:
            chunk = b.read(4096)
            if b"RING" in chunk:
                rings.append(time.monotonic())
            buf += chunk
        self.assertEqual(buf.count(b"RING"), 2, buf)
        period = rings[1] - rings[0]
        self.assertAlmostEqual(period, self.sim.secs(6.0),
                               delta=self.sim.secs(6.0) * 0.25)
        self.assertIn(b"CONNECT 33600", buf)
        read_until(a, b"CONNECT 33600", 5)
        # S1 counted the rings; read it in online-command state.
        time.sleep(self.sim.secs(1.2))
        b.write(b"+++")
        read_until(b, b"OK\r\n", 5)
        self.assertIn(b"002", command(b, b"ATS1?", b"OK\r\n"))

    def test_acc11_x0_plain_connect_and_host_answer(self):
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0X0", b"OK\r\n")
        command(b, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(b, b"RING", 5)
        b.write(b"ATA\r")
        data, _ = read_until(a, b"CONNECT\r\n", 5)
        self.assertTrue(data.endswith(b"\r\nCONNECT\r\n"), data)
        data, _ = read_until(b, b"CONNECT 33600\r\n", 5)

    def test_acc12_eight_bit_clean_both_ways(self):
        a, b = self.connect_pair()
        payload = bytes(range(256)) * 4
        a.write(payload)
        got, _ = read_until(b, payload, 10)
        self.assertEqual(got, payload)
        b.write(payload[::-1])
        got, _ = read_until(a, payload[::-1], 10)
        self.assertEqual(got, payload[::-1])

    def test_acc12_throughput_is_line_rate(self):
        a, b = self.connect_pair()
        size = 48 * 1024
        payload = os.urandom(size)
        received = bytearray()

        def sender():
            a.write(payload)

        t = threading.Thread(target=sender)
        start = None
        t.start()
        deadline = time.monotonic() + 20
        while len(received) < size and time.monotonic() < deadline:
            chunk = b.read(8192)
            if chunk and start is None:
                start = time.monotonic()
                first = len(chunk)
            received += chunk
        end = time.monotonic()
        t.join()
        self.assertEqual(bytes(received), payload)
        rate = (size - first) / (end - start)
        expected = 33600 / 10 * self.scale
        # Generous: the machine is shared; the benchmark measures closely.
        self.assertGreater(rate, expected * 0.85)
        self.assertLess(rate, expected * 1.10)

    def test_slow_reader_loses_nothing_and_costs_no_cpu(self):
        a, b = self.connect_pair()
        payload = os.urandom(64 * 1024)
        writer = threading.Thread(target=a.write, args=(payload,))
        writer.start()

        def cpu():
            with open("/proc/%d/stat" % self.sim.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK")

        time.sleep(1.0)       # B reads nothing: the line backs up
        before = cpu()
        time.sleep(1.0)
        self.assertLess(cpu() - before, 0.3, "emulator spins")
        got, _ = read_until(b, payload, 20)
        writer.join()
        self.assertEqual(got, payload)

    def test_acc13_progress_lines(self):
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0W1S95=32", b"OK\r\n")
        command(b, b"ATE0S0=1", b"OK\r\n")
        a.write(b"ATDT555\r")
        data, _ = read_until(a, b"CONNECT 33600\r\n", 10)
        self.assertEqual(data, b"\r\nCARRIER 33600\r\n"
                               b"\r\nPROTOCOL: LAP-M\r\n"
                               b"\r\nCOMPRESSION: NONE\r\n"
                               b"\r\nCONNECT 33600\r\n")

    def test_acc14_escape_ato_and_ath(self):
        a, b = self.connect_pair()
        guard = self.sim.secs(1.0)
        time.sleep(guard * 1.2)
        a.write(b"+++")
        start = time.monotonic()
        data, _ = read_until(a, b"OK\r\n", 5)
        self.assertLess(time.monotonic() - start, guard + 0.3)
        self.assertEqual(read_until(b, b"+++", 2)[0], b"+++")
        # Back online: CONNECT again and data flows.
        command(a, b"ATO", b"CONNECT 33600\r\n")
        a.write(b"again")
        read_until(b, b"again", 5)
        # +++ inside continuous data does not escape.
        a.write(b"x+++y")
        read_until(b, b"x+++y", 5)
        self.assertNotIn(b"OK", read_for(a, guard * 2))
        time.sleep(guard * 1.2)
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        start = time.monotonic()
        self.assertEqual(command(a, b"ATH", b"OK\r\n"), b"\r\nOK\r\n")
        read_until(b, b"NO CARRIER", 5)
        self.assertLess(time.monotonic() - start, self.sim.secs(1.4) + 0.3)

    def test_acc15_byte_during_dialing_aborts_and_ringing_stops(self):
        a, b = self.sim.open("A"), self.sim.open("B")
        command(a, b"ATE0", b"OK\r\n")
        command(b, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(b, b"RING", 5)
        a.write(b"\r")
        self.assertEqual(read_until(a, b"NO CARRIER\r\n", 5)[0],
                         b"\r\nNO CARRIER\r\n")
        self.assertNotIn(b"RING", read_for(b, self.sim.secs(7.0)))
        self.assertEqual(command(a, b"AT", b"OK\r\n"), b"\r\nOK\r\n")

    def test_busy_when_callee_is_in_a_call(self):
        self.sim.stop()
        self.sim = simlib.Sim(("A:111", "B:555", "C:777"), self.scale)
        a, b = self.connect_pair()
        c = self.sim.open("C")
        command(c, b"ATE0", b"OK\r\n")
        c.write(b"ATDT555\r")
        self.assertEqual(read_until(c, b"BUSY\r\n", 5)[0], b"\r\nBUSY\r\n")

    def test_unknown_number_no_carrier_after_s7(self):
        a = self.sim.open("A")
        command(a, b"ATE0S7=3", b"OK\r\n")
        start = time.monotonic()
        a.write(b"ATDT999\r")
        read_until(a, b"NO CARRIER", 5)
        self.assertGreater(time.monotonic() - start, self.sim.secs(3.0))

    def test_acc16_dtr_via_control_socket(self):
        a, b = self.connect_pair()
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.connect(self.sim.path("A.ctl"))
        ctl.settimeout(2)
        self.assertIn(b"LINES DCD=1", ctl.recv(4096))
        # &D1: online-command state, call kept, ATO resumes.
        time.sleep(self.sim.secs(1.2))
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        command(a, b"AT&D1O", b"CONNECT")
        ctl.sendall(b"DTR 0\n")
        read_until(a, b"OK\r\n", 5)
        ctl.sendall(b"DTR 1\n")
        command(a, b"ATO", b"CONNECT")
        a.write(b"still")
        read_until(b, b"still", 5)
        # &D2: DTR drop hangs up; the far end sees NO CARRIER.
        time.sleep(self.sim.secs(1.2))
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        command(a, b"AT&D2O", b"CONNECT")
        ctl.sendall(b"DTR 0\n")
        read_until(b, b"NO CARRIER", 5)
        got = b""
        deadline = time.monotonic() + 3
        while b"DCD=0" not in got and time.monotonic() < deadline:
            got += ctl.recv(4096)
        self.assertIn(b"LINES DCD=0", got)
        ctl.close()

    def test_acc27_tcp_route_echo(self):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def echo():
            conn, _ = srv.accept()
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
            conn.close()

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        self.sim.stop()
        self.sim = simlib.Sim(("A:111",), self.scale,
                              ["--route", "7000=tcp:127.0.0.1:%d" % port])
        a = self.sim.open("A")
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT7000\r")
        read_until(a, b"CONNECT 33600\r\n", 5)
        a.write(b"ping through tcp")
        read_until(a, b"ping through tcp", 5)
        srv.close()

    def test_latency_delays_each_direction(self):
        self.sim.stop()
        # 2 s one-way at time scale 10: 0.2 s each way, 0.4 s round trip.
        self.sim = simlib.Sim(("A:111",), self.scale,
                              ["--route", "9=exec:cat", "--latency", "2000"])
        a = self.sim.open("A")
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT9\r")
        read_until(a, b"CONNECT", 5)
        start = time.monotonic()
        a.write(b"!")
        read_until(a, b"!", 5)
        rtt = time.monotonic() - start
        self.assertGreater(rtt, 0.38)
        self.assertLess(rtt, 0.9)

    def test_acc28_exec_route_and_exit_gives_no_carrier(self):
        self.sim.stop()
        self.sim = simlib.Sim(("A:111",), self.scale,
                              ["--route", "42=exec:head -c 5"])
        a = self.sim.open("A")
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT42\r")
        read_until(a, b"CONNECT 33600\r\n", 5)
        a.write(b"hello world")
        data, _ = read_until(a, b"NO CARRIER", 5)
        self.assertTrue(data.startswith(b"hello"), data)


if __name__ == "__main__":
    simlib.main()
