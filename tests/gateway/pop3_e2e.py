"""End-to-end tests of ferry's POP3 service with real clients.

Each test starts the real POP3 listener in its own process
($POP3_TEST_SERVER, tests/gateway/pop3_test_server.cc) over a fresh
temporary directory holding Maildirs, a users file and a throw-away
certificate made by `openssl req -x509`, then talks to it with Python's
poplib, curl and raw sockets, and checks what a user would: the bytes
retrieved equal the Maildir files (with CRLF line ends), which files are
left on disk, reply codes.  Run inside tests/netns-run.sh (loopback only).
"""

import base64
import glob
import hashlib
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

SERVER = os.environ.get("POP3_TEST_SERVER", "")
SHARED = os.environ.get("FERRY_SHARED_DIR", "")
PASSWORDS = {"alice": "alice-secret", "bob": "b0b pass"}

# Shapes that matter on the wire: CRLF stored as is, LF-only converted,
# lines starting with "." stuffed, a last line without a terminator.
DOTS_CRLF = (b"From: carol@example.org\r\nSubject: dots\r\n\r\n"
             b".hidden line\r\n..two dots\r\n.\r\nend\r\n")
LF_ONLY = (b"From: dave@example.org\nSubject: unix\n\nline one\n"
           b".dot on unix\nlast line without newline")


def pbkdf2_hash(password, iterations=1000):
    # gateway/users.h format; few iterations keep the tests quick.
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt,
                              iterations, 32)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations,
                                       base64.b64encode(salt).decode(),
                                       base64.b64encode(key).decode())


def wire(stored):
    """What RETR must deliver for a stored file, before dot-stuffing."""
    out = bytearray()
    prev = b""
    for i in range(len(stored)):
        c = stored[i:i + 1]
        if c == b"\n" and prev != b"\r":
            out += b"\r"
        out += c
        prev = c
    if out and not out.endswith(b"\r\n"):
        out += b"\n" if out.endswith(b"\r") else b"\r\n"
    return bytes(out)


def corpus_messages(n):
    files = sorted(glob.glob(os.path.join(SHARED, "corpus", "messages",
                                          "*.eml")))
    return files[:n]


class Server:
    """One pop3_test_server process."""

    def __init__(self, root, config, trusted, idle_ms=None):
        args = [SERVER, "--config", config]
        if trusted:
            args.append("--trusted-local")
        if idle_ms is not None:
            args += ["--idle-timeout", str(idle_ms)]
        self.log_path = os.path.join(root, "server-%d.log" % time.time_ns())
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self.log)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError("server did not start: %r, log: %s" %
                               (line, self.read_log()))
        host, port = line.split()[1].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


class Pop3Test(unittest.TestCase):
    trusted = True
    idle_ms = None

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="ferry-pop3-")
        self.mail_root = os.path.join(self.root, "mail")
        os.mkdir(self.mail_root)
        with open(os.path.join(self.root, "users"), "w") as f:
            for user, pw in PASSWORDS.items():
                f.write("%s:%s\n" % (user, pbkdf2_hash(pw)))
        open(os.path.join(self.root, "aliases"), "w").close()
        self.cert = os.path.join(self.root, "cert.pem")
        key = os.path.join(self.root, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", self.cert, "-days", "2",
             "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True)
        self.config = os.path.join(self.root, "ferry.conf")
        with open(self.config, "w") as f:
            f.write("[local]\nmail_root = %s\nusers_file = %s\n"
                    "aliases_file = %s\n[tls]\ncertificate = %s\nkey = %s\n"
                    % (self.mail_root, os.path.join(self.root, "users"),
                       os.path.join(self.root, "aliases"), self.cert, key))
        self.files = []  # alice's messages in delivery order
        for i, body in enumerate([DOTS_CRLF, LF_ONLY]):
            self.deliver("alice", "100%d.M1P1.office" % i, body)
        self.server = Server(self.root, self.config, self.trusted,
                             self.idle_ms)

    def tearDown(self):
        # A graceful stop exits 0; a sanitizer report or a crash does not.
        rc = self.server.stop()
        log = self.server.read_log()
        shutil.rmtree(self.root)
        self.assertEqual(rc, 0, log)
        self.assertNotIn("runtime error", log)

    # -- helpers -----------------------------------------------------------

    def deliver(self, user, name, body):
        box = os.path.join(self.mail_root, user)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(box, sub), exist_ok=True)
        path = os.path.join(box, "new", name)
        with open(path, "wb") as f:
            f.write(body)
        # Distinct modification times fix the message order.
        t = 1700000000 + len(self.files)
        os.utime(path, (t, t))
        self.files.append(path)
        return path

    def tls_context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx

    def plain_login(self, user="alice"):
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        p.user(user)
        p.pass_(PASSWORDS[user])
        return p

    def box_files(self, user="alice"):
        box = os.path.join(self.mail_root, user)
        return sorted(os.path.relpath(p, box)
                      for sub in ("new", "cur")
                      for p in glob.glob(os.path.join(box, sub, "*")))

    def raw(self):
        s = socket.create_connection((self.server.host, self.server.port),
                                     timeout=30)
        return s, s.makefile("rb")

    def wait_unlocked(self, user="alice"):
        # The server releases the lock when it notices the dropped
        # connection; poll with real logins until it has.
        deadline = time.time() + 20
        while True:
            p = poplib.POP3(self.server.host, self.server.port, timeout=30)
            try:
                p.user(user)
                p.pass_(PASSWORDS[user])
                return p
            except poplib.error_proto as e:
                p.close()
                if b"IN-USE" not in e.args[0] or time.time() > deadline:
                    raise
                time.sleep(0.1)


class TrustedLocalTest(Pop3Test):
    """Plain USER/PASS on a listener marked trusted_local."""

    def setUp(self):
        super().setUp()
        for path in corpus_messages(5):
            with open(path, "rb") as f:
                self.deliver("alice", "2%03d.M2P2.office" %
                             len(self.files), f.read())

    def test_retrieved_bytes_equal_maildir_files(self):
        p = self.plain_login()
        count, octets = p.stat()
        self.assertEqual(count, len(self.files))
        stored = []
        for path in self.files:
            with open(path, "rb") as f:
                stored.append(f.read())
        self.assertEqual(octets, sum(len(wire(b)) for b in stored))
        _, listing, _ = p.list()
        self.assertEqual(listing, [b"%d %d" % (i + 1, len(wire(b)))
                                   for i, b in enumerate(stored)])
        _, uids, _ = p.uidl()
        self.assertEqual(uids, [b"%d %s" % (i + 1, os.path.basename(f)
                                            .encode())
                                for i, f in enumerate(self.files)])
        for i, body in enumerate(stored):
            _, lines, _ = p.retr(i + 1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", wire(body),
                             self.files[i])
        p.quit()
        # Read mail moves to cur/ with the Seen flag; nothing is removed.
        self.assertEqual(self.box_files(),
                         sorted("cur/%s:2,S" % os.path.basename(f)
                                for f in self.files))

    def test_dot_lines_are_stuffed_on_the_wire(self):
        s, r = self.raw()
        r.readline()
        s.sendall(b"USER alice\r\nPASS alice-secret\r\nRETR 1\r\nRETR 2\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        self.assertTrue(r.readline().startswith(b"+OK"))
        got = b""
        for _ in range(2):
            self.assertTrue(r.readline().startswith(b"+OK"))
            while True:
                line = r.readline()
                got += line
                if line == b".\r\n":
                    break
        self.assertIn(b"\r\n..hidden line\r\n...two dots\r\n..\r\nend\r\n"
                      b".\r\n", got)
        self.assertIn(b"\r\nline one\r\n..dot on unix\r\n"
                      b"last line without newline\r\n.\r\n", got)
        r.close()
        s.close()

    def test_top_sends_header_and_n_lines(self):
        p = self.plain_login()
        _, lines, _ = p.top(1, 0)
        self.assertEqual(lines, [b"From: carol@example.org",
                                 b"Subject: dots", b""])
        _, lines, _ = p.top(2, 2)
        self.assertEqual(lines[-3:], [b"", b"line one", b".dot on unix"])
        p.quit()

    def test_dele_and_quit_removes(self):
        p = self.plain_login()
        p.dele(1)
        p.dele(len(self.files))
        self.assertEqual(p.stat()[0], len(self.files) - 2)
        p.quit()
        names = [os.path.basename(f) for f in self.files]
        left = {os.path.basename(f).split(":")[0] for f in self.box_files()}
        self.assertEqual(left, set(names) - {names[0], names[-1]})
        self.server.stop()  # the disconnect line is written after QUIT
        self.assertIn("removed=2", self.server.read_log())

    def test_dele_without_quit_keeps_messages(self):
        p = self.plain_login()
        p.dele(1)
        p.dele(2)
        p.sock.shutdown(socket.SHUT_RDWR)  # dropped: no UPDATE state
        p.close()
        p2 = self.wait_unlocked()
        self.assertEqual(p2.stat()[0], len(self.files))
        p2.quit()
        self.assertEqual(len(self.box_files()), len(self.files))

    def test_rset_undoes_dele(self):
        p = self.plain_login()
        p.dele(1)
        p.rset()
        p.quit()
        self.assertEqual(len(self.box_files()), len(self.files))

    def test_second_concurrent_login_refused(self):
        p1 = self.plain_login()
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        p.user("alice")
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_(PASSWORDS["alice"])
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [IN-USE]"))
        p.quit()
        p1.quit()
        p2 = self.plain_login()  # the lock went with the first session
        p2.quit()

    def test_bad_password_refused(self):
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        p.user("alice")
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("wrong")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"))
        p.user("nobody")
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_("alice-secret")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"))
        p.user("alice")
        p.pass_(PASSWORDS["alice"])
        p.quit()

    def test_empty_mailbox_for_user_without_mail(self):
        p = self.plain_login("bob")
        self.assertEqual(p.stat(), (0, 0))
        p.quit()

    def test_capa_offers_user_on_trusted_listener(self):
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        caps = p.capa()
        for cap in ("USER", "UIDL", "TOP", "RESP-CODES", "STLS"):
            self.assertIn(cap, caps)
        p.quit()

    def test_log_counts_the_session(self):
        p = self.plain_login()
        p.retr(1)
        p.dele(2)
        p.quit()
        self.server.stop()
        log = self.server.read_log()
        self.assertRegex(log, r"P\w+: login user=alice messages=%d" %
                         len(self.files))
        self.assertRegex(log, r"P\w+: disconnect user=alice retr=1 top=0 "
                              r"dele=1 removed=1 bytes=\d+ status=quit")


class TlsListenerTest(Pop3Test):
    """A listener that is not trusted_local: TLS before USER/PASS."""
    trusted = False

    def test_user_refused_before_stls(self):
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        caps = p.capa()
        self.assertIn("STLS", caps)
        self.assertNotIn("USER", caps)
        with self.assertRaises(poplib.error_proto) as cm:
            p.user("alice")
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"))
        with self.assertRaises(poplib.error_proto):
            p.pass_("alice-secret")
        p.quit()

    def test_stls_then_login_and_retrieve(self):
        p = poplib.POP3(self.server.host, self.server.port, timeout=30)
        p.stls(context=self.tls_context())
        caps = p.capa()
        self.assertIn("USER", caps)
        self.assertNotIn("STLS", caps)
        p.user("alice")
        p.pass_(PASSWORDS["alice"])
        for i, path in enumerate(self.files):
            with open(path, "rb") as f:
                body = f.read()
            _, lines, _ = p.retr(i + 1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", wire(body))
        p.dele(1)
        p.quit()
        self.assertEqual(len(self.box_files()), len(self.files) - 1)
        self.assertIn("tls protocol=TLS", self.server.read_log())

    def test_bytes_pipelined_after_stls_are_discarded(self):
        s, r = self.raw()
        r.readline()
        s.sendall(b"STLS\r\nUSER alice\r\n")
        self.assertTrue(r.readline().startswith(b"+OK"))
        t = self.tls_context().wrap_socket(s, server_hostname="localhost")
        tr = t.makefile("rb")
        t.sendall(b"NOOP\r\n")  # only this one is answered
        self.assertTrue(tr.readline().startswith(b"-ERR"))
        t.sendall(b"PASS alice-secret\r\n")
        self.assertTrue(tr.readline().startswith(b"-ERR send USER first"))
        tr.close()
        t.close()

    def test_curl_retrieves_with_ssl_reqd(self):
        if shutil.which("curl") is None:
            self.skipTest("curl not installed")
        url = "pop3://127.0.0.1:%d/" % self.server.port
        common = ["curl", "-sS", "--ssl-reqd", "--cacert", self.cert,
                  "--user", "alice:" + PASSWORDS["alice"]]
        bodies = []
        for path in self.files:
            with open(path, "rb") as f:
                bodies.append(f.read())
        listing = subprocess.run(common + [url], check=True,
                                 capture_output=True, timeout=60).stdout
        self.assertEqual(listing.split(b"\r\n")[0].split(b" ")[0], b"1")
        for i, body in enumerate(bodies):
            got = subprocess.run(common + [url + str(i + 1)], check=True,
                                 capture_output=True, timeout=60).stdout
            self.assertEqual(got, wire(body))

    def test_curl_plain_refused_by_ssl_reqd_server_side(self):
        # Without TLS, curl's USER is refused: no credentials in the clear.
        if shutil.which("curl") is None:
            self.skipTest("curl not installed")
        res = subprocess.run(
            ["curl", "-sS", "--user", "alice:" + PASSWORDS["alice"],
             "pop3://127.0.0.1:%d/" % self.server.port],
            capture_output=True, timeout=60)
        self.assertNotEqual(res.returncode, 0)
        self.assertNotIn("login user=alice", self.server.read_log())


class TimeoutTest(Pop3Test):
    """Autologout, with the idle timeout scaled down to one second."""
    idle_ms = 1000

    def test_idle_session_is_logged_out_without_update(self):
        s, r = self.raw()
        r.readline()
        s.sendall(b"USER alice\r\nPASS alice-secret\r\nDELE 1\r\n")
        for _ in range(3):
            self.assertTrue(r.readline().startswith(b"+OK"))
        start = time.time()
        self.assertTrue(r.readline().startswith(b"-ERR autologout"))
        self.assertEqual(r.readline(), b"")  # closed
        self.assertGreater(time.time() - start, 0.5)
        r.close()
        s.close()
        self.assertEqual(len(self.box_files()), len(self.files))
        p = self.wait_unlocked()
        p.quit()
        self.assertIn("status=timeout", self.server.read_log())


if __name__ == "__main__":
    if not SERVER or not os.access(SERVER, os.X_OK):
        print("POP3_TEST_SERVER not set or not executable", file=sys.stderr)
        sys.exit(1)
    unittest.main(verbosity=2)
