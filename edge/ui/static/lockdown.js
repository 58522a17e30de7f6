// The rider screen is a public touch screen: no context menu, no long-press selection, no
// dragging, no zoom by pinch, ctrl+wheel or the keyboard, no page translation offer.
// Shared by the rider page and the "starting" page (edge/ui/launch/waiting.html); the
// browser's own flags (scripts/kiosk-screen) stop the rest.
(function () {
  "use strict";
  var stop = function (event) {
    event.preventDefault();
  };
  var options = { capture: true, passive: false };
  ["contextmenu", "selectstart", "dragstart", "gesturestart"].forEach(function (name) {
    window.addEventListener(name, stop, options);
  });
  // A touchpad pinch arrives as ctrl+wheel.
  window.addEventListener("wheel", function (event) {
    if (event.ctrlKey) event.preventDefault();
  }, options);
  // Two fingers on the screen: a pinch.
  window.addEventListener("touchmove", function (event) {
    if (event.touches && event.touches.length > 1) event.preventDefault();
  }, options);
  // A keyboard left plugged in: ctrl/cmd with + - = 0 zooms.
  window.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && ["+", "-", "=", "0", "_"].indexOf(event.key) >= 0) {
      event.preventDefault();
    }
  }, options);
  var root = document.documentElement;
  root.setAttribute("translate", "no");
  root.dataset.lockdown = "on";
})();
