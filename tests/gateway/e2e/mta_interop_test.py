#!/usr/bin/env python3
"""ferryd receiving from real MTAs.  A private Postfix instance and a
private Exim 4 daemon each relay to ferryd; 8-bit, UTF-8 with SMTPUTF8,
corpus messages with lines over 998 octets and a 1 MiB message arrive in
the Maildir byte for byte as the first client sent them, apart from the
two trace fields in front (ferry's Received:, then the MTA's).  Each MTA
takes ferryd's STARTTLS offer.

BDAT: Exim's smtp transport sends BDAT when the server offers CHUNKING,
and ferryd's log (`queued ... body=bdat`) shows it did.  Postfix 3.7's
smtp(8) client has no BDAT at all (Postfix implements CHUNKING in its
SMTP server only; the smtp binary does not contain the command), so the
Postfix class pins `body=data`.

Path: smtplib -> MTA's SMTP server (127.0.0.1:P) -> MTA's queue and SMTP
client -> ferryd relay listener (127.0.0.1:F) -> Maildir.

Each MTA lives in the test's temporary directory: its own configuration,
queue, log, one loopback listener, the next hop = ferryd.  Postfix is
stopped with `postfix -c DIR stop` (and its master by PID if it outlives
that), Exim (run in the foreground, our child) by its PID.  Both need
root; the classes skip without root or without the MTA
(tools/install-deps.sh installs Postfix and unpacks Exim, whose package
conflicts with Postfix's).  ferryd is not an SMTP client yet, so there
is no reverse direction.
"""


import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrytest as ft  # noqa: E402

D = ft.LOCAL_DOMAIN
POSTFIX = shutil.which("postfix", path="/usr/sbin:/usr/bin:/sbin:/bin")
EXIM = os.environ.get("FERRY_EXIM") or (
    shutil.which("exim4", path="/usr/sbin:/usr/local/lib/ferry/exim4/usr/"
                 "sbin"))
CORPUS = os.path.join(ft.SHARED, "corpus", "messages") if ft.SHARED else ""
# Corpus messages with a line over 998 octets (0835: 14656; 0997: 8-bit).
LONG_LINES = ["0835", "0037", "0997"]

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.peer.example
mydomain = peer.example
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
relayhost = [127.0.0.1]:{ferryd_port}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtputf8_enable = yes
# Leave the client's header and body alone: no header rewriting for
# 127.0.0.1, no MIME conversion, no folding of long lines on output.
local_header_rewrite_clients =
disable_mime_output_conversion = yes
smtp_line_length_limit = 0
message_size_limit = 20480000
smtp_tls_security_level = may
biff = no
append_dot_mydomain = no
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
notify_classes =
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
smtp_connect_timeout = 10s
"""

MASTER_CF = """\
127.0.0.1:{smtpd_port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix instance under its own temporary directory."""

    def __init__(self, ferryd_port):
        self.dir = tempfile.mkdtemp(prefix="ferry-postfix-")
        # Postfix's daemons run as `postfix` and must reach their config
        # and queue by absolute path.
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, "etc")
        for sub in ("etc", "spool", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        shutil.chown(os.path.join(self.dir, "data"), "postfix", "postfix")
        self.port = ft.free_port()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(dir=self.dir, ferryd_port=ferryd_port))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(smtpd_port=self.port))
        self.master_pid = None

    def postfix(self, *args):
        return subprocess.run([POSTFIX, "-c", self.etc] + list(args),
                              capture_output=True, text=True, timeout=60)

    def start(self):
        r = self.postfix("check")
        if r.returncode != 0:
            raise AssertionError("postfix check: " + r.stdout + r.stderr)
        r = self.postfix("start")
        if r.returncode != 0:
            raise AssertionError("postfix start: " + r.stdout + r.stderr +
                                 self.log())
        pid_file = os.path.join(self.dir, "spool", "pid", "master.pid")
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with open(pid_file) as f:
                    self.master_pid = int(f.read().strip())
                break
            except (OSError, ValueError):
                time.sleep(0.1)
        if self.master_pid is None:
            raise AssertionError("postfix master did not start:\n" +
                                 self.log())
        # Ready when smtpd's port answers.
        while time.time() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                    s.noop()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("postfix smtpd not listening:\n" + self.log())

    def stop(self):
        if self.master_pid is None:
            return
        self.postfix("stop")
        deadline = time.time() + 15
        while time.time() < deadline and self._alive(self.master_pid):
            time.sleep(0.1)
        if self._alive(self.master_pid):
            os.kill(self.master_pid, signal.SIGKILL)
        self.master_pid = None

    @staticmethod
    def _alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is gone for our purposes (postfix start double-forks,
        # so the master is not our child; this is just belt and braces).
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(") ", 1)[1][0] != "Z"
        except OSError:
            return False

    def cleanup(self):
        self.stop()
        if os.environ.get("FERRY_KEEP_TMP"):
            print("kept", self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "maillog"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def queued(self):
        """Messages still in Postfix's queues."""
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.dir, "spool", q)):
                n += len(files)
        return n


def as_sent(raw):
    """CRLF lines ending in CRLF, as a client puts them on the wire, and
    without Return-Path: (it is the final delivery's business, RFC 5321
    4.4; both Postfix and Exim drop it on receipt, as they should)."""
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    head, sep, body = crlf.partition(b"\r\n\r\n")
    kept, dropping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(b"return-path:")
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def strip_trace(stored):
    """(ferry's Received:, Postfix's Received:, the rest)."""
    ours, rest = ft.strip_received(stored)
    theirs, rest = ft.strip_received(rest)
    return ours, theirs, rest


def big_message(size):
    """A 8-bit text message of about `size` octets, 78-octet lines."""
    head = (b"From: Big <big@remote.example>\r\n"
            b"To: alice@" + D.encode() + b"\r\n"
            b"Subject: one mebibyte\r\n"
            b"Message-ID: <big-1@remote.example>\r\n"
            b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n")
    lines = []
    n = len(head)
    i = 0
    while n < size:
        line = ("%07d " % i).encode() + "äöü €".encode() * 6 + \
            b".." + b"x" * 10 + b"\r\n"
        if i % 100 == 0:
            line = b"." + line  # lines starting with a dot get stuffed
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines)


EXIM_CONF = """\
exim_path = {exim}
primary_hostname = relay.peer.example
qualify_domain = peer.example
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
daemon_smtp_ports = {smtpd_port}
local_interfaces = 127.0.0.1
exim_user = Debian-exim
exim_group = Debian-exim
never_users = root
keep_environment =
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
smtputf8_advertise_hosts = *
accept_8bitmime = true
message_size_limit = 20M
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept hosts = 127.0.0.1
  deny
begin routers
to_ferryd:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = to_ferryd
begin transports
to_ferryd:
  driver = smtp
  port = {ferryd_port}
  allow_localhost
  hosts_try_chunking = *
  # Exim 4.95+ bounces mail with lines over 998 octets by default (and
  # 0 does not mean "no limit" here); ferryd's own limit is the test's.
  message_linelength_limit = 1048576
"""


class Exim:
    """A private Exim 4 daemon under its own temporary directory, run
    from the unpacked exim4-daemon-light package (tools/install-deps.sh:
    it conflicts with the installed Postfix, so it is not installed as a
    package).  Delivers each message at once to ferryd."""

    def __init__(self, ferryd_port):
        self.dir = tempfile.mkdtemp(prefix="ferry-exim-")
        os.chmod(self.dir, 0o755)
        for sub in ("spool", "log"):
            os.makedirs(os.path.join(self.dir, sub))
            shutil.chown(os.path.join(self.dir, sub), "Debian-exim",
                         "Debian-exim")
        self.port = ft.free_port()
        self.conf = os.path.join(self.dir, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(EXIM_CONF.format(exim=EXIM, dir=self.dir,
                                     smtpd_port=self.port,
                                     ferryd_port=ferryd_port))
        self.proc = None

    def start(self):
        # -bd without -q: a listener, no queue runner; each message is
        # delivered by a process the daemon forks right after receipt.
        self.proc = subprocess.Popen(
            [EXIM, "-C", self.conf, "-bdf", "-oX", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("exim exited %d:\n%s" %
                                     (self.proc.returncode, self.log()))
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                    s.noop()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("exim not listening:\n" + self.log())

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        if os.environ.get("FERRY_KEEP_TMP"):
            print("kept", self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "log", "mainlog"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def queued(self):
        n = 0
        for _, _, files in os.walk(os.path.join(self.dir, "spool",
                                                "input")):
            n += sum(1 for f in files if f.endswith("-H"))
        return n


class RelayThroughMta:
    """The tests, for any MTA relaying to ferryd.  A subclass names the
    MTA (MTA_CLASS, MTA_NAME) and the body command it must use (BODY)."""

    MTA_CLASS = None
    MTA_NAME = ""
    BODY = ""

    @classmethod
    def setUpClass(cls):
        cls.ferryd = ft.Ferryd(smtp={"max_message_size": "35M",
                                     "max_line_length": "64K"}).start()
        try:
            cls.mta = cls.MTA_CLASS(cls.ferryd.ports["relay"]).start()
        except BaseException:
            cls.ferryd.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.mta.cleanup()
        finally:
            cls.ferryd.cleanup()

    def setUp(self):
        shutil.rmtree(self.ferryd.mail_root, ignore_errors=True)
        os.makedirs(self.ferryd.mail_root)
        self.log_mark = len(self.ferryd.log())

    def send_via_mta(self, messages, mail_options=(), sender=None):
        """Hands each message to the MTA's SMTP server."""
        ids = []
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=60) as s:
            s.ehlo("client.example")
            for body in messages:
                s.mail(sender or "sender@remote.example", list(mail_options))
                code, msg = s.rcpt("alice@" + D)
                self.assertEqual(code, 250, msg)
                code, msg = s.data(body)
                self.assertEqual(code, 250, msg)
                ids.append(msg)
        return ids

    def wait_delivered(self, count, timeout=40):
        got = self.ferryd.wait_maildir("alice", count, timeout=timeout)
        self.assertEqual(
            len(got), count,
            "ferryd log:\n%s\nMTA log:\n%s" %
            (self.ferryd.log()[-3000:], self.mta.log()[-3000:]))
        return got

    def assertCameBy(self, count):
        """Every message in this test reached ferryd by the MTA's body
        command (BODY), and the MTA saw ferryd's 250 for each."""
        log = self.ferryd.log()[self.log_mark:]
        queued = re.findall(r" queued qid=\S+ .*", log)
        self.assertEqual(len(queued), count, log)
        for line in queued:
            self.assertIn(" body=" + self.BODY, line)
        deadline = time.time() + 10
        while time.time() < deadline and self.mta.queued() > 0:
            time.sleep(0.1)
        self.assertEqual(self.mta.queued(), 0, self.mta.log())

    def assertByteIdentical(self, got, sent):
        stored = []
        for g in got:
            ours, theirs, rest = strip_trace(g)
            self.assertIn(b"by mx.office.example (ferry)", ours)
            self.assertIn(b"from relay.peer.example", ours)
            self.assertIn(b"by relay.peer.example", theirs)
            self.assertIn(self.MTA_NAME.encode(), theirs)
            stored.append(rest)
        for want, have in zip(sorted(sent), sorted(stored)):
            self.assertEqual(len(want), len(have))
            self.assertTrue(want == have, "a message changed in transit")
        return stored

    def test_8bit_message_arrives_byte_identical(self):
        body = ("From: Zoé <zoe@remote.example>\r\n"
                "To: alice@office.example\r\n"
                "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
                "Message-ID: <8bit-1@remote.example>\r\n"
                "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n"
                "Grüße aus Köln, 山田 太郎.\r\n"
                ".a leading dot\r\n.\r\nend\r\n").encode()
        self.send_via_mta([body], mail_options=["BODY=8BITMIME"])
        got = self.wait_delivered(1)
        self.assertByteIdentical(got, [body])
        self.assertCameBy(1)
        ours = strip_trace(got[0])[0]
        # The MTA took ferryd's STARTTLS offer (opportunistic TLS).
        self.assertIn(b"using TLS", ours)

    def test_utf8_addresses_with_smtputf8(self):
        body = ("From: Zoé <zoé@remote.example>\r\n"
                "To: alice@office.example\r\n"
                "Subject: Grüße\r\n"
                "Message-ID: <utf8-1@remote.example>\r\n"
                "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n"
                "Ünïcödé body\r\n").encode()
        self.send_via_mta([body], sender="zoé@remote.example",
                              mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        got = self.wait_delivered(1)
        self.assertByteIdentical(got, [body])
        self.assertCameBy(1)
        ours = strip_trace(got[0])[0]
        self.assertIn(b"with UTF8SMTPS id", ours)
        self.assertRegex(self.ferryd.log()[self.log_mark:],
                         r"from=<zoé@remote\.example>")

    @unittest.skipUnless(CORPUS and os.path.isdir(CORPUS),
                         "corpus not present (FERRY_SHARED_DIR)")
    def test_corpus_long_lines_and_one_mebibyte(self):
        sent = []
        for name in LONG_LINES:
            with open(os.path.join(CORPUS, name + ".eml"), "rb") as f:
                sent.append(as_sent(f.read()))
        self.assertGreater(max(len(l) for b in sent
                               for l in b.split(b"\r\n")), 998)
        sent.append(big_message(1024 * 1024))
        self.send_via_mta(sent, mail_options=["BODY=8BITMIME"])
        got = self.wait_delivered(len(sent), timeout=60)
        self.assertByteIdentical(got, sent)
        self.assertCameBy(len(sent))


@unittest.skipUnless(POSTFIX, "postfix not installed "
                     "(tools/install-deps.sh)")
@unittest.skipUnless(os.geteuid() == 0, "a Postfix instance needs root")
class PostfixToFerrydTest(RelayThroughMta, unittest.TestCase):
    """Postfix 3.7's smtp(8) client has no BDAT: Postfix implements
    CHUNKING in its SMTP server only (BDAT_README), so this pins DATA."""
    MTA_CLASS = Postfix
    MTA_NAME = "(Postfix)"
    BODY = "data"


@unittest.skipUnless(EXIM, "exim4 not unpacked (tools/install-deps.sh)")
@unittest.skipUnless(os.geteuid() == 0, "an Exim daemon needs root")
class EximToFerrydTest(RelayThroughMta, unittest.TestCase):
    """Exim's smtp transport sends BDAT when the server offers CHUNKING
    (hosts_try_chunking = *, its default)."""
    MTA_CLASS = Exim
    MTA_NAME = "(Exim 4"
    BODY = "bdat"


if __name__ == "__main__":
    ft.main()
