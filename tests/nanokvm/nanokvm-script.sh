#!/usr/bin/env bash
# A script the way NanoKVM users write theirs (curl + jq + openssl), pointed at jsipd.
# tests/nanokvm.rs runs it against the daemon and the QEMU guest and checks every line
# it prints and every effect on the guest.
#
#   KVM=http://host:port KVM_USER=ada KVM_PASS=secret OUT=/tmp/x ./nanokvm-script.sh power
#   ... ./nanokvm-script.sh media      (after the target booted)
#   ... ./nanokvm-script.sh eject      (after the target saw the CD)
#   ... ./nanokvm-script.sh network    (after the target lost its link)
#
# Each answer is printed as "NAME JSON" on one line.
set -euo pipefail
: "${KVM:?}" "${KVM_USER:?}" "${KVM_PASS:?}" "${OUT:?}"
jar="$OUT/token"

login() {
    # NanoKVM's page: encodeURIComponent(CryptoJS.AES.encrypt(password, key)).
    local enc
    enc=$(printf %s "$KVM_PASS" | openssl enc -aes-256-cbc -base64 -salt -md md5 \
        -pass pass:nanokvm-sipeed-2024 2>/dev/null | tr -d '\n' | jq -sRr @uri)
    local user
    user=$(printf %s "$KVM_USER" | jq -sRr @uri)
    local answer
    answer=$(curl -sS -X POST "$KVM/api/auth/login" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$user\",\"password\":\"$enc\"}")
    echo "login $answer"
    jq -er .data.token <<<"$answer" >"$jar"
}

api() { # METHOD PATH [JSON]
    curl -sS -X "$1" -b "nano-kvm-token=$(cat "$jar")" -H 'Content-Type: application/json' \
        ${3:+-d "$3"} "$KVM/api$2"
}

case "$1" in
power)
    login
    echo "account $(api GET /auth/account)"
    echo "info $(api GET /vm/info)"
    echo "led-before $(api GET /vm/gpio/led)"
    echo "power $(api POST /vm/gpio '{"type":"power","duration":800}')"
    # Wait for the power LED, as people's scripts do.
    for _ in $(seq 1 100); do
        led=$(api GET /vm/gpio/led)
        if [ "$(jq -r .data.pwr <<<"$led")" = true ]; then break; fi
        sleep 0.2
    done
    echo "led-after $led"
    ;;
media)
    # Type a command into the target's console, which answers on its serial port.
    echo "paste $(api POST /hid/paste '{"content":"echo nanokvm-paste-$((6*7)) > /dev/ttyS0\n"}')"
    echo "reset $(api POST /hid/reset)"
    # One frame of the stream, through ffmpeg.
    curl -sS -b "nano-kvm-token=$(cat "$jar")" "$KVM/api/stream/mjpeg" \
        | ffmpeg -loglevel error -i - -frames:v 1 -y "$OUT/frame.jpg" || true
    echo "detect $(api GET /stream/mjpeg/detect)"
    echo "detect-toggle $(api POST /stream/mjpeg/detect)"
    echo "detect-stop $(api POST /stream/mjpeg/detect/stop)"
    images=$(api GET /storage/images)
    echo "images $images"
    iso=$(jq -r '.data.files[] | select(endswith(".iso"))' <<<"$images" | head -n1)
    echo "mount $(api POST /storage/image/mount "{\"file\":\"$iso\"}")"
    echo "mounted $(api GET /storage/images/mounted)"
    echo "mounted-too $(api GET /storage/image/mounted)"
    echo "virtual $(api GET /vm/device/virtual)"
    ;;
eject)
    echo "virtual-network $(api POST /vm/device/virtual '{"device":"network"}')"
    echo "virtual-disk $(api POST /vm/device/virtual '{"device":"disk"}')"
    echo "mounted-after $(api GET /storage/image/mounted)"
    echo "virtual-after $(api GET /vm/device/virtual)"
    ;;
network)
    echo "virtual-network-again $(api POST /vm/device/virtual '{"device":"network"}')"
    echo "virtual-again $(api GET /vm/device/virtual)"
    echo "logout $(api POST /auth/logout)"
    echo "after-logout $(api GET /vm/info)"
    ;;
*)
    echo "usage: $0 power|media|eject|network" >&2
    exit 2
    ;;
esac
