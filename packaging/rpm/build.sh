#!/usr/bin/env bash
# `make rpm`: build the kata-shim source and binary RPMs on this (Debian) host, then rpmlint them.
#
#   packaging/rpm/build.sh [--no-lint]      RPM_TOPDIR=<dir> overrides build/rpmbuild
#
# Source0 is a tarball of the git-tracked files as they are in the working tree.
# rpmbuild gets the openEuler-compat macros (--load) and --nodeps (Debian's rpm
# database is empty, so no BuildRequires can be satisfied from it). The build
# runs Debian's /usr/bin/python3 (the openEuler %__python3) with the virtualenv's
# site-packages on PYTHONPATH: that is where scripts/dev.sh installed the pinned
# BuildRequires (setuptools, Cython 3, cffi >= 1.16). Prints the RPM paths last.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SPEC="$ROOT/packaging/rpm/kata-shim.spec"
MACROS="$ROOT/packaging/rpm/macros.openeuler-compat"
RPMLINTRC="$ROOT/packaging/rpm/kata-shim.rpmlintrc"
TOPDIR=${RPM_TOPDIR:-$ROOT/build/rpmbuild}
VENV=${VENV:-$ROOT/.venv}
NAME=$(sed -n 's/^Name: *//p' "$SPEC")
VERSION=$(sed -n 's/^Version: *//p' "$SPEC")

for tool in rpmbuild rpmlint git; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool missing (scripts/dev.sh setup)" >&2; exit 1; }
done

rm -rf "$TOPDIR"
mkdir -p "$TOPDIR"/{SOURCES,SPECS,BUILD,RPMS,SRPMS,tmp}
tarball="$TOPDIR/SOURCES/$NAME-$VERSION.tar.gz"
(cd "$ROOT" && git ls-files -z | tar --null -T - --ignore-failed-read --owner=0 --group=0 \
  --transform "s,^,$NAME-$VERSION/," -czf "$tarball")
cp "$SPEC" "$TOPDIR/SPECS/"

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYTHONPATH="$site" rpmbuild \
  --define "_topdir $TOPDIR" --define "_tmppath $TOPDIR/tmp" \
  --define "packager ${RPM_PACKAGER:-kata-shim developers <kata-shim@localhost>}" \
  --load "$MACROS" --nodeps -ba "$TOPDIR/SPECS/$NAME.spec"

srpm=$(ls "$TOPDIR"/SRPMS/"$NAME"-"$VERSION"-*.src.rpm)
rpm=$(ls "$TOPDIR"/RPMS/*/"$NAME"-"$VERSION"-*.rpm)
if [ "${1:-}" != "--no-lint" ]; then
  echo "==> rpmlint" >&2
  rpmlint -r "$RPMLINTRC" "$SPEC" "$srpm" "$rpm"
fi
echo "$srpm"
echo "$rpm"
