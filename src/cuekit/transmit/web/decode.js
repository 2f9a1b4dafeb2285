// Bit-plane decoder of cuekit progressive packages, bit for bit the same as the Python StageDecoder
// (src/cuekit/transmit/codec.py). Plain ES module without DOM: runs in the page's Web Worker and in Node.
//
// A quantized tensor has 32-bit codes q; part s carries the next b_s bits of every code, most significant
// first, packed b_s bits per value MSB first. After B known bits a value decodes in float64 as
//   min + ((q >>> (32 - B)) + 0.5) * (scale / 2^B)
// (the same three IEEE double operations as codec.dequantize_codes) and is then cast to the tensor's dtype
// the way torch does: float32 by round-to-nearest-even; float16 and bfloat16 through float32 first
// (torch converts double -> float -> half), each step round-to-nearest-even. Raw tensors are their bytes.

export const CODE_BITS = 32;
export const QUANTIZED = "quantized";
export const RAW = "raw";

export class DecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = "DecodeError";
  }
}

// dtype name -> [bytes per element, typed array constructor or null]
export const DTYPES = {
  float64: [8, Float64Array], float32: [4, Float32Array], float16: [2, Uint16Array], bfloat16: [2, Uint16Array],
  int64: [8, BigInt64Array], int32: [4, Int32Array], int16: [2, Int16Array], int8: [1, Int8Array],
  uint8: [1, Uint8Array], bool: [1, Uint8Array], complex64: [8, Float32Array], complex128: [16, Float64Array],
};
const FLOATING = new Set(["float64", "float32", "float16", "bfloat16"]);

export function numel(shape) {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// float conversions

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

// float32 bits -> float16 bits, round to nearest even (as c10::Half from float).
export function float32BitsToHalf(x) {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal -> zero (ties handled: exactly half rounds to 0)
    mant |= 0x800000;
    const shift = 14 - e; // 14..24
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1))) h += 1;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1; // carries into the exponent correctly
  return sign | h;
}

// float32 bits -> bfloat16 bits, round to nearest even (c10::BFloat16 round_to_nearest_even).
export function float32BitsToBFloat16(x) {
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((x + (((x >>> 16) & 1) + 0x7fff)) >>> 16) & 0xffff;
}

export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function bfloat16ToFloat(b) {
  u32buf[0] = (b << 16) >>> 0;
  return f32buf[0];
}

function toFloat32Bits(v) {
  f32buf[0] = v;
  return u32buf[0];
}

// float64 values -> the dtype's storage as torch's Tensor.to(dtype) makes it: Float64Array, Float32Array, or
// the 16-bit patterns (Uint16Array) of float16 / bfloat16, rounded through float32 as torch does.
export function castFloat64(values, dtype) {
  if (dtype === "float64") return Float64Array.from(values);
  if (dtype === "float32") return Float32Array.from(values);
  if (dtype !== "float16" && dtype !== "bfloat16") throw new DecodeError(`cannot cast to ${dtype}`);
  const conv = dtype === "float16" ? float32BitsToHalf : float32BitsToBFloat16;
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = conv(toFloat32Bits(values[i]));
  return out;
}

// ---------------------------------------------------------------------------------------------
// bit unpacking: count values of `bits` bits, most significant bit first -> Uint32Array

export function unpackBits(data, bits, count) {
  const need = Math.ceil((count * bits) / 8);
  if (data.length !== need) {
    throw new DecodeError(`expected ${need} bytes for ${count} values of ${bits} bits, got ${data.length}`);
  }
  const out = new Uint32Array(count);
  if (count === 0) return out;
  if (bits % 8 === 0) {
    const width = bits / 8;
    for (let i = 0, p = 0; i < count; i++) {
      let v = 0;
      for (let k = 0; k < width; k++) v = v * 256 + data[p++];
      out[i] = v;
    }
    return out;
  }
  if (8 % bits === 0) {
    const per = 8 / bits;
    const mask = (1 << bits) - 1;
    for (let i = 0; i < count; i++) {
      const byte = data[(i / per) | 0];
      out[i] = (byte >>> (8 - bits * ((i % per) + 1))) & mask;
    }
    return out;
  }
  let bitPos = 0;
  for (let i = 0; i < count; i++) {
    let v = 0;
    for (let k = 0; k < bits; k++, bitPos++) {
      v = v * 2 + ((data[bitPos >>> 3] >>> (7 - (bitPos & 7))) & 1);
    }
    out[i] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export function validateBits(bits) {
  if (!Array.isArray(bits) || bits.length === 0) throw new DecodeError("the bit-width list is empty");
  let sum = 0;
  for (const b of bits) {
    if (!Number.isInteger(b) || b < 1) throw new DecodeError(`every bit width must be >= 1, got ${JSON.stringify(bits)}`);
    sum += b;
  }
  if (sum > CODE_BITS) throw new DecodeError(`the bit widths add up to ${sum}, more than ${CODE_BITS}`);
  return bits.slice();
}

// Check a parsed manifest (the subset this decoder relies on); returns it.
export function checkManifest(m) {
  if (!m || typeof m !== "object" || m.format !== "cuekit-progressive") throw new DecodeError("not a cuekit-progressive manifest");
  if (m.version !== 1) throw new DecodeError(`unsupported manifest version ${JSON.stringify(m.version)} (this page reads 1)`);
  const bits = validateBits(m.bits);
  if (!Array.isArray(m.parts) || m.parts.length !== bits.length) throw new DecodeError("the manifest's parts do not match its bit widths");
  if (!Array.isArray(m.tensors)) throw new DecodeError("the manifest lists no tensors");
  for (const t of m.tensors) {
    if (!(t.dtype in DTYPES)) throw new DecodeError(`tensor ${t.name}: unsupported dtype ${t.dtype}`);
    if (t.encoding !== QUANTIZED && t.encoding !== RAW) throw new DecodeError(`tensor ${t.name}: unknown encoding ${t.encoding}`);
    if (!Array.isArray(t.byte_sizes) || t.byte_sizes.length !== bits.length) throw new DecodeError(`tensor ${t.name}: byte_sizes must list ${bits.length} sizes`);
    if (t.encoding === QUANTIZED && (typeof t.min !== "number" || typeof t.scale !== "number")) {
      throw new DecodeError(`tensor ${t.name}: quantized entry without min/scale`);
    }
  }
  const plain = (f) => typeof f === "string" && /^[^/\\]+$/.test(f) && !f.startsWith(".");
  const graph = (m.model || {}).onnx;
  for (const f of [...m.parts.map((p) => p.file), ...(graph ? [graph.file] : [])]) {
    if (!plain(f)) throw new DecodeError(`manifest file name ${JSON.stringify(f)} is not a plain file name`);
  }
  m.parts.forEach((p, s) => {
    const sum = m.tensors.reduce((a, t) => a + t.byte_sizes[s], 0);
    if (sum !== p.bytes) throw new DecodeError(`part ${s}: tensor byte sizes do not add up to ${p.bytes}`);
  });
  return m;
}

export class StageDecoder {
  constructor(entries, bits) {
    this.entries = entries.map((e) => ({ ...e, numel: numel(e.shape) }));
    this.bits = validateBits(bits);
    this.partsDone = 0;
    this.codes = new Map(); // name -> Uint32Array
    this.raw = new Map(); // name -> Uint8Array (little-endian bytes of the tensor's dtype)
  }

  get knownBits() {
    return this.bits.slice(0, this.partsDone).reduce((a, b) => a + b, 0);
  }

  partSize(index) {
    return this.entries.reduce((a, e) => a + e.byte_sizes[index], 0);
  }

  // Parse the next part (Uint8Array) and merge its bits; a malformed part changes nothing.
  addPart(data) {
    const s = this.partsDone;
    if (s >= this.bits.length) throw new DecodeError(`all ${this.bits.length} parts were already added`);
    if (data.length !== this.partSize(s)) {
      throw new DecodeError(`part ${s} has ${data.length} bytes, the manifest says ${this.partSize(s)}`);
    }
    const b = this.bits[s];
    const shift = CODE_BITS - this.bits.slice(0, s + 1).reduce((a, x) => a + x, 0);
    const planes = [];
    let offset = 0;
    for (const e of this.entries) {
      const n = e.byte_sizes[s];
      const chunk = data.subarray(offset, offset + n);
      offset += n;
      if (e.encoding === RAW) {
        if (s === 0) {
          const want = e.numel * DTYPES[e.dtype][0];
          if (n !== want) throw new DecodeError(`tensor ${e.name}: ${n} raw bytes for ${e.numel} x ${e.dtype}`);
          planes.push([e, chunk.slice()]);
        } else if (n) {
          throw new DecodeError(`raw tensor ${e.name} has bytes in part ${s}`);
        }
        continue;
      }
      planes.push([e, unpackBits(chunk, b, e.numel)]);
    }
    for (const [e, plane] of planes) {
      if (e.encoding === RAW) {
        this.raw.set(e.name, plane);
        continue;
      }
      let codes = this.codes.get(e.name);
      if (!codes) {
        codes = new Uint32Array(e.numel);
        this.codes.set(e.name, codes);
      }
      for (let i = 0; i < plane.length; i++) codes[i] = (codes[i] | (plane[i] << shift)) >>> 0;
    }
    this.partsDone += 1;
  }

  // float64 values of a quantized tensor at the current stage.
  values64(e) {
    const known = this.knownBits;
    const codes = this.codes.get(e.name);
    const out = new Float64Array(e.numel);
    const lo = e.min;
    const step = e.scale / 2 ** known;
    const down = CODE_BITS - known;
    for (let i = 0; i < out.length; i++) out[i] = lo + ((codes[i] >>> down) + 0.5) * step;
    return out;
  }

  // One tensor in its own dtype, as little-endian bytes (Uint8Array), exactly as torch holds it.
  tensorBytes(e) {
    if (this.partsDone === 0) throw new DecodeError("no part decoded yet");
    if (e.encoding === RAW) return this.raw.get(e.name);
    if (!FLOATING.has(e.dtype)) {
      throw new DecodeError(`tensor ${e.name}: quantized tensors must be floating point, not ${e.dtype}`);
    }
    const arr = castFloat64(this.values64(e), e.dtype);
    return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  }

  // One floating tensor as float32 (what the ONNX graph takes): the tensor's own dtype first, then float32,
  // as torch's load_state_dict into a float32 model does.
  tensorFloat32(e) {
    if (!FLOATING.has(e.dtype)) throw new DecodeError(`tensor ${e.name} (${e.dtype}) is not floating point`);
    if (e.dtype === "float32") {
      if (e.encoding === QUANTIZED) return Float32Array.from(this.values64(e));
      const b = this.raw.get(e.name);
      return new Float32Array(b.slice().buffer);
    }
    const b = this.tensorBytes(e);
    const aligned = b.byteOffset % 8 === 0 ? b : b.slice();
    if (e.dtype === "float64") return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, e.numel));
    const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, e.numel);
    const out = new Float32Array(e.numel);
    const conv = e.dtype === "float16" ? halfToFloat : bfloat16ToFloat;
    for (let i = 0; i < out.length; i++) out[i] = conv(u16[i]);
    return out;
  }

  entry(name) {
    return this.entries.find((e) => e.name === name);
  }
}
