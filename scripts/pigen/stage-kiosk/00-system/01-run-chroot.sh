#!/bin/bash -e
# In the image: Chromium for the rider screen, the accounts the units run as, the
# technicians' group. kiosk-ui.service runs kiosk-screen as kiosk-ui, which starts
# /usr/bin/cage and /usr/bin/chromium, /usr/bin/wlr-randr to rotate the screen (newer cage)
# and /usr/bin/swayidle to blank it (ui.rotation, ui.blank_after_s).

# Raspberry Pi OS ships its own Chromium build as chromium-browser (bookworm) and as
# chromium (later releases, where chromium-browser only points at it).
if apt-cache show --no-all-versions chromium-browser 2>/dev/null | grep -q '^Package: chromium-browser$'; then
	apt-get install -y chromium-browser
else
	apt-get install -y chromium
fi
if [ ! -e /usr/bin/chromium ] && [ -x /usr/bin/chromium-browser ]; then
	ln -s chromium-browser /usr/bin/chromium
fi
test -x /usr/bin/chromium
test -x /usr/bin/cage
test -x /usr/bin/swayidle
test -x /usr/bin/wlr-randr

# Technicians: `kiosk` commands that change state need root or this group.
getent group kiosk-tech >/dev/null || groupadd --system kiosk-tech

# kiosk-edge and kiosk-sync run as kiosk: the slot board's serial line and the camera.
if ! id kiosk >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/kiosk --no-create-home \
		--shell /usr/sbin/nologin kiosk
fi
usermod -a -G dialout,video kiosk

# kiosk-ui runs the compositor and the browser on the touch screen (tty1).
if ! id kiosk-ui >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/kiosk-ui --create-home \
		--shell /usr/sbin/nologin kiosk-ui
fi
chmod 0700 /var/lib/kiosk-ui
for group in video render input; do
	if getent group "${group}" >/dev/null; then
		usermod -a -G "${group}" kiosk-ui
	fi
done
