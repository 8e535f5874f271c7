// Refusals per minute as stacked bars, drawn as SVG elements (no library, no inline code).

const SVG = "http://www.w3.org/2000/svg";
export const COLOURS = ["#c0392b", "#2f6fad", "#d68910", "#7d3c98", "#138d75", "#5d6d7e"];
const WIDTH = 960;
const HEIGHT = 200;
const LEFT = 40;
const BOTTOM = 20;

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export function swatch(colour) {
  const box = svg("svg", { width: 12, height: 12, "aria-hidden": "true" });
  box.appendChild(svg("rect", { width: 12, height: 12, fill: colour }));
  return box;
}

// series: [{label, colour, perMinute: [60 counts, oldest first]}]
export function refusalChart(series, minutes) {
  const totals = new Array(minutes).fill(0);
  for (const s of series) {
    s.perMinute.forEach((count, i) => { totals[i] += count; });
  }
  const peak = Math.max(1, ...totals);
  const plotWidth = WIDTH - LEFT;
  const plotHeight = HEIGHT - BOTTOM;
  const barWidth = plotWidth / minutes;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": `Refusals per minute over the last ${minutes} minutes, at most ${peak} a minute`,
  });
  chart.appendChild(svg("line", {
    x1: LEFT, y1: plotHeight, x2: WIDTH, y2: plotHeight, stroke: "#d8dde3",
  }));
  chart.appendChild(svg("text", { x: LEFT - 6, y: 10, "text-anchor": "end" }, String(peak)));
  chart.appendChild(svg("text", { x: LEFT - 6, y: plotHeight, "text-anchor": "end" }, "0"));
  chart.appendChild(svg("text", { x: LEFT, y: HEIGHT - 4 }, `${minutes} min ago`));
  chart.appendChild(svg("text", { x: WIDTH, y: HEIGHT - 4, "text-anchor": "end" }, "now"));
  for (let i = 0; i < minutes; i += 1) {
    let top = plotHeight;
    for (const s of series) {
      const count = s.perMinute[i];
      if (!count) {
        continue;
      }
      const height = (count / peak) * (plotHeight - 4);
      top -= height;
      const bar = svg("rect", {
        x: LEFT + i * barWidth + 1,
        y: top,
        width: Math.max(1, barWidth - 2),
        height,
        fill: s.colour,
      });
      const ago = minutes - 1 - i;
      bar.appendChild(svg("title", {}, `${s.label}: ${count} (${ago} min ago)`));
      chart.appendChild(bar);
    }
  }
  return chart;
}
