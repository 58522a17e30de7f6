#!/bin/bash -e
# In the image: install the app from the bundle into /opt/kiosk/<version> (a virtual
# environment filled offline from the bundle's wheels, hash-checked), point
# /opt/kiosk/current at it, link the units into /etc/systemd/system and enable them.
# `kiosk update apply` later installs new versions the same way, beside this one.
bundle=/var/tmp/kiosk-bundle
arch=$(uname -m)

# The manifest's checksums, before anything is installed.
python3 - "${bundle}" <<'PY'
import hashlib, json, pathlib, sys

root = pathlib.Path(sys.argv[1])
manifest = json.loads((root / "manifest.json").read_text())
for entry in manifest["files"]:
    digest = hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        sys.exit(f"stage-kiosk: {entry['path']}: bad checksum")
PY

field() {
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
		"${bundle}/manifest.json" "$1"
}
version=$(field version)
wheel=$(field project_wheel)
want_python=$(field python)
have_python=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "${want_python}" != "${have_python}" ]; then
	echo "stage-kiosk: the bundle is for Python ${want_python}, the image has ${have_python}" >&2
	exit 1
fi
if [ ! -f "${bundle}/requirements/${arch}.txt" ]; then
	echo "stage-kiosk: the bundle has no wheels for ${arch}" >&2
	exit 1
fi

target="/opt/kiosk/${version}"
rm -rf "${target}"
install -d -m 755 /opt/kiosk
# --system-site-packages: picamera2 and libcamera come from Raspberry Pi OS (python3-picamera2).
python3 -m venv --system-site-packages "${target}"
export PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
"${target}/bin/python" -m pip install --no-index --no-deps --find-links "${bundle}/wheels" \
	--require-hashes -r "${bundle}/requirements/${arch}.txt"
"${target}/bin/python" -m pip install --no-index --no-deps "${bundle}/${wheel}"
"${target}/bin/kiosk" --version
test -x "${target}/bin/kiosk-screen" # the rider screen's launcher (kiosk-ui.service)

install -d -m 755 "${target}/systemd" "${target}/share/doc"
install -m 644 "${bundle}"/systemd/*.service "${target}/systemd/"
install -m 644 "${bundle}/doc/README.md" "${target}/share/doc/README.md"
if [ -f "${bundle}/manifest.sig" ]; then
	install -m 644 "${bundle}/manifest.sig" "${target}/manifest.sig"
fi
# Written last: a version folder with it is a complete install (kiosk update status).
install -m 644 "${bundle}/manifest.json" "${target}/bundle-manifest.json"
ln -sfn "${version}" /opt/kiosk/.current.tmp
mv -T /opt/kiosk/.current.tmp /opt/kiosk/current
# `kiosk` on the technicians' PATH (and sudo's), whichever version is current.
ln -sfn /opt/kiosk/current/bin/kiosk /usr/local/bin/kiosk

# The units are links into /opt/kiosk/current, so switching versions switches them too.
units=()
for unit in "${target}"/systemd/*.service; do
	name=$(basename "${unit}")
	ln -sfn "/opt/kiosk/current/systemd/${name}" "/etc/systemd/system/${name}"
	units+=("${name}")
done
systemctl enable "${units[@]}" kiosk-first-boot.path
# The rider screen owns tty1 (kiosk-ui.service conflicts with its login prompt).
systemctl disable getty@tty1.service
systemctl set-default graphical.target
