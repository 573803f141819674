"""The review page: one HTML document with inline CSS and JS, nothing fetched from outside the app.

Keys: a accept, r reject, s skip, u undo (buttons too). The reviewer name comes from `?reviewer=NAME`,
else from localStorage (remembered there), else the app's default (`page_for`), else the name
field. Text from the data is set with `textContent` only. For tests, `#app` carries data-version
(incremented at every render), data-garment-id, data-crop-id and data-reviewer.
"""

import html

DEFAULT_REVIEWER = "__DEFAULT_REVIEWER__"


def page_for(default_reviewer: str) -> str:
    """The page with `default_reviewer` (HTML-escaped) as the name used when neither the URL nor
    localStorage gives one."""
    return PAGE.replace(DEFAULT_REVIEWER, html.escape(default_reviewer, quote=True))


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="default-reviewer" content="__DEFAULT_REVIEWER__">
<title>lookbook-miner review</title>
<style>
  :root { --bg: #f5f4f1; --panel: #fff; --ink: #1d1d1f; --muted: #6b6b70; --line: #e2e0db;
          --accept: #1f8a4c; --reject: #c0392b; --skip: #7a7a80; --accent: #ff3060; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: var(--panel);
           border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0; font-weight: 600; }
  header .run { color: var(--muted); }
  .bar { flex: 1; min-width: 220px; }
  .bar .track { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; }
  .bar .fill { height: 100%; width: 0; background: var(--accept); transition: width .2s; }
  .bar .text { font-size: 12px; color: var(--muted); margin-top: 3px; }
  label.who input { width: 140px; padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px; font: inherit; }
  main { display: grid; grid-template-columns: minmax(0, 1fr) 380px; gap: 16px; padding: 16px 20px; }
  .images { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 3fr); gap: 12px; align-items: start; }
  figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
  figure img { display: block; width: 100%; max-height: 62vh; object-fit: contain;
               background: #ececea; border-radius: 3px; }
  figcaption { font-size: 12px; color: var(--muted); margin-top: 6px; word-break: break-all; }
  aside { display: flex; flex-direction: column; gap: 12px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
  .card h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 0 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  td, th { padding: 3px 4px; text-align: left; vertical-align: top; }
  th { font-weight: 500; color: var(--muted); white-space: nowrap; }
  td.num { font-variant-numeric: tabular-nums; }
  .tier { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
          background: var(--line); }
  .tier.high { background: #d7f0e0; color: #15603a; } .tier.mid { background: #fdf0cf; color: #7a5a00; }
  .tier.low { background: #fbe0d8; color: #8a3418; } .tier.unmatched { background: #e6e6ea; color: #4a4a50; }
  .keys { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
  button { font: inherit; padding: 9px 10px; border-radius: 5px; border: 1px solid var(--line); cursor: pointer;
           background: var(--panel); }
  button kbd { font: 600 12px ui-monospace, monospace; background: rgba(0,0,0,.08); padding: 1px 5px;
               border-radius: 3px; margin-right: 6px; }
  button.accept { background: var(--accept); color: #fff; border-color: var(--accept); }
  button.reject { background: var(--reject); color: #fff; border-color: var(--reject); }
  button:disabled { opacity: .5; cursor: default; }
  #status { min-height: 1.4em; color: var(--muted); font-size: 13px; }
  .caption { margin: 6px 0 0; } .caption b { color: var(--muted); font-weight: 500; }
  .done { padding: 40px; text-align: center; font-size: 16px; color: var(--muted); grid-column: 1 / -1; }
  .hidden { display: none !important; }
  .est th { width: 80px; } .est td:last-child { white-space: nowrap; color: var(--muted); text-align: right; }
</style>
</head>
<body>
<div id="app" data-version="0" data-garment-id="" data-crop-id="" data-reviewer="">
<header>
  <h1>lookbook-miner review</h1>
  <span class="run" id="run"></span>
  <div class="bar"><div class="track"><div class="fill" id="fill"></div></div>
    <div class="text" id="progress-text">loading</div></div>
  <a href="/search" style="color:var(--muted)">search</a>
  <label class="who">reviewer <input id="reviewer" autocomplete="off" placeholder="your name"></label>
</header>
<main>
  <section id="pair">
    <div class="images">
      <figure><img id="garment-img" alt="garment"><figcaption id="garment-cap"></figcaption></figure>
      <figure><img id="lookbook-img" alt="lookbook image, matched box outlined">
        <figcaption id="lookbook-cap"></figcaption></figure>
    </div>
    <div class="card" style="margin-top:12px">
      <p class="caption"><b>garment:</b> <span id="garment-caption"></span></p>
      <p class="caption"><b>crop:</b> <span id="crop-caption"></span></p>
    </div>
  </section>
  <div id="empty" class="done hidden"></div>
  <aside>
    <div class="card">
      <div class="keys">
        <button class="accept" id="btn-accept"><kbd>a</kbd>accept</button>
        <button class="reject" id="btn-reject"><kbd>r</kbd>reject</button>
        <button id="btn-skip"><kbd>s</kbd>skip</button>
        <button id="btn-undo"><kbd>u</kbd>undo</button>
      </div>
      <p id="status"></p>
    </div>
    <div class="card"><h2>Pair</h2><table id="facts"></table></div>
    <div class="card"><h2>Precision per tier \u00b7 95 % CI</h2>
      <table class="est" id="estimates"></table>
      <p id="sample-note" style="color:var(--muted);font-size:12px;margin:8px 0 0"></p></div>
  </aside>
</main>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const app = $("app");
const KEY = "lookbook-review.reviewer";
let reviewer = "", current = null, busy = false, version = 0;

const fmt = (x, digits = 3) => (x === null || x === undefined ? "\\u2013" : Number(x).toFixed(digits));

function row(table, name, value, cls) {
  const tr = table.insertRow(), th = document.createElement("th"), td = tr.insertCell();
  th.textContent = name; tr.prepend(th);
  if (value instanceof Node) td.append(value); else td.textContent = value;
  if (cls) td.className = cls;
}

function tierBadge(tier) {
  const span = document.createElement("span");
  span.className = "tier " + tier; span.textContent = tier;
  return span;
}

function imageUrl(pair, role) {
  return "/api/image?garment_id=" + encodeURIComponent(pair.garment_id) + "&role=" + role;
}

function showPair(pair) {
  $("pair").classList.toggle("hidden", !pair);
  $("empty").classList.toggle("hidden", !!pair);
  for (const id of ["btn-accept", "btn-reject", "btn-skip"]) $(id).disabled = !pair;
  const facts = $("facts"); facts.replaceChildren();
  if (!pair) {
    $("empty").textContent = "Nothing left to review in this queue for " + reviewer +
      ". Press u to undo your last decision.";
    return;
  }
  $("garment-img").src = imageUrl(pair, "garment");
  $("lookbook-img").src = imageUrl(pair, "lookbook");
  $("garment-cap").textContent = "garment " + pair.garment_id;
  $("lookbook-cap").textContent = "image " + pair.image_id + " \\u00b7 crop " + pair.crop_id;
  $("garment-caption").textContent = pair.garment_caption || "\\u2013";
  const attrs = Object.entries(pair.attributes).map(([k, v]) => k + ": " + v).join(", ");
  $("crop-caption").textContent = (pair.crop_caption || "\\u2013") + (attrs ? "  (" + attrs + ")" : "");
  row(facts, "tier", tierBadge(pair.tier));
  row(facts, "stratum", pair.stratum + (pair.in_sample ? " (random sample)" : ""));
  row(facts, "score", fmt(pair.score), "num");
  row(facts, "s_vlm / s_siglip", fmt(pair.s_vlm) + " / " + fmt(pair.s_siglip), "num");
  row(facts, "margin", fmt(pair.margin), "num");
  if (pair.crop_margin !== null) row(facts, "crop margin", fmt(pair.crop_margin), "num");
  if (pair.confidence !== null) row(facts, "confidence", fmt(pair.confidence), "num");
  row(facts, "candidates", String(pair.n_candidates ?? "\\u2013"), "num");
  row(facts, "queue position", String(pair.position), "num");
}

function showProgress(p) {
  $("run").textContent = p.run + " \\u00b7 " + p.order;
  const share = p.queue_size ? p.reviewed / p.queue_size : 0;
  $("fill").style.width = (100 * share).toFixed(1) + "%";
  $("progress-text").textContent = p.reviewed + " / " + p.queue_size + " reviewed \\u00b7 " + p.skipped +
    " skipped \\u00b7 " + (reviewer || "you") + ": " + p.mine;
  const table = $("estimates"); table.replaceChildren();
  for (const e of p.estimates) {
    const text = e.value === null
      ? "\\u2013 (" + e.covered + " of " + e.strata + " bands labelled)"
      : fmt(e.value) + " [" + fmt(e.low) + ", " + fmt(e.high) + "]";
    row(table, e.tier, text, "num");
    table.rows[table.rows.length - 1].insertCell().textContent = e.accepted + "/" + e.labels + " of " + e.population;
  }
  $("sample-note").textContent = "random sample: " + p.sample_reviewed + " of " + p.sample_size +
    " labelled. a/n of N: accepted / labelled of the tier's N pairs; strata: tier \\u00d7 score band," +
    " weighted by their pair counts";
}

function render(data, message) {
  current = data.pair;
  showPair(current);
  showProgress(data.progress);
  if (message !== undefined) $("status").textContent = message;
  app.dataset.garmentId = current ? current.garment_id : "";
  app.dataset.cropId = current ? current.crop_id : "";
  version += 1; app.dataset.version = String(version);
}

async function call(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(url, init);
  if (!response.ok) throw new Error(response.status + ": " + (await response.text()));
  return response.json();
}

async function run(work) {
  if (busy || !reviewer) return;
  busy = true;
  try { await work(); } catch (err) { $("status").textContent = "error " + err.message; }
  finally { busy = false; }
}

const decide = (decision) => run(async () => {
  if (!current) return;
  const body = { reviewer, garment_id: current.garment_id, crop_id: current.crop_id, decision };
  const data = await call("POST", "/api/decide", body);
  const done = { accept: "accepted", reject: "rejected", skip: "skipped" }[decision];
  render(data, done + " " + data.decision.garment_id + " \\u2013 u to undo");
});

const undo = () => run(async () => {
  const data = await call("POST", "/api/undo", { reviewer });
  render(data, data.undone ? "undid " + data.undone.decision + " of " + data.undone.garment_id : "nothing to undo");
});

const load = () => run(async () => render(await call("GET", "/api/next?reviewer=" + encodeURIComponent(reviewer))));

function setReviewer(name) {
  reviewer = name.trim();
  $("reviewer").value = reviewer;
  app.dataset.reviewer = reviewer;
  if (!reviewer) { $("status").textContent = "type your name to start"; $("reviewer").focus(); return; }
  localStorage.setItem(KEY, reviewer);
  load();
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || e.target instanceof HTMLInputElement) return;
  const key = e.key.toLowerCase(), action = { a: "accept", r: "reject", s: "skip" }[key];
  if (action) { e.preventDefault(); decide(action); }
  else if (key === "u") { e.preventDefault(); undo(); }
});
$("btn-accept").onclick = () => decide("accept");
$("btn-reject").onclick = () => decide("reject");
$("btn-skip").onclick = () => decide("skip");
$("btn-undo").onclick = () => undo();
$("reviewer").addEventListener("change", (e) => { setReviewer(e.target.value); e.target.blur(); });
for (const img of [$("garment-img"), $("lookbook-img")]) img.onerror = () => { img.removeAttribute("src"); };

const fallback = document.querySelector('meta[name="default-reviewer"]').content;
setReviewer(new URLSearchParams(location.search).get("reviewer") || localStorage.getItem(KEY) || fallback);
</script>
</body>
</html>
"""
