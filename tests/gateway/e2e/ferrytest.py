"""Helpers for ferryd's end-to-end tests.

A test starts a real ferryd (the binary named by $FERRYD) with a config,
users, aliases and a throw-away TLS certificate in a fresh temporary
directory, talks to it over loopback and looks at what arrived: Maildir
files, reply codes, the log.  Tests run inside tests/netns-run.sh (a
loopback-only network namespace), so nothing can leave the machine.
"""

import base64
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

FERRYD = os.environ.get("FERRYD", "")
SHARED = os.environ.get("FERRY_SHARED_DIR", "")

LOCAL_DOMAIN = "office.example"
PASSWORDS = {"alice": "alice-secret", "bob": "b0b pass"}


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def pbkdf2_hash(password, iterations=1000):
    # Same format as gateway/users.h; few iterations keep tests quick.
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations,
                              32)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations,
                                       base64.b64encode(salt).decode(),
                                       base64.b64encode(key).decode())


def stop_process(proc, log_file, timeout=15):
    """SIGTERM, SIGKILL after `timeout` seconds; closes the log file the
    process wrote to; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log_file.close()
    return proc.returncode


def fail_on_sanitizer_report(log_path, who):
    """Sanitizer builds: a report in a daemon's log fails the test that
    owns the daemon, even if every reply looked right."""
    if not os.path.exists(log_path):
        return
    with open(log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace")
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:"):
        if marker in log:
            keep = log_path + ".kept"
            shutil.copy(log_path, keep)
            raise AssertionError("%s in %s's log (%s)" % (marker, who, keep))


class Ferryd:
    """One ferryd process with its own directory.

    Listeners: `relay` (127.0.0.1, STARTTLS), `submission` (127.0.0.1,
    AUTH required, adds Date/Message-ID), `trusted` (127.0.0.1, AUTH
    without TLS), `v6` (::1) when IPv6 loopback exists.
    """

    def __init__(self, smtp=None, greeting_pause="0s", extra="",
                 office_networks="127.0.0.0/8, ::1/128"):
        if not FERRYD:
            raise unittest.SkipTest("FERRYD not set")
        self.dir = tempfile.mkdtemp(prefix="ferry-e2e-")
        self.mail_root = os.path.join(self.dir, "mail")
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.spool)
        os.makedirs(self.mail_root)  # the postmaster creates it
        self.ports = {
            "relay": free_port(),
            "submission": free_port(),
            "trusted": free_port(),
        }
        self.has_v6 = ipv6_available()
        if self.has_v6:
            self.ports["v6"] = free_port(socket.AF_INET6, "::1")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=mx.office.example", "-keyout", self.key,
             "-out", self.cert],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(self.dir, "users"), "w") as f:
            for user, pw in PASSWORDS.items():
                f.write("%s:%s\n" % (user, pbkdf2_hash(pw)))
            f.write("carol:!\n")
        with open(os.path.join(self.dir, "aliases"), "w") as f:
            f.write("team: alice, bob\n")
            f.write("mixed: alice, friend@remote.example\n")
        settings = {
            "max_message_size": "2M",
            "max_line_length": "4K",
            "max_recipients": "5",
            "command_timeout": "3s",
            "data_block_timeout": "3s",
            "data_done_timeout": "20s",
            "greeting_pause": greeting_pause,
        }
        settings.update(smtp or {})
        lines = [
            "[ferryd]",
            "hostname = mx.office.example",
            "spool = " + self.spool,
            "control_socket = " + os.path.join(self.dir, "ctl.sock"),
            "lock_dir = " + self.dir,
            "",
            "[listener relay]",
            "address = 127.0.0.1:%d" % self.ports["relay"],
            "",
            "[listener submission]",
            "address = 127.0.0.1:%d" % self.ports["submission"],
            "mode = submission",
            "require_auth = yes",
            "",
            "[listener trusted]",
            "address = 127.0.0.1:%d" % self.ports["trusted"],
            "trusted_local = yes",
            "",
        ]
        if self.has_v6:
            lines += ["[listener v6]",
                      "address = [::1]:%d" % self.ports["v6"], ""]
        lines += ["[smtp]"] + ["%s = %s" % kv for kv in settings.items()]
        lines += [
            "",
            "[tls]",
            "certificate = " + self.cert,
            "key = " + self.key,
            "",
            "[local]",
            "domains = " + LOCAL_DOMAIN,
            "mail_root = " + self.mail_root,
            "users_file = " + os.path.join(self.dir, "users"),
            "aliases_file = " + os.path.join(self.dir, "aliases"),
            "",
            "[rules]",
            "office_networks = " + office_networks,
            extra,
        ]
        self.config = os.path.join(self.dir, "ferry.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(self.dir, "ferryd.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([FERRYD, "--config", self.config],
                                     stdout=self._log, stderr=self._log)
        want = len(self.ports)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("ferryd exited %d:\n%s" %
                                     (self.proc.returncode, self.log()))
            if self.log().count(" listening ") >= want:
                return self
            time.sleep(0.05)
        raise AssertionError("ferryd did not start:\n" + self.log())

    def stop(self):
        """SIGTERM; returns the exit status."""
        if self.proc is None:
            return None
        rc = stop_process(self.proc, self._log)
        self.proc = None
        return rc

    def cleanup(self):
        self.stop()
        fail_on_sanitizer_report(self.log_path, "ferryd")
        if os.environ.get("FERRY_KEEP_TMP"):
            print("kept", self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def maildir(self, user):
        """Contents of USER's Maildir new/ files, oldest name first."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.mail_root, user,
                                                  "new", "*"))):
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def wait_maildir(self, user, count, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.maildir(user)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.maildir(user)


def strip_received(stored):
    """Splits ferry's Received: field (first field, with folded lines)
    off a stored message; returns (received, rest)."""
    assert stored.startswith(b"Received: "), stored[:80]
    end = 0
    while True:
        nl = stored.index(b"\r\n", end)
        end = nl + 2
        if stored[end:end + 1] not in (b"\t", b" "):
            return stored[:end], stored[end:]


class RawClient:
    """A line-level SMTP client for the malformed cases."""

    def __init__(self, port, host="127.0.0.1", family=socket.AF_INET,
                 greet=True, timeout=15):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        if greet:
            code, _ = self.reply()
            assert code == 220, code

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def reply(self):
        """(code, [lines]) of one possibly multi-line reply; (None, []) on
        EOF."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return (None, lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return (int(text[:3]), lines)

    def closed(self, timeout=10):
        """True if the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


class FerrydTestCase(unittest.TestCase):
    """Starts one ferryd per test class (settings in SMTP/PAUSE)."""

    SMTP = None
    PAUSE = "0s"

    @classmethod
    def setUpClass(cls):
        cls.ferryd = Ferryd(smtp=cls.SMTP, greeting_pause=cls.PAUSE).start()

    @classmethod
    def tearDownClass(cls):
        cls.ferryd.cleanup()

    def port(self, name="relay"):
        return self.ferryd.ports[name]

    def raw(self, name="relay", **kw):
        c = RawClient(self.port(name), **kw)
        self.addCleanup(c.close)
        return c

    def raw_ready(self, name="relay"):
        """A raw client past EHLO, MAIL and one local RCPT."""
        c = self.raw(name)
        self.assertEqual(c.cmd("EHLO client.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<sender@remote.example>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<alice@%s>" % LOCAL_DOMAIN)[0], 250)
        return c


def main():
    unittest.main(verbosity=2)
