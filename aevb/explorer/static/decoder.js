"use strict";
// aevb's decoder in plain JavaScript: runs the program written by aevb/explorer/program.py.
//
// A program is a list of layers applied in order to a vector (Float64Array; JavaScript numbers
// are float64, so the only rounding against PyTorch's float32 is PyTorch's own). Each layer kind
// is one function in LAYERS: a new kind (e.g. the convolutional decoders' layers) is one more
// entry here and one more branch in program.py.
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

  // ---------------------------------------------------------------- layers
  // Each takes (layer, x: Float64Array, weights: Float32Array) and returns the next vector.
  const LAYERS = {
    linear(layer, x, w) {
      const n = layer.in, m = layer.out, y = new Float64Array(m);
      if (x.length !== n) throw new Error(`linear layer expects ${n} inputs, got ${x.length}`);
      for (let o = 0; o < m; o++) {
        let acc = w[layer.bias + o];
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
    mean(layer, x) {  // the likelihood's mean: the first `take` parameters, squashed by `fn`
      const f = layer.f || (layer.f = elementwise(layer.fn));
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
