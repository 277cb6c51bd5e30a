#!/usr/bin/env python3
"""Transcripts (one file per call), the configuration file and the exit
contract (ready line, clean exit on SIGTERM, nothing left behind)."""

import os
import re
import signal
import subprocess
import tempfile
import time

import simlib
from simlib import command, read_until


class Transcripts(simlib.SimCase):
    scale = 10.0

    def test_one_file_per_call_with_commands_results_bytes(self):
        a, b = self.connect_pair()
        a.write(b"x" * 300)
        read_until(b, b"x" * 300, 5)
        b.write(b"y" * 20)
        read_until(a, b"y" * 20, 5)
        time.sleep(self.sim.secs(1.2))
        a.write(b"+++")
        read_until(a, b"OK\r\n", 5)
        command(a, b"ATH", b"OK\r\n")
        read_until(b, b"NO CARRIER", 5)
        files = self.sim.transcript_files()
        self.assertEqual(files, ["call-0001-A-555.log"])
        with open(os.path.join(self.sim.transcripts, files[0])) as f:
            text = f.read()
        self.assertIn("A command ATDT555", text)
        self.assertIn("B result RING", text)
        self.assertIn("A result CONNECT 33600", text)
        self.assertIn("A command ATH", text)
        self.assertRegex(text, r"end reason=\"caller hung up\" "
                               r"bytes_out=303 bytes_in=20 ")
        # Every line carries its time since the call started.
        for line in text.splitlines()[1:]:
            self.assertRegex(line, r"^\s+\d+\.\d{3} ")

    def test_failed_call_has_a_transcript_too(self):
        self.sim.admin("fault B busy")
        a = self.sim.open("A")
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        read_until(a, b"BUSY", 5)
        time.sleep(0.1)
        with open(os.path.join(self.sim.transcripts,
                               "call-0001-A-555.log")) as f:
            self.assertIn("result BUSY", f.read())


class ConfigAndExit(simlib.SimCase):
    modems = ()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modemsim-cfg-")

    def tearDown(self):
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, args):
        return subprocess.Popen([simlib.BINARY, "--dir", self.dir] + args,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def test_config_file_modems_faults_and_init(self):
        cfg = os.path.join(self.dir, "sim.conf")
        with open(cfg, "w") as f:
            f.write("# test configuration\n"
                    "rate = 9600\n"
                    "time-scale = 10\n"
                    "[modem A]\nnumber = 111\n"
                    "[modem B]\nnumber = 555\ninit = ATS0=1\n"
                    "fault = slow-answer 1\n")
        proc = self.start(["--config", cfg])
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        import serial
        a = serial.Serial(os.path.join(self.dir, "A"), timeout=0.05)
        b = serial.Serial(os.path.join(self.dir, "B"), timeout=0.05)
        command(a, b"ATE0", b"OK\r\n")
        a.write(b"ATDT555\r")
        data, _ = read_until(a, b"CONNECT 9600\r\n", 10)
        read_until(b, b"CONNECT 9600", 5)
        a.close()
        b.close()
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)
        proc.stdout.close()
        proc.stderr.close()

    def test_bad_config_names_file_line_and_key(self):
        cfg = os.path.join(self.dir, "bad.conf")
        with open(cfg, "w") as f:
            f.write("rate = 9600\n[modem A]\ncolour = blue\n")
        proc = self.start(["--config", cfg])
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(cfg + ":3: unknown key colour", err.decode())

    def test_sigterm_removes_links_and_sockets(self):
        ctl = os.path.join(self.dir, "admin")
        proc = self.start(["--modem", "A:1", "--modem", "B",
                           "--control", ctl])
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["A", "A.ctl", "B", "B.ctl", "admin"])
        self.assertTrue(os.readlink(os.path.join(self.dir, "A"))
                        .startswith("/dev/pts/"))
        proc.terminate()
        self.assertEqual(proc.wait(10), 0)
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(os.listdir(self.dir), [])

    def test_exits_when_its_directory_is_removed(self):
        sub = os.path.join(self.dir, "ports")
        os.mkdir(sub)
        proc = subprocess.Popen([simlib.BINARY, "--dir", sub, "--modem", "A"],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        for name in os.listdir(sub):
            os.unlink(os.path.join(sub, name))
        os.rmdir(sub)
        self.assertEqual(proc.wait(10), 0)
        proc.stdout.close()
        proc.stderr.close()

    def test_usage_errors_exit_2(self):
        # Everything the command line alone gets wrong is a usage error
        # (2), never a set-up failure (1).
        for args in (["--modem", "A", "--rate", "abc"],
                     ["--modem", "A", "--time-scale", "0"],
                     ["--modem", "A", "--route", "1=tcp:10.0.0.1:25"],
                     ["--modem", "A", "--route", "1=ftp:x"],
                     ["--modem", "A", "--route", "1=exec:"],
                     ["--modem", "A:1", "--modem", "B:1"],
                     [],  # no --modem
                     # names become file names in --dir
                     ["--modem", "a b"], ["--modem", ".hidden"],
                     ["--modem", "../x"]):
            proc = self.start(args)
            out, err = proc.communicate(timeout=10)
            self.assertEqual(proc.returncode, 2, (args, err))
            self.assertEqual(out, b"", args)
            self.assertIn(b"usage:", err, args)
        self.assertEqual(os.listdir(self.dir), [])

    def test_modem_or_route_given_twice_is_an_error_naming_it(self):
        for args, what in (
                (["--modem", "A:1", "--modem", "B:2", "--modem", "A"],
                 b"--modem A given twice"),
                (["--modem", "A", "--route", "5=exec:cat",
                  "--route", "5=exec:true"], b"--route 5 given twice")):
            proc = self.start(args)
            out, err = proc.communicate(timeout=10)
            self.assertEqual(proc.returncode, 2, args)
            self.assertEqual(out, b"", args)
            self.assertIn(what, err, args)
        self.assertEqual(os.listdir(self.dir), [])

    def test_modem_section_given_twice_is_an_error_naming_it(self):
        cfg = os.path.join(self.dir, "twice.conf")
        with open(cfg, "w") as f:
            f.write("[modem A]\nnumber = 1\n[modem B]\n"
                    "[modem A]\nrate = 9600\n")
        proc = self.start(["--config", cfg])
        out, err = proc.communicate(timeout=10)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(cfg.encode() + b":4: [modem A] given twice", err)

    def test_command_line_modem_completes_its_config_section(self):
        # The file names the modem, the command line gives its number:
        # not a duplicate, the documented override.
        cfg = os.path.join(self.dir, "base.conf")
        with open(cfg, "w") as f:
            f.write("[modem A]\ninit = ATS0=1\n")
        proc = self.start(["--config", cfg, "--modem", "A:7",
                           "--modem", "B"])
        self.assertEqual(proc.stdout.readline(), b"ready\n")
        import serial
        a = serial.Serial(os.path.join(self.dir, "A"), timeout=0.05)  # DTR
        b = serial.Serial(os.path.join(self.dir, "B"), timeout=0.05)
        command(b, b"ATE0", b"OK\r\n")
        b.write(b"ATDT7\r")
        read_until(b, b"CONNECT", 15)
        read_until(a, b"CONNECT", 5)
        a.close()
        b.close()
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(10), 0)
        proc.stdout.close()
        proc.stderr.close()


if __name__ == "__main__":
    simlib.main()
