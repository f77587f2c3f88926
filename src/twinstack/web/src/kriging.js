// Kriging in the page: sample points from a CSV file, the interpolated map drawn on a canvas
// with a colour bar and the samples on top.

const MAX_POINTS = 20_000;
// viridis at five stops, interpolated linearly
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

export function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}

// Rows of x, y, value (comma, semicolon or tab; a header line is skipped).
export function parsePoints(text) {
  const xy = [];
  const values = [];
  const lines = text.split(/\r?\n/).filter((line) => line.trim());
  lines.forEach((line, i) => {
    const cells = line.split(/[,;\t]/).map((c) => c.trim());
    const numbers = cells.slice(0, 3).map(Number);
    if (cells.length < 3 || numbers.some((v) => !Number.isFinite(v))) {
      if (i === 0) return;  // a header
      throw new Error(`line ${i + 1} is not "x, y, value": ${line.slice(0, 60)}`);
    }
    xy.push([numbers[0], numbers[1]]);
    values.push(numbers[2]);
  });
  if (values.length < 3) throw new Error(`kriging needs at least 3 points, the file has ${values.length}`);
  return pointSet(xy, values);
}

// Points and their values with the ranges a map spans; at most MAX_POINTS.
export function pointSet(xy, values) {
  if (values.length > MAX_POINTS) throw new Error(`${values.length} points; the page kriges up to ${MAX_POINTS}`);
  const xs = xy.map((p) => p[0]);
  const ys = xy.map((p) => p[1]);
  return { xy, values, xRange: [Math.min(...xs), Math.max(...xs)],
           yRange: [Math.min(...ys), Math.max(...ys)] };
}

// The estimates (rows from y min to y max) as a map, its colour bar and the samples.
export function krigingMap(canvas, estimates, points) {
  const bar = 70;
  const width = canvas.width - bar;
  const { height } = canvas;
  const context = canvas.getContext("2d");
  const flat = estimates.flat();
  const lo = Math.min(...flat);
  const hi = Math.max(...flat);
  const span = hi - lo || 1;
  const ny = estimates.length;
  const nx = estimates[0].length;
  const image = context.createImageData(width, height);
  for (let py = 0; py < height; py++) {
    const row = estimates[Math.min(ny - 1, Math.floor(((height - 1 - py) / height) * ny))];
    for (let px = 0; px < width; px++) {
      const [r, g, b] = colour((row[Math.min(nx - 1, Math.floor((px / width) * nx))] - lo) / span);
      image.data.set([r, g, b, 255], (py * width + px) * 4);
    }
  }
  context.clearRect(0, 0, canvas.width, height);
  context.putImageData(image, 0, 0);
  const [x0, x1] = points.xRange;
  const [y0, y1] = points.yRange;
  context.fillStyle = "#fff";
  context.strokeStyle = "#000";
  for (const [x, y] of points.xy) {
    context.beginPath();
    context.arc(((x - x0) / (x1 - x0 || 1)) * (width - 1), (1 - (y - y0) / (y1 - y0 || 1)) * (height - 1), 3, 0, 2 * Math.PI);
    context.fill();
    context.stroke();
  }
  for (let py = 10; py < height - 10; py++) {  // the colour bar, high at the top
    const [r, g, b] = colour(1 - (py - 10) / (height - 21));
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fillRect(width + 10, py, 16, 1);
  }
  context.fillStyle = "#1d2329";
  context.font = "12px system-ui, sans-serif";
  context.fillText(hi.toPrecision(3), width + 30, 16);
  context.fillText(lo.toPrecision(3), width + 30, height - 8);
  return { lo, hi };
}
