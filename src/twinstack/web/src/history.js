// The model's version history as a graph (SVG): one row per state, newest on top, one lane per
// branch; the head is a filled ring, labels are tags. A state is a button: Enter or a click
// checks it out.

const SVG = "http://www.w3.org/2000/svg";
const ROW = 24;
const LANE = 16;

function node(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== null) element.textContent = text;
  return element;
}

// A state takes its parent's lane when it is the parent's first child; a second child (a new
// branch, made after an undo) opens a new lane.
export function lanes(states) {
  const lane = new Map();
  const taken = new Set();
  let next = 0;
  for (const s of states) {
    const parentLane = s.parent_id === null ? undefined : lane.get(s.parent_id);
    if (parentLane !== undefined && !taken.has(s.parent_id)) {
      lane.set(s.id, parentLane);
      taken.add(s.parent_id);
    } else {
      lane.set(s.id, next++);
    }
  }
  return lane;
}

export function drawHistory(svg, graph, onCheckout) {
  const states = [...graph.states].sort((a, b) => a.id - b.id);
  const lane = lanes(states);
  const width = LANE * (Math.max(0, ...lane.values()) + 1);
  const row = new Map(states.map((s, i) => [s.id, states.length - 1 - i]));
  const x = (id) => 10 + LANE * lane.get(id);
  const y = (id) => 12 + ROW * row.get(id);
  svg.replaceChildren();
  svg.setAttribute("height", String(Math.max(ROW, ROW * states.length)));
  svg.dataset.head = String(graph.head ?? "");
  svg.dataset.states = String(states.length);
  for (const s of states) {
    if (s.parent_id !== null && row.has(s.parent_id)) {
      svg.append(node("path", { class: "edge", d: `M${x(s.parent_id)},${y(s.parent_id)} `
        + `C${x(s.parent_id)},${y(s.id) + ROW / 2} ${x(s.id)},${y(s.parent_id) - ROW / 2} `
        + `${x(s.id)},${y(s.id)}` }));
    }
  }
  for (const s of states) {
    const head = s.id === graph.head;
    const group = node("g", { class: head ? "state head" : "state", tabindex: "0",
                              role: "button", "data-state": String(s.id),
                              "aria-label": `state ${s.id}: ${s.description}`
                                + (head ? " (head)" : "") });
    group.append(node("title", {}, `${s.description}\nby ${s.author}, ${s.created_at}`));
    group.append(node("circle", { cx: x(s.id), cy: y(s.id), r: head ? 6 : 4.5 }));
    const tags = s.labels.length ? `  [${s.labels.join(", ")}]` : "";
    group.append(node("text", { x: width + 16, y: y(s.id) + 4 }, `${s.id} ${s.description}${tags}`));
    const choose = () => { if (!head) onCheckout(s); };
    group.addEventListener("click", choose);
    group.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); }
    });
    svg.append(group);
  }
}
