// A sparkline of one price on a canvas: no library, crisp on HiDPI screens.

/** Draws `points` (oldest first) into `canvas`, filling it. */
export function drawSparkline(canvas: HTMLCanvasElement, points: number[]): void {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  if (points.length < 2) {
    ctx.fillStyle = "#6b7a90";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText("waiting for prices…", 12, height / 2);
    return;
  }
  let min = Math.min(...points);
  let max = Math.max(...points);
  if (max - min < 1e-12) {
    min -= 1;
    max += 1;
  }
  const pad = 8;
  const x = (i: number) => pad + (i * (width - 2 * pad)) / (points.length - 1);
  const y = (v: number) => pad + (1 - (v - min) / (max - min)) * (height - 2 * pad);
  const rising = points[points.length - 1]! >= points[0]!;
  const stroke = rising ? "#2fd47a" : "#ff5d6c";

  // Grid: three faint lines.
  ctx.strokeStyle = "rgba(255,255,255,0.06)";
  ctx.lineWidth = 1;
  for (let k = 0; k <= 2; k++) {
    const gy = pad + (k * (height - 2 * pad)) / 2;
    ctx.beginPath();
    ctx.moveTo(pad, gy);
    ctx.lineTo(width - pad, gy);
    ctx.stroke();
  }

  ctx.beginPath();
  points.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))));
  const fill = ctx.createLinearGradient(0, 0, 0, height);
  fill.addColorStop(0, rising ? "rgba(47,212,122,0.28)" : "rgba(255,93,108,0.28)");
  fill.addColorStop(1, "rgba(0,0,0,0)");
  ctx.lineTo(x(points.length - 1), height - pad);
  ctx.lineTo(x(0), height - pad);
  ctx.closePath();
  ctx.fillStyle = fill;
  ctx.fill();

  ctx.beginPath();
  points.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))));
  ctx.strokeStyle = stroke;
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.stroke();

  const lx = x(points.length - 1);
  const ly = y(points[points.length - 1]!);
  ctx.fillStyle = stroke;
  ctx.beginPath();
  ctx.arc(lx, ly, 3.5, 0, Math.PI * 2);
  ctx.fill();

  ctx.fillStyle = "#8796ad";
  ctx.font = "11px ui-monospace, SFMono-Regular, Menlo, monospace";
  // Labels on the left (the newest point and its dot are on the right), on
  // a backing so the line never runs through them.
  ctx.textAlign = "left";
  for (const [text, baseline] of [
    [format(max), pad + 10],
    [format(min), height - pad - 2],
  ] as const) {
    const w = ctx.measureText(text).width;
    ctx.fillStyle = "rgba(18,26,36,0.85)";
    ctx.fillRect(pad, baseline - 11, w + 8, 15);
    ctx.fillStyle = "#8796ad";
    ctx.fillText(text, pad + 4, baseline);
  }
}

/** A price with as many decimals as its size needs. */
export function format(price: number): string {
  const abs = Math.abs(price);
  const decimals = abs >= 1000 ? 2 : abs >= 10 ? 2 : 4;
  return price.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}
