#!/bin/bash -e
# Host side: the first user is a technician; the bundle is not needed in the image any more.
on_chroot <<EOS
usermod -a -G kiosk-tech,dialout,video "${FIRST_USER_NAME}"
EOS
rm -rf "${ROOTFS_DIR}/var/tmp/kiosk-bundle"
