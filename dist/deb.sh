#!/usr/bin/env bash
# dist/deb.sh STAGE OUTDIR: packs the install tree that install.sh --deb laid out in
# STAGE/usr/lib/jsipd into OUTDIR/jsipd_VERSION_ARCH.deb. Run through install.sh --deb.
#
# The package keeps jsipd's one tree (the daemon finds everything relative to its
# prefix, /usr/lib/jsipd) and points the parts that Debian keeps elsewhere there by
# links: conf/ and certs/ -> /etc/jsipd, logs/ -> /var/log/jsipd, images/ and the
# plugins' staging copies -> /var/lib/jsipd. The daemon runs as the system user jsipd,
# which may read /etc/jsipd and write only /var/lib/jsipd and /var/log/jsipd.
set -euo pipefail

stage=${1:?usage: dist/deb.sh STAGE OUTDIR}
out=${2:?usage: dist/deb.sh STAGE OUTDIR}
dist=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=dist/prereqs.sh
source "$dist/prereqs.sh"

lib=/usr/lib/jsipd
tree=$stage$lib
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$dist/../Cargo.toml")
arch=$(dpkg --print-architecture)

# conf/ becomes /etc/jsipd: dpkg's conffiles, kept on remove, asked about on upgrade.
mkdir -p "$stage/etc"
mv "$tree/conf" "$stage/etc/jsipd"
rm -f "$stage"/etc/jsipd/*.default
mkdir -p "$stage/etc/jsipd/certs"
# Whatever the daemon writes itself lives in /var/lib/jsipd, not in /etc.
ini=$stage/etc/jsipd/jsipd.ini
for change in \
    's|^;state_file = conf/.plugins$|state_file = /var/lib/jsipd/plugins.state|' \
    's|^;apikey_file = conf/api.key$|apikey_file = /var/lib/jsipd/api.key|' \
    's|^;auth_secret_file = conf/rtc.secret$|auth_secret_file = /var/lib/jsipd/rtc.secret|' \
    's|^;users_file = conf/users$|users_file = /var/lib/jsipd/users|'; do
    before=$(cat "$ini")
    sed -i "$change" "$ini"
    [[ $(cat "$ini") != "$before" ]] || { echo "dist/deb.sh: conf/jsipd.ini no longer matches $change" >&2; exit 1; }
done
sed -i "1i ; Debian package: this file is /etc/jsipd/jsipd.ini (the tree's conf/ is a link here);\n; the daemon runs as user jsipd and writes /var/lib/jsipd and /var/log/jsipd.\n;" "$ini"

rm -rf "$tree/certs" "$tree/logs" "$tree/share"
ln -s /etc/jsipd "$tree/conf"
ln -s /etc/jsipd/certs "$tree/certs"
ln -s /var/log/jsipd "$tree/logs"
ln -s /var/lib/jsipd/images "$tree/images"
ln -s /var/lib/jsipd/staging "$tree/plugins/.staging"
mkdir -p "$stage/usr/bin"
for b in jsipd jsipd-gadget; do ln -s "../lib/jsipd/bin/$b" "$stage/usr/bin/$b"; done

mkdir -p "$stage/lib/systemd/system" "$stage/etc/logrotate.d"
# The tree's unit and logrotate snippet, for this prefix, without their "copy me" notes.
{
    echo "# jsipd's systemd unit (Debian package): systemctl enable --now jsipd"
    sed -e '1,/^\[Unit\]/{/^#/d}' -e "s|@PREFIX@|$lib|g" \
        -e '/^\[Service\]/a User=jsipd\nGroup=jsipd' "$dist/jsipd.service.in"
} >"$stage/lib/systemd/system/jsipd.service"
{
    echo "# jsipd's logs (Debian package); jsipd reopens them on SIGUSR1 (jsipd -s reopen)"
    sed -e '1,/^@PREFIX@/{/^#/d}' -e "s|@PREFIX@/logs|/var/log/jsipd|g" -e "s|@PREFIX@|$lib|g" \
        -e '/^    daily$/i\    su jsipd jsipd' "$dist/logrotate.in"
} >"$stage/etc/logrotate.d/jsipd"

# Depends: the runtime group, with libc6 at the newest glibc symbol version any binary
# or plugin uses (what dpkg-shlibdeps would say, without a debian/ folder).
glibc=$(for f in "$tree"/bin/* "$tree"/plugins/*.so; do objdump -T "$f" 2>/dev/null || true; done |
    grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[[ -n $glibc ]] || { echo "dist/deb.sh: objdump found no glibc symbol versions in $tree" >&2; exit 1; }
depends=$(jsipd_packages runtime | sed "s/^libc6\$/libc6 (>= $glibc)/" | paste -sd, - | sed 's/,/, /g')

chmod 0755 "$stage"
mkdir -p "$stage/DEBIAN"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: jsipd
Version: $version
Architecture: $arch
Maintainer: jsipd developers <jsipd@localhost>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Description: plugin host for real-time services (JSIP over WebSocket)
 jsipd speaks JSIP, SIP's transactions and dialogs as JSON over WebSocket, serves a
 management REST API on loopback, and loads, replaces and unloads .so plugins at run
 time. Its KVM-over-IP plugins (gpio, storage, hid) ship in $lib/plugins.
CONTROL
(cd "$stage" && find etc -type f | sed 's|^|/|' | sort) >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd jsipd >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/jsipd --no-create-home \
            --shell /usr/sbin/nologin --comment "jsipd plugin host" jsipd
    fi
    # A serial console and a capture device are the target's hardware.
    for g in dialout video; do
        if getent group "$g" >/dev/null; then usermod -a -G "$g" jsipd; fi
    done
    install -d -o jsipd -g jsipd -m 0750 /var/lib/jsipd /var/lib/jsipd/images /var/log/jsipd
    install -d -o jsipd -g jsipd -m 0700 /var/lib/jsipd/staging
    if [ ! -e /etc/jsipd/certs/jsipd.crt ] && [ ! -e /etc/jsipd/certs/jsipd.key ]; then
        /usr/lib/jsipd/bin/jsipd -p /usr/lib/jsipd gencert
    fi
    # The service reads its config and key; only root writes them.
    chown -R root:jsipd /etc/jsipd
    find /etc/jsipd -type d -exec chmod 0750 {} +
    find /etc/jsipd -type f -exec chmod g+r,o-rwx {} +
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable jsipd.service
        systemctl restart jsipd.service
    fi
fi
POSTINST
cat >"$stage/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl disable --now jsipd.service || true
fi
PRERM
cat >"$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
case "$1" in
remove)
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    ;;
purge)
    # dpkg removes the conffiles; this removes what the package and the daemon made.
    # The system user stays, as Debian keeps system users (files may still be theirs).
    rm -rf /var/lib/jsipd /var/log/jsipd /etc/jsipd
    ;;
esac
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/jsipd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "built $deb"
echo "  install: sudo dpkg -i $deb   (or: sudo apt-get install ./$(basename "$deb"))"
echo "  start:   sudo systemctl enable --now jsipd   (the unit runs it as user jsipd)"
