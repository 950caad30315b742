# What must be on the machine before a build: the Debian packages of dist/debian-packages
# and a new enough Rust. Sourced by install.sh, test.sh and dist/deb.sh.

jsipd_package_list="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debian-packages"

# jsipd_packages GROUP...: the packages of those groups, one per line, in file order.
jsipd_packages() {
    local want=" $* " group package
    while read -r group package _; do
        [[ -z $group || $group == \#* ]] && continue
        if [[ $want == *" $group "* ]]; then echo "$package"; fi
    done <"$jsipd_package_list"
}

# jsipd_missing_packages GROUP...: those of them dpkg does not have installed.
jsipd_missing_packages() {
    local p
    for p in $(jsipd_packages "$@"); do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx "install ok installed" || echo "$p"
    done
}

# jsipd_ensure_packages WHO GROUP...: installs what is missing of those groups with
# apt-get when root (or with sudo when WHO allows it: "test.sh" may, "install.sh" may
# not, because a build tool should not ask for a password behind the user's back).
# Otherwise prints the exact command and returns 1.
jsipd_ensure_packages() {
    local who=$1
    shift
    local missing
    missing=$(jsipd_missing_packages "$@" | tr '\n' ' ')
    missing=${missing% }
    [[ -z $missing ]] && return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        if [[ $who != test.sh ]] || ! command -v sudo >/dev/null; then
            echo "$who: these Debian packages are missing: $missing" >&2
            echo "$who: install them, then run $who again:" >&2
            echo >&2
            echo "    sudo apt-get install -y --no-install-recommends $missing" >&2
            echo >&2
            [[ $who == install.sh ]] && echo "(or ./install.sh --no-deps if you manage packages yourself)" >&2
            return 1
        fi
        sudo=sudo
    fi
    echo "$who: installing $missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
}

# jsipd_check_rust WHO: cargo and rustc are on PATH, and rustc is at least the
# workspace's rust-version. cargo would refuse an older one too, but only after
# resolving every crate, in words about a "package"; this says what to do.
jsipd_check_rust() {
    local who=$1 need have
    need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' \
        "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" | head -n 1)
    if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
        echo "$who: cargo and rustc are not on PATH; jsipd needs Rust $need or newer:" >&2
        echo "    install it with rustup (https://rustup.rs), then open a new shell" >&2
        return 1
    fi
    have=$(rustc --version | cut -d' ' -f2)
    have=${have%%-*}
    if ! printf '%s\n%s\n' "$need" "$have" | sort -V -C; then
        echo "$who: rustc $have is older than Rust $need, which jsipd needs (rust-version in Cargo.toml):" >&2
        echo "    rustup update stable" >&2
        return 1
    fi
}
