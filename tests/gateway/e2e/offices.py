"""Two (or more) ferry offices joined by ferry-modemsim, for call tests.

An Office is one ferryd with its own folder: configuration, users, link
key and certificate (Ed25519, made with openssl), spool, Maildirs and
control socket.  A Line is one ferry-modemsim with a modem per office and
an admin socket for faults.  Times: the emulator runs SCALE times faster
and each ferryd's modem profile and scheduler clock follow it, so a 30 s
backoff passes in 1.5 s while the proportions stay.
"""
import glob
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

from ferrytest import (fail_on_sanitizer_report, free_port, pbkdf2_hash,
                       stop_process)

FERRYD = os.environ.get("FERRYD")
FERRYCTL = os.environ.get("FERRYCTL")
MODEMSIM = os.environ.get("FERRY_MODEMSIM")
SCALE = float(os.environ.get("FERRY_CALL_SCALE", "20"))


def make_identity(directory, name):
    """Ed25519 key + self-signed certificate; returns the fingerprint."""
    key = os.path.join(directory, "link.key")
    crt = os.path.join(directory, "link.crt")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519",
                    "-out", key], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", key,
                    "-subj", "/CN=" + name, "-days", "3650", "-out", crt],
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    out = subprocess.run(["openssl", "x509", "-in", crt, "-noout",
                          "-fingerprint", "-sha256"], check=True,
                         capture_output=True, text=True).stdout
    hexpart = out.strip().split("=", 1)[1].replace(":", "").lower()
    return key, crt, "sha256:" + hexpart


class Line:
    """ferry-modemsim with one modem per (name, number)."""

    def __init__(self, modems, rate=33600, extra_args=()):
        if not MODEMSIM:
            raise RuntimeError("FERRY_MODEMSIM not set")
        self.dir = tempfile.mkdtemp(prefix="ferry-line-")
        self.admin_path = os.path.join(self.dir, "admin.sock")
        args = [MODEMSIM, "--dir", self.dir, "--rate", str(rate),
                "--time-scale", str(SCALE), "--train-ms", "500",
                "--control", self.admin_path]
        for name, number in modems:
            args += ["--modem", "%s:%s" % (name, number)]
        args += list(extra_args)
        self.log_path = os.path.join(self.dir, "modemsim.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self._log)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            text = self.log()
            self.stop()  # never leave it running (it holds ctest's pipes)
            raise AssertionError("modemsim did not start: %r\n%s"
                                 % (line, text))

    def device(self, name):
        return os.path.join(self.dir, name)

    def admin(self, command):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.admin_path)
        s.sendall(command.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        s.close()
        text = reply.decode().strip()
        if not text.startswith("ok"):
            raise AssertionError("modemsim admin %r: %s" % (command, text))
        return text

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        stop_process(self.proc, self._log, timeout=10)
        if os.environ.get("FERRY_KEEP_TMP"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class Office:
    """One ferryd: domain NAME.example, users alice and bob."""

    USERS = {"alice": "alice-pw", "bob": "bob-pw"}

    def __init__(self, name):
        if not FERRYD:
            raise RuntimeError("FERRYD not set")
        self.name = name
        self.domain = name + ".example"
        self.dir = tempfile.mkdtemp(prefix="ferry-office-%s-" % name)
        self.mail_root = os.path.join(self.dir, "mail")
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.mail_root)
        os.makedirs(self.spool)
        self.ctl = os.path.join(self.dir, "ctl.sock")
        self.smtp_port = free_port()
        self.key, self.crt, self.fingerprint = make_identity(self.dir, name)
        with open(os.path.join(self.dir, "users"), "w") as f:
            for user, pw in self.USERS.items():
                f.write("%s:%s\n" % (user, pbkdf2_hash(pw)))
        with open(os.path.join(self.dir, "aliases"), "w") as f:
            f.write("postmaster: alice\n")
        self.log_path = os.path.join(self.dir, "ferryd.log")
        self.proc = None
        self.config = os.path.join(self.dir, "ferry.conf")

    def configure(self, peers="", modems="", link_listen=None):
        lines = [
            "[ferryd]",
            "hostname = mail." + self.domain,
            "spool = " + self.spool,
            "control_socket = " + self.ctl,
            "lock_dir = " + self.dir,
            "",
            "[listener office]",
            "address = 127.0.0.1:%d" % self.smtp_port,
            "",
            "[local]",
            "domains = " + self.domain,
            "mail_root = " + self.mail_root,
            "users_file = " + os.path.join(self.dir, "users"),
            "aliases_file = " + os.path.join(self.dir, "aliases"),
            "",
            "[rules]",
            "office_networks = 127.0.0.0/8",
            "",
            "[link]",
            "certificate = " + self.crt,
            "key = " + self.key,
        ]
        if link_listen:
            lines.append("listen = " + link_listen)
        lines += ["", peers, "", modems, ""]
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def start(self, scaled=True):
        """scaled=False runs ferryd on the wall clock (no --clock-scale),
        as in production: the scheduler then keeps its state across
        restarts."""
        self._log = open(self.log_path, "ab")
        args = [FERRYD, "--config", self.config]
        if scaled:
            args += ["--clock-scale", str(SCALE)]
        self.proc = subprocess.Popen(args, stdout=self._log,
                                     stderr=self._log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("ferryd %s exited %d:\n%s" %
                                     (self.name, self.proc.returncode,
                                      self.log()))
            if " listening listener=" in self.log():
                return self
            time.sleep(0.05)
        raise AssertionError("ferryd %s did not start:\n%s" %
                             (self.name, self.log()))

    def stop(self):
        if self.proc is None:
            return None
        rc = stop_process(self.proc, self._log, timeout=20)
        self.proc = None
        return rc

    def cleanup(self):
        self.stop()
        fail_on_sanitizer_report(self.log_path, "ferryd " + self.name)
        if os.environ.get("FERRY_KEEP_TMP"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def send(self, sender, recipients, message):
        """Hands a message over SMTP with Python's smtplib."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            s.sendmail(sender, recipients, message)

    def ctl_run(self, *args, timeout=120):
        return subprocess.run([FERRYCTL, "-S", self.ctl] + list(args),
                              capture_output=True, text=True,
                              timeout=timeout)

    def maildir(self, user):
        out = []
        for path in sorted(glob.glob(os.path.join(self.mail_root, user,
                                                  "new", "*"))):
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def wait_for(self, predicate, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError("%s: timed out waiting for %s\n--- log:\n%s" %
                             (self.name, what, self.log()[-6000:]))


def body_of(stored):
    """A delivered message without the trace headers ferry adds at the
    top (Return-Path, Received, Delivered-To)."""
    lines = stored.split(b"\r\n") if b"\r\n" in stored else \
        stored.split(b"\n")
    sep = b"\r\n" if b"\r\n" in stored else b"\n"
    i = 0
    while i < len(lines):
        low = lines[i].lower()
        if low.startswith((b"return-path:", b"received:", b"delivered-to:")):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
            continue
        break
    return sep.join(lines[i:])


def normalize_eol(data):
    return re.sub(rb"\r?\n", b"\r\n", data)
