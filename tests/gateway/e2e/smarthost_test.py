"""The provider's MTA on the far end of a phone call: a real Exim.

ferry-modemsim routes the provider's number to `exim -bs` (SMTP on the
line), as an ISP's mail host answering a dial-up would.  ferryd's
scheduler dials it for the mail waiting on the smarthost route and hands
it over with plain ESMTP; a recipient Exim refuses comes back to the
sender as a bounce.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from offices import SCALE, Line, Office, body_of, normalize_eol  # noqa: E402
from calls_test import message  # noqa: E402

EXIM = "/usr/local/lib/ferry/exim4/usr/sbin/exim4"

EXIM_CONF = """\
exim_path = {exim}
primary_hostname = mx.provider.example
qualify_domain = provider.example
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
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
dsn_advertise_hosts = *
chunking_advertise_hosts = *
message_size_limit = 20M
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  deny local_parts = ^nobody
    message = 5.1.1 no such user here
  accept
begin routers
all:
  driver = accept
  transport = to_maildir
begin transports
to_maildir:
  driver = appendfile
  directory = {dir}/mail
  maildir_format
  use_crlf
  user = Debian-exim
  group = Debian-exim
  mode = 0644
  envelope_to_add
"""


def exim_usable():
    if os.geteuid() != 0 or not os.path.exists(EXIM):
        return False
    try:
        import pwd
        pwd.getpwnam("Debian-exim")
    except KeyError:
        return False
    return True


@unittest.skipUnless(exim_usable(), "needs root and the unpacked Exim")
class SmarthostOverModemTest(unittest.TestCase):
    def setUp(self):
        self.exim_dir = tempfile.mkdtemp(prefix="ferry-provider-")
        self.addCleanup(shutil.rmtree, self.exim_dir, True)
        for sub in ("spool", "log", "mail"):
            os.makedirs(os.path.join(self.exim_dir, sub))
            shutil.chown(os.path.join(self.exim_dir, sub), "Debian-exim",
                         "Debian-exim")
        os.chmod(self.exim_dir, 0o755)
        self.conf = os.path.join(self.exim_dir, "exim.conf")
        with open(self.conf, "w") as f:
            f.write(EXIM_CONF.format(exim=EXIM, dir=self.exim_dir))
        route = "5550000=exec:%s -C %s -bs -odq -oMa 127.0.0.1" % (EXIM,
                                                                   self.conf)
        self.line = Line([("a", "5551001")], extra_args=["--route", route])
        self.addCleanup(self.line.stop)
        self.a = Office("a")
        self.addCleanup(self.a.cleanup)
        self.a.configure(
            peers="\n".join([
                "[peer isp]",
                "protocol = smtp",
                "smarthost = yes",
                "routes = 5550000",
                "min_messages = 3",
                "retry_protocol_error = 30s"]),
            modems="\n".join([
                "[modem a]",
                "device = " + self.line.device("a"),
                "answer = no",
                "time_scale = %g" % (1.0 / SCALE)]))
        self.a.start()

    def delivered(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.exim_dir, "mail", "new",
                                               "*"))):
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def test_scheduler_call_delivers_to_exim_and_bounces_its_refusal(self):
        good = [message("alice@a.example", "carol@far.example",
                        "to the world %d" % i, 3000 + 2000 * i)
                for i in range(2)]
        bad = message("alice@a.example", "nobody@far.example", "refused")
        for m in good:
            self.a.send("alice@a.example", ["carol@far.example"], m)
        self.a.send("alice@a.example", ["nobody@far.example"], bad)

        # The call happens; the refused one comes back to alice.
        self.a.wait_for(
            lambda: any(b"Action: failed" in x
                        for x in self.a.maildir("alice")),
            120, "a bounce for nobody@far.example")
        bounce = [x for x in self.a.maildir("alice")
                  if b"Action: failed" in x][0]
        self.assertIn(b"5.1.1", bounce)
        self.assertIn(b"Subject: refused", bounce)
        # Exim queued what it accepted; a queue run delivers it.
        subprocess.run([EXIM, "-C", self.conf, "-qff"], check=True,
                       timeout=60)
        got = self.delivered()
        self.assertEqual(len(got), 2, self.a.log()[-3000:])

        def strip(raw):
            # Exim adds Envelope-to: and Received: at the top.
            lines = raw.split(b"\r\n")
            while lines and (lines[0].startswith((b"Envelope-to:",
                                                  b"Received:")) or
                             lines[0][:1] in (b" ", b"\t")):
                lines.pop(0)
            return body_of(b"\r\n".join(lines))
        self.assertEqual(sorted(normalize_eol(strip(x)) for x in got),
                         sorted(normalize_eol(x) for x in good))
        self.a.wait_for(lambda: "outcome=ok" in self.a.log(), 30,
                        "the call's outcome")


if __name__ == "__main__":
    unittest.main(verbosity=2)
