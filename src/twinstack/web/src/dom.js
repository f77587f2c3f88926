// Small DOM helpers the page's views share. Text always goes in as text, never as HTML: names
// come from users.

export const $ = (id) => document.getElementById(id);

export function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

// A select's options as [value, label] pairs, keeping what was chosen where it is still there.
export function keepChoice(select, options) {
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
}

export function tableRow(values) {
  const row = document.createElement("tr");
  for (const value of values) {
    const cell = document.createElement("td");
    if (value instanceof Node) cell.append(value); else cell.textContent = value;
    row.append(cell);
  }
  return row;
}

// <dt>/<dd> pairs for a definition list.
export function definitionList(facts) {
  return Object.entries(facts).flatMap(([term, value]) => [
    Object.assign(document.createElement("dt"), { textContent: term }),
    Object.assign(document.createElement("dd"), { textContent: String(value) }),
  ]);
}

// How a parameter shows in a field: lists of numbers as "1, 2, 3", anything else as JSON.
export function shownValue(value) {
  if (Array.isArray(value) && value.every((v) => typeof v === "number")) return value.join(", ");
  return typeof value === "string" ? value : JSON.stringify(value);
}

// What a user typed: a number, a list ("1, 2, 3" or JSON), a word (all); undefined if empty.
export function parseValue(text) {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  for (const candidate of [trimmed, `[${trimmed}]`]) {
    try {
      return JSON.parse(candidate);
    } catch {
      // not JSON this way: try the next
    }
  }
  return /^[A-Za-z_]+$/.test(trimmed) ? trimmed : undefined;
}
