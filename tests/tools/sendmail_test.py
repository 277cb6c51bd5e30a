#!/usr/bin/env python3
"""ferry-sendmail used the way cron jobs and scripts use /usr/sbin/sendmail.

Usage: sendmail_test.py PATH/TO/ferry-sendmail PATH/TO/sendmail_spool_helper

Every test gets a fresh temporary directory holding ferry.conf, a users
file, the spool and the Maildirs.  What a user would check is checked: the
exit status, what the spool holds (through the helper, which reads it with
ferry's own spool library), what -bp prints, and -- after ferryd's pickup
has run (the helper runs gateway/pickup.cc) -- the bytes in the Maildir.
The program is run by its path; it is never installed.
"""

import base64
import concurrent.futures
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

SENDMAIL = None
HELPER = None

EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOUSER = 64, 65, 66, 67
EX_UNAVAILABLE, EX_CANTCREAT, EX_TEMPFAIL, EX_PROTOCOL = 69, 73, 75, 76
EX_CONFIG = 78

MESSAGE = (b"Subject: nightly backup\n"
           b"To: bob@office.example\n"
           b"\n"
           b"The backup finished.\n"
           b"..a line that starts with a dot\n"
           b"Bye.\n")


class SendmailTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ferry-sendmail-")
        self.spool = os.path.join(self.dir, "spool")
        self.mail = os.path.join(self.dir, "mail")
        os.mkdir(self.spool)
        os.mkdir(self.mail)
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write("alice:!\nbob:!\ncarol:!\n")
        with open(os.path.join(self.dir, "aliases"), "w") as f:
            f.write("team: alice, bob\n")
        self.conf = self.write_conf(self.spool)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write_conf(self, spool, name="ferry.conf"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("\n".join([
                "[ferryd]",
                "hostname = mx.office.example",
                "spool = " + spool,
                "control_socket = " + os.path.join(self.dir, "ctl.sock"),
                "[local]",
                "domains = office.example",
                "mail_root = " + self.mail,
                "users_file = " + os.path.join(self.dir, "users"),
                "aliases_file = " + os.path.join(self.dir, "aliases"),
                ""]))
        return path

    # ---- helpers -----------------------------------------------------

    def sendmail(self, args, data=MESSAGE, conf=None, env=None):
        cmd = [SENDMAIL, "-C", conf or self.conf] + list(args)
        return subprocess.run(cmd, input=data, capture_output=True,
                              timeout=60, env=env)

    def ok(self, args, data=MESSAGE):
        r = self.sendmail(args, data)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r

    def dump(self):
        r = subprocess.run([HELPER, "dump", self.spool], capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        msgs = [json.loads(l) for l in r.stdout.decode().splitlines()]
        for m in msgs:
            m["body"] = base64.b64decode(m["body"])
        return msgs

    def only(self):
        msgs = self.dump()
        self.assertEqual(len(msgs), 1)
        return msgs[0]

    def pickup(self):
        r = subprocess.run([HELPER, "pickup", self.conf], capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return json.loads(r.stdout)

    @staticmethod
    def headers(body):
        head = body.split(b"\r\n\r\n", 1)[0].decode()
        return head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")

    def header(self, body, name):
        prefix = name.lower() + ":"
        return [h[len(prefix):].strip() for h in self.headers(body)
                if h.lower().startswith(prefix)]

    def maildir_files(self, user):
        d = os.path.join(self.mail, user, "new")
        if not os.path.isdir(d):
            return []
        return [os.path.join(d, n) for n in sorted(os.listdir(d))]

    # ---- plain use ---------------------------------------------------

    def test_plain_recipients_stored_with_crlf_and_added_headers(self):
        self.ok(["bob", "carol@office.example", "x@remote.example"])
        m = self.only()
        self.assertEqual([r["address"] for r in m["recipients"]],
                         ["bob@office.example", "carol@office.example",
                          "x@remote.example"])
        self.assertTrue(all(r["route"] == "pickup" for r in m["recipients"]))
        body = m["body"]
        self.assertNotIn(b"\n", body.replace(b"\r\n", b""))
        self.assertTrue(body.startswith(b"Received: by mx.office.example "
                                        b"(ferry-sendmail, from userid %d"
                                        % os.getuid()))
        self.assertEqual(len(self.header(body, "Date")), 1)
        self.assertRegex(self.header(body, "Message-ID")[0],
                         r"^<[^@<>]+@mx\.office\.example>$")
        self.assertEqual(len(self.header(body, "From")), 1)
        self.assertTrue(body.endswith(b"\r\nThe backup finished.\r\n"
                                      b"..a line that starts with a dot\r\n"
                                      b"Bye.\r\n"))
        self.assertEqual(m["size"], len(body))

    def test_crlf_input_is_stored_like_lf_input(self):
        self.ok(["bob"], MESSAGE.replace(b"\n", b"\r\n"))
        self.ok(["bob"], MESSAGE)
        a, b = self.dump()
        strip = lambda body: body.split(b"\r\n\r\n", 1)[1]
        self.assertEqual(strip(a["body"]), strip(b["body"]))

    def test_pickup_delivers_maildir_byte_identical_and_routes_remote(self):
        self.ok(["team", "x@remote.example"])
        stored = self.only()
        res = self.pickup()
        self.assertEqual(res["messages"], 1)
        self.assertEqual(res["resubmitted"], 1)
        for user in ("alice", "bob"):
            files = self.maildir_files(user)
            self.assertEqual(len(files), 1, user)
            with open(files[0], "rb") as f:
                self.assertEqual(f.read(), stored["body"])
        rest = self.only()
        self.assertNotEqual(rest["id"], stored["id"])
        self.assertEqual([(r["address"], r["route"])
                          for r in rest["recipients"]],
                         [("x@remote.example", "smarthost")])
        self.assertEqual(rest["body"], stored["body"])
        # Running pickup again changes nothing.
        self.assertEqual(self.pickup()["resubmitted"], 0)
        self.assertEqual(len(self.dump()), 1)

    def test_config_from_environment(self):
        env = dict(os.environ, FERRY_CONFIG=self.conf)
        r = subprocess.run([SENDMAIL, "bob"], input=MESSAGE,
                           capture_output=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(len(self.dump()), 1)

    # ---- -t, -i, -f, -F, DSN ---------------------------------------------

    def test_t_takes_to_cc_bcc_and_removes_bcc(self):
        msg = (b"From: Alice <alice@office.example>\n"
               b"To: \"Bob B.\" <bob@office.example>, carol\n"
               b"Cc: Friends: x@remote.example, (note) y@remote.example;\n"
               b"Bcc: secret@remote.example,\n"
               b"  other@remote.example\n"
               b"Subject: hi\n"
               b"\n"
               b"Bcc: this line is body, not a header\n")
        self.ok(["-t"], msg)
        m = self.only()
        self.assertEqual(sorted(r["address"] for r in m["recipients"]),
                         ["bob@office.example", "carol@office.example",
                          "other@remote.example", "secret@remote.example",
                          "x@remote.example", "y@remote.example"])
        self.assertEqual(self.header(m["body"], "Bcc"), [])
        self.assertNotIn(b"secret", m["body"])
        self.assertNotIn(b"other@", m["body"])
        self.assertIn(b"\r\n\r\nBcc: this line is body", m["body"])
        self.assertEqual(self.header(m["body"], "From"),
                         ["Alice <alice@office.example>"])

    def test_t_without_recipients_is_a_data_error(self):
        r = self.sendmail(["-t"], b"Subject: nobody\n\nhi\n")
        self.assertEqual(r.returncode, EX_DATAERR)
        self.assertEqual(self.dump(), [])

    def test_lone_dot_ends_input_unless_i(self):
        msg = b"Subject: dots\n\nbefore\n.\nafter\n"
        self.ok(["bob"], msg)
        self.assertTrue(self.only()["body"].endswith(b"\r\n\r\nbefore\r\n"))
        shutil.rmtree(self.spool)
        os.mkdir(self.spool)
        self.ok(["-i", "bob"], msg)
        self.assertTrue(self.only()["body"].endswith(
            b"\r\nbefore\r\n.\r\nafter\r\n"))
        shutil.rmtree(self.spool)
        os.mkdir(self.spool)
        self.ok(["-oi", "bob"], msg)
        self.assertTrue(self.only()["body"].endswith(b"\r\n.\r\nafter\r\n"))

    def test_f_sets_envelope_sender(self):
        self.ok(["-f", "backup@office.example", "bob"])
        self.assertEqual(self.only()["sender"], "backup@office.example")
        shutil.rmtree(self.spool)
        os.mkdir(self.spool)
        self.ok(["-r<>", "bob"])
        self.assertEqual(self.only()["sender"], "")

    def test_default_sender_is_the_calling_user(self):
        import pwd
        self.ok(["bob"])
        login = pwd.getpwuid(os.getuid()).pw_name
        self.assertEqual(self.only()["sender"], login + "@office.example")

    def test_F_names_the_added_from_header(self):
        self.ok(["-F", "Backup Robot", "-f", "robot@office.example", "bob"],
                b"Subject: x\n\nbody\n")
        self.assertEqual(self.header(self.only()["body"], "From"),
                         ["Backup Robot <robot@office.example>"])

    def test_F_does_not_replace_an_existing_from(self):
        self.ok(["-F", "Robot", "bob"],
                b"From: me@office.example\nSubject: x\n\nbody\n")
        self.assertEqual(self.header(self.only()["body"], "From"),
                         ["me@office.example"])

    def test_headerless_input_gets_a_separator(self):
        self.ok(["bob"], b"just a line of text\n")
        body = self.only()["body"]
        self.assertTrue(body.endswith(b"\r\n\r\njust a line of text\r\n"))

    def test_dsn_options_are_stored(self):
        self.ok(["-N", "success,delay", "-R", "hdrs", "-V", "job-42", "bob"])
        m = self.only()
        self.assertEqual(m["envid"], "job-42")
        self.assertEqual(m["ret"], 2)
        self.assertEqual(m["recipients"][0]["notify"], 2 | 8)

    def test_o_options_are_ignored_with_a_note(self):
        r = self.ok(["-oem", "-odi", "bob"])
        self.assertIn(b"-oem ignored", r.stderr)
        self.assertEqual(len(self.dump()), 1)

    # ---- -bs ---------------------------------------------------------

    def test_bs_speaks_smtp_to_smtplib(self):
        ours, theirs = socket.socketpair()
        p = subprocess.Popen([SENDMAIL, "-C", self.conf, "-bs"],
                             stdin=theirs, stdout=theirs,
                             stderr=subprocess.PIPE)
        theirs.close()
        try:
            s = smtplib.SMTP()
            s.sock = ours
            code, banner = s.getreply()
            self.assertEqual(code, 220)
            self.assertIn(b"mx.office.example", banner)
            code, _ = s.ehlo("client.example")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("dsn"))
            refused = s.sendmail("alice@office.example",
                                 ["bob@office.example", "x@remote.example"],
                                 b"Subject: one\r\n\r\nfirst\r\n.dot\r\n")
            self.assertEqual(refused, {})
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("alice@office.example", ["nobody@office.example"],
                           b"Subject: two\r\n\r\nsecond\r\n")
            self.assertEqual(
                cm.exception.recipients["nobody@office.example"][0], 550)
            s.sendmail("", ["carol@office.example"],
                       b"Subject: three\r\n\r\nthird\r\n",
                       rcpt_options=["NOTIFY=NEVER"])
            s.quit()
        finally:
            ours.close()
        _, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err.decode())
        msgs = self.dump()
        self.assertEqual(len(msgs), 2)
        one, three = msgs
        self.assertEqual(one["sender"], "alice@office.example")
        self.assertTrue(one["body"].endswith(b"\r\n\r\nfirst\r\n.dot\r\n"))
        self.assertEqual(three["sender"], "")
        self.assertEqual(three["recipients"][0]["notify"], 1)

    def test_bs_input_ending_inside_data_is_reported_and_not_queued(self):
        # A script whose input stops before the "." line: an MTA that
        # loses the connection in DATA stores nothing and says so; so
        # must we, on stdout (421), on stderr and in the exit status.
        session = (b"HELO client.example\r\n"
                   b"MAIL FROM:<alice@office.example>\r\n"
                   b"RCPT TO:<bob@office.example>\r\n"
                   b"DATA\r\n"
                   b"Subject: cut off\r\n\r\nthe first half\r\n")
        r = self.sendmail(["-bs"], data=session)
        self.assertEqual(r.returncode, EX_PROTOCOL, r.stderr.decode())
        replies = r.stdout.decode().splitlines()
        self.assertTrue(replies[-2].startswith("354 "), replies)
        self.assertTrue(replies[-1].startswith(
            "421 4.4.2 mx.office.example "), replies)
        self.assertIn("not queued", replies[-1])
        self.assertIn(b"ferry-sendmail: input ended in the middle of DATA",
                      r.stderr)
        self.assertIn(b"not queued", r.stderr)
        self.assertEqual(self.dump(), [])

    def test_bs_input_ending_between_transactions_is_a_goodbye(self):
        # The other side of the rule above: a finished message followed
        # by the end of input (no QUIT) is stored and exits 0.
        session = (b"HELO client.example\r\n"
                   b"MAIL FROM:<alice@office.example>\r\n"
                   b"RCPT TO:<bob@office.example>\r\n"
                   b"DATA\r\n"
                   b"Subject: whole\r\n\r\nall of it\r\n.\r\n")
        r = self.sendmail(["-bs"], data=session)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertIn(b"250 2.0.0 Ok: queued as", r.stdout)
        self.assertEqual(r.stderr, b"")
        self.assertTrue(self.only()["body"].endswith(b"\r\n\r\nall of it\r\n"))

    # ---- -bp and -q --------------------------------------------------

    def test_bp_lists_the_queue(self):
        r = self.sendmail(["-bp"])
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertIn(b"Mail queue is empty", r.stdout)
        self.ok(["-f", "alice@office.example", "bob", "x@remote.example"])
        qid = self.only()["id"]
        r = self.sendmail(["-bp"])
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        out = r.stdout.decode()
        self.assertIn(qid, out)
        self.assertIn("alice@office.example", out)
        self.assertIn("bob@office.example (queued, pickup)", out)
        self.assertIn("x@remote.example (queued, pickup)", out)
        self.assertIn("in 1 Request.", out)

    def test_bp_on_a_missing_spool_says_missing_not_empty(self):
        missing = os.path.join(self.dir, "no", "spool")
        conf = self.write_conf(missing, "x.conf")
        r = self.sendmail(["-bp"], conf=conf)
        self.assertEqual(r.returncode, EX_NOINPUT, r.stderr.decode())
        self.assertEqual(r.stdout, b"")
        err = r.stderr.decode()
        self.assertIn("the spool %s is missing" % missing, err)
        self.assertIn(conf, err)
        # A file where the directory should be is no queue either.
        with open(os.path.join(self.dir, "afile"), "w"):
            pass
        conf = self.write_conf(os.path.join(self.dir, "afile"), "y.conf")
        r = self.sendmail(["-bp"], conf=conf)
        self.assertEqual(r.returncode, EX_NOINPUT, r.stderr.decode())
        self.assertIn(b"not a directory", r.stderr)
        self.assertNotIn(b"empty", r.stdout)

    def test_q_without_ferryd_is_unavailable(self):
        r = self.sendmail(["-q"])
        self.assertEqual(r.returncode, EX_UNAVAILABLE)
        self.assertIn(b"ferryd is not running", r.stderr)

    def control_stand_in(self, answer):
        """A listener on the control socket path that records one request
        and sends `answer` (ferryd itself is another engineer's test)."""
        path = os.path.join(self.dir, "ctl.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        got = []

        def serve():
            c, _ = srv.accept()
            got.append(c.recv(100))
            c.sendall(answer)
            c.close()
        t = threading.Thread(target=serve)
        t.start()
        return srv, t, got

    def test_q_asks_ferryd_through_the_control_socket(self):
        srv, t, got = self.control_stand_in(b'{"ok":true,"result":{}}\n')
        r = self.sendmail(["-q"])
        t.join(10)
        srv.close()
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(got, [b"flush\n"])

    def test_q_refused_by_ferryd_is_unavailable(self):
        srv, t, got = self.control_stand_in(
            b'{"ok":false,"error":{"code":"unknown_command",'
            b'"message":"no command flush"}}\n')
        r = self.sendmail(["-q"])
        t.join(10)
        srv.close()
        self.assertEqual(r.returncode, EX_UNAVAILABLE)
        self.assertIn(b"no command flush (unknown_command)", r.stderr)

    # ---- failures ----------------------------------------------------

    def test_usage_errors(self):
        for args in (["-X", "bob"], ["-R", "most", "bob"], ["-N", "often"],
                     ["-bd"], ["-f"], ["-bs", "bob"], []):
            r = self.sendmail(args)
            self.assertEqual(r.returncode, EX_USAGE, args)
            self.assertIn(b"usage:", r.stderr, args)
        self.assertEqual(self.dump(), [])

    def test_shapes_smtp_refuses_are_refused_here_too(self):
        long_line = b"x" * 70000  # over the default max_line_length (64K)
        for body, why in ((b"Subject: nul\n\na\x00b\n", b"NUL byte"),
                          (b"Subject: cr\n\na\rb\n", b"carriage return"),
                          (b"Subject: long\n\n" + long_line + b"\n",
                           b"max_line_length")):
            r = self.sendmail(["bob"], data=body)
            self.assertEqual(r.returncode, EX_DATAERR, why)
            self.assertIn(why, r.stderr)
        self.assertEqual(self.dump(), [])

    def test_bad_address_and_unknown_user_store_nothing(self):
        r = self.sendmail(["bob", "bad@@address"])
        self.assertEqual(r.returncode, EX_DATAERR)
        r = self.sendmail(["bob", "nobody@office.example"])
        self.assertEqual(r.returncode, EX_NOUSER)
        self.assertIn(b"550 5.1.1", r.stderr)
        self.assertEqual(self.dump(), [])

    def test_lowercase_c_names_the_option_to_use(self):
        # ferryd's -c is not sendmail's -c (a flag without a value):
        # refused, pointing at -C, and nothing is stored.
        for args in (["-c", self.conf, "bob"], ["-c" + self.conf, "bob"]):
            r = subprocess.run([SENDMAIL] + args, input=MESSAGE,
                               capture_output=True, timeout=60)
            self.assertEqual(r.returncode, EX_USAGE, args)
            self.assertIn(b"the configuration file is -C", r.stderr)
        self.assertEqual(self.dump(), [])

    def test_missing_config_is_a_config_error(self):
        r = self.sendmail(["bob"], conf=os.path.join(self.dir, "none.conf"))
        self.assertEqual(r.returncode, EX_CONFIG)

    def test_missing_spool_directory_cannot_create(self):
        conf = self.write_conf(os.path.join(self.dir, "no", "spool"), "x.conf")
        r = self.sendmail(["bob"], conf=conf)
        self.assertEqual(r.returncode, EX_CANTCREAT)
        self.assertIn(b"cannot open the spool", r.stderr)

    def in_tmpfs(self, size, script, data):
        """Runs `script` (sh) with $D a fresh tmpfs of `size` in its own
        mount namespace; skips when this machine cannot do that."""
        d = os.path.join(self.dir, "fs")
        os.mkdir(d)
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh",
             "-c", "mount -t tmpfs -o size=1m ferry-test \"$0\"", d],
            capture_output=True, timeout=30)
        if probe.returncode != 0:
            self.skipTest("cannot mount a tmpfs in a mount namespace: " +
                          probe.stderr.decode().strip())
        conf = self.write_conf(os.path.join(d, "spool"), "fs.conf")
        full = ("mount -t tmpfs -o size=%s ferry-test \"$D\" && "
                "mkdir \"$D/spool\" && %s" % (size, script))
        env = dict(os.environ, D=d, SM=SENDMAIL, CONF=conf)
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh",
             "-c", full], input=data, capture_output=True, timeout=120,
            env=env)

    def test_full_spool_is_a_temporary_failure(self):
        # 4 MiB that zstd cannot shrink, on a 3 MiB file system.
        noise = base64.encodebytes(os.urandom(3 << 20))
        r = self.in_tmpfs("3m", "\"$SM\" -C \"$CONF\" bob",
                          b"Subject: big\n\n" + noise)
        self.assertEqual(r.returncode, EX_TEMPFAIL, r.stderr.decode())
        self.assertIn(b"cannot store the message", r.stderr)

    def test_read_only_spool_cannot_create(self):
        r = self.in_tmpfs("4m",
                          "mount -o remount,ro \"$D\" && "
                          "\"$SM\" -C \"$CONF\" bob", MESSAGE)
        self.assertEqual(r.returncode, EX_CANTCREAT, r.stderr.decode())

    # ---- concurrency -------------------------------------------------

    def test_twenty_at_once_are_all_stored(self):
        def one(i):
            return self.sendmail(
                ["-f", "job%d@office.example" % i, "bob"],
                b"Subject: run %d\n\nbody %d\n" % (i, i))
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(20)))
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr.decode())
        msgs = self.dump()
        self.assertEqual(len(msgs), 20)
        self.assertEqual(sorted(m["sender"] for m in msgs),
                         sorted("job%d@office.example" % i
                                for i in range(20)))
        self.assertEqual(len({m["id"] for m in msgs}), 20)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    SENDMAIL, HELPER = os.path.abspath(sys.argv[1]), \
        os.path.abspath(sys.argv[2])
    del sys.argv[1:3]
    unittest.main(verbosity=2)
