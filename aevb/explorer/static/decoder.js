"use strict";
// aevb's decoder in plain JavaScript: runs the program written by aevb/explorer/program.py
// (its docstring lists the layer kinds and their fields).
//
// A program is a list of layers applied in order to a vector (Float64Array; JavaScript numbers
// are float64, so the only rounding against PyTorch's float32 is PyTorch's own). An image-shaped
// vector is C*H*W numbers in (C, H, W) order between layers. Each layer kind is one function in
// LAYERS. Layers that need scratch space (transposed weights, buffers) keep it on their layer
// object, made on the first call: a frame allocates nothing per pixel. Intermediate vectors are
// reused between calls; the last layer (`mean`) returns a new array every call.
const AevbDecoder = (function () {
  // ---------------------------------------------------------------- weights
  function base64Bytes(text) {
    if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(text);
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  let halfTable = null;
  function halfToFloat(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  // base64 little-endian float32 or float16 numbers -> Float32Array
  function readNumbers(text, encoding) {
    const bytes = base64Bytes(text);
    if (encoding === "float32") return new Float32Array(bytes.buffer, 0, bytes.length / 4);
    if (encoding === "float16") {
      if (!halfTable) {
        halfTable = new Float32Array(65536);
        for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
      }
      const halves = new Uint16Array(bytes.buffer, 0, bytes.length / 2);
      const out = new Float32Array(halves.length);
      for (let i = 0; i < halves.length; i++) out[i] = halfTable[halves[i]];
      return out;
    }
    throw new Error("unknown weight encoding " + encoding);
  }

  // ---------------------------------------------------------------- element-wise functions
  function sigmoid(v) { return 1 / (1 + Math.exp(-v)); }
  function erf(x) {  // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, far below a pixel level (1/255)
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
    return x >= 0 ? y : -y;
  }
  const ACTIVATIONS = {
    relu: () => (v) => (v > 0 ? v : 0),
    tanh: () => Math.tanh,
    sigmoid: () => sigmoid,
    elu: (p) => (v) => (v > 0 ? v : p.alpha * (Math.exp(v) - 1)),
    "leaky-relu": (p) => (v) => (v > 0 ? v : p.slope * v),
    softplus: (p) => (v) => (v * p.beta > p.threshold ? v : Math.log1p(Math.exp(p.beta * v)) / p.beta),
    gelu: () => (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
    "gelu-tanh": () => (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))),
    silu: () => (v) => v * sigmoid(v),
    identity: () => (v) => v,
  };
  function elementwise(name, params) {
    const make = ACTIVATIONS[name];
    if (!make) throw new Error("unknown activation " + name);
    return make(params || {});
  }

  // ---------------------------------------------------------------- image layers
  // PyTorch's ConvTranspose2d (groups 1, dilation 1): x [Cin, H, W] -> y [Cout, Ho, Wo]. Input
  // pixel (i, j) adds W[ci, co, ky, kx] * x[ci, i, j] to output pixel (i*sH - pH + ky,
  // j*sW - pW + kx) when that lies inside Ho x Wo; y starts at the bias. Computed as a scatter in
  // channels-last order: x transposed to [H, W, Cin4] and the weights (once) to [kH, kW, Cin4, Cout],
  // so the innermost loop runs over the Cout outputs of one output pixel, contiguous in both, and
  // takes 4 input channels per pass (a quarter of the loads and stores of y: about 2x faster in
  // V8). Cin4 is Cin rounded up to a multiple of 4, the extra channels zero.
  function convTransposeSetup(layer, w) {
    const cin = layer.in, cin4 = Math.ceil(cin / 4) * 4, cout = layer.out, [kh, kw] = layer.kernel;
    const [h, wd] = layer.in_size, [ho, wo] = layer.out_size;
    const wt = new Float32Array(kh * kw * cin4 * cout);
    for (let ci = 0; ci < cin; ci++) {
      for (let co = 0; co < cout; co++) {
        const src = layer.weight + (ci * cout + co) * kh * kw;
        for (let t = 0; t < kh * kw; t++) wt[(t * cin4 + ci) * cout + co] = w[src + t];
      }
    }
    return { cin4, wt, xt: new Float64Array(h * wd * cin4), yt: new Float64Array(ho * wo * cout), y: new Float64Array(cout * ho * wo) };
  }
  function convTranspose(layer, x, w) {
    const cin = layer.in, cout = layer.out, [h, wd] = layer.in_size, [ho, wo] = layer.out_size;
    const [kh, kw] = layer.kernel, [sh, sw] = layer.stride, [ph, pw] = layer.padding;
    if (x.length !== cin * h * wd) throw new Error(`transposed convolution expects ${cin}x${h}x${wd} inputs, got ${x.length}`);
    const s = layer.scratch || (layer.scratch = convTransposeSetup(layer, w));
    const { cin4, wt, xt, yt, y } = s, hw = h * wd, howo = ho * wo;
    for (let c = 0; c < cin; c++) for (let p = 0; p < hw; p++) xt[p * cin4 + c] = x[c * hw + p];
    for (let p = 0; p < howo; p++) for (let co = 0; co < cout; co++) yt[p * cout + co] = layer.bias === null ? 0 : w[layer.bias + co];
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < wd; j++) {
        const xb = (i * wd + j) * cin4;
        for (let ky = 0; ky < kh; ky++) {
          const oy = i * sh - ph + ky;
          if (oy < 0 || oy >= ho) continue;
          for (let kx = 0; kx < kw; kx++) {
            const ox = j * sw - pw + kx;
            if (ox < 0 || ox >= wo) continue;
            const yb = (oy * wo + ox) * cout;
            for (let ci = 0, w0 = (ky * kw + kx) * cin4 * cout; ci < cin4; ci += 4, w0 += 4 * cout) {
              const v0 = xt[xb + ci], v1 = xt[xb + ci + 1], v2 = xt[xb + ci + 2], v3 = xt[xb + ci + 3];
              if (v0 === 0 && v1 === 0 && v2 === 0 && v3 === 0) continue;  // ReLU zeros: nothing to add
              const w1 = w0 + cout, w2 = w1 + cout, w3 = w2 + cout;
              for (let co = 0; co < cout; co++) yt[yb + co] += v0 * wt[w0 + co] + v1 * wt[w1 + co] + v2 * wt[w2 + co] + v3 * wt[w3 + co];
            }
          }
        }
      }
    }
    for (let co = 0; co < cout; co++) for (let p = 0; p < howo; p++) y[co * howo + p] = yt[p * cout + co];
    return y;
  }

  // PyTorch's GroupNorm, in place: each group of channels/groups consecutive channels (all their
  // pixels) to mean 0 and variance 1 (biased, + eps), then channel c scaled by weight[c] and
  // shifted by bias[c].
  function groupNorm(layer, x, w) {
    const c = layer.channels, per = c / layer.groups, hw = x.length / c, n = per * hw;
    for (let g = 0; g < layer.groups; g++) {
      const start = g * n, end = start + n;
      let sum = 0;
      for (let i = start; i < end; i++) sum += x[i];
      const mean = sum / n;
      let sq = 0;
      for (let i = start; i < end; i++) { const d = x[i] - mean; sq += d * d; }
      const inv = 1 / Math.sqrt(sq / n + layer.eps);
      for (let ch = g * per; ch < (g + 1) * per; ch++) {
        const a = (layer.weight === null ? 1 : w[layer.weight + ch]) * inv;
        const b = (layer.bias === null ? 0 : w[layer.bias + ch]) - mean * a;
        for (let i = ch * hw; i < (ch + 1) * hw; i++) x[i] = x[i] * a + b;
      }
    }
    return x;
  }

  // ---------------------------------------------------------------- the discretized logistic's mean
  // sum_{j=0}^{n-1} sigmoid((mu - t_j) / s), t_j = (j + 1/2) / n: the expected level (0..n) of a
  // logistic(mu, s) discretized to the n + 1 levels k/n, the edge levels taking the tails. Term j
  // is sigmoid(a - j*d) with a = (mu - t_0)/s and d = 1/(n s); terms with argument above 40 are 1
  // and below -40 are 0 (within 5e-18); the rest are 1 / (1 + e_j) with e_j = exp(j d - a), one
  // multiplication each (e_{j+1} = e_j exp(d)), so a value costs two exp calls, not n.
  function expectedLevel(mu, invS, n) {
    const a = (mu - 0.5 / n) * invS, d = invS / n;
    const lo = Math.min(n, Math.max(0, Math.ceil((a - 40) / d)));
    const hi = Math.min(n, Math.max(lo, Math.floor((a + 40) / d) + 1));
    let total = lo, e = Math.exp(lo * d - a);
    const r = Math.exp(d);
    for (let j = lo; j < hi; j++, e *= r) total += 1 / (1 + e);
    return total;
  }
  // E[x|z] of aevb's DiscretizedLogistic: parameters as K blocks of D mixture logits (K > 1 only),
  // K of means m and K of log-scales l, on PixelCNN++'s [-1, 1] scale; in [0, 1] units the mean
  // is (m + 1)/2 and the log-scale max(l - ln 2, min_log_scale). E = sum_k w_k E_k, w = softmax.
  function logisticMean(layer, x) {
    const D = layer.take, K = layer.components, n = layer.levels - 1, first = K === 1 ? 0 : K;
    if (x.length !== (first + 2 * K) * D) throw new Error(`discretized logistic expects ${(first + 2 * K) * D} parameters, got ${x.length}`);
    const y = new Float64Array(D);
    for (let v = 0; v < D; v++) {
      let top = -Infinity;
      for (let k = 0; k < first; k++) top = Math.max(top, x[k * D + v]);
      let sum = 0, norm = 0;
      for (let k = 0; k < K; k++) {
        const weight = K === 1 ? 1 : Math.exp(x[k * D + v] - top);
        const mu = 0.5 * x[(first + k) * D + v] + 0.5;
        const logS = Math.max(x[(first + K + k) * D + v] - Math.LN2, layer.min_log_scale);
        sum += weight * expectedLevel(mu, Math.exp(-logS), n);
        norm += weight;
      }
      y[v] = sum / (norm * n);
    }
    return y;
  }

  // ---------------------------------------------------------------- layers
  // Each takes (layer, x: Float64Array, weights: Float32Array) and returns the next vector.
  const LAYERS = {
    linear(layer, x, w) {
      const n = layer.in, m = layer.out, y = new Float64Array(m);
      if (x.length !== n) throw new Error(`linear layer expects ${n} inputs, got ${x.length}`);
      for (let o = 0; o < m; o++) {
        let acc = layer.bias === null ? 0 : w[layer.bias + o];
        const row = layer.weight + o * n;
        for (let i = 0; i < n; i++) acc += w[row + i] * x[i];
        y[o] = acc;
      }
      return y;
    },
    activation(layer, x) {
      const f = layer.f || (layer.f = elementwise(layer.fn, layer));
      for (let i = 0; i < x.length; i++) x[i] = f(x[i]);
      return x;
    },
    reshape(layer, x) {  // the flat vector read as a C x H x W image: no number moves
      const [c, h, w] = layer.shape;
      if (x.length !== c * h * w) throw new Error(`reshape to ${layer.shape.join("x")} gets ${x.length} numbers`);
      return x;
    },
    "conv-transpose": convTranspose,
    "group-norm": groupNorm,
    crop(layer, x) {  // the size[0] x size[1] window from (top, left) of every channel
      const [H, W] = layer.in_size, [h, w] = layer.size, c = layer.channels;
      const y = layer.y || (layer.y = new Float64Array(c * h * w));
      for (let ch = 0, o = 0; ch < c; ch++) {
        for (let i = 0; i < h; i++) {
          const row = (ch * H + layer.top + i) * W + layer.left;
          for (let j = 0; j < w; j++, o++) y[o] = x[row + j];
        }
      }
      return y;
    },
    mean(layer, x) {  // the likelihood's mean E[x|z] from its parameters
      if (layer.fn === "discretized-logistic") return logisticMean(layer, x);
      const f = layer.f || (layer.f = elementwise(layer.fn));  // the first `take` parameters, squashed
      const y = new Float64Array(layer.take);
      for (let i = 0; i < layer.take; i++) y[i] = f(x[i]);
      return y;
    },
  };

  class Decoder {
    // spec: {layers, encoding, weights (base64)}; or pass weights as a Float32Array directly
    constructor(spec, weights) {
      this.layers = spec.layers.map((l) => Object.assign({}, l));
      for (const l of this.layers) if (!LAYERS[l.kind]) throw new Error("unknown layer kind " + l.kind);
      this.weights = weights || readNumbers(spec.weights, spec.encoding);
    }
    // z: array of J numbers -> Float64Array of D mean values (C*H*W, channels first)
    decode(z) {
      let x = Float64Array.from(z);
      for (const l of this.layers) x = LAYERS[l.kind](l, x, this.weights);
      return x;
    }
  }

  // mean values -> RGBA pixels of a C x H x W image: value * scale + offset, clipped to [0, 1]
  function toPixels(values, shape, scale, offset, rgba) {
    const [c, h, w] = shape, hw = h * w;
    const out = rgba || new Uint8ClampedArray(hw * 4);
    const level = (v) => Math.round(Math.min(1, Math.max(0, v * scale + offset)) * 255);
    for (let p = 0; p < hw; p++) {
      const r = level(values[p]);
      out[4 * p] = r;
      out[4 * p + 1] = c >= 3 ? level(values[hw + p]) : r;
      out[4 * p + 2] = c >= 3 ? level(values[2 * hw + p]) : r;
      out[4 * p + 3] = 255;
    }
    return out;
  }

  return { Decoder, readNumbers, base64Bytes, toPixels, LAYERS, ACTIVATIONS };
})();
