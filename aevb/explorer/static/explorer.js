"use strict";
// aevb latent explorer: the page's behaviour. Data and decoder come from the JSON payload that
// aevb/explorer/page.py embeds; decoding is AevbDecoder (decoder.js). Without live decoding (a
// decoder too large to embed: P.decoder.live false, no weights) the page shows each point's
// reconstruction as embedded, and nothing is decoded.
(function () {
  const P = JSON.parse(document.getElementById("payload").textContent);
  const $ = (id) => document.getElementById(id);
  const live = P.decoder.live !== false;
  const decoder = live ? new AevbDecoder.Decoder(P.decoder) : null;
  const shape = P.image.shape, [C, H, W] = shape, D = C * H * W;
  const J = P.latent.dim, N = P.points.n;
  const mu = N ? new Float32Array(AevbDecoder.base64Bytes(P.points.mu).buffer) : new Float32Array(0);
  const levels = N ? AevbDecoder.base64Bytes(P.points.pixels) : new Uint8Array(0);
  const recons = N && !live ? AevbDecoder.base64Bytes(P.points.reconstructions) : new Uint8Array(0);
  const labels = P.points.labels, classes = P.points.classes || [];
  // KL per unit orders the sliders; whether a unit is active (Var_x E_q[z_j|x] > threshold) is
  // decided in Python (aevb.bounds' definition) and handed over as P.latent.active.
  const kl = P.latent.kl, variance = P.latent.variance, active = P.latent.active, threshold = P.latent.active_threshold;
  const known = P.latent.known_kl;
  // "variance" where the model's KL does not split into units (a flow or a learned prior)
  const rankedBy = P.latent.ranked_by || "KL";
  const nActive = known ? active.filter(Boolean).length : null;
  const order = Array.from({ length: J }, (_, j) => j);
  if (known) order.sort((a, b) => kl[b] - kl[a] || a - b);
  const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const colour = (k) => (k < 10 ? TAB10[k] : `hsl(${(k * 137.5) % 360}, 60%, 45%)`);
  const fmtKL = (v) => (v >= 1 ? v.toFixed(2) : v >= 0.01 ? v.toFixed(3) : v.toPrecision(2));
  const fmt = (v, d) => (v < 0 ? "\u2212" : "\u2007") + Math.abs(v).toFixed(d);
  const muOf = (i) => Array.from(mu.subarray(i * J, (i + 1) * J));
  const labelOf = (i) => (labels ? String(classes[labels[i]] ?? labels[i]) : "");
  const pointName = (i) => `test image #${i}` + (labels ? `, label ${labelOf(i)}` : "");

  // ------------------------------------------------------------------ images
  function fitCanvas(canvas, box) {  // native W x H pixels, shown as large as the box allows
    canvas.width = W; canvas.height = H;
    let s = Math.min(box / W, box / H);
    if (s >= 1) s = Math.floor(s);
    canvas.style.width = `${W * s}px`; canvas.style.height = `${H * s}px`;
  }
  function drawValues(canvas, values) {
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(W, H);
    AevbDecoder.toPixels(values, shape, P.image.scale, P.image.offset, img.data);
    ctx.putImageData(img, 0, 0);
  }
  function drawLevels(canvas, source, i) {  // image i of an embedded block of 8-bit display levels
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H), hw = H * W, base = i * D;
    for (let p = 0; p < hw; p++) {
      const r = source[base + p];
      img.data[4 * p] = r;
      img.data[4 * p + 1] = C >= 3 ? source[base + hw + p] : r;
      img.data[4 * p + 2] = C >= 3 ? source[base + 2 * hw + p] : r;
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // ------------------------------------------------------------------ the current z
  const z = new Float64Array(J);
  const state = { decodes: 0, lastMs: NaN, times: [] };
  const image = $("image");
  fitCanvas(image, 224);

  function render() {
    const t0 = performance.now();
    const values = decoder.decode(z);
    drawValues(image, values);
    const ms = performance.now() - t0;
    state.decodes += 1; state.lastMs = ms;
    if (state.decodes > 1) state.times.push(ms);  // the first frame also compiles the code
    if (state.times.length > 20) state.times.shift();
    const avg = state.times.length ? state.times.reduce((a, b) => a + b, 0) / state.times.length : ms;
    $("decode-ms").textContent = avg < 10 ? avg.toFixed(2) : avg.toFixed(0);
    drawScatter();
  }

  const rows = [];
  function buildSliders() {
    const box = $("sliders");
    if (rankedBy !== "KL") {
      $("rank-head").textContent = "variance";
      $("rank-head").title = "variance over the test points of the unit's posterior mean (a flow posterior or a learned prior: the KL does not split into units)";
    }
    $("slider-order").textContent = known ? `by ${rankedBy} \u00b7 ${nActive} of ${J} active`
      : "KL unknown (no test data)";
    for (const j of order) {
      const row = document.createElement("div");
      const inactive = known && !active[j];
      row.className = "slider" + (inactive ? " inactive" : "");
      const r = P.latent.range[j];
      row.innerHTML = `<label for="z${j}">z<sub>${j + 1}</sub>${inactive ? '<span class="tag">inactive</span>' : ""}</label>` +
        `<input type="range" id="z${j}" data-dim="${j}" min="${-r}" max="${r}" step="any" value="0"${live ? "" : " disabled"}` +
        ` aria-label="latent dimension ${j + 1}">` +
        `<span class="val">${fmt(0, 2)}</span><span class="kl">${known ? fmtKL(kl[j]) : "–"}</span>`;
      if (known) row.title = `variance of E[z${j + 1}|x] over the test points ${variance[j].toExponential(1)} ` +
        (inactive ? `\u2264 ${threshold}: an inactive unit; the decoder ignores it` : `> ${threshold}: an active unit`) +
        (rankedBy === "KL" ? `; KL ${kl[j].toExponential(1)} nats` : "; no KL per unit (a flow posterior or a learned prior)");
      const input = row.querySelector("input"), val = row.querySelector(".val");
      input.addEventListener("input", () => {
        z[j] = parseFloat(input.value);
        val.textContent = fmt(z[j], 2);
        setSource("set with the sliders");
        render();
      });
      input.addEventListener("keydown", (e) => {  // step="any" has no keyboard step of its own
        const step = e.shiftKey ? 0.5 : 0.05;
        const d = { ArrowRight: step, ArrowUp: step, ArrowLeft: -step, ArrowDown: -step }[e.key];
        if (d === undefined) return;
        e.preventDefault();
        input.value = String(Math.min(r, Math.max(-r, z[j] + d)));
        input.dispatchEvent(new Event("input"));
      });
      rows[j] = { input, val };
      box.appendChild(row);
    }
  }
  function setSource(text) { $("z-source").textContent = "z: " + text; }
  function showZ(values, source) {  // z, the sliders and the caption; nothing decoded
    for (let j = 0; j < J; j++) {
      z[j] = values[j];
      rows[j].input.value = String(values[j]);
      rows[j].val.textContent = fmt(values[j], 2);
    }
    setSource(source);
  }
  function setZ(values, source) { showZ(values, source); render(); }
  // a learned prior comes as draws made in Python; N(0, I) is drawn here
  const learnedPrior = P.prior && P.prior.draws && P.prior.draws.length ? P.prior : null;
  const priorName = learnedPrior ? `the learned prior (${learnedPrior.name})` : "the prior N(0, I)";
  function priorSample() {  // Box-Muller
    if (learnedPrior) return learnedPrior.draws[Math.floor(Math.random() * learnedPrior.draws.length)].slice();
    const s = new Array(J);
    for (let j = 0; j < J; j++) {
      const u = 1 - Math.random(), v = Math.random();
      s[j] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
    return s;
  }

  // ------------------------------------------------------------------ the scatter
  const scatter = $("scatter");
  const views = P.points.views;
  const sel = { a: -1, b: -1, hover: -1 };
  let frame = null;  // {view, coords, toPx, pxOf}
  function project(view, vec) {
    let x = 0, y = 0;
    for (let j = 0; j < J; j++) { x += view.P[0][j] * vec[j]; y += view.P[1][j] * vec[j]; }
    return [x, y];
  }
  function layoutScatter() {
    const view = views[+$("view").value || 0];
    const coords = new Float64Array(2 * N);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < N; i++) {
      const [x, y] = project(view, mu.subarray(i * J, (i + 1) * J));
      coords[2 * i] = x; coords[2 * i + 1] = y;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    x0 = Math.min(x0, -1); x1 = Math.max(x1, 1); y0 = Math.min(y0, -1); y1 = Math.max(y1, 1);  // at least the prior's 1-sigma circle
    const box = scatter.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    scatter.width = Math.round(box.width * dpr); scatter.height = Math.round(box.height * dpr);
    const m = { l: 44, r: 10, t: 10, b: 38 };
    const pw = box.width - m.l - m.r, ph = box.height - m.t - m.b;
    const span = Math.max((x1 - x0) / pw, (y1 - y0) / ph) * 1.06;  // latent units per css pixel, equal on both axes
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    const toPx = (x, y) => [m.l + pw / 2 + (x - cx) / span, m.t + ph / 2 - (y - cy) / span];
    frame = { view, coords, toPx, m, pw, ph, span, cx, cy, dpr, width: box.width, height: box.height };
  }
  function drawScatter() {
    if (!N || !frame) return;
    const f = frame, ctx = scatter.getContext("2d");
    ctx.setTransform(f.dpr, 0, 0, f.dpr, 0, 0);
    ctx.clearRect(0, 0, f.width, f.height);
    ctx.save();
    ctx.beginPath(); ctx.rect(f.m.l, f.m.t, f.pw, f.ph); ctx.clip();
    // grid at whole latent units, axes, and the prior's 1- and 2-sigma circles
    const xr = [f.cx - (f.pw / 2) * f.span, f.cx + (f.pw / 2) * f.span];
    const yr = [f.cy - (f.ph / 2) * f.span, f.cy + (f.ph / 2) * f.span];
    const step = niceStep(xr[1] - xr[0]);
    ctx.lineWidth = 1;
    for (let v = Math.ceil(xr[0] / step) * step; v <= xr[1]; v += step) line(ctx, f.toPx(v, yr[0]), f.toPx(v, yr[1]), v === 0 ? "#9aa0a6" : "#eceef1");
    for (let v = Math.ceil(yr[0] / step) * step; v <= yr[1]; v += step) line(ctx, f.toPx(xr[0], v), f.toPx(xr[1], v), v === 0 ? "#9aa0a6" : "#eceef1");
    ctx.setLineDash([4, 4]); ctx.strokeStyle = "#b0b5bc";
    for (const r of [1, 2]) {
      const [px, py] = f.toPx(0, 0);
      ctx.beginPath(); ctx.arc(px, py, r / f.span, 0, 2 * Math.PI); ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.globalAlpha = 0.72;
    const rad = N > 3000 ? 1.8 : 2.6;
    for (let i = 0; i < N; i++) {
      const [px, py] = f.toPx(f.coords[2 * i], f.coords[2 * i + 1]);
      ctx.fillStyle = labels ? colour(labels[i]) : "#1f77b4";
      ctx.beginPath(); ctx.arc(px, py, rad, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    ring(ctx, sel.hover, "#5f6368", 6);
    ring(ctx, sel.a, "#1d1d1f", 6, "A");
    ring(ctx, sel.b, "#1d1d1f", 6, sel.a >= 0 ? "B" : "");
    // where the current z is, in this view
    const [zx, zy] = f.toPx(...project(f.view, z));
    ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
    line(ctx, [zx - 8, zy], [zx + 8, zy], "#d62728"); line(ctx, [zx, zy - 8], [zx, zy + 8], "#d62728");
    ctx.restore();
    // axis labels and ticks
    ctx.fillStyle = "#3c4043"; ctx.font = "12px -apple-system, Segoe UI, Helvetica, Arial, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let v = Math.ceil(xr[0] / step) * step; v <= xr[1]; v += step) ctx.fillText(tick(v), f.toPx(v, 0)[0], f.m.t + f.ph + 3);
    ctx.fillText(f.view.x, f.m.l + f.pw / 2, f.m.t + f.ph + 20);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let v = Math.ceil(yr[0] / step) * step; v <= yr[1]; v += step) ctx.fillText(tick(v), f.m.l - 4, f.toPx(0, v)[1]);
    if (f.view.y) {
      ctx.save(); ctx.translate(12, f.m.t + f.ph / 2); ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "center"; ctx.fillText(f.view.y, 0, 0); ctx.restore();
    }
    ctx.strokeStyle = "#d8dbe0"; ctx.lineWidth = 1; ctx.strokeRect(f.m.l + 0.5, f.m.t + 0.5, f.pw - 1, f.ph - 1);
  }
  function niceStep(span) {
    const raw = span / 8, p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const k of [1, 2, 5, 10]) if (k * p >= raw) return k * p;
    return 10 * p;
  }
  function tick(v) { return Math.abs(v) < 1e-9 ? "0" : (+v.toFixed(6)).toString().replace("-", "\u2212"); }
  function line(ctx, a, b, style) { ctx.strokeStyle = style; ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke(); }
  function ring(ctx, i, style, r, text) {
    if (i < 0) return;
    const [px, py] = frame.toPx(frame.coords[2 * i], frame.coords[2 * i + 1]);
    ctx.strokeStyle = style; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(px, py, r, 0, 2 * Math.PI); ctx.stroke();
    if (text) {
      ctx.fillStyle = "#1d1d1f"; ctx.font = "bold 12px -apple-system, Segoe UI, Helvetica, Arial, sans-serif";
      ctx.textAlign = "left"; ctx.textBaseline = "bottom"; ctx.fillText(text, px + r, py - r + 2);
    }
  }
  function nearest(ev) {
    if (!frame) return -1;
    const box = scatter.getBoundingClientRect(), x = ev.clientX - box.left, y = ev.clientY - box.top;
    let best = -1, bestD = 100;  // within 10 css pixels
    for (let i = 0; i < N; i++) {
      const [px, py] = frame.toPx(frame.coords[2 * i], frame.coords[2 * i + 1]);
      const d = (px - x) ** 2 + (py - y) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  // ------------------------------------------------------------------ hover, click, interpolation
  const hoverX = $("hover-x"), hoverRec = $("hover-rec");
  fitCanvas(hoverX, 110); fitCanvas(hoverRec, 110);
  function showHover(i) {
    drawLevels(hoverX, levels, i);
    if (live) drawValues(hoverRec, decoder.decode(muOf(i)));
    else { drawLevels(hoverRec, recons, i); showStored(i); }
    $("hover-x-cap").textContent = `#${i}` + (labels ? ` \u00b7 label ${labelOf(i)}` : "");
    $("hover-x-cap").title = pointName(i);
    $("hover").classList.add("active");
  }
  function showStored(i) {  // without live decoding: point i's embedded reconstruction, large
    drawLevels(image, recons, i);
    showZ(muOf(i), `posterior mean of ${pointName(i)} (reconstruction precomputed)`);
  }
  function select(i) {
    if (!live) return;  // hovering shows everything there is
    if (sel.b >= 0 && sel.b !== i) sel.a = sel.b;
    sel.b = i;
    setZ(muOf(i), "posterior mean of " + pointName(i));
    if (sel.a >= 0 && sel.a !== sel.b) interpolate(sel.a, sel.b);
  }
  function interpolate(a, b) {
    const box = $("interp"), steps = 10;
    box.innerHTML = "";
    const size = Math.max(40, Math.min(80, Math.floor((box.clientWidth - 11 * 6) / 12)));
    const ends = (i, cap) => {
      const fig = document.createElement("figure"), c = document.createElement("canvas");
      fitCanvas(c, size); drawLevels(c, levels, i);
      fig.appendChild(c); fig.insertAdjacentHTML("beforeend", `<figcaption>${cap}</figcaption>`);
      fig.title = pointName(i); fig.addEventListener("click", () => setZ(muOf(i), "posterior mean of " + pointName(i)));
      box.appendChild(fig);
    };
    ends(a, "A data");
    const za = muOf(a), zb = muOf(b);
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1), zt = za.map((v, j) => (1 - t) * v + t * zb[j]);
      const fig = document.createElement("figure"), c = document.createElement("canvas");
      fitCanvas(c, size); drawValues(c, decoder.decode(zt));
      fig.appendChild(c); fig.insertAdjacentHTML("beforeend", `<figcaption>t = ${t.toFixed(2)}</figcaption>`);
      fig.title = "click: set the sliders to this z";
      fig.addEventListener("click", () => setZ(zt, `interpolation from #${a} to #${b}, t = ${t.toFixed(2)}`));
      box.appendChild(fig);
    }
    ends(b, "B data");
    $("interp-caption").textContent = `z = (1 \u2212 t) \u00b7 \u03bc(A) + t \u00b7 \u03bc(B): ${pointName(a)} to ${pointName(b)}`;
  }

  // ------------------------------------------------------------------ page text
  function describe() {
    const f = P.facts;
    $("run-name").textContent = "\u00b7 " + f.run;
    const parts = [`data set ${f.dataset}`, `images ${shape.join("\u00d7")} (C\u00d7H\u00d7W)`, `${J}-D latent space`,
      `${f.likelihood} likelihood`, `status ${f.status}` + (f.epoch != null ? ` after epoch ${f.epoch}` : "")];
    if (f.checkpoint) parts.push(`model of the ${f.checkpoint} checkpoint (epoch ${f.checkpoint_epoch})`);
    if (f.test_elbo != null) {  // bits/dim come from aevb.evaluate's convention, where the data define them
      const bits = f.test_elbo_bits != null ? ` (${f.test_elbo_bits.toFixed(3)} bits/dim)` : "";
      parts.push(`test ELBO ${f.test_elbo.toFixed(2)} nats${bits}`);
    }
    if (f.evaluation) {  // the run's evaluation*.json with the most samples, as `aevb evaluate` wrote it
      const fmt = (v) => Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 1 ? 4 : 2);
      parts.push(`${f.evaluation.file}: ` + f.evaluation.rows.map(([label, v, unit]) => `${label} ${fmt(v)} ${unit}`).join(", "));
    }
    $("facts").textContent = parts.join(" \u00b7 ");
    const total = P.points.total || N;
    const shown = N < total ? `${N.toLocaleString("en")} of the ${total.toLocaleString("en")} test points (as many as --points, the page's ` +
      `16 MB image budget${live ? "" : ", with two images per point,"} and --max-size allow)` : `${N.toLocaleString("en")} test points`;
    const common = [
      N ? `${shown}; the scatter shows their posterior means E[z|x]. Dashed circles: radius 1 and 2 of N(0, I)` +
        (learnedPrior ? ` (for scale: this model's prior is learned).` : ", the prior.") : "",
      nActive != null ? `${nActive} of ${J} latent units are active: the variance of their posterior mean E[z<sub>j</sub>|x] over these test points ` +
        `is above ${threshold} (the IWAE paper's criterion, as <code>aevb evaluate</code> counts them); inactive units are marked and greyed. ` +
        (rankedBy === "KL" ? "The column beside each slider is the unit's KL, mean over the same points, in nats." :
         "The column beside each slider is that variance: with a flow posterior or a learned prior the KL does not split into units.") : "",
    ];
    if (!live) {
      $("about").innerHTML = [
        `The decoder (${architecture(P.decoder.layers)}) is not in this page, so nothing is decoded here: ` +
        `${escapeHtml(P.decoder.why)}. Each reconstruction is the mean of p(x|z) at the point's posterior mean, ` +
        "computed by PyTorch when the page was written and stored as 8-bit pixels like the test images. The page needs no server and no network.",
      ].concat(common, [`Written by aevb ${P.facts.aevb} (<code>aevb explore RUN</code>).`], P.notes.map((n) => `<span class="note">${escapeHtml(n)}</span>`))
        .filter(Boolean).join(" ");
      return;
    }
    const enc = P.decoder.encoding === "float32"
      ? "base64 float32 (the exact weights; the page computes in float64, so its means differ from PyTorch's float32 ones by rounding only)"
      : `base64 float16 (half the size of float32; rounding the weights changes the mean image by at most ${P.encoding_error.toExponential(1)} ` +
        `(${(P.encoding_error * 255).toFixed(2)} of a pixel level) over the test points here)`;
    const about = [
      `The decoder (${architecture(P.decoder.layers)}; ${P.decoder.n_weights.toLocaleString("en")} weights, ${(P.decoder.weights.length / 1e6).toFixed(1)} MB of this page) runs in plain JavaScript; its weights are embedded as ${enc}. ` +
      "The image is the mean of p(x|z), as aevb's likelihood.mean computes it. The page needs no server and no network.",
      ...common,
      "Keyboard: focus a slider and use the arrow keys (shift: larger steps).",
      `Written by aevb ${P.facts.aevb} (<code>aevb explore RUN</code>).`,
    ].concat(P.notes.map((n) => `<span class="note">${escapeHtml(n)}</span>`));
    $("about").innerHTML = about.filter(Boolean).join(" ");
  }
  // the decoder's program in words, e.g. "Linear 100 → 4096, 4 transposed convolutions 4×4 stride 2
  // through 256 → 128 → 64 → 32 → 6 channels to 64×64, leaky-relu"
  function architecture(layers) {
    const of = (kind) => layers.filter((l) => l.kind === kind), arrow = " \u2192 ", lin = of("linear"), conv = of("conv-transpose");
    const parts = [`Linear ${[lin[0].in].concat(lin.map((l) => l.out)).join(arrow)}`];
    if (conv.length) {
      parts.push(`${conv.length} transposed convolution${conv.length > 1 ? "s" : ""} ${conv[0].kernel.join("\u00d7")} stride ` +
        `${conv[0].stride[0]} through ${[conv[0].in].concat(conv.map((l) => l.out)).join(arrow)} channels to ` +
        conv[conv.length - 1].out_size.join("\u00d7") + (conv[conv.length - 1].out > C ? ` (${conv[conv.length - 1].out / C} parameters per value)` : ""));
    }
    if (of("group-norm").length) parts.push("GroupNorm");
    const crop = of("crop")[0];
    if (crop && (crop.size[0] !== crop.in_size[0] || crop.size[1] !== crop.in_size[1])) parts.push(`centre crop to ${crop.size.join("\u00d7")}`);
    return parts.concat(Array.from(new Set(of("activation").map((l) => l.fn)))).join(", ");
  }
  function escapeHtml(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
  function buildLegend() {
    if (!labels) return;
    const seen = Array.from(new Set(labels)).sort((a, b) => a - b);
    $("legend").innerHTML = seen.map((k) => `<span><i style="background:${colour(k)}"></i>${escapeHtml(classes[k] ?? k)}</span>`).join("");
  }

  function describeLiveOff() {  // the notice, and the panels that need live decoding say so
    $("notice").textContent = P.decoder.notice;
    $("notice").hidden = false;
    $("decode-title").textContent = "Reconstruction of the point";
    $("buttons").hidden = true;
    $("timing").hidden = true;
    $("slider-order").textContent += " \u00b7 read-only";
    $("hint").textContent = "Hover a point to see the test image and its reconstruction; the sliders show its posterior mean.";
    $("interp-caption").textContent = "";
  }

  // ------------------------------------------------------------------ wiring
  describe();
  buildSliders();
  buildLegend();
  if (!live) describeLiveOff();
  views.forEach((v, k) => $("view").insertAdjacentHTML("beforeend", `<option value="${k}">${escapeHtml(v.name)}</option>`));
  if (views.length < 2) $("view").disabled = true;
  if (!N) {
    $("no-points").hidden = false;
    $("no-points").textContent = P.notes.length ? "No test points: the data set was not available when this page was written." : "No test points.";
    $("view").closest("label").hidden = true;
  } else {
    layoutScatter();
    new ResizeObserver(() => { layoutScatter(); drawScatter(); }).observe(scatter);
  }
  $("view").addEventListener("change", () => { layoutScatter(); drawScatter(); });
  scatter.addEventListener("mousemove", (ev) => {
    const i = nearest(ev);
    scatter.style.cursor = i >= 0 && live ? "pointer" : "crosshair";
    if (i !== sel.hover) { sel.hover = i; if (i >= 0) showHover(i); drawScatter(); }
  });
  scatter.addEventListener("mouseleave", () => { sel.hover = -1; drawScatter(); });
  scatter.addEventListener("click", (ev) => { const i = nearest(ev); if (i >= 0) select(i); });
  if (live) {
    $("sample").addEventListener("click", () => setZ(priorSample(), "a sample from " + priorName));
    $("zero").addEventListener("click", () => setZ(new Array(J).fill(0), learnedPrior ? "0" : "0 (the prior mean)"));
    $("interp").innerHTML = '<span class="empty-text">Click a point in the scatter, then another: the decoder means along the straight line between their posterior means appear here.</span>';
    if (N) { sel.b = 0; setZ(muOf(0), "posterior mean of " + pointName(0)); showHover(0); } else { setZ(new Array(J).fill(0), "0 (the prior mean)"); }
  } else {
    $("interp").innerHTML = '<span class="empty-text">The interpolation between two points needs live decoding, which is off for this page (see the note at the top).</span>';
    if (N) { showHover(0); drawScatter(); }
  }

  // for tests and benchmarks: read-only views of the page's state
  window.aevbExplorer = {
    live,
    get z() { return Array.from(z); },
    get decodes() { return state.decodes; },
    get lastDecodeMs() { return state.lastMs; },
    nPoints: N,
    mu: muOf,
    order: order.slice(),
    screenPoint(i) {  // client coordinates of point i in the current view
      const box = scatter.getBoundingClientRect(), [px, py] = frame.toPx(frame.coords[2 * i], frame.coords[2 * i + 1]);
      return { x: box.left + px, y: box.top + py };
    },
    decoder,
  };
})();
