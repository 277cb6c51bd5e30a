#!/usr/bin/env bash
# `cmake --install` of this build tree puts every file where a Debian
# administrator and the tools (man, systemd) look for it, and what it puts
# there works:
#   1. DESTDIR=T cmake --install BUILD --prefix /usr (a packager's install):
#      programs in usr/sbin and usr/bin, man pages in usr/share/man/manN,
#      samples in usr/share/doc/ferry and etc/ferry/*.sample, units in
#      usr/lib/systemd/system, sysusers.d and tmpfiles.d files; programs
#      run; man finds and renders the pages; groff -ww says nothing.
#   2. cmake --install BUILD --prefix T/p (a private prefix): the units
#      name T/p/sbin/ferryd, and systemd-analyze verify accepts them.
#   3. systemd-sysusers and systemd-tmpfiles, run on the installed files
#      against a scratch root (a copy of this machine's user database),
#      create the ferry user and groups and the directories with the
#      owners and modes ferry(8) documents.
# Everything happens under one temporary directory, removed at the end.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
command -v cmake >/dev/null || { echo "cmake missing: skipped"; exit 77; }

tmp=$(mktemp -d /tmp/ferry-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# ---- 1. packager's install --------------------------------------------
DESTDIR=$tmp/root cmake --install "$build" --prefix /usr >"$tmp/install.log" \
  2>&1 || { cat "$tmp/install.log"; echo "FAIL: cmake --install"; exit 1; }
r=$tmp/root

for f in usr/sbin/ferryd usr/sbin/ferry-sendmail usr/bin/ferryctl \
         usr/bin/ferry-modemsim; do
  [[ -f $r/$f && -x $r/$f ]] || bad "$f not installed or not executable"
done
for f in usr/bin/ferryd usr/bin/ferry-sendmail usr/sbin/ferryctl; do
  [[ ! -e $r/$f ]] || bad "$f installed in the wrong directory"
done
"$r/usr/sbin/ferryd" --version | grep -q '^ferryd ' ||
  bad "installed ferryd --version"
"$r/usr/bin/ferryctl" --help >/dev/null 2>&1 ||
  bad "installed ferryctl --help"
"$r/usr/bin/ferry-modemsim" --help >/dev/null 2>&1 ||
  bad "installed ferry-modemsim --help"

pages="man8/ferryd.8 man1/ferryctl.1 man5/ferry.conf.5 \
       man8/ferry-sendmail.8 man1/ferry-modemsim.1"
for p in $pages; do
  f=$r/usr/share/man/$p
  [[ -f $f ]] || { bad "man page $p not installed"; continue; }
  if command -v groff >/dev/null; then
    w=$(groff -man -ww -Tutf8 -z "$f" 2>&1 || true)
    [[ -z $w ]] || bad "groff warnings in installed $p: $w"
  fi
done
if command -v man >/dev/null; then
  # man searches the installed tree the way it searches /usr/share/man.
  for name in ferryd ferryctl ferry.conf ferry-sendmail ferry-modemsim; do
    where=$(MANPATH=$r/usr/share/man man -w "$name" 2>/dev/null || true)
    [[ $where == "$r/usr/share/man/"* ]] || bad "man -w $name: '$where'"
  done
  text=$(MANWIDTH=80 man -l "$r/usr/share/man/man8/ferryd.8" 2>/dev/null |
         col -b)
  grep -q '^FILES' <<<"$text" || bad "man -l ferryd.8 shows no FILES"
  grep -q 'ferryd-control.socket' <<<"$text" ||
    bad "ferryd.8 does not name the socket unit"
fi

for f in etc/ferry.conf README.md \
         $(cd "$src" && ls etc/*.sample); do
  cmp -s "$src/$f" "$r/usr/share/doc/ferry/${f#etc/}" ||
    bad "usr/share/doc/ferry/${f#etc/} missing or different"
done
cmp -s "$src/etc/ferry.conf" "$r/etc/ferry/ferry.conf.sample" ||
  bad "etc/ferry/ferry.conf.sample missing or different"
for f in $(cd "$src/etc" && ls ./*.sample); do
  cmp -s "$src/etc/$f" "$r/etc/ferry/$f" || bad "etc/ferry/$f"
done
[[ ! -e $r/etc/ferry/ferry.conf ]] ||
  bad "a live etc/ferry/ferry.conf was installed (only samples may be)"

u=$r/usr/lib/systemd/system
for f in "$u/ferryd.service" "$u/ferryd-control.socket" \
         "$r/usr/lib/sysusers.d/ferry.conf" \
         "$r/usr/lib/tmpfiles.d/ferry.conf"; do
  [[ -f $f ]] || bad "${f#"$r"/} not installed"
done
grep -qx 'ExecStart=/usr/sbin/ferryd --config /etc/ferry/ferry.conf' \
  "$u/ferryd.service" || bad "ferryd.service ExecStart for prefix /usr"

# The unit, sysusers.d and tmpfiles.d agree on names and directories.
grep -qx 'User=ferry' "$u/ferryd.service" || bad "unit User="
grep -qx 'SocketGroup=ferryctl' "$u/ferryd-control.socket" ||
  bad "socket group"
grep -Eq '^g +ferryctl' "$r/usr/lib/sysusers.d/ferry.conf" ||
  bad "sysusers.d lacks group ferryctl"
rw=$(sed -n 's/^ReadWritePaths=//p' "$u/ferryd.service")
for d in $rw; do
  [[ $d == /run/lock ]] && continue  # Debian's, 1777
  grep -Eq "^d +$d " "$r/usr/lib/tmpfiles.d/ferry.conf" ||
    bad "ReadWritePaths $d is not created by tmpfiles.d"
done

# The installed ferryd accepts the installed sample (users and aliases
# taken from the installed samples), and the places it names are the
# ones the units open up: the sample and the units cannot drift apart.
# --check-config also reads the files the sample names: a certificate
# and key of the test's own stand in for the postmaster's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -days 2 -subj /CN=mail.office.example -keyout "$tmp/key.pem" \
  -out "$tmp/cert.pem" >/dev/null 2>&1
sed -e "s#/etc/ferry/users#$r/etc/ferry/users.sample#" \
    -e "s#/etc/ferry/aliases#$r/etc/ferry/aliases.sample#" \
    -e "s#/etc/ferry/tls/cert.pem#$tmp/cert.pem#" \
    -e "s#/etc/ferry/tls/key.pem#$tmp/key.pem#" \
    "$r/etc/ferry/ferry.conf.sample" >"$tmp/check.conf"
if "$r/usr/sbin/ferryd" --check-config --config "$tmp/check.conf" \
     >"$tmp/effective" 2>"$tmp/check.err"; then
  eff() { sed -n "s/^$1 = //p" "$tmp/effective" | head -1; }
  sock=$(sed -n 's/^ListenStream=//p' "$u/ferryd-control.socket")
  [[ $(eff control_socket) == "$sock" ]] ||
    bad "sample control_socket '$(eff control_socket)' != ListenStream $sock"
  for key in spool mail_root; do
    grep -qw -- "$(eff $key)" <<<"$rw" ||
      bad "sample $key '$(eff $key)' not in ReadWritePaths"
  done
  [[ $(readlink -f "$(eff lock_dir)") == /run/lock ||
     $(eff lock_dir) == /run/lock ]] ||
    bad "sample lock_dir '$(eff lock_dir)' is not /run/lock"
else
  bad "installed ferryd --check-config rejects the installed sample:"
  cat "$tmp/check.err"
fi

# ---- 2. private prefix; systemd-analyze verify -------------------------
cmake --install "$build" --prefix "$tmp/p" >"$tmp/install2.log" 2>&1 ||
  { cat "$tmp/install2.log"; bad "cmake --install --prefix"; }
pu=$tmp/p/lib/systemd/system
grep -qx "ExecStart=$tmp/p/sbin/ferryd --config $tmp/p/etc/ferry/ferry.conf" \
  "$pu/ferryd.service" || bad "ExecStart not rewritten for the prefix"
[[ -f $tmp/p/etc/ferry/ferry.conf.sample ]] ||
  bad "private prefix: no etc/ferry/ferry.conf.sample"
if command -v systemd-analyze >/dev/null; then
  # Verification reports problems of the units themselves (unknown
  # settings, missing binaries); complaints about this machine's other
  # units or a missing system bus are not ours and are filtered out.
  out=$(cd "$pu" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify \
          --man=no ferryd.service ferryd-control.socket 2>&1 || true)
  ours=$(grep -E 'ferryd(-control)?\.(service|socket)' <<<"$out" || true)
  if [[ -n $ours ]]; then
    bad "systemd-analyze verify:"; echo "$ours"
  fi
else
  echo "note: systemd-analyze missing, units not verified"
fi

# ---- 3. sysusers.d and tmpfiles.d in a scratch root --------------------
if command -v systemd-sysusers >/dev/null &&
   command -v systemd-tmpfiles >/dev/null && [[ $(id -u) == 0 ]]; then
  sys=$tmp/sysroot
  mkdir -p "$sys/etc"
  for f in passwd group shadow gshadow; do
    [[ -e /etc/$f ]] && cp -p "/etc/$f" "$sys/etc/$f"
  done
  systemd-sysusers --root="$sys" "$r/usr/lib/sysusers.d/ferry.conf" \
    >/dev/null 2>&1 || bad "systemd-sysusers failed"
  grep -q '^ferry:[^:]*:[0-9]*:[0-9]*:[^:]*:[^:]*:/usr/sbin/nologin$' \
    "$sys/etc/passwd" || bad "no ferry user with nologin shell"
  grep -Eq '^ferryctl:[^:]*:[0-9]+:(.*,)?ferry(,.*)?$' "$sys/etc/group" ||
    bad "ferry is not a member of ferryctl"
  grep -Eq '^dialout:[^:]*:[0-9]+:(.*,)?ferry(,.*)?$' "$sys/etc/group" ||
    bad "ferry is not a member of dialout"
  fuid=$(awk -F: '$1=="ferry"{print $3}' "$sys/etc/passwd")
  fgid=$(awk -F: '$1=="ferry"{print $3}' "$sys/etc/group")
  cgid=$(awk -F: '$1=="ferryctl"{print $3}' "$sys/etc/group")
  mkdir -p "$sys/etc/ferry/tls"
  echo "key" >"$sys/etc/ferry/tls/key.pem"
  chmod 0644 "$sys/etc/ferry/tls/key.pem"
  systemd-tmpfiles --root="$sys" --create \
    "$r/usr/lib/tmpfiles.d/ferry.conf" >/dev/null 2>&1 ||
    bad "systemd-tmpfiles failed"
  expect() {  # path mode uid gid
    local got
    got=$(stat -c '%a %u %g' "$sys$1" 2>/dev/null || echo missing)
    [[ $got == "$2 $3 $4" ]] || bad "$1: '$got', expected '$2 $3 $4'"
  }
  expect /var/spool/ferry 750 "$fuid" "$fgid"
  expect /var/mail/ferry 750 "$fuid" "$fgid"
  expect /run/ferry 750 "$fuid" "$cgid"
  expect /etc/ferry 750 0 "$fgid"
  expect /etc/ferry/tls 750 0 "$fgid"
  expect /etc/ferry/tls/key.pem 640 0 "$fgid"
else
  echo "note: not root or no systemd-sysusers/tmpfiles: layout not made"
fi

if ((fail)); then exit 1; fi
echo "install: all checks passed"
