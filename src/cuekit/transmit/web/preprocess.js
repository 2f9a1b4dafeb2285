// An image as the model's input, as cuekit.data.preprocess.load_image_tensor makes it in Python:
// torchvision Resize(round(img_size * resize_ratio)) on a PIL image (Pillow's bilinear resampling with its
// antialiasing support and 8-bit fixed-point arithmetic, reproduced here), CenterCrop(img_size), ToTensor
// (/255 in float32), Normalize(mean, std) in float32. Given the same RGB pixels, the result is the same
// float32 tensor bit for bit. (Decoding differs: the page decodes with the browser, Python with Pillow; for
// PNG files without colour profiles both give the file's exact pixels.) Plain ES module, also runs in Node.

const PRECISION_BITS = 32 - 8 - 2;

function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = (x + xmin - center + 0.5) * ss;
      if (t < 0) t = -t;
      const w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      let v = x < xmax ? (ww !== 0.0 ? k[x] / ww : k[x]) : 0;
      v = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
      kk[xx * ksize + x] = v;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / (1 << PRECISION_BITS));
}

function horizontalPass(src, w, h, ch, outW) {
  const { bounds, kk, ksize } = coefficients(w, outW);
  const out = new Uint8Array(outW * h * ch);
  const init = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
      for (let c = 0; c < ch; c++) {
        let ss = init;
        for (let x = 0; x < xmax; x++) ss += src[(y * w + x + xmin) * ch + c] * kk[xx * ksize + x];
        out[(y * outW + xx) * ch + c] = clip8(ss);
      }
    }
  }
  return out;
}

function verticalPass(src, w, h, ch, outH) {
  const { bounds, kk, ksize } = coefficients(h, outH);
  const out = new Uint8Array(w * outH * ch);
  const init = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < ch; c++) {
        let ss = init;
        for (let y = 0; y < ymax; y++) ss += src[((y + ymin) * w + x) * ch + c] * kk[yy * ksize + y];
        out[(yy * w + x) * ch + c] = clip8(ss);
      }
    }
  }
  return out;
}

// Pillow's ImagingResample(BILINEAR) of an 8-bit image with `ch` interleaved channels: two passes, each
// rounding to 8 bits. Pillow 13 runs the vertical pass first when the height shrinks by more than twice
// as many pixels as the width (older Pillow always starts with the horizontal pass); so does this.
export function resizeBilinear(src, w, h, ch, outW, outH) {
  if (w === outW && h === outH) return src.slice();
  const verticalFirst = h - outH > 0 && h - outH > (w - outW) * 2;
  if (verticalFirst) {
    const tmp = outH !== h ? verticalPass(src, w, h, ch, outH) : src;
    return outW !== w ? horizontalPass(tmp, w, outH, ch, outW) : tmp;
  }
  const tmp = outW !== w ? horizontalPass(src, w, h, ch, outW) : src;
  return outH !== h ? verticalPass(tmp, outW, h, ch, outH) : tmp;
}

// RGBA (ImageData order) -> RGB, or -> L with Pillow's ITU-R 601-2 integer weights.
export function fromRGBA(rgba, w, h, chans) {
  const n = w * h;
  if (chans === 1) {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = (rgba[i * 4] * 19595 + rgba[i * 4 + 1] * 38470 + rgba[i * 4 + 2] * 7471 + 0x8000) >>> 16;
    }
    return out;
  }
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = rgba[i * 4];
    out[i * 3 + 1] = rgba[i * 4 + 1];
    out[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return out;
}

// The (1, C, S, S) float32 input for pixels (Uint8Array, `chans` interleaved channels) of a w x h image.
export function imageToInput(pixels, w, h, chans, meta) {
  const size = Math.trunc(Number(meta.img_size || 224));
  const ratio = Number(meta.resize_ratio === undefined || meta.resize_ratio === null ? 1.0 : meta.resize_ratio);
  const short = roundHalfEven(size * ratio);
  let nw, nh;
  if (w <= h) {
    nw = short;
    nh = Math.trunc((short * h) / w);
  } else {
    nh = short;
    nw = Math.trunc((short * w) / h);
  }
  const resized = resizeBilinear(pixels, w, h, chans, nw, nh);
  if (size > nw || size > nh) throw new Error(`the image is smaller than the ${size}-pixel crop after resizing`);
  const top = roundHalfEven((nh - size) / 2.0);
  const left = roundHalfEven((nw - size) / 2.0);
  const mean = (meta.mean || [0, 0, 0]).slice(0, chans).map(Math.fround);
  const std = (meta.std || [1, 1, 1]).slice(0, chans).map(Math.fround);
  while (mean.length < chans) mean.push(0);
  while (std.length < chans) std.push(1);
  const out = new Float32Array(chans * size * size);
  for (let c = 0; c < chans; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = resized[((y + top) * nw + x + left) * chans + c];
        const t = Math.fround(v / 255);
        out[(c * size + y) * size + x] = Math.fround(Math.fround(t - mean[c]) / std[c]);
      }
    }
  }
  return out;
}
