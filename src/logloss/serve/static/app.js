// logloss serve: draw a digit (or pick a test sample) and show logits -> softmax -> -ln p(true).
// Every number shown comes from the API (/api/predict, /api/sample, /api/samples); this file
// only draws. Exact values are kept in data-value attributes (tests and curious users read them).
"use strict";

const INK_WIDTH = 22; // pixels on the 280x280 pad: about MNIST's stroke width after scaling

// ------------------------------------------------------------------ API

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.detail || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function predictImage(image, target) {
  return api("/api/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ image, target }),
  });
}

// ------------------------------------------------------------------ the breakdown panel

function paintGray(canvas, image) {
  // image: rows of gray levels 0-255 (the 28x28 the model saw), drawn 1 pixel per value.
  const rows = image.length;
  const cols = image[0].length;
  canvas.width = cols;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(cols, rows);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const k = 4 * (i * cols + j);
      pixels.data[k] = pixels.data[k + 1] = pixels.data[k + 2] = image[i][j];
      pixels.data[k + 3] = 255;
    }
  }
  context.putImageData(pixels, 0, 0);
}

function setValue(element, value, digits) {
  element.dataset.value = String(value);
  element.textContent = value === null || value === undefined ? "\u2013" : value.toFixed(digits);
}

class Breakdown {
  constructor(slot) {
    const template = document.getElementById("breakdown-template");
    slot.append(template.content.cloneNode(true));
    this.root = slot.querySelector(".breakdown");
    this.tbody = this.root.querySelector("tbody");
    this.select = this.root.querySelector(".target-select");
    this.result = null;
    this.onTarget = null; // called with a class index or null when the user picks one
    this.select.addEventListener("change", () => {
      const value = this.select.value === "" ? null : Number(this.select.value);
      if (this.onTarget) this.onTarget(value);
    });
    this.tbody.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-class]");
      if (!row) return;
      this.select.value = row.dataset.class;
      this.select.dispatchEvent(new Event("change"));
    });
  }

  get target() {
    return this.select.value === "" ? null : Number(this.select.value);
  }

  ensureClasses(count) {
    if (this.tbody.children.length === count) return;
    this.tbody.replaceChildren();
    this.select.replaceChildren(this.select.options[0]);
    for (let c = 0; c < count; c++) {
      const row = document.createElement("tr");
      row.dataset.class = String(c);
      row.innerHTML =
        `<th scope="row">${c}</th><td class="logit"></td>` +
        '<td class="probability"><span class="bar-track" aria-hidden="true">' +
        '<span class="bar"></span></span><span class="prob"></span></td>';
      this.tbody.append(row);
      const option = document.createElement("option");
      option.value = String(c);
      option.textContent = String(c);
      this.select.append(option);
    }
  }

  clear() {
    this.result = null;
    this.root.dataset.state = "empty";
    this.root.querySelector("canvas.input").getContext("2d").clearRect(0, 0, 28, 28);
    for (const element of this.root.querySelectorAll("output")) setValue(element, null, 0);
    for (const row of this.tbody.children) {
      row.className = "";
      setValue(row.querySelector(".logit"), null, 0);
      setValue(row.querySelector(".prob"), null, 0);
      row.querySelector(".bar").style.width = "0";
    }
    this.root.querySelector(".loss-bar").style.width = "0";
    this.root.querySelector(".verdict").textContent = "";
  }

  show(result) {
    this.result = result;
    const count = result.probabilities.length;
    this.ensureClasses(count);
    if (result.target === null) {
      this.select.value = "";
    } else {
      this.select.value = String(result.target);
    }
    paintGray(this.root.querySelector("canvas.input"), result.input);
    setValue(this.root.querySelector(".predicted"), result.predicted, 0);
    setValue(this.root.querySelector(".p-predicted"), result.p_predicted, 4);
    result.probabilities.forEach((p, c) => {
      const row = this.tbody.children[c];
      row.classList.toggle("is-predicted", c === result.predicted);
      row.classList.toggle("is-target", c === result.target);
      setValue(row.querySelector(".logit"), result.logits[c], 3);
      setValue(row.querySelector(".prob"), p, 4);
      row.querySelector(".bar").style.width = `${(100 * p).toFixed(2)}%`;
    });
    setValue(this.root.querySelector(".p-target"), result.p_target, 4);
    setValue(this.root.querySelector(".loss"), result.loss, 4);
    this.showLossScale(result);
    this.root.dataset.state = "ready";
  }

  showLossScale(result) {
    // Loss axis from 0 to max(2 ln C, loss): the uniform guess ln C sits at or left of the middle.
    const uniform = result.uniform_loss;
    const scale = Math.max(2 * uniform, result.loss === null ? 0 : 1.1 * result.loss);
    const line = this.root.querySelector(".uniform-line");
    const label = this.root.querySelector(".uniform-label");
    const at = `${((100 * uniform) / scale).toFixed(2)}%`;
    line.style.left = at;
    label.style.left = `calc(${at} + 4px)`;
    label.textContent = `uniform guess: ln ${result.probabilities.length} = ${uniform.toFixed(3)}`;
    const bar = this.root.querySelector(".loss-bar");
    const verdict = this.root.querySelector(".verdict");
    if (result.loss === null) {
      bar.style.width = "0";
      verdict.textContent = "Choose the true class to see its loss.";
      verdict.className = "verdict";
      return;
    }
    bar.style.width = `${((100 * result.loss) / scale).toFixed(2)}%`;
    const better = result.loss < uniform;
    verdict.textContent = better
      ? `Better than a uniform guess by ${(uniform - result.loss).toFixed(3)} nats.`
      : `Worse than a uniform guess by ${(result.loss - uniform).toFixed(3)} nats.`;
    verdict.className = `verdict ${better ? "good" : "bad"}`;
  }
}

function setStatus(element, message, isError) {
  element.textContent = message;
  element.classList.toggle("error", Boolean(isError));
  element.classList.remove("notice");
}

// A 503 from the browser's API: the server has no dataset to show (drawing still works).
function setNotice(element, message) {
  element.textContent = message;
  element.classList.remove("error");
  element.classList.add("notice");
}

// When the user picks a true class, ask the API again with the exact image the model saw.
function retargetOnChoice(breakdown, status) {
  breakdown.onTarget = async (target) => {
    if (!breakdown.result) return;
    try {
      breakdown.show(await predictImage(breakdown.result.input, target));
      setStatus(status, "");
    } catch (error) {
      setStatus(status, error.message, true);
    }
  };
}

// ------------------------------------------------------------------ drawing

function setUpPad(breakdown) {
  const pad = document.getElementById("pad");
  const status = document.getElementById("draw-status");
  const context = pad.getContext("2d");
  let last = null;
  let hasInk = false;
  let inFlight = false;
  let dirty = false;

  function blank() {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, pad.width, pad.height);
    hasInk = false;
    pad.dataset.pending = "false";
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function stroke(from, to) {
    context.strokeStyle = "#000";
    context.lineWidth = INK_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    hasInk = true;
  }

  // pad.dataset.pending: "true" while the shown prediction may lag behind the drawing.
  function dot(at) {
    // A zero-length stroke draws nothing in some browsers: a tap is a filled disc.
    context.fillStyle = "#000";
    context.beginPath();
    context.arc(at.x, at.y, INK_WIDTH / 2, 0, 2 * Math.PI);
    context.fill();
    hasInk = true;
  }

  async function predict() {
    if (!hasInk) return;
    pad.dataset.pending = "true";
    if (inFlight) {
      dirty = true; // one more request when this one is answered
      return;
    }
    inFlight = true;
    dirty = false;
    try {
      const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
      const target = breakdown.target;
      const query = target === null ? "" : `?target=${target}`;
      const result = await api(`/api/predict${query}`, {
        method: "POST",
        headers: { "Content-Type": "image/png" },
        body: blob,
      });
      if (hasInk) breakdown.show(result);
      setStatus(status, "");
    } catch (error) {
      setStatus(status, error.message, true);
    } finally {
      inFlight = false;
      if (dirty) {
        predict();
      } else {
        pad.dataset.pending = "false";
      }
    }
  }

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    last = point(event);
    dot(last);
    predict();
  });
  pad.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const here = point(event);
    stroke(last, here);
    last = here;
    predict();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    pad.addEventListener(type, () => {
      if (last === null) return;
      last = null;
      predict();
    });
  }
  document.getElementById("clear").addEventListener("click", () => {
    blank();
    dirty = false;
    breakdown.clear();
    setStatus(status, "");
  });
  blank();
}

// ------------------------------------------------------------------ browsing

function setUpBrowser(breakdown) {
  const list = document.getElementById("samples");
  const status = document.getElementById("browse-status");
  const kindButtons = document.querySelectorAll(".kinds button");
  let loaded = false;

  async function openSample(index, button) {
    for (const other of list.querySelectorAll("button")) other.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
    try {
      const result = await api(`/api/sample/test/${index}`);
      breakdown.show(result);
      setStatus(status, `Test sample ${result.index}: true label ${result.label}.`);
    } catch (error) {
      setStatus(status, error.message, true);
    }
  }

  async function load(kind) {
    for (const button of kindButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.kind === kind));
    }
    setStatus(status, "Loading\u2026");
    try {
      const answer = await api(`/api/samples?kind=${kind}&split=test&count=24`);
      list.replaceChildren();
      for (const item of answer.items) {
        const entry = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.index = String(item.index);
        const wrong = item.predicted !== item.label;
        button.setAttribute(
          "aria-label",
          `Sample ${item.index}: true ${item.label}, predicted ${item.predicted}, ` +
            `loss ${item.loss.toFixed(2)}`,
        );
        const thumb = document.createElement("canvas");
        paintGray(thumb, item.input);
        const caption = document.createElement("span");
        caption.textContent = `${item.label} \u2192 ${item.predicted}`;
        if (wrong) caption.className = "wrong";
        button.append(thumb, caption);
        button.addEventListener("click", () => openSample(item.index, button));
        entry.append(button);
        list.append(entry);
      }
      const what = answer.items.length === 1 ? "sample" : "samples";
      setStatus(status, `${answer.items.length} ${what} of ${answer.size} (label \u2192 prediction)`);
      const first = list.querySelector("button");
      if (first) openSample(Number(first.dataset.index), first);
    } catch (error) {
      if (error.status === 503) {
        for (const button of kindButtons) button.disabled = true;
        setNotice(status, error.message);
      } else {
        setStatus(status, error.message, true);
      }
    }
  }

  for (const button of kindButtons) {
    button.addEventListener("click", () => load(button.dataset.kind));
  }
  return () => {
    if (!loaded) {
      loaded = true;
      load("random");
    }
  };
}

// ------------------------------------------------------------------ tabs

function setUpTabs(onShow) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function select(tab) {
    for (const other of tabs) {
      const chosen = other === tab;
      other.setAttribute("aria-selected", String(chosen));
      other.tabIndex = chosen ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !chosen;
    }
    tab.focus();
    if (onShow[tab.id]) onShow[tab.id]();
  }
  tabs.forEach((tab, k) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(k + step + tabs.length) % tabs.length]);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const drawBreakdown = new Breakdown(document.querySelector('[data-view="draw"]'));
  const browseBreakdown = new Breakdown(document.querySelector('[data-view="browse"]'));
  for (const breakdown of [drawBreakdown, browseBreakdown]) {
    breakdown.ensureClasses(10); // until the first answer says how many classes there are
    breakdown.clear();
  }
  retargetOnChoice(drawBreakdown, document.getElementById("draw-status"));
  retargetOnChoice(browseBreakdown, document.getElementById("browse-status"));
  setUpPad(drawBreakdown);
  const showBrowser = setUpBrowser(browseBreakdown);
  setUpTabs({ "tab-browse": showBrowser });
});
