// Draws a payment code as a QR on a canvas: alphanumeric mode (the whole
// "FG1:" + Base45 text is in the QR alphanumeric set), error correction M,
// black modules on white with the standard 4-module quiet zone, whole
// pixels per module so scanners see crisp edges at any screen brightness.

import qrcode from "./vendor/qrcode-generator/qrcode.mjs";

const QUIET = 4;
const SCALE = 8; // canvas pixels per module; CSS scales the canvas to the screen

/** drawQR renders text into canvas and returns the module count (57 for a code: version 10). */
export function drawQR(canvas, text) {
  const qr = qrcode(0, "M");
  qr.addData(text, "Alphanumeric");
  qr.make();
  const n = qr.getModuleCount();
  const size = (n + 2 * QUIET) * SCALE;
  canvas.width = size;
  canvas.height = size;
  const g = canvas.getContext("2d");
  g.fillStyle = "#ffffff";
  g.fillRect(0, 0, size, size);
  g.fillStyle = "#000000";
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (qr.isDark(r, c)) g.fillRect((c + QUIET) * SCALE, (r + QUIET) * SCALE, SCALE, SCALE);
    }
  }
  return n;
}

/** clearQR blanks the canvas (no valid code to show). */
export function clearQR(canvas) {
  canvas.width = 1;
  canvas.height = 1;
}
