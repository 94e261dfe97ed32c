/* The book's "Try it" page (book/try.md): faces in a photo, and CF-DAN's expression for each,
 * computed in this browser tab. Nothing is uploaded: the photo is read with the File API,
 * and the nets run in WebAssembly with ONNX Runtime Web (book/_extra/_static/ort/, copied
 * from npm by `make ort`).
 *
 * What runs here is what `python -m cfdan predict PHOTO` runs (cfdan/predict.py):
 *   1. MTCNN (facenet-pytorch's detect_face): P-Net over an image pyramid, R-Net and O-Net on
 *      the candidates, with the same thresholds, NMS, box regression and squaring. The three
 *      nets are facenet-pytorch's weights exported to ONNX (`make demo`); the cascade around
 *      them is ported below line by line, including float32 rounding (Math.fround) where a
 *      rounded value decides something (a threshold, a pixel index).
 *   2. predict._crop: a square around each box, black outside the photo.
 *   3. predict.face_batch: Pillow's convert("L") (the shipped model reads grey faces) and
 *      Pillow's bicubic resize to 48 x 48, both ported exactly (fixed-point arithmetic), then
 *      /255 and the ImageNet normalisation.
 *   4. CF-DAN as ONNX: logits and the spatial attention map of the last layer (Fig. 8).
 * tests/test_book.py feeds this page a photo and compares its boxes and probabilities with
 * the command line's; the result of each photo is in window.cfdanResult (JSON-friendly).
 *
 * No build step: this file is loaded as it is, by try.md only. The pure functions (resizing,
 * the cascade's arithmetic) do not touch the page, so Node can load them too (module.exports).
 */
(function () {
  "use strict";

  const f32 = Math.fround; // round to float32, as PyTorch's float32 tensors do at every step

  // --------------------------------------------------------------------------------------
  // Pixels. An image is {data: Uint8ClampedArray RGBA, width, height}, as ImageData is.

  /* F.interpolate(mode="area") of the region (x0, y0, w, h) of `img` to oh x ow, i.e.
   * adaptive average pooling: output cell i covers input rows floor(i*h/oh) to
   * ceil((i+1)*h/oh). facenet-pytorch's imresample. The sums are integers (exact); the mean is
   * PyTorch's sum / kh / kw in float32. Returns planar RGB (3, oh, ow), already normalised as
   * MTCNN wants: (v - 127.5) * 0.0078125. */
  function areaResize(img, x0, y0, w, h, oh, ow, offset, scale) {
    const out = new Float32Array(3 * oh * ow);
    const src = img.data, stride = img.width * 4;
    const plane = oh * ow;
    for (let oy = 0; oy < oh; oy++) {
      const ya = Math.floor((oy * h) / oh), yb = Math.ceil(((oy + 1) * h) / oh);
      for (let ox = 0; ox < ow; ox++) {
        const xa = Math.floor((ox * w) / ow), xb = Math.ceil(((ox + 1) * w) / ow);
        let r = 0, g = 0, b = 0;
        for (let y = ya; y < yb; y++) {
          let p = (y0 + y) * stride + (x0 + xa) * 4;
          for (let x = xa; x < xb; x++, p += 4) {
            r += src[p]; g += src[p + 1]; b += src[p + 2];
          }
        }
        const kh = yb - ya, kw = xb - xa, o = oy * ow + ox;
        out[o] = f32(f32(f32(f32(r / kh) / kw) - offset) * scale);
        out[plane + o] = f32(f32(f32(f32(g / kh) / kw) - offset) * scale);
        out[2 * plane + o] = f32(f32(f32(f32(b / kh) / kw) - offset) * scale);
      }
    }
    return out;
  }

  /* PIL's Image.crop(box) of an RGBA image into `channels` 8-bit channels (1: Pillow's
   * convert("L"), ITU-R 601-2 luma in 16-bit fixed point; 3: RGB). Pixels outside the photo
   * are black, as Pillow fills them. Returns {data: Uint8Array, width, height, channels}. */
  function cropChannels(img, left, top, right, bottom, channels) {
    const w = right - left, h = bottom - top;
    const out = new Uint8Array(w * h * channels);
    const src = img.data;
    for (let y = 0; y < h; y++) {
      const sy = top + y;
      for (let x = 0; x < w; x++) {
        const sx = left + x;
        if (sx < 0 || sy < 0 || sx >= img.width || sy >= img.height) continue; // stays 0
        const p = (sy * img.width + sx) * 4, o = (y * w + x) * channels;
        if (channels === 1) {
          out[o] = (src[p] * 19595 + src[p + 1] * 38470 + src[p + 2] * 7471 + 0x8000) >>> 16;
        } else {
          out[o] = src[p]; out[o + 1] = src[p + 1]; out[o + 2] = src[p + 2];
        }
      }
    }
    return {data: out, width: w, height: h, channels};
  }

  /* Pillow's bicubic filter (a = -0.5) and its coefficients for one axis
   * (libImaging/Resample.c: precompute_coeffs, then normalize_coeffs_8bpc, 22-bit fixed
   * point). */
  function bicubic(x) {
    const a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }
  const PRECISION_BITS = 22;
  function pilCoefficients(inSize, outSize) {
    const scale = inSize / outSize;
    const filterscale = scale < 1 ? 1 : scale;
    const support = 2 * filterscale; // bicubic's support is 2
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2), kk = new Float64Array(outSize * ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale, ss = 1 / filterscale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const w = bicubic((x + xmin - center + 0.5) * ss);
        kk[xx * ksize + x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0 ? kk[xx * ksize + x] / ww : kk[xx * ksize + x];
        kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS))
                                   : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return {ksize, bounds, kk};
  }
  function clip8(ss) {
    const v = Math.floor(ss / (1 << PRECISION_BITS)); // C's ss >> 22
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  /* One pass of Pillow's resampling: the image's width (axis "x") or height (axis "y")
   * becomes `size`, each output pixel rounded to 8 bits (ImagingResampleHorizontal_8bpc,
   * ImagingResampleVertical_8bpc). */
  function pilPass(im, size, axis) {
    const c = im.channels, half = 1 << (PRECISION_BITS - 1);
    const horizontal = axis === "x", inSize = horizontal ? im.width : im.height;
    const {ksize, bounds, kk} = pilCoefficients(inSize, size);
    const w = horizontal ? size : im.width, h = horizontal ? im.height : size;
    const out = new Uint8Array(w * h * c);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = horizontal ? x : y; // the output coordinate along the axis
        const min = bounds[o * 2], n = bounds[o * 2 + 1], k = o * ksize;
        for (let ch = 0; ch < c; ch++) {
          let ss = half;
          for (let i = 0; i < n; i++) {
            const src = horizontal ? y * im.width + min + i : (min + i) * im.width + x;
            ss += im.data[src * c + ch] * kk[k + i];
          }
          out[(y * w + x) * c + ch] = clip8(ss);
        }
      }
    }
    return {data: out, width: w, height: h, channels: c};
  }

  /* Pillow's Image.resize((ow, oh)) with its default filter (bicubic) of an 8-bit image
   * (ImagingResampleInner): an axis whose size does not change is not resampled; otherwise
   * the width first, except that Pillow 13 resamples the height first when it shrinks more
   * than twice as many pixels as the width does (the order changes the 8-bit rounding in
   * between; checked against Pillow on random sizes). */
  function pilResize(im, ow, oh) {
    const needX = ow !== im.width, needY = oh !== im.height;
    const heightFirst = needX && needY && oh < im.height && im.height - oh > 2 * (im.width - ow);
    let cur = im;
    if (heightFirst) cur = pilPass(cur, oh, "y");
    if (needX) cur = pilPass(cur, ow, "x");
    if (needY && !heightFirst) cur = pilPass(cur, oh, "y");
    return cur;
  }

  // --------------------------------------------------------------------------------------
  // The face crop and the classifier's input (cfdan/predict.py: _crop, face_batch).

  /* predict._crop(image, box): a square of side max(w, h) around the box's centre, its
   * corners truncated towards zero as Python's int() does. */
  function squareCrop(box) {
    const [x0, y0, x1, y1] = box;
    const side = Math.max(x1 - x0, y1 - y0);
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    return [Math.trunc(cx - side / 2), Math.trunc(cy - side / 2),
            Math.trunc(cx + side / 2), Math.trunc(cy + side / 2)];
  }

  /* The model's input for one face: {tensor: Float32Array (3, S, S), grey: the S x S 8-bit
   * picture the model sees (for display)}. Normalised as Augment._normalise does in float32:
   * x * (1 / std) + (-mean / std), x = v / 255. */
  function faceInput(img, box, meta) {
    const cls = meta.classifier, size = cls.image_size, chans = cls.in_channels;
    const [l, t, r, b] = squareCrop(box);
    const small = pilResize(cropChannels(img, l, t, r, b, chans), size, size);
    const plane = size * size, tensor = new Float32Array(3 * plane);
    for (let ch = 0; ch < 3; ch++) {
      const inv = f32(1 / f32(cls.std[ch])), shift = f32(-f32(cls.mean[ch]) / f32(cls.std[ch]));
      for (let i = 0; i < plane; i++) {
        const v = small.data[i * chans + (chans === 1 ? 0 : ch)];
        tensor[ch * plane + i] = f32(shift + f32(f32(v / 255) * inv));
      }
    }
    return {tensor, small, crop: [l, t, r, b]};
  }

  function softmax(logits) {
    const m = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    return e.map((v) => v / s);
  }

  // --------------------------------------------------------------------------------------
  // MTCNN's arithmetic (facenet_pytorch/models/utils/detect_face.py). A box is
  // {x1, y1, x2, y2, score, reg: [dx1, dy1, dx2, dy2]}, coordinates float32 as in PyTorch.

  /* The pyramid's scales: the first maps min_face to P-Net's 12 px cell, each next one is
   * `factor` times smaller, while the image's short side is still >= 12 px (double, as in
   * Python). */
  function pyramidScales(width, height, minFace, factor) {
    const m = 12 / minFace, scales = [];
    let minl = Math.min(width, height) * m, s = m;
    while (minl >= 12) {
      scales.push(s);
      s *= factor;
      minl *= factor;
    }
    return scales;
  }

  /* generateBoundingBox: every P-Net cell whose face probability is >= thresh, as a 12 px
   * box in the photo's coordinates, with the cell's regression. prob, reg: (1, 2|4, h, w). */
  function pnetBoxes(prob, reg, h, w, scale, thresh) {
    const boxes = [], plane = h * w, s = f32(scale), t = f32(thresh);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x, p = prob[plane + i];
        if (!(p >= t)) continue;
        boxes.push({
          x1: Math.floor(f32(f32(2 * x + 1) / s)), y1: Math.floor(f32(f32(2 * y + 1) / s)),
          x2: Math.floor(f32(f32(2 * x + 12) / s)), y2: Math.floor(f32(f32(2 * y + 12) / s)),
          score: p, reg: [reg[i], reg[plane + i], reg[2 * plane + i], reg[3 * plane + i]],
        });
      }
    }
    return boxes;
  }

  /* torchvision.ops.nms: highest score first, drop boxes whose IoU with a kept one is
   * > thresh (areas without +1). Returns the kept boxes, highest score first. */
  function nms(boxes, thresh) {
    const order = boxes.map((_, i) => i).sort((a, b) => boxes[b].score - boxes[a].score);
    const area = boxes.map((b) => f32(f32(b.x2 - b.x1) * f32(b.y2 - b.y1)));
    const gone = new Uint8Array(boxes.length), keep = [];
    for (let a = 0; a < order.length; a++) {
      const i = order[a];
      if (gone[i]) continue;
      keep.push(boxes[i]);
      const bi = boxes[i];
      for (let c = a + 1; c < order.length; c++) {
        const j = order[c];
        if (gone[j]) continue;
        const bj = boxes[j];
        const w = Math.max(0, f32(Math.min(bi.x2, bj.x2) - Math.max(bi.x1, bj.x1)));
        const h = Math.max(0, f32(Math.min(bi.y2, bj.y2) - Math.max(bi.y1, bj.y1)));
        const inter = f32(w * h);
        if (f32(inter / f32(f32(area[i] + area[j]) - inter)) > thresh) gone[j] = 1;
      }
    }
    return keep;
  }

  /* nms_numpy(..., "Min") after O-Net: overlap is the intersection over the smaller box,
   * areas with +1, and a box stays when overlap <= thresh (NumPy compares in float32). */
  function nmsMin(boxes, thresh) {
    const area = boxes.map((b) => f32(f32(f32(b.x2 - b.x1) + 1) * f32(f32(b.y2 - b.y1) + 1)));
    let rest = boxes.map((_, i) => i).sort((a, b) => boxes[a].score - boxes[b].score);
    const keep = [], t = f32(thresh);
    while (rest.length) {
      const i = rest.pop(), bi = boxes[i];
      keep.push(bi);
      rest = rest.filter((j) => {
        const bj = boxes[j];
        const w = Math.max(0, f32(f32(Math.min(bi.x2, bj.x2) - Math.max(bi.x1, bj.x1)) + 1));
        const h = Math.max(0, f32(f32(Math.min(bi.y2, bj.y2) - Math.max(bi.y1, bj.y1)) + 1));
        return f32(f32(w * h) / Math.min(area[i], area[j])) <= t;
      });
    }
    return keep;
  }

  /* After P-Net's NMS: the regression scaled by the box's size (no +1). */
  function regressPnet(b) {
    const w = f32(b.x2 - b.x1), h = f32(b.y2 - b.y1);
    return {x1: f32(b.x1 + f32(b.reg[0] * w)), y1: f32(b.y1 + f32(b.reg[1] * h)),
            x2: f32(b.x2 + f32(b.reg[2] * w)), y2: f32(b.y2 + f32(b.reg[3] * h)),
            score: b.score};
  }

  /* bbreg: the regression of R-Net or O-Net, scaled by the box's size + 1. */
  function bbreg(b, reg) {
    const w = f32(f32(b.x2 - b.x1) + 1), h = f32(f32(b.y2 - b.y1) + 1);
    return {x1: f32(b.x1 + f32(reg[0] * w)), y1: f32(b.y1 + f32(reg[1] * h)),
            x2: f32(b.x2 + f32(reg[2] * w)), y2: f32(b.y2 + f32(reg[3] * h)),
            score: b.score};
  }

  /* rerec: the square of side max(w, h) around the box's centre. */
  function rerec(b) {
    const h = f32(b.y2 - b.y1), w = f32(b.x2 - b.x1), l = Math.max(w, h);
    const x1 = f32(f32(b.x1 + f32(w * 0.5)) - f32(l * 0.5));
    const y1 = f32(f32(b.y1 + f32(h * 0.5)) - f32(l * 0.5));
    return {x1, y1, x2: f32(x1 + l), y2: f32(y1 + l), score: b.score};
  }

  /* pad + the slice imgs[:, :, y-1:ey, x-1:ex]: the box's pixels, truncated to integers and
   * clipped to the photo (no padding: a box over the edge is squeezed). null when empty. */
  function boxRegion(b, width, height) {
    const x = Math.max(1, Math.trunc(b.x1)), y = Math.max(1, Math.trunc(b.y1));
    const ex = Math.min(width, Math.trunc(b.x2)), ey = Math.min(height, Math.trunc(b.y2));
    if (!(ey > y - 1 && ex > x - 1)) return null;
    return {x0: x - 1, y0: y - 1, w: ex - x + 1, h: ey - y + 1};
  }

  /* Faces in `img` with MTCNN: run(net, data, dims) runs one ONNX net and returns its
   * outputs by name; cfg is meta.json's "detector". Returns boxes [x1, y1, x2, y2] (float32
   * values) with their O-Net score, largest first (facenet-pytorch's select_largest). */
  async function detectFaces(img, run, cfg) {
    const {offset, scale: norm} = cfg, [t1, t2, t3] = cfg.thresholds;
    const W = img.width, H = img.height;
    // Stage 1: P-Net on every level of the pyramid, NMS within the level, then over all.
    let boxes = [];
    for (const s of pyramidScales(W, H, cfg.min_face, cfg.factor)) {
      const hs = Math.trunc(H * s + 1), ws = Math.trunc(W * s + 1);
      const input = areaResize(img, 0, 0, W, H, hs, ws, offset, norm);
      const out = await run("pnet", input, [1, 3, hs, ws]);
      const [, , h, w] = out.prob.dims;
      boxes.push(...nms(pnetBoxes(out.prob.data, out.reg.data, h, w, s, t1),
                        cfg.nms.pnet_scale));
    }
    boxes = nms(boxes, cfg.nms.pnet_all).map(regressPnet).map(rerec);
    // Stages 2 and 3: R-Net then O-Net on each candidate's pixels, resized (area) to 24 or 48.
    for (const [net, side, thresh, last] of [["rnet", 24, t2, false], ["onet", 48, t3, true]]) {
      const regions = boxes.map((b) => boxRegion(b, W, H));
      boxes = boxes.filter((_, k) => regions[k]);
      const used = regions.filter((r) => r);
      if (!boxes.length) return [];
      const n = side * side * 3, input = new Float32Array(used.length * n);
      used.forEach((r, k) => input.set(
        areaResize(img, r.x0, r.y0, r.w, r.h, side, side, offset, norm), k * n));
      const out = await run(net, input, [used.length, 3, side, side]);
      const prob = out.prob.data, reg = out.reg.data, tf = f32(thresh);
      const passed = [];
      boxes.forEach((b, k) => {
        if (prob[2 * k + 1] > tf) {
          passed.push({x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2, score: prob[2 * k + 1],
                       reg: Array.from(reg.subarray(4 * k, 4 * k + 4))});
        }
      });
      if (!last) {
        boxes = nms(passed, cfg.nms.rnet).map((b) => rerec(bbreg(b, b.reg)));
      } else {
        boxes = nmsMin(passed.map((b) => bbreg(b, b.reg)), cfg.nms.onet_min);
      }
    }
    const area = (b) => f32(f32(b.x2 - b.x1) * f32(b.y2 - b.y1));
    boxes.sort((a, b) => area(b) - area(a));
    return boxes.map((b) => ({box: [b.x1, b.y1, b.x2, b.y2], score: b.score}));
  }

  const core = {areaResize, cropChannels, pilResize, squareCrop, faceInput, softmax,
                pyramidScales, pnetBoxes, nms, nmsMin, regressPnet, bbreg, rerec, boxRegion,
                detectFaces};
  if (typeof module === "object" && module.exports) module.exports = core;
  if (typeof document === "undefined") return;

  // ======================================================================================
  // The page.

  const root = document.getElementById("cfdan-try");
  if (!root) return;
  const here = document.currentScript ? document.currentScript.src : document.baseURI;
  const DEMO = new URL("./", here).href;              // _static/demo/
  const ORT = new URL("../ort/", here).href;          // _static/ort/
  const $ = (id) => document.getElementById(id);
  const fileInput = $("cfdan-file"), cameraButton = $("cfdan-camera");
  const handButton = $("cfdan-hand"), attentionBox = $("cfdan-show-attention");
  const statusLine = $("cfdan-status"), canvas = $("cfdan-canvas"), cards = $("cfdan-faces");
  const video = $("cfdan-video"), shutter = $("cfdan-shutter");
  const ctx = canvas.getContext("2d", {willReadFrequently: true});

  const state = {photo: null, bitmap: null, faces: [], drag: null, busy: false, source: null,
                 detectMs: 0};
  window.cfdanResult = null;

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("cfdan-error", Boolean(isError));
  }

  // ---- loading ONNX Runtime and the nets, once, when the first photo arrives ------------

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.appendChild(s);
    });
  }

  let ready = null;
  function loadModels() {
    if (!ready) ready = (async () => {
      const response = await fetch(DEMO + "meta.json");
      if (!response.ok) {
        throw new Error("this build of the book has no model files (make demo writes them)");
      }
      const meta = await response.json();
      await loadScript(ORT + "ort.wasm.min.js");
      const ort = window.ort;
      ort.env.logLevel = "error";
      ort.env.wasm.wasmPaths = ORT;
      // Threads need a cross-origin-isolated page (special server headers); without them, one.
      ort.env.wasm.numThreads = self.crossOriginIsolated
        ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all"};
      const sessions = {};
      const files = {cfdan: meta.classifier.file, ...meta.detector.files};
      for (const [name, file] of Object.entries(files)) {
        sessions[name] = await ort.InferenceSession.create(DEMO + file, options);
      }
      const run = async (name, data, dims) => {
        const feeds = {image: new ort.Tensor("float32", data, dims)};
        return sessions[name].run(feeds);
      };
      // One run on a blank face, so that the times shown later are steady-state ones.
      const s = meta.classifier.image_size;
      await run("cfdan", new Float32Array(3 * s * s), [1, 3, s, s]);
      return {meta, run, threads: ort.env.wasm.numThreads, version: ort.env.versions.web};
    })();
    ready.catch(() => { ready = null; }); // a failed load is tried again with the next photo
    return ready;
  }

  // ---- classification and drawing ----------------------------------------------------

  async function classify(models, faces) {
    if (!faces.length) return 0;
    const {meta, run} = models, s = meta.classifier.image_size, n = 3 * s * s;
    const inputs = faces.map((face) => faceInput(state.photo, face.box, meta));
    const batch = new Float32Array(faces.length * n);
    inputs.forEach((x, k) => batch.set(x.tensor, k * n));
    const t0 = performance.now();
    const out = await run("cfdan", batch, [faces.length, 3, s, s]);
    const ms = performance.now() - t0;
    const names = meta.classifier.class_names, k = names.length;
    const [, gh, gw] = out.spatial_attention.dims;
    faces.forEach((face, i) => {
      const p = softmax(Array.from(out.logits.data.subarray(i * k, (i + 1) * k)));
      const order = p.map((_, j) => j).sort((a, b) => p[b] - p[a]);
      face.label = names[order[0]];
      face.probabilities = Object.fromEntries(order.map((j) => [names[j], p[j]]));
      const att = out.spatial_attention.data.subarray(i * gh * gw, (i + 1) * gh * gw);
      face.attention = Array.from({length: gh}, (_, y) => Array.from(att.subarray(y * gw, (y + 1) * gw)));
      face.crop = inputs[i].crop;
      face.small = inputs[i].small;
    });
    return ms;
  }

  // A perceptual colour map (inferno's stops), for the attention map.
  const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  function heat(t) {
    const x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2);
    const u = x - i;
    return STOPS[i].map((c, j) => Math.round(c + (STOPS[i + 1][j] - c) * u));
  }
  /* The attention map as a small RGBA canvas (one pixel a grid cell), for drawImage to
   * stretch (bilinear) over the face; colours from the face's least attended cell (dark,
   * nearly transparent) to its most attended one (yellow). */
  function attentionCanvas(att) {
    const h = att.length, w = att[0].length, flat = att.flat();
    const lo = Math.min(...flat), span = Math.max(...flat) - lo || 1;
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    const cx = c.getContext("2d"), im = cx.createImageData(w, h);
    flat.forEach((v, i) => {
      const t = (v - lo) / span, [r, g, b] = heat(t);
      im.data.set([r, g, b, Math.round(255 * (0.1 + 0.6 * t))], i * 4);
    });
    cx.putImageData(im, 0, 0);
    return c;
  }

  function draw() {
    if (!state.bitmap) return;
    const W = state.photo.width, H = state.photo.height;
    ctx.drawImage(state.bitmap, 0, 0);
    const unit = Math.max(2, Math.round(Math.max(W, H) / 400)); // a line width that stays visible
    ctx.font = `${7 * unit}px sans-serif`;
    ctx.textBaseline = "bottom";
    state.faces.forEach((face, i) => {
      if (face.attention && attentionBox.checked) {
        const [l, t, r, b] = face.crop;
        ctx.save();
        ctx.imageSmoothingEnabled = true;
        ctx.drawImage(attentionCanvas(face.attention), l, t, r - l, b - t);
        ctx.restore();
      }
      const [x0, y0, x1, y1] = face.box;
      ctx.lineWidth = unit;
      ctx.strokeStyle = face.manual ? "#3fa9f5" : "#ff4040";
      ctx.setLineDash(face.manual ? [3 * unit, 2 * unit] : []);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
      if (face.manual) { // the handle that resizes a hand-placed square
        ctx.fillStyle = "#3fa9f5";
        ctx.fillRect(x1 - 4 * unit, y1 - 4 * unit, 4 * unit, 4 * unit);
      }
      if (face.label) {
        const text = `${i + 1}: ${face.label} ${face.probabilities[face.label].toFixed(2)}`;
        const tw = ctx.measureText(text).width, ty = y0 > 9 * unit ? y0 : y1 + 9 * unit;
        ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
        ctx.fillRect(x0, ty - 8.5 * unit, tw + 2 * unit, 8.5 * unit);
        ctx.fillStyle = "#fff";
        ctx.fillText(text, x0 + unit, ty - unit);
      }
    });
  }

  function showCards() {
    cards.replaceChildren();
    state.faces.forEach((face, i) => {
      if (!face.label) return;
      const card = document.createElement("figure");
      card.className = "cfdan-card";
      const pic = document.createElement("canvas"), zoom = 3, s = face.small.width;
      pic.width = pic.height = s * zoom;
      const pc = pic.getContext("2d"), im = pc.createImageData(s, s);
      for (let j = 0; j < s * s; j++) {
        const c = face.small.channels, v = face.small.data.subarray(j * c, j * c + c);
        im.data.set([v[0], v[c > 1 ? 1 : 0], v[c > 1 ? 2 : 0], 255], j * 4);
      }
      const tmp = document.createElement("canvas");
      tmp.width = tmp.height = s;
      tmp.getContext("2d").putImageData(im, 0, 0);
      pc.imageSmoothingEnabled = false;
      pc.drawImage(tmp, 0, 0, s * zoom, s * zoom);
      pc.imageSmoothingEnabled = true;
      pc.drawImage(attentionCanvas(face.attention), 0, 0, s * zoom, s * zoom);
      pic.title = "what the model sees (48 x 48), under its spatial attention";
      const caption = document.createElement("figcaption");
      const rows = Object.entries(face.probabilities).slice(0, 3).map(([name, p]) =>
        `<div class="cfdan-bar"><span>${name}</span><meter min="0" max="1" value="${p}"></meter>` +
        `<span>${p.toFixed(3)}</span></div>`).join("");
      const how = face.manual ? "placed by hand" : `face score ${face.detector_score.toFixed(3)}`;
      caption.innerHTML = `<strong>Face ${i + 1}</strong> (${how})${rows}`;
      card.append(pic, caption);
      cards.append(card);
    });
  }

  function publish(models, classifyMs) {
    const faces = state.faces.filter((f) => f.label);
    const n = faces.length;
    window.cfdanResult = {
      source: state.source,
      image: {width: state.photo.width, height: state.photo.height},
      faces: faces.map((f) => ({box: f.box, detector_score: f.detector_score, manual: f.manual,
                                label: f.label, probabilities: f.probabilities,
                                attention: f.attention, crop: f.crop})),
      timing: {detect_ms: state.detectMs, classify_ms: classifyMs,
               classify_ms_per_face: n ? classifyMs / n : null,
               backend: "wasm", threads: models.threads, onnxruntime_web: models.version},
    };
  }

  // ---- a photo in: decode, detect, classify, draw ------------------------------------

  async function analyse(source, blobOrCanvas) {
    if (state.busy) return;
    state.busy = true;
    window.cfdanResult = null;
    try {
      say("Reading the photo…");
      const bitmap = await createImageBitmap(blobOrCanvas, {
        imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none"});
      const W = bitmap.width, H = bitmap.height;
      canvas.width = W; canvas.height = H;
      canvas.hidden = false;
      ctx.drawImage(bitmap, 0, 0);
      state.photo = ctx.getImageData(0, 0, W, H);
      state.bitmap = bitmap;
      state.source = source;
      state.faces = [];
      cards.replaceChildren();
      say(ready ? "Finding faces…" : "Loading the models (about 20 MB, once)…");
      const models = await loadModels();
      say("Finding faces…");
      const t0 = performance.now();
      const found = await detectFaces(state.photo, models.run, models.meta.detector);
      state.detectMs = performance.now() - t0;
      state.faces = found.map((f) => ({box: f.box, detector_score: f.score, manual: false}));
      if (!state.faces.length) state.faces.push(handSquare());
      const ms = await classify(models, state.faces);
      draw();
      showCards();
      publish(models, ms);
      const n = found.length;
      say(n ? `${n} face${n > 1 ? "s" : ""} found in ${state.detectMs.toFixed(0)} ms; ` +
              `classified in ${(ms / n).toFixed(1)} ms per face (WebAssembly, ` +
              `${models.threads} thread${models.threads > 1 ? "s" : ""}).`
            : "No face found: drag the blue square onto a face (its corner resizes it).");
    } catch (err) {
      window.cfdanResult = {error: String(err && err.message || err)};
      say(`Something went wrong: ${window.cfdanResult.error}`, true);
    } finally {
      state.busy = false;
    }
  }

  // ---- hand-placed squares: drag to move, drag the corner to resize ----------------------

  function handSquare() {
    const W = state.photo.width, H = state.photo.height, side = Math.round(Math.min(W, H) / 2);
    const x0 = Math.round((W - side) / 2), y0 = Math.round((H - side) / 2);
    return {box: [x0, y0, x0 + side, y0 + side], detector_score: null, manual: true};
  }

  function toPhoto(event) {
    const r = canvas.getBoundingClientRect();
    return [(event.clientX - r.left) * (canvas.width / r.width),
            (event.clientY - r.top) * (canvas.height / r.height), canvas.width / r.width];
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (!state.photo || state.busy) return;
    const [x, y, perPx] = toPhoto(event);
    const grip = 16 * perPx;
    for (const face of state.faces.filter((f) => f.manual).reverse()) {
      const [x0, y0, x1, y1] = face.box;
      if (Math.abs(x - x1) < grip && Math.abs(y - y1) < grip) {
        state.drag = {face, mode: "resize", x, y, box: face.box.slice()};
      } else if (x >= x0 && x <= x1 && y >= y0 && y <= y1) {
        state.drag = {face, mode: "move", x, y, box: face.box.slice()};
      } else continue;
      canvas.setPointerCapture(event.pointerId);
      event.preventDefault();
      return;
    }
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    const [x, y] = toPhoto(event), d = state.drag, [x0, y0, x1, y1] = d.box;
    if (d.mode === "move") {
      d.face.box = [x0 + x - d.x, y0 + y - d.y, x1 + x - d.x, y1 + y - d.y].map(Math.round);
    } else {
      const side = Math.max(12, Math.round(Math.max(x - x0, y - y0)));
      d.face.box = [x0, y0, x0 + side, y0 + side];
    }
    d.face.attention = null;
    d.face.label = null;
    draw();
  });
  async function dropSquare() {
    if (!state.drag) return;
    state.drag = null;
    const models = await loadModels();
    const ms = await classify(models, state.faces.filter((f) => f.manual));
    draw();
    showCards();
    publish(models, ms);
  }
  canvas.addEventListener("pointerup", dropSquare);
  canvas.addEventListener("pointercancel", dropSquare);

  handButton.addEventListener("click", async () => {
    if (!state.photo || state.busy) return;
    state.faces.push(handSquare());
    state.drag = {face: state.faces[state.faces.length - 1]};
    await dropSquare();
  });
  attentionBox.addEventListener("change", draw);

  // ---- the two ways in: a file, or one frame of the webcam -----------------------------

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) analyse("file", file);
  });

  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    cameraButton.hidden = false;
    cameraButton.addEventListener("click", async () => {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
        video.srcObject = stream;
        video.hidden = shutter.hidden = false;
        await video.play();
        say("Press “Take this frame” when you are ready; the video stays in this tab.");
      } catch (err) {
        say(`The webcam is not available (${err.name || err}).`, true);
      }
    });
    shutter.addEventListener("click", () => {
      const frame = document.createElement("canvas");
      frame.width = video.videoWidth;
      frame.height = video.videoHeight;
      frame.getContext("2d").drawImage(video, 0, 0);
      video.srcObject.getTracks().forEach((t) => t.stop());
      video.srcObject = null;
      video.hidden = shutter.hidden = true;
      analyse("webcam", frame);
    });
  }

  if (location.protocol === "file:") {
    say("Opened from a file: the browser will not let this page load its models. Serve the " +
        "book instead, e.g. python -m http.server -d book/_build/html, and open " +
        "http://localhost:8000/try.html.", true);
  } else {
    say("Pick a photo to begin.");
  }
})();
