"""The upload page served at `GET /`: one self-contained HTML file, no external assets."""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vistune</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem;
         color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .muted { color: #666; font-size: .9rem; }
  form { display: grid; gap: .6rem; margin: 1.2rem 0; }
  input[type=password] { padding: .3rem; width: 22rem; }
  button { padding: .5rem 1rem; width: fit-content; }
  #preview { max-width: 16rem; max-height: 16rem; display: none; border: 1px solid #ddd; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td { padding: .25rem .8rem .25rem 0; vertical-align: top; }
  td:first-child { color: #666; }
  .error { color: #b00020; }
  pre { background: #f5f5f5; padding: .6rem; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>vistune</h1>
<div class="muted">Upload a product photo; the model answers with its title, category and price.
  Model: <code id="model">…</code></div>
<form id="form">
  <input id="file" type="file" name="image" accept="image/*" required>
  <label id="token-row">Token <input id="token" type="password" autocomplete="off"
    placeholder="only if the server was started with --token"></label>
  <button type="submit">Predict</button>
</form>
<img id="preview" alt="uploaded image">
<div id="out"></div>
<script>
const $ = (id) => document.getElementById(id);
fetch("healthz").then((r) => r.json()).then((h) => {
  $("model").textContent = h.model;
  if (!h.auth_required) $("token-row").style.display = "none";
});
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) { $("preview").src = URL.createObjectURL(f); $("preview").style.display = "block"; }
});
function row(name, value) {
  const tr = document.createElement("tr");
  for (const text of [name, value]) {
    const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
  }
  return tr;
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new FormData();
  body.append("image", $("file").files[0]);
  const headers = {};
  if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
  $("out").textContent = "Predicting…";
  const response = await fetch("v1/predict", { method: "POST", body, headers });
  const data = await response.json();
  $("out").textContent = "";
  if (!response.ok) {
    const p = document.createElement("p"); p.className = "error";
    p.textContent = response.status + ": " + (data.detail || JSON.stringify(data));
    $("out").appendChild(p); return;
  }
  const table = document.createElement("table");
  const price = data.full_price === null ? "" : "$" + data.full_price.toLocaleString(
    "en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  table.append(row("Title", data.title ?? ""), row("Category", data.category ?? ""),
               row("Full price", price), row("Latency", data.latency_ms.toFixed(0) + " ms"));
  if (data.error) table.append(row("Parse error", data.error));
  const raw = document.createElement("pre"); raw.textContent = data.raw;
  $("out").append(table, raw);
});
</script>
</body>
</html>
"""
