// vsod page, live part: camera frames as JPEG over /v1/stream, masks drawn over the video; the
// banner, the API key and HTTP helpers that clips.js shares (window.vsod.ui).
// Plain JavaScript, no build step. Protocol: see /docs (the API description) or docs/client.md.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    status: $("server-status"), banner: $("banner"), bannerText: $("banner-text"), bannerClose: $("banner-close"),
    start: $("start"), stop: $("stop"), overlayMode: $("overlay-mode"), opacity: $("opacity"), sendWidth: $("send-width"),
    camera: $("camera"), overlay: $("overlay"), hint: $("stage-hint"),
    fps: $("stat-fps"), latency: $("stat-latency"), rtt: $("stat-rtt"), masks: $("stat-masks"),
    dropped: $("stat-dropped"), session: $("stat-session"),
    apiKey: $("api-key"),
  };
  const KEY_STORE = "vsod.apiKey";
  const REFUSED = new Set([1003, 1008, 4401, 4403]); // policy closes: coming back with the same request is pointless
  const TINT = [255, 64, 32];

  // Counters the browser test reads back (window.vsod.stats), and the page shows.
  const stats = {
    framesSent: 0, masks: 0, drawn: 0, dropped: 0, unanswered: 0, errors: 0, reconnects: 0, lastFrame: -1,
    latencyMs: null, rttMs: null, fps: null, lastMaskMean: null, sessionId: null,
  };
  window.vsod = { stats };

  // ---------------------------------------------------------------- messages to the user
  function showBanner(text, kind) {
    els.bannerText.textContent = text;
    els.banner.className = kind === "info" ? "banner info" : "banner";
    els.banner.hidden = false;
  }
  const showError = (text) => { stats.errors += 1; showBanner(text, "error"); };
  const showInfo = (text) => showBanner(text, "info");
  const hideBanner = () => { els.banner.hidden = true; };
  els.bannerClose.addEventListener("click", hideBanner);

  // ---------------------------------------------------------------- API key and HTTP helpers
  els.apiKey.value = localStorage.getItem(KEY_STORE) || "";
  els.apiKey.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, els.apiKey.value.trim());
    checkServer();
  });
  const apiKey = () => els.apiKey.value.trim();
  const authHeaders = () => (apiKey() ? { "X-API-Key": apiKey() } : {});
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function detailOf(status, text) {
    try {
      const body = JSON.parse(text);
      if (body && body.detail !== undefined) {
        return `${status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
      }
    } catch (_) { /* not JSON: show the start of the text */ }
    return `${status}: ${text.slice(0, 200) || "no details"}`;
  }
  const httpError = async (response) => detailOf(response.status, await response.text());
  // For clips.js, which handles the clip upload form.
  window.vsod.ui = { showError, showInfo, hideBanner, authHeaders, detailOf, httpError, sleep };

  async function checkServer() {
    try {
      const response = await fetch("/readyz", { headers: authHeaders() });
      if (response.ok) {
        const ready = await response.json();
        els.status.textContent = `ready: ${ready.model} on ${ready.device}, sessions in ${ready.cache}`;
      } else {
        els.status.textContent = `not ready (${await httpError(response)})`;
      }
    } catch (error) {
      els.status.textContent = `server unreachable: ${error.message}`;
    }
  }

  // ---------------------------------------------------------------- live stream
  const live = {
    running: false, media: null, ws: null, opened: false, inFlight: false, header: null,
    sentAt: 0, retry: 0, arrivals: [], drawSeq: 0, lastError: null, watchdog: null, temporal: true,
  };
  const UNANSWERED_MS = 5000; // a frame the server dropped unread (over its fps limit) gets no answer
  const capture = document.createElement("canvas");
  const decode = document.createElement("canvas");

  async function startCamera() {
    hideBanner();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This page cannot reach a camera here: browsers allow it only over https or on localhost.");
      return;
    }
    try {
      live.media = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (error) {
      showError(`Camera unavailable: ${error.name}: ${error.message}`);
      return;
    }
    els.camera.srcObject = live.media;
    await els.camera.play();
    live.running = true;
    live.retry = 0;
    els.start.disabled = true;
    els.stop.disabled = false;
    els.hint.hidden = true;
    connect();
  }

  function stopCamera() {
    live.running = false;
    clearTimeout(live.watchdog);
    if (live.ws) live.ws.close(1000);
    live.ws = null;
    if (live.media) live.media.getTracks().forEach((track) => track.stop());
    live.media = null;
    els.camera.srcObject = null;
    els.overlay.getContext("2d").clearRect(0, 0, els.overlay.width, els.overlay.height);
    els.start.disabled = false;
    els.stop.disabled = true;
    els.hint.hidden = false;
  }

  function streamUrl() {
    const query = new URLSearchParams();
    if (stats.sessionId) query.set("session_id", stats.sessionId); // resume the same temporal context
    if (apiKey()) query.set("api_key", apiKey());
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const suffix = query.toString();
    return `${scheme}//${location.host}/v1/stream${suffix ? "?" + suffix : ""}`;
  }

  function connect() {
    const ws = new WebSocket(streamUrl());
    ws.binaryType = "arraybuffer";
    live.ws = ws;
    live.opened = false;
    live.inFlight = false;
    live.header = null;
    live.lastError = null;
    ws.onmessage = (event) => onMessage(ws, event);
    ws.onclose = (event) => onClose(ws, event);
  }

  function onMessage(ws, event) {
    if (ws !== live.ws) return;
    if (typeof event.data !== "string") { // a mask: the binary message after its header
      const header = live.header;
      live.header = null;
      if (header) onMask(header, event.data);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (_) {
      showError("The server sent a message that is not JSON.");
      return;
    }
    if (message.type === "session") {
      if (live.retry > 0) { stats.reconnects += 1; hideBanner(); }
      live.opened = true;
      live.retry = 0;
      stats.sessionId = message.session_id;
      els.session.textContent = message.session_id;
      els.session.title = `${message.session_id} (model ${message.model})`;
      if (message.restarted) showInfo(message.restarted);
      sendFrame();
    } else if (message.type === "mask") {
      live.header = message;
    } else if (message.type === "error") {
      live.lastError = `${message.message} (${message.code})`;
      showError(`Server: ${live.lastError}`);
      if (live.inFlight) { live.inFlight = false; nextFrame(); } // that frame was refused; go on
    }
  }

  function onClose(ws, event) {
    if (ws !== live.ws) return;
    live.ws = null;
    live.inFlight = false;
    if (!live.running) return;
    if (REFUSED.has(event.code)) {
      showError(`The server refused the stream: ${live.lastError || `close code ${event.code} ${event.reason}`}`);
      stopCamera();
      return;
    }
    if (event.code === 1006 && !live.opened && live.retry === 0 && stats.masks === 0) {
      showError("Cannot open the stream: the server refused it or cannot be reached (check the API key).");
      stopCamera();
      return;
    }
    live.retry += 1;
    if (live.retry > 8) {
      showError("Lost the connection to the server; stopped. Start again to resume the session.");
      stopCamera();
      return;
    }
    const delay = Math.min(4000, 250 * 2 ** (live.retry - 1));
    showInfo(`Connection lost (code ${event.code}); resuming session ${stats.sessionId || ""} in ${delay} ms…`);
    setTimeout(() => { if (live.running && !live.ws) connect(); }, delay);
  }

  // The next camera frame goes out when the previous mask is back, so the server never has to drop
  // one; and only once the camera has a new frame (requestVideoFrameCallback), so none goes twice.
  // The timer is a fallback where video frame callbacks do not fire (hidden tabs, older browsers).
  function nextFrame() {
    const video = els.camera;
    if (video.requestVideoFrameCallback && !document.hidden) video.requestVideoFrameCallback(() => sendFrame());
    setTimeout(sendFrame, document.hidden ? 50 : 250);
  }

  function sendFrame() {
    const ws = live.ws;
    const video = els.camera;
    if (!live.running || !ws || ws.readyState !== WebSocket.OPEN || live.inFlight) return;
    if (!video.videoWidth) { nextFrame(); return; }
    const width = Math.min(Number(els.sendWidth.value), video.videoWidth);
    const height = Math.max(2, Math.round((video.videoHeight * width) / video.videoWidth));
    capture.width = width;
    capture.height = height;
    capture.getContext("2d").drawImage(video, 0, 0, width, height);
    live.inFlight = true;
    capture.toBlob((blob) => {
      if (!blob || ws !== live.ws || ws.readyState !== WebSocket.OPEN) { live.inFlight = false; return; }
      live.sentAt = performance.now();
      ws.send(blob);
      stats.framesSent += 1;
      const sent = stats.framesSent;
      clearTimeout(live.watchdog);
      live.watchdog = setTimeout(() => {
        if (live.inFlight && stats.framesSent === sent) { stats.unanswered += 1; live.inFlight = false; nextFrame(); }
      }, UNANSWERED_MS);
    }, "image/jpeg", 0.85);
  }

  function onMask(header, buffer) {
    const now = performance.now();
    stats.masks += 1;
    stats.lastFrame = header.frame;
    stats.dropped = header.dropped;
    stats.latencyMs = header.latency_ms;
    stats.rttMs = now - live.sentAt;
    live.arrivals.push(now);
    while (live.arrivals.length > 2 && now - live.arrivals[0] > 2000) live.arrivals.shift();
    const span = now - live.arrivals[0];
    stats.fps = live.arrivals.length > 1 && span > 0 ? ((live.arrivals.length - 1) * 1000) / span : null;
    if (header.restarted) showInfo(`Temporal context restarted: ${header.restarted}`);
    if (header.temporal === false && live.temporal) showInfo("The session store is unavailable: masks come without temporal context for now.");
    live.temporal = header.temporal !== false;
    clearTimeout(live.watchdog);
    live.inFlight = false;
    nextFrame(); // the server works on the next frame while this mask is drawn
    drawMask(buffer, ++live.drawSeq).catch((error) => showError(`Cannot draw the mask: ${error.message}`));
    renderStats();
  }

  async function drawMask(buffer, seq) {
    const mode = els.overlayMode.value;
    const canvas = els.overlay;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const bitmap = await createImageBitmap(new Blob([buffer], { type: "image/png" }),
      { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    if (seq !== live.drawSeq) { bitmap.close(); return; } // a newer mask is already here
    const { width, height } = bitmap;
    decode.width = width;
    decode.height = height;
    const dctx = decode.getContext("2d", { willReadFrequently: true });
    dctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const image = dctx.getImageData(0, 0, width, height);
    const px = image.data;
    const opacity = Number(els.opacity.value);
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) {
      const value = px[i]; // gray: R = G = B = saliency
      sum += value;
      if (mode === "tint") {
        px[i] = TINT[0]; px[i + 1] = TINT[1]; px[i + 2] = TINT[2]; px[i + 3] = value * opacity;
      } else {
        px[i + 3] = mode === "mask" ? 255 : 0;
      }
    }
    stats.lastMaskMean = sum / (width * height);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width; // the mask has the sent frame's aspect ratio; CSS scales it over the video
      canvas.height = height;
    }
    ctx.putImageData(image, 0, 0);
    stats.drawn += 1;
  }

  function renderStats() {
    els.fps.textContent = stats.fps === null ? "–" : stats.fps.toFixed(1);
    els.latency.textContent = stats.latencyMs === null ? "–" : `${stats.latencyMs.toFixed(0)} ms`;
    els.rtt.textContent = stats.rttMs === null ? "–" : `${stats.rttMs.toFixed(0)} ms`;
    els.masks.textContent = String(stats.masks);
    els.dropped.textContent = String(stats.dropped);
  }

  els.start.addEventListener("click", startCamera);
  els.stop.addEventListener("click", stopCamera);

  checkServer();
})();
