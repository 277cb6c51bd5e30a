#!/usr/bin/env bash
# man/ferry-sendmail.8 renders without warnings, has the sections a reader
# needs, and documents every option letter that tools/sendmail_main.cc
# accepts (so the page cannot drift from the code).
# Usage: sendmail_manpage.sh MAN_PAGE SENDMAIL_MAIN_CC
set -euo pipefail
page=$1
src=$2
command -v groff >/dev/null || { echo "groff missing: skipped"; exit 77; }

warnings=$(groff -man -ww -Tutf8 "$page" 2>&1 >/dev/null)
if [[ -n "$warnings" ]]; then
  echo "groff warnings:"; echo "$warnings"; exit 1
fi
text=$(groff -man -Tutf8 "$page" 2>/dev/null | col -b)

fail=0
for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" FILES \
         DIAGNOSTICS BUGS "SEE ALSO"; do
  grep -q "^$s\$" <<<"$text" || { echo "missing section $s"; fail=1; }
done

# Option letters: every "case 'X':" inside parse_args().
letters=$(sed -n '/^Args parse_args/,/^}/p' "$src" |
          grep -o "case '[A-Za-z]':" | cut -c7)
for l in $letters; do
  grep -Eq -- "(^|[^A-Za-z])-$l" <<<"$text" ||
    { echo "option -$l not documented"; fail=1; }
done
# The -b modes and every exit status the program uses.
for m in bm bs bp; do
  grep -q -- "-$m" <<<"$text" || { echo "mode -$m not documented"; fail=1; }
done
for e in $(grep -o 'EX_[A-Z]*' "$src" | sort -u); do
  [[ $e == EX_SOFTWARE ]] && continue  # unreachable fallback
  grep -q "($e)" <<<"$text" || { echo "$e not documented"; fail=1; }
done
exit $fail
