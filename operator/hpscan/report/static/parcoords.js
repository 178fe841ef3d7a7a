// Parallel coordinates on a canvas, from the figure hpscan.report.parallel.figure builds (a plotly-shaped parcoords
// trace: dimensions with values, range and ticks; line colours on a colour scale). `hpscan report`'s interactive
// page and the dashboard both draw with it: one drawing code. Lines are stroked as one canvas path per colour, not
// one element per trial, and redrawn at most once per animation frame: 10,000 lines draw in tens of milliseconds
// without a GPU (plotly's WebGL parcoords took seconds on a software rasteriser). Drag along an axis to select a
// range of it (several axes: lines inside all of them); a click on an axis clears its range.
"use strict";

const HPScanParcoords = (() => {
  const COLOURS = 256; // colour steps: lines are grouped into one path per step
  const GREY = "#d9d9d9"; // lines outside the selection
  const BAR = { width: 18, gap: 60 }; // the colour bar, right of the last axis

  function rgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  function scaleColour(scale, t) {
    // the colour at t in [0, 1] of a plotly colour scale ([[t, "#rrggbb"], ...]), interpolated between stops
    let k = 1;
    while (k < scale.length - 1 && scale[k][0] < t) k++;
    const [t0, c0] = scale[k - 1];
    const [t1, c1] = scale[k];
    const f = t1 > t0 ? Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) : 1;
    const [a, b] = [rgb(c0), rgb(c1)];
    return `rgb(${a.map((v, i) => Math.round(v + f * (b[i] - v))).join(",")})`;
  }

  function niceTicks(lo, hi) {
    // about five round values inside [lo, hi], for an axis the figure gives no ticks
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / 5;
    const power = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }

  function inside(value, range) {
    // a selected range is [lo, hi] or a list of them
    const spans = Array.isArray(range[0]) ? range : [range];
    return spans.some(([lo, hi]) => value >= lo && value <= hi);
  }

  function plainLines(html) {
    // the figure's title: lines split at <br>, tags dropped
    return String(html).split(/<br\s*\/?>/i).map((line) => line.replace(/<[^>]*>/g, ""));
  }

  class Parcoords {
    constructor(element, figure, onSelect = () => {}) {
      this.element = element;
      this.onSelect = onSelect;
      this.ranges = new Map(); // an axis's label -> its selected range (kept across new figures)
      this.drawn = { lines: 0, selected: 0, at: 0, version: 0 }; // what the canvas shows (for tests and benches)
      this.version = 0;
      this.pending = false;
      this.canvas = document.createElement("canvas");
      this.canvas.style.display = "block";
      this.canvas.style.cursor = "crosshair";
      element.replaceChildren(this.canvas);
      this._listen();
      this.update(figure);
    }

    update(figure) {
      // a new figure (a state with more trials): drawn at the next animation frame, the selection kept
      this.trace = figure.data[0];
      this.layout = figure.layout || {};
      this.dimensions = this.trace.dimensions;
      this.count = this.dimensions.length ? this.dimensions[0].values.length : 0;
      this.version += 1;
      this._select();
      this.redraw();
    }

    brush(axis, range) {
      // select a range of an axis (its index or label), in its values; null clears it
      const dimension = typeof axis === "number" ? this.dimensions[axis] : this.dimensions.find((d) => d.label === axis);
      if (!dimension) throw new Error(`no axis ${axis}`);
      if (range && range.length) this.ranges.set(dimension.label, range);
      else this.ranges.delete(dimension.label);
      this._select();
      this.redraw();
    }

    range(axis) {
      return this.ranges.get(this.dimensions[axis].label) || null;
    }

    _select() {
      // the lines inside every selected range, as indices (in the figure's order: worst first)
      const limits = this.dimensions.filter((d) => this.ranges.has(d.label));
      const selected = [];
      for (let i = 0; i < this.count; i++) {
        if (limits.every((d) => inside(d.values[i], this.ranges.get(d.label)))) selected.push(i);
      }
      this.selected = selected;
      this.onSelect(selected);
    }

    redraw() {
      if (this.pending) return; // several updates within a frame: drawn once
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw();
      });
    }

    geometry() {
      // where the axes are, in CSS pixels
      const margin = Object.assign({ l: 80, r: 60, t: 120, b: 40 }, this.layout.margin || {});
      const width = this.element.clientWidth || 900;
      const height = this.layout.height || 600;
      const right = width - margin.r - (this.trace.line.showscale ? BAR.gap + BAR.width : 0);
      const n = this.dimensions.length;
      const xs = this.dimensions.map((_, i) => (n > 1 ? margin.l + (i * (right - margin.l)) / (n - 1) : margin.l));
      return { width, height, top: margin.t, bottom: height - margin.b, xs, right };
    }

    axisX(axis) {
      return this.geometry().xs[axis];
    }

    yOf(axis, value) {
      // a value's height on an axis, in CSS pixels from the canvas's top
      const { top, bottom } = this.geometry();
      const [lo, hi] = this.dimensions[axis].range || [0, 1];
      return hi === lo ? (top + bottom) / 2 : bottom - ((value - lo) / (hi - lo)) * (bottom - top);
    }

    valueAt(axis, y) {
      const { top, bottom } = this.geometry();
      const [lo, hi] = this.dimensions[axis].range || [0, 1];
      return lo + ((bottom - y) / (bottom - top)) * (hi - lo);
    }

    draw() {
      const started = performance.now();
      const g = this.geometry();
      const ratio = window.devicePixelRatio || 1;
      if (this.canvas.width !== Math.round(g.width * ratio) || this.canvas.height !== Math.round(g.height * ratio)) {
        this.canvas.width = Math.round(g.width * ratio);
        this.canvas.height = Math.round(g.height * ratio);
        this.canvas.style.width = `${g.width}px`;
        this.canvas.style.height = `${g.height}px`;
      }
      // drawn by the CPU (Skia), not the GPU: without one, Chromium rasterises an accelerated canvas in software
      // WebGL (SwiftShader), which took 14 s for 10,000 lines where the CPU takes tens of ms
      const ctx = this.canvas.getContext("2d", { willReadFrequently: true });
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, g.width, g.height);
      this._drawLines(ctx, g);
      this._drawAxes(ctx, g);
      if (this.trace.line.showscale) this._drawColourBar(ctx, g);
      this._drawTitle(ctx);
      this.drawn = {
        lines: this.count, selected: this.selected.length, version: this.version, ms: performance.now() - started,
        at: performance.now(),
      };
    }

    _heights(g) {
      // each axis's line heights, once per figure and size
      const key = `${this.version}:${g.width}:${g.height}`;
      if (this._heightsKey !== key) {
        this._heightsKey = key;
        this._heightsCache = this.dimensions.map((d, axis) => {
          const [lo, hi] = d.range || [0, 1];
          const scale = hi === lo ? 0 : (g.bottom - g.top) / (hi - lo);
          const ys = new Float32Array(this.count);
          for (let i = 0; i < this.count; i++) ys[i] = scale ? g.bottom - (d.values[i] - lo) * scale : (g.top + g.bottom) / 2;
          return ys;
        });
      }
      return this._heightsCache;
    }

    _path(ctx, g, ys, lines) {
      ctx.beginPath();
      for (const i of lines) {
        ctx.moveTo(g.xs[0], ys[0][i]);
        for (let axis = 1; axis < ys.length; axis++) ctx.lineTo(g.xs[axis], ys[axis][i]);
      }
      ctx.stroke();
    }

    _greyLines(g, ys) {
      // every line in grey, drawn once per figure and size: a drag along an axis redraws only the selected lines
      // over it (rasterising the lines is most of a frame's time)
      if (this._greyKey !== this._heightsKey) {
        const ratio = window.devicePixelRatio || 1;
        const layer = document.createElement("canvas");
        layer.width = Math.round(g.width * ratio);
        layer.height = Math.round(g.height * ratio);
        const ctx = layer.getContext("2d", { willReadFrequently: true });
        ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
        ctx.strokeStyle = GREY;
        ctx.lineWidth = 1;
        ctx.lineJoin = "round";
        this._path(ctx, g, ys, Array.from({ length: this.count }, (_, i) => i));
        this._greyKey = this._heightsKey;
        this._grey = layer;
      }
      return this._grey;
    }

    _drawLines(ctx, g) {
      const ys = this._heights(g);
      const { color, colorscale, cmin, cmax } = this.trace.line;
      ctx.lineJoin = "round";
      ctx.lineWidth = 1;
      if (this.selected.length < this.count) { // the lines outside the selection: grey, beneath
        ctx.drawImage(this._greyLines(g, ys), 0, 0, g.width, g.height);
      }
      // one path per colour step, lower colour values first: better lines (higher values) end on top
      const steps = new Map();
      const span = cmax > cmin ? cmax - cmin : 1;
      for (const i of this.selected) {
        const step = Math.round((Math.min(cmax, Math.max(cmin, color[i])) - cmin) / span * (COLOURS - 1));
        if (!steps.has(step)) steps.set(step, []);
        steps.get(step).push(i);
      }
      for (const step of [...steps.keys()].sort((a, b) => a - b)) {
        const lines = steps.get(step);
        const top = step === COLOURS - 1; // the best: red, thicker
        ctx.lineWidth = top ? 3 : 1;
        ctx.strokeStyle = scaleColour(colorscale, step / (COLOURS - 1));
        this._path(ctx, g, ys, lines);
      }
    }

    _drawAxes(ctx, g) {
      const tickFont = (this.trace.tickfont && this.trace.tickfont.size) || 12;
      const labelFont = (this.trace.labelfont && this.trace.labelfont.size) || 14;
      this.dimensions.forEach((d, axis) => {
        const x = g.xs[axis];
        ctx.strokeStyle = "#444";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(x, g.top);
        ctx.lineTo(x, g.bottom);
        ctx.stroke();
        const [lo, hi] = d.range || [0, 1];
        const values = d.tickvals || niceTicks(lo, hi);
        const texts = d.ticktext || values.map((v) => String(Number(v.toPrecision(4))));
        ctx.font = `${tickFont}px sans-serif`;
        ctx.textAlign = "right";
        ctx.textBaseline = "middle";
        values.forEach((v, k) => {
          const y = this.yOf(axis, v);
          ctx.fillStyle = "#444";
          ctx.fillRect(x - 4, y, 4, 1);
          ctx.strokeStyle = "white";
          ctx.lineWidth = 3;
          ctx.strokeText(texts[k], x - 6, y);
          ctx.fillText(texts[k], x - 6, y);
        });
        ctx.font = `${labelFont}px sans-serif`;
        ctx.textAlign = "center";
        ctx.textBaseline = "bottom";
        ctx.fillStyle = "#222";
        ctx.fillText(d.label, x, g.top - 10);
        const range = this.ranges.get(d.label);
        if (range) { // the selected ranges: a band along the axis
          const spans = Array.isArray(range[0]) ? range : [range];
          ctx.fillStyle = "rgba(31, 119, 180, 0.35)";
          ctx.strokeStyle = "#1f77b4";
          ctx.lineWidth = 1;
          for (const [a, b] of spans) {
            const [y0, y1] = [Math.max(g.top, this.yOf(axis, b)), Math.min(g.bottom, this.yOf(axis, a))];
            ctx.fillRect(x - 6, y0, 12, y1 - y0);
            ctx.strokeRect(x - 6, y0, 12, y1 - y0);
          }
        }
      });
    }

    _drawColourBar(ctx, g) {
      const { colorscale, cmin, cmax, colorbar = {} } = this.trace.line;
      const x = g.right + BAR.gap;
      const gradient = ctx.createLinearGradient(0, g.bottom, 0, g.top);
      for (const [t, colour] of colorscale) gradient.addColorStop(Math.min(1, Math.max(0, t)), colour);
      ctx.fillStyle = gradient;
      ctx.fillRect(x, g.top, BAR.width, g.bottom - g.top);
      const y = (v) => g.bottom - ((v - cmin) / (cmax - cmin || 1)) * (g.bottom - g.top);
      ctx.fillStyle = "#444";
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      (colorbar.tickvals || []).forEach((v, k) => ctx.fillText(colorbar.ticktext[k], x + BAR.width + 4, y(v)));
      ctx.textBaseline = "bottom";
      ctx.fillText((colorbar.title && colorbar.title.text) || "", x, g.top - 34); // above the axes' labels
    }

    _drawTitle(ctx) {
      const title = this.layout.title && this.layout.title.text;
      if (!title) return;
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      plainLines(title).forEach((line, k) => {
        ctx.font = k ? "13px sans-serif" : "17px sans-serif";
        ctx.fillText(line, 10, 10 + 24 * k);
      });
    }

    _listen() {
      // drag along an axis: select the range dragged over; a click on an axis clears its range
      let drag = null;
      const point = (event) => {
        const box = this.canvas.getBoundingClientRect();
        return [event.clientX - box.left, event.clientY - box.top];
      };
      this.canvas.addEventListener("mousedown", (event) => {
        const [x, y] = point(event);
        const g = this.geometry();
        const axis = g.xs.findIndex((ax) => Math.abs(ax - x) <= 12);
        if (axis < 0 || y < g.top - 10 || y > g.bottom + 10) return; // a little past an end: to select it whole
        drag = { axis, from: y };
        event.preventDefault();
      });
      window.addEventListener("mousemove", (event) => {
        if (!drag) return;
        const to = point(event)[1];
        if (Math.abs(to - drag.from) < 3) return;
        const [a, b] = [this.valueAt(drag.axis, drag.from), this.valueAt(drag.axis, to)];
        this.brush(drag.axis, [Math.min(a, b), Math.max(a, b)]);
      });
      window.addEventListener("mouseup", (event) => {
        if (drag && Math.abs(point(event)[1] - drag.from) < 3) this.brush(drag.axis, null);
        drag = null;
      });
      window.addEventListener("resize", () => this.redraw());
    }
  }

  return {
    create: (element, figure, onSelect) => new Parcoords(element, figure, onSelect),
    scaleColour,
    niceTicks,
  };
})();
