// The review page: pages of thumbnails from the server's queue, decided with the keyboard.
// Every decision is sent at once (the server writes it to corrections.csv before answering);
// actions run one after another, in the order of the key presses. The token comes from this
// page's URL and goes with every request (a header, or the URL of an image): no cookie.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const client = crypto.randomUUID();  // this page load: its undo takes back its own decisions only
const grid = document.getElementById("grid");
const progress = document.getElementById("progress");
const status = document.getElementById("status");
const KEYS = { c: "cat", d: "dog", n: "neither", b: "both", x: "skip", " ": "accept" };
const CHANGES = new Set([...Object.keys(KEYS), "u"]);

let summary = null;   // from /api/summary, `reviewed` kept up to date
let page = -1;        // the page shown
let items = [];       // its items
let cursor = 0;       // index of the current item in `items`
let queue = Promise.resolve();
let changing = false;  // a decision or undo is on its way: a second key press is not one

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "X-Review-Token": token, "X-Review-Client": client, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const text = await response.text();
    let reason = text;
    try { reason = JSON.parse(text).error || text; } catch (e) { /* not JSON: the text itself */ }
    throw new Error(`${path}: ${response.status} ${reason}`);
  }
  return response.json();
}

function run(action) {  // one action at a time, in order; its message (or error) shown, not thrown
  queue = queue.then(action).then(
    (message) => { status.textContent = message || ""; },
    (error) => { status.textContent = String(error); },
  );
  return queue;
}

function pages() { return Math.max(1, Math.ceil(summary.total / summary.page_size)); }

function showProgress() {
  const s = summary;
  const parts = [`Reviewed ${s.reviewed} / ${s.total}`, `${s.uncertain} uncertain`];
  if (s.disagreements) parts.push(`${s.disagreements} disagreements`);
  parts.push(`page ${page + 1} of ${pages()}`);
  progress.textContent = parts.join(" · ");
}

function caption(item) {  // the model's own answer; a correction the table applied, apart
  const given = item.true_label ? ` · given: ${item.true_label}` : "";
  const corrected = item.corrected ? ` · corrected: ${item.corrected}` : "";
  return `p(dog) ${item.p_dog.toFixed(3)} · model: ${item.label}${corrected}${given}`;
}

function tile(item, index) {
  const figure = document.createElement("figure");
  figure.className = "tile";
  figure.dataset.position = item.position;
  const img = document.createElement("img");
  img.src = `/image/${item.row}?token=${encodeURIComponent(token)}`;
  img.alt = item.name;
  img.onerror = () => { figure.classList.add("missing"); img.alt = "file missing or unreadable"; };
  const text = document.createElement("figcaption");
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = item.name;
  name.title = item.name;
  const decision = document.createElement("span");
  decision.className = "decision";
  const info = document.createElement("div");
  info.textContent = caption(item);
  const section = document.createElement("div");
  section.className = `section ${item.section}`;
  section.textContent = item.section === "uncertain" ? "uncertain" : "disagrees with the given label";
  section.prepend(decision);
  text.append(name, info, section);
  const missing = document.createElement("div");
  missing.className = "missing-note";
  missing.textContent = "file missing or unreadable";
  figure.append(img, missing, text);
  figure.addEventListener("click", () => { cursor = index; mark(); });
  return figure;
}

function mark() {  // the tiles' decisions and the cursor, as the state says
  grid.querySelectorAll(".tile").forEach((figure, index) => {
    const item = items[index];
    figure.classList.remove(...Object.values(KEYS).map((label) => `decided-${label}`), "current");
    if (item.decision) figure.classList.add(`decided-${item.decision}`);
    if (index === cursor) figure.classList.add("current");
    figure.querySelector(".decision").textContent = item.decision || "";
  });
  const current = grid.children[cursor];
  if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest" });
  showProgress();
}

async function show(position) {  // the page holding queue position `position`, cursor on it
  if (!summary.total) {
    grid.innerHTML = '<p class="empty">Nothing to review: no readable image lies in the uncertain band or disagrees with its given label.</p>';
    showProgress();
    return;
  }
  position = Math.min(Math.max(position, 0), summary.total - 1);
  const wanted = Math.floor(position / summary.page_size);
  if (wanted !== page) {
    items = (await api(`/api/page?page=${wanted}`)).items;
    page = wanted;
    grid.replaceChildren(...items.map(tile));
  }
  cursor = position - page * summary.page_size;
  mark();
}

function columns() {  // tiles per row of the grid as laid out now
  const tiles = grid.children;
  let n = 1;
  while (n < tiles.length && tiles[n].offsetTop === tiles[0].offsetTop) n++;
  return n;
}

async function decide(label) {
  const item = items[cursor];
  if (!item) return;
  const answer = await api("/api/decide", { position: item.position, label });
  item.decision = answer.decision;
  summary.reviewed = answer.reviewed;
  await show(item.position + 1);
}

async function undo() {
  const answer = await api("/api/undo", {});
  summary.reviewed = answer.reviewed;
  if (answer.position === null) return "nothing to undo";
  await show(answer.position);
  items[cursor].decision = answer.decision;
  mark();
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || !summary) return;
  if (CHANGES.has(event.key) && (event.repeat || changing)) {  // a held key decides nothing more
    event.preventDefault();
    return;
  }
  const here = () => page * summary.page_size + cursor;  // when the action runs, after those before it
  let action = null;
  if (event.key in KEYS) action = () => decide(KEYS[event.key]);
  else if (event.key === "u") action = undo;
  else if (event.key === "ArrowRight") action = () => show(here() + 1);
  else if (event.key === "ArrowLeft") action = () => show(here() - 1);
  else if (event.key === "ArrowDown") action = () => show(here() + columns());
  else if (event.key === "ArrowUp") action = () => show(here() - columns());
  else if (event.key === "PageDown") action = () => show((page + 1) * summary.page_size);
  else if (event.key === "PageUp") action = () => show((page - 1) * summary.page_size);
  if (action) {
    event.preventDefault();
    if (CHANGES.has(event.key)) {
      changing = true;
      run(action).then(() => { changing = false; });
    } else {
      run(action);
    }
  }
});

run(async () => {
  summary = await api("/api/summary");
  const table = document.getElementById("table");
  table.textContent = `${summary.table} → ${summary.corrections.split("/").pop()}`;
  table.title = `decisions are saved to ${summary.corrections}`;
  await show(summary.start);
});
