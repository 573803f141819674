"""The review app's search page: draw a sketch (or upload a picture), type a text, see the run's
top-k crops with the garments paired with them. One HTML document, inline CSS and JS, nothing
fetched from outside the app; text from the data is set with `textContent` only.

For tests, `#results` carries data-version (incremented at every answer) and each result card
data-crop-id; `#canvas` is 256 x 256 px, white until drawn on.
"""

SEARCH_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lookbook-miner search</title>
<style>
  :root { --bg: #f5f4f1; --panel: #fff; --ink: #1d1d1f; --muted: #6b6b70; --line: #e2e0db; --accent: #ff3060; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--ink); }
  header { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: var(--panel);
           border-bottom: 1px solid var(--line); }
  header h1 { font-size: 16px; margin: 0; font-weight: 600; } header a { color: var(--muted); }
  main { display: grid; grid-template-columns: 300px minmax(0, 1fr); gap: 16px; padding: 16px 20px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
  canvas { display: block; border: 1px solid var(--line); border-radius: 4px; background: #fff;
           touch-action: none; cursor: crosshair; width: 256px; height: 256px; }
  .tools { display: flex; gap: 8px; margin: 8px 0; flex-wrap: wrap; }
  input[type=text], input[type=number] { width: 100%; padding: 6px 8px; border: 1px solid var(--line);
           border-radius: 4px; font: inherit; margin: 4px 0 8px; }
  button { font: inherit; padding: 8px 10px; border-radius: 5px; border: 1px solid var(--line); cursor: pointer;
           background: var(--panel); }
  button.go { background: var(--ink); color: #fff; border-color: var(--ink); width: 100%; }
  #status { min-height: 1.4em; color: var(--muted); font-size: 13px; margin-top: 8px; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px;
             align-content: start; }
  figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
  .pics { display: grid; grid-template-columns: 3fr 2fr; gap: 6px; align-items: start; }
  figure img { display: block; width: 100%; max-height: 220px; object-fit: contain; background: #ececea; }
  figcaption { font-size: 12px; color: var(--muted); margin-top: 6px; word-break: break-all; }
  figcaption b { color: var(--ink); font-weight: 600; }
  .tier { display: inline-block; padding: 0 7px; border-radius: 9px; font-weight: 600; background: var(--line); }
  .tier.high { background: #d7f0e0; color: #15603a; } .tier.mid { background: #fdf0cf; color: #7a5a00; }
  .tier.low { background: #fbe0d8; color: #8a3418; }
</style>
</head>
<body>
<header><h1>lookbook-miner search</h1><a href="/">review</a></header>
<main>
  <aside class="card">
    <canvas id="canvas" width="256" height="256" aria-label="draw a sketch here"></canvas>
    <div class="tools">
      <button id="btn-clear">clear</button>
      <label><input type="file" id="upload" accept="image/png,image/jpeg,image/webp"> upload</label>
    </div>
    <label>text <input type="text" id="text" placeholder="e.g. a red striped dress" autocomplete="off"></label>
    <label>results <input type="number" id="k" value="12" min="1" max="100"></label>
    <button class="go" id="btn-search">search</button>
    <p id="status">draw, upload or type, then search</p>
  </aside>
  <section id="results" data-version="0"></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ink = canvas.getContext("2d");
let drawn = false, drawing = false, version = 0;

function clear() {
  ink.fillStyle = "#fff"; ink.fillRect(0, 0, canvas.width, canvas.height);
  drawn = false; $("upload").value = "";
}
function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}
canvas.addEventListener("pointerdown", (e) => {
  drawing = true; canvas.setPointerCapture(e.pointerId);
  ink.strokeStyle = "#000"; ink.lineWidth = 4; ink.lineCap = "round"; ink.lineJoin = "round";
  ink.beginPath(); ink.moveTo(...point(e));
});
canvas.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  ink.lineTo(...point(e)); ink.stroke(); drawn = true;
});
canvas.addEventListener("pointerup", () => { drawing = false; });
$("btn-clear").onclick = clear;
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  ink.fillStyle = "#fff"; ink.fillRect(0, 0, canvas.width, canvas.height);
  ink.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  drawn = true;
});

function imageUrl(crop, role) {
  return "/api/search-image?crop_id=" + encodeURIComponent(crop) + "&role=" + role;
}

function card(r) {
  const figure = document.createElement("figure"), pics = document.createElement("div");
  figure.dataset.cropId = r.crop_id; pics.className = "pics";
  const look = document.createElement("img");
  look.src = imageUrl(r.crop_id, "lookbook"); look.alt = "lookbook image, crop outlined"; pics.append(look);
  if (r.garment_id) {
    const garment = document.createElement("img");
    garment.src = imageUrl(r.crop_id, "garment"); garment.alt = "paired garment"; pics.append(garment);
  }
  const cap = document.createElement("figcaption"), title = document.createElement("b");
  title.textContent = "#" + r.rank + " \\u00b7 " + Number(r.score).toFixed(3);
  const tier = document.createElement("span");
  tier.className = "tier " + (r.tier || ""); tier.textContent = r.tier || "unpaired";
  cap.append(title, " ", tier, document.createElement("br"),
             "crop " + r.crop_id, document.createElement("br"),
             "garment " + (r.garment_id || "\\u2013"));
  figure.append(pics, cap);
  return figure;
}

async function search() {
  const body = { picture: drawn ? canvas.toDataURL("image/png") : null, text: $("text").value,
                 k: Number($("k").value) };
  $("status").textContent = "searching";
  try {
    const response = await fetch("/api/search", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json" } });
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.status);
    $("results").replaceChildren(...data.results.map(card));
    $("status").textContent = data.results.length + " crops for " + data.kind;
  } catch (err) {
    $("status").textContent = "error: " + err.message;
  }
  version += 1; $("results").dataset.version = String(version);
}
$("btn-search").onclick = search;
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });
clear();
</script>
</body>
</html>
"""
