// The otpauth URI as a QR code, drawn on a canvas in the page (no image
// fetched, no inline markup).

import qrcode from "qrcode-generator";

/** A canvas showing `text` as a QR code, labelled for assistive technology. */
export function qrCanvas(text: string, label: string): HTMLCanvasElement {
  const qr = qrcode(0, "M");
  qr.addData(text, "Byte");
  qr.make();
  const modules = qr.getModuleCount();
  const quiet = 4;
  const cell = Math.max(3, Math.floor(232 / (modules + 2 * quiet)));
  const size = (modules + 2 * quiet) * cell;
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  canvas.className = "qr";
  const ctx = canvas.getContext("2d");
  if (!ctx) return canvas;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.fillStyle = "#000";
  for (let row = 0; row < modules; row++) {
    for (let col = 0; col < modules; col++) {
      if (qr.isDark(row, col)) ctx.fillRect((col + quiet) * cell, (row + quiet) * cell, cell, cell);
    }
  }
  return canvas;
}
