// Seam's topology and flows page. Plain JavaScript, no libraries: the controller serves it as
// it is, and everything it shows comes from the controller's /v1 API (the caller's certificate
// decides what it may read).
"use strict";

const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { selected: null, edges: new Map(), explained: null };

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

async function getJson(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

// Flow records come as NDJSON; a controller without the flows API yet gives none.
async function getFlows(since) {
  const r = await fetch(`/v1/flows?since=${encodeURIComponent(since)}&limit=5000`);
  if (r.status === 404) return { records: [], note: "this controller serves no flow records" };
  if (!r.ok) throw new Error(`/v1/flows: ${r.status} ${await r.text()}`);
  const text = await r.text();
  const records = text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  return { records, note: "" };
}

// The group a flow end belongs to: its namespace for pods, VMs and external endpoints; the
// nodes; or the world (addresses Seam does not know).
function groupOf(peer) {
  if (peer.kind === "world") return "world";
  if (peer.kind === "node") return "nodes";
  return peer.namespace || "world";
}

function peerText(p) {
  const who = p.name ? `${p.namespace ? p.namespace + "/" : ""}${p.name}` : p.kind;
  return `${who} ${p.ip}${p.port !== undefined ? ":" + p.port : ""}`;
}

function renderNodes(nodes, endpoints) {
  const box = document.getElementById("nodes");
  box.replaceChildren();
  const byNode = new Map();
  for (const e of endpoints) {
    if (!byNode.has(e.node)) byNode.set(e.node, []);
    byNode.get(e.node).push(e);
  }
  for (const n of nodes.slice().sort((a, b) => a.name.localeCompare(b.name))) {
    const role = n.role || "worker";
    const list = el("ul", { class: "endpoints" });
    for (const e of (byNode.get(n.name) || []).sort((a, b) => a.name.localeCompare(b.name))) {
      list.append(el("li", { "data-testid": "endpoint", "data-name": e.name, "data-kind": e.kind },
        el("span", { class: "kind" }, e.kind), `${e.name} ${e.ip}`));
    }
    box.append(el("div", { class: "node", "data-testid": "node", "data-name": n.name },
      el("h3", {}, n.name, el("span", { class: `badge ${role}` }, role), " ", n.underlayIp), list));
  }
}

function renderSegments(segments) {
  const body = document.querySelector("#segments tbody");
  body.replaceChildren();
  for (const s of segments.slice().sort((a, b) => a.name.localeCompare(b.name))) {
    body.append(el("tr", { "data-testid": "segment", "data-name": s.name },
      el("td", {}, s.name), el("td", {}, s.subnet), el("td", {}, s.gateway),
      el("td", {}, String(s.vni)), el("td", {}, s.tenant || "")));
  }
}

function aggregate(records) {
  const edges = new Map();
  for (const r of records) {
    const from = groupOf(r.src), to = groupOf(r.dst);
    const key = `${from}\u2192${to}`;
    if (!edges.has(key)) edges.set(key, { key, from, to, allowed: 0, denied: 0, recent: [] });
    const e = edges.get(key);
    e[r.verdict] += 1 + (r.suppressed || 0);
    e.recent.push(r);
    if (e.recent.length > 20) e.recent.shift();
  }
  return edges;
}

function edgeClass(e) {
  if (e.allowed && e.denied) return "mixed";
  return e.denied ? "denied" : "allowed";
}

function renderGraph(groups, edges) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const names = [...groups].sort();
  const pos = new Map();
  const cx = 320, cy = 320, radius = names.length > 1 ? 240 : 0;
  names.forEach((g, i) => {
    const a = (2 * Math.PI * i) / names.length - Math.PI / 2;
    pos.set(g, [cx + radius * Math.cos(a), cy + radius * Math.sin(a)]);
  });
  for (const e of edges.values()) {
    const [x1, y1] = pos.get(e.from), [x2, y2] = pos.get(e.to);
    let d, lx, ly;
    if (e.from === e.to) {
      d = `M ${x1 - 12} ${y1 - 30} C ${x1 - 60} ${y1 - 110}, ${x1 + 60} ${y1 - 110}, ${x1 + 12} ${y1 - 30}`;
      [lx, ly] = [x1, y1 - 90];
    } else {
      // Bend each direction to its own side so A→B and B→A stay apart.
      const mx = (x1 + x2) / 2 + (y2 - y1) * 0.15, my = (y1 + y2) / 2 - (x2 - x1) * 0.15;
      d = `M ${x1} ${y1} Q ${mx} ${my} ${x2} ${y2}`;
      // The curve's own midpoint, where its badge sits.
      [lx, ly] = [0.25 * x1 + 0.5 * mx + 0.25 * x2, 0.25 * y1 + 0.5 * my + 0.25 * y2];
    }
    const cls = edgeClass(e);
    const label = `${e.from} \u2192 ${e.to}: ${e.allowed} allowed, ${e.denied} denied`;
    const g = el("svg:g", { "data-testid": "edge", "data-from": e.from, "data-to": e.to, "data-verdict": cls });
    g.append(el("svg:path", { d, class: "edge-hit" }));
    g.append(el("svg:path", { d, class: `edge ${cls}${state.selected === e.key ? " selected" : ""}`,
      "marker-end": "url(#arrow)" }, el("svg:title", {}, label)));
    g.append(el("svg:g", { class: `edge-label ${cls}`, "data-testid": "edge-label" },
      el("svg:circle", { cx: lx, cy: ly, r: 13 }),
      el("svg:text", { x: lx, y: ly + 4 }, String(e.allowed + e.denied))));
    g.addEventListener("click", () => select(e.key));
    svg.append(g);
  }
  for (const name of names) {
    const [x, y] = pos.get(name);
    svg.append(el("svg:g", { class: "group", "data-testid": "group", "data-name": name },
      el("svg:circle", { cx: x, cy: y, r: 30 }), el("svg:text", { x, y: y + 4 }, name)));
  }
}

async function select(key) {
  state.selected = key;
  const e = state.edges.get(key);
  document.querySelectorAll("#graph path.edge").forEach((p) => p.classList.remove("selected"));
  const detail = document.getElementById("detail");
  if (!e) return;
  const rows = e.recent.slice().reverse().map((r) => el("tr", { "data-testid": "flow", "data-verdict": r.verdict },
    el("td", {}, new Date(r.timeMs).toLocaleTimeString()),
    el("td", {}, peerText(r.src)), el("td", {}, peerText(r.dst)),
    el("td", {}, r.protocol),
    el("td", { class: `verdict-${r.verdict}` }, r.verdict),
    el("td", {}, [r.policy, r.rule].filter(Boolean).join(" · ") || r.reason)));
  const explainBox = el("pre", { "data-testid": "explain" }, "explaining…");
  detail.replaceChildren(
    el("h2", {}, `${e.from} \u2192 ${e.to}`),
    el("p", {}, `${e.allowed} allowed, ${e.denied} denied (recent window)`),
    el("table", {}, el("thead", {}, el("tr", {}, ...["time", "from", "to", "proto", "verdict", "decided by"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows)),
    el("h3", {}, "Explain"), explainBox);
  // Explain the newest flow of the edge, a denied one first: that is the one asked about.
  const sample = [...e.recent].reverse().find((r) => r.verdict === "denied") || e.recent[e.recent.length - 1];
  const port = sample.dst.port !== undefined ? `${sample.dst.port}/${sample.protocol.toLowerCase()}` : "icmp";
  const query = new URLSearchParams({ src: sample.src.ip, dst: sample.dst.ip, port, output: "text" });
  try {
    const r = await fetch(`/v1/explain?${query}`);
    explainBox.textContent = r.ok ? await r.text() : `explain failed: ${r.status} ${await r.text()}`;
  } catch (err) {
    explainBox.textContent = `explain failed: ${err}`;
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const since = document.getElementById("window").value;
    const [nodes, segments, endpoints, flows] = await Promise.all([
      getJson("/v1/nodes"), getJson("/v1/segments"), getJson("/v1/endpoints"), getFlows(since)]);
    renderNodes(nodes, endpoints);
    renderSegments(segments);
    state.edges = aggregate(flows.records);
    const groups = new Set();
    for (const e of endpoints) if (e.kind !== "host") groups.add(e.namespace);
    for (const e of state.edges.values()) { groups.add(e.from); groups.add(e.to); }
    renderGraph(groups, state.edges);
    status.textContent = `${nodes.length} nodes, ${endpoints.length} endpoints, ${flows.records.length} flow records ${flows.note}`;
    status.className = "";
  } catch (err) {
    status.textContent = `cannot read the controller: ${err.message}`;
    status.className = "error";
  }
}

function defs() {
  const svg = document.getElementById("graph");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "38", refY: "5",
    markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" },
    el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6475" }));
  return el("svg:defs", {}, marker);
}

const graph = document.getElementById("graph");
const originalReplace = graph.replaceChildren.bind(graph);
// The arrow marker must survive every redraw of the graph.
graph.replaceChildren = (...nodes) => originalReplace(defs(), ...nodes);
document.getElementById("window").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
