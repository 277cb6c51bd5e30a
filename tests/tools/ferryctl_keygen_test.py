"""ferryctl keygen: link keys and PSK files, made by the real binary.

Usage: ferryctl_keygen_test.py FERRYCTL SOURCE_DIR

keygen is local: no ferryd runs and no network is used.  Each test works
in a fresh temporary directory and checks what an administrator checks:
the files on disk and their modes, the lines printed to paste into the
other office's ferry.conf, the exit status, and, with the openssl command
(a program we did not write), that the key fits the certificate and that
the printed fingerprint is the certificate's.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

FERRYCTL, SOURCE = sys.argv[1:3]
del sys.argv[1:3]

# ferryctl's documented exit codes (man/ferryctl.1).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
HAVE_OPENSSL = shutil.which("openssl") is not None
FP_LINE = re.compile(r"^  fingerprint = (sha256:[0-9a-f]{64})$", re.M)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Keygen(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ferryctl-keygen-")
        self.out = os.path.join(self.dir, "keys")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def ctl(self, *args, umask=None):
        # A missing configuration must not matter: keygen never reads it.
        cmd = [FERRYCTL, "-C", os.path.join(self.dir, "no.conf"), *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, cwd=self.dir,
            preexec_fn=(lambda: os.umask(umask)) if umask is not None
            else None)

    def openssl(self, *args):
        r = subprocess.run(["openssl", *args], capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    # ---- --name NAME --out DIR ------------------------------------------

    def test_identity_files_and_paste_lines(self):
        r = self.ctl("keygen", "--name", "branch", "--out", self.out,
                     umask=0)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        key = os.path.join(self.out, "link.key")
        crt = os.path.join(self.out, "link.crt")
        # The private key is the owner's alone whatever the umask.
        self.assertEqual(mode_of(key), 0o600)
        self.assertEqual(mode_of(crt), 0o644)
        self.assertIn(b"BEGIN PRIVATE KEY", read(key))
        self.assertIn(b"BEGIN CERTIFICATE", read(crt))
        # No temporary files are left beside them.
        self.assertEqual(sorted(os.listdir(self.out)),
                         ["link.crt", "link.key"])
        # What the other office pastes, and what this office configures.
        self.assertIn("  [peer branch]\n", r.stdout)
        m = FP_LINE.search(r.stdout)
        self.assertTrue(m, r.stdout)
        self.assertIn("  certificate = " + crt + "\n", r.stdout)
        self.assertIn("  key = " + key + "\n", r.stdout)
        self.assertEqual(r.stderr, "")

        # --show prints the same line for the certificate.
        s = self.ctl("keygen", "--show", crt)
        self.assertEqual(s.returncode, EXIT_OK, s.stderr)
        self.assertEqual(s.stdout, "fingerprint = %s\n" % m.group(1))

        if HAVE_OPENSSL:
            der = self.openssl("x509", "-in", crt, "-outform", "DER")
            self.assertEqual(m.group(1),
                             "sha256:" + hashlib.sha256(der).hexdigest())
            text = self.openssl("x509", "-in", crt, "-noout", "-subject",
                                "-text").decode()
            self.assertIn("CN = branch", text)
            self.assertIn("ED25519", text)
            # The key fits the certificate: same public key.
            self.assertEqual(self.openssl("pkey", "-in", key, "-pubout"),
                             self.openssl("x509", "-in", crt, "-noout",
                                          "-pubkey"))

    def test_relative_out_dir_prints_absolute_paths(self):
        r = self.ctl("keygen", "--name", "hq", "--out", "./keys")
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertIn("  key = " + os.path.join(self.out, "link.key"),
                      r.stdout)

    def test_existing_key_is_kept_unless_force(self):
        self.assertEqual(
            self.ctl("keygen", "--name", "a", "--out", self.out).returncode,
            EXIT_OK)
        key = os.path.join(self.out, "link.key")
        crt = os.path.join(self.out, "link.crt")
        before = (read(key), read(crt))

        r = self.ctl("keygen", "--name", "a", "--out", self.out)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(key + " exists", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual((read(key), read(crt)), before)

        # Only the certificate left: still refused, nothing written.
        os.unlink(key)
        r = self.ctl("keygen", "--name", "a", "--out", self.out)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(crt + " exists", r.stderr)
        self.assertFalse(os.path.exists(key))

        r = self.ctl("keygen", "--name", "a", "--out", self.out, "--force")
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertNotEqual(read(crt), before[1])
        self.assertEqual(mode_of(key), 0o600)
        new_fp = FP_LINE.search(r.stdout).group(1)
        self.assertEqual(self.ctl("keygen", "--show", crt).stdout,
                         "fingerprint = %s\n" % new_fp)

    def test_json_output(self):
        r = self.ctl("--json", "keygen", "--name", "a", "--out", self.out)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        v = json.loads(r.stdout)
        self.assertEqual(v["name"], "a")
        self.assertEqual(v["key"], os.path.join(self.out, "link.key"))
        self.assertRegex(v["fingerprint"], "^sha256:[0-9a-f]{64}$")
        s = self.ctl("keygen", "--show", v["certificate"], "--json")
        self.assertEqual(json.loads(s.stdout),
                         {"fingerprint": v["fingerprint"]})

    def test_out_dir_errors_name_the_path(self):
        # A missing parent: the directory is not made recursively.
        deep = os.path.join(self.dir, "no", "such")
        r = self.ctl("keygen", "--name", "a", "--out", deep)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(deep + ": No such file or directory", r.stderr)
        # A file where the directory should be.
        f = os.path.join(self.dir, "plain")
        open(f, "w").close()
        r = self.ctl("keygen", "--name", "a", "--out", f)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(f + ": not a directory", r.stderr)

    # ---- --psk FILE -------------------------------------------------------

    def test_psk_file(self):
        f = os.path.join(self.dir, "branch.psk")
        r = self.ctl("keygen", "--psk", f, umask=0)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertEqual(mode_of(f), 0o600)
        text = read(f).decode()
        m = re.fullmatch(r"ferry-psk-v1:([A-Za-z0-9+/]{43}=)\n", text)
        self.assertTrue(m, text)
        key = base64.b64decode(m.group(1), validate=True)
        self.assertEqual(len(key), 32)
        ident = "ferry-psk:" + hashlib.sha256(key).hexdigest()[:16]
        self.assertIn("identity " + ident, r.stdout)
        self.assertIn("  psk_file = " + f + "\n", r.stdout)
        self.assertNotIn(m.group(1), r.stdout)  # the key is never printed

        s = self.ctl("keygen", "--show", f)
        self.assertEqual((s.returncode, s.stdout),
                         (EXIT_OK, "psk identity %s\n" % ident))

        # Kept unless --force; a new key is a different key.
        r = self.ctl("keygen", "--psk", f)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(f + " exists", r.stderr)
        self.assertEqual(read(f).decode(), text)
        r = self.ctl("keygen", "--psk", f, "--force")
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertNotEqual(read(f).decode(), text)
        self.assertEqual(mode_of(f), 0o600)

    def test_force_never_replaces_a_device_or_a_link(self):
        # A FIFO stands in for /dev/null: --force replaces key files only.
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)
        r = self.ctl("keygen", "--psk", fifo, "--force")
        self.assertEqual(r.returncode, EXIT_FAILED, r.stdout + r.stderr)
        self.assertIn("not a regular file", r.stderr)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))
        target = os.path.join(self.dir, "target")
        with open(target, "w") as f:
            f.write("keep me\n")
        link = os.path.join(self.dir, "link")
        os.symlink(target, link)
        r = self.ctl("keygen", "--psk", link, "--force")
        self.assertEqual(r.returncode, EXIT_FAILED, r.stdout + r.stderr)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(read(target), b"keep me\n")

    def test_show_refuses_psk_open_to_others(self):
        f = os.path.join(self.dir, "k.psk")
        self.assertEqual(self.ctl("keygen", "--psk", f).returncode, EXIT_OK)
        os.chmod(f, 0o644)
        r = self.ctl("keygen", "--show", f)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(f + ": ", r.stderr)
        self.assertIn("mode 0644", r.stderr)

    def test_show_errors_name_file_and_cause(self):
        missing = os.path.join(self.dir, "missing.crt")
        r = self.ctl("keygen", "--show", missing)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(missing + ": No such file or directory", r.stderr)
        junk = os.path.join(self.dir, "junk")
        with open(junk, "w") as f:
            f.write("hello\n")
        r = self.ctl("keygen", "--show", junk)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(junk + ": neither", r.stderr)
        bad = os.path.join(self.dir, "bad.psk")
        with open(bad, "w") as f:
            f.write("ferry-psk-v1:c2hvcnQ=\n")
        os.chmod(bad, 0o600)
        r = self.ctl("keygen", "--show", bad)
        self.assertEqual(r.returncode, EXIT_FAILED)
        self.assertIn(bad + ": the key is not 32 bytes", r.stderr)

    # ---- the command line ---------------------------------------------------

    def test_usage_errors(self):
        for args in (["keygen"], ["keygen", "--name", "a"],
                     ["keygen", "--out", self.out],
                     ["keygen", "--psk"],
                     ["keygen", "--psk", "x", "--show", "y"],
                     ["keygen", "--name", "a", "--out", "d", "--psk", "x"],
                     ["keygen", "--name", "a b", "--out", self.out],
                     ["keygen", "--show", "x", "--force"],
                     ["keygen", "--frobnicate"]):
            r = self.ctl(*args)
            self.assertEqual(r.returncode, EXIT_USAGE, args)
            self.assertIn("usage:", r.stderr, args)
        self.assertFalse(os.path.exists(self.out))

    def test_help_and_manpage_name_keygen(self):
        r = subprocess.run([FERRYCTL, "--help"], capture_output=True,
                           text=True, timeout=30)
        for word in ("keygen", "--name", "--out", "--psk", "--show",
                     "--force"):
            self.assertIn(word, r.stdout)
        if shutil.which("groff") is None:
            return
        page = os.path.join(SOURCE, "man", "ferryctl.1")
        g = subprocess.run(["groff", "-man", "-ww", "-Tutf8", page],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((g.returncode, g.stderr), (0, ""))
        text = re.sub(".\b", "", g.stdout)
        for word in ("keygen", "--name", "--out", "--psk", "--show",
                     "--force", "link.key", "link.crt", "psk_file"):
            self.assertIn(word, text)


if __name__ == "__main__":
    unittest.main()
