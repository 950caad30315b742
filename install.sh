#!/usr/bin/env bash
# Build jsipd (release) and lay out an install tree:
#   bin/ conf/ certs/ logs/ plugins/ sdk/ share/
# Safe to run again: existing files in conf/ and certs/ are never overwritten.
# With --deb, the same tree goes into a Debian package instead (dist/deb.sh).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: ./install.sh [--prefix=DIR] [--no-deps]
       ./install.sh --deb [--no-deps]

  --prefix=DIR  install tree (default: /usr/local/jsipd as root, else $HOME/jsipd)
  --no-deps     do not check the Debian packages of dist/debian-packages (you manage
                packages yourself); without it, root gets the missing ones installed
                with apt-get and anyone else the exact command, before any building
  --deb         build target/debian/jsipd_VERSION_ARCH.deb (binaries, plugins, sdk,
                the systemd unit, logrotate, conf in /etc/jsipd) instead of a tree
USAGE
}

if [[ $(id -u) -eq 0 ]]; then prefix=/usr/local/jsipd; else prefix=$HOME/jsipd; fi
deps=yes deb=no prefix_given=no
for arg in "$@"; do
    case $arg in
        --prefix=*) prefix=${arg#--prefix=} prefix_given=yes ;;
        --no-deps) deps=no ;;
        --deb) deb=yes ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -n $prefix ]] || { echo "install.sh: --prefix is empty" >&2; exit 2; }
[[ $deb == no || $prefix_given == no ]] || { echo "install.sh: --deb installs to /usr/lib/jsipd; it takes no --prefix" >&2; exit 2; }

src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=dist/prereqs.sh
source "$src/dist/prereqs.sh"
if [[ $deps == yes ]]; then
    jsipd_ensure_packages install.sh build runtime || exit 1
fi
jsipd_check_rust install.sh || exit 1

echo "building jsipd (release)..."
cargo build --release --locked --manifest-path "$src/Cargo.toml" -p jsipd -p jsip-bench -p jsipd-echo -p jsipd-chatroom -p jsipd-gpio -p jsipd-storage -p jsipd-hid -p jsipd-stream -p jsipd-serial -p jsipd-nanokvm
target=${CARGO_TARGET_DIR:-$src/target}

if [[ $deb == yes ]]; then
    # The package's tree is laid out like any other, in a scratch folder, at the path
    # it will have: dist/deb.sh then moves conf/ to /etc and packs it.
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    prefix=$stage/usr/lib/jsipd
fi

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
mkdir -p "$prefix"/{bin,conf,certs,logs,plugins,sdk,share}

# Replace binaries by rename, so a running jsipd keeps its (old) executable intact.
install_bin() {
    local from=$1 to=$2
    cp "$from" "$to.new"
    chmod 0755 "$to.new"
    mv -f "$to.new" "$to"
}
install_bin "$target/release/jsipd" "$prefix/bin/jsipd"
install_bin "$target/release/jsip-bench" "$prefix/bin/jsip-bench"
install_bin "$src/pcompile" "$prefix/bin/pcompile"
install_bin "$target/release/jsipd-gadget" "$prefix/bin/jsipd-gadget"

# The SDK: what pcompile builds plugins against, offline: plugin-api's source and the
# crates it depends on, vendored at the versions of our Cargo.lock.
rm -rf "$prefix/sdk/plugin-api.new" "$prefix/sdk/vendor.new"
mkdir -p "$prefix/sdk/plugin-api.new"
cp -r "$src/plugin-api/Cargo.toml" "$src/plugin-api/build.rs" "$src/plugin-api/src" "$prefix/sdk/plugin-api.new/"
vendoring=$(mktemp -d)
trap 'rm -rf "$vendoring" ${stage:+"$stage"}' EXIT
cp -r "$prefix/sdk/plugin-api.new" "$vendoring/plugin-api"
cp "$src/Cargo.lock" "$vendoring/plugin-api/Cargo.lock"
cargo vendor --quiet --manifest-path "$vendoring/plugin-api/Cargo.toml" "$prefix/sdk/vendor.new" >/dev/null
rm -rf "$prefix/sdk/plugin-api" "$prefix/sdk/vendor"
mv "$prefix/sdk/plugin-api.new" "$prefix/sdk/plugin-api"
mv "$prefix/sdk/vendor.new" "$prefix/sdk/vendor"

# The plugins (loaded with curl; see README): the examples and the KVM suite, and their
# config, never overwritten.
for p in echo chatroom gpio storage hid stream serial nanokvm; do
    cp "$target/release/lib$p.so" "$prefix/plugins/.$p.so.new"
    chmod 0644 "$prefix/plugins/.$p.so.new"
    mv -f "$prefix/plugins/.$p.so.new" "$prefix/plugins/$p.so"
    if [[ -d $src/plugins/$p/conf ]]; then
        mkdir -p "$prefix/conf/$p"
        for f in "$src/plugins/$p"/conf/*; do
            [[ -e $prefix/conf/$p/$(basename "$f") ]] || cp "$f" "$prefix/conf/$p/"
        done
    fi
done

# Config: never overwrite what the operator has; always refresh the .default reference.
for f in "$src"/conf/*.ini; do
    name=$(basename "$f")
    cp "$f" "$prefix/conf/$name.default"
    if [[ ! -e $prefix/conf/$name ]]; then
        cp "$f" "$prefix/conf/$name"
        echo "installed conf/$name"
    else
        echo "kept existing conf/$name (reference copy: conf/$name.default)"
    fi
done

if [[ $deb == yes ]]; then
    "$src/dist/deb.sh" "$stage" "$target/debian"
    exit
fi

if [[ ! -e $prefix/certs/jsipd.crt && ! -e $prefix/certs/jsipd.key ]]; then
    "$prefix/bin/jsipd" -p "$prefix" gencert
fi

# Service files, filled in for this prefix (copy them into /etc yourself).
for t in jsipd.service logrotate; do
    sed "s|@PREFIX@|$prefix|g" "$src/dist/$t.in" > "$prefix/share/$t"
done

"$prefix/bin/jsipd" -p "$prefix" -t

cat <<DONE

jsipd installed in $prefix
  start:     $prefix/bin/jsipd
  check:     $prefix/bin/jsipd -t
  signals:   $prefix/bin/jsipd -s reload|reopen|quit|stop
  plugins:   curl -X POST 'http://127.0.0.1:2539/slpm/v1/echo?file=echo.so'
             $prefix/bin/pcompile --new demo && $prefix/bin/pcompile demo
  sign-in:   http://THIS-HOST:8080/ (the people's port); no account exists until you
             create one: $prefix/bin/jsipd user add NAME --role admin
  systemd:   cp $prefix/share/jsipd.service /etc/systemd/system/
  logrotate: cp $prefix/share/logrotate /etc/logrotate.d/jsipd
DONE
