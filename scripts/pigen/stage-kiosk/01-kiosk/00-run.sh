#!/bin/bash -e
# Host side: put the app bundle (copied here by scripts/build-image) and the first-boot
# helper into the image. The bundle is installed by 01-run-chroot.sh and removed by 02-run.sh.
if [ ! -f files/bundle/manifest.json ]; then
	echo "stage-kiosk: no app bundle in ${PWD}/files/bundle: build with scripts/build-image" >&2
	exit 1
fi
rm -rf "${ROOTFS_DIR}/var/tmp/kiosk-bundle"
cp -a files/bundle "${ROOTFS_DIR}/var/tmp/kiosk-bundle"

# Applies the Wi-Fi, SSH key and time zone that `kiosk provision` leaves in
# /etc/kiosk/first-boot/ (see docs/installing.md).
install -m 755 files/kiosk-first-boot "${ROOTFS_DIR}/usr/local/sbin/kiosk-first-boot"
install -m 644 files/kiosk-first-boot.service "${ROOTFS_DIR}/etc/systemd/system/"
install -m 644 files/kiosk-first-boot.path "${ROOTFS_DIR}/etc/systemd/system/"
# The rider screen (kiosk-ui, group video) may switch the touch display's backlight off and
# on (ui.blank_after_s).
install -m 644 files/70-kiosk-backlight.rules "${ROOTFS_DIR}/etc/udev/rules.d/"
install -d -m 755 "${ROOTFS_DIR}/etc/default"
printf 'TECH_USER=%s\n' "${FIRST_USER_NAME}" >"${ROOTFS_DIR}/etc/default/kiosk-first-boot"

# The release key that signs updates (update.release_public_key), when the build pinned one;
# `kiosk provision` keeps it when it writes the rest of the settings.
if [ -f files/kiosk.toml ]; then
	install -d -m 755 "${ROOTFS_DIR}/etc/kiosk"
	install -m 640 files/kiosk.toml "${ROOTFS_DIR}/etc/kiosk/kiosk.toml"
	on_chroot <<-EOS
		chgrp kiosk /etc/kiosk/kiosk.toml
	EOS
fi
