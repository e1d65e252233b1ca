"use strict";
// The lipsync live page: microphone, sample or file -> the server (WebSocket protocol v1) -> video and its
// sound back. The returned audio is played through Web Audio and is the clock the frames are shown against.
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const RATE = 16000, CHUNK = 320, JITTER = 0.1;  // 16 kHz mono, 20 ms messages, 100 ms playout buffer
  const $ = (id) => document.getElementById(id);
  const canvas = $("video"), paint = canvas.getContext("2d", { willReadFrequently: true });
  const select = $("character");
  const hasWebCodecs = typeof VideoDecoder !== "undefined";
  const stats = {
    state: "connecting", codec: null, framesReceived: 0, framesDecoded: 0, framesShown: 0, speechFramesShown: 0,
    idleFramesShown: 0, lastShownIndex: -1, lastShownSpeech: false, lastShownRms: 0, latency: null, underruns: 0,
    fps: 0, bufferMs: 0, generation: 0, lastError: null, replica: null, reconnects: 0, atCapacity: 0,
  };
  window.lipsync = { stats, regionSample };

  let ws = null, decoder = null, waitingForKey = true, playCtx = null, nextTime = 0, sources = [];
  let queue = [];  // decoded frames, in order: {index, generation, time, image, speech, rms}
  const meta = new Map();  // timestamp -> what the decoder's output frame is
  let capture = null, talking = false, handsFree = false, outgoing = [], outgoingCount = 0, filePlayer = null;
  let shownTimes = [];

  function setState(text, kind) {
    stats.state = text;
    $("state").textContent = text;
    $("state-dot").className = "dot" + (kind ? " " + kind : "");
  }

  async function loadCharacters() {
    const r = await fetch("/v1/characters" + (token ? "?token=" + encodeURIComponent(token) : ""));
    const { characters } = await r.json();
    select.innerHTML = "";
    for (const c of characters) {
      const o = document.createElement("option");
      o.value = c.name;
      o.disabled = c.status !== "ok";
      o.textContent = c.status === "ok" ? `${c.name} (${c.width}×${c.height}, ${c.fps} fps)` : `${c.name} (broken)`;
      select.appendChild(o);
    }
    const wanted = params.get("character");
    if (wanted && characters.some((c) => c.name === wanted)) select.value = wanted;
  }

  // A dropped connection (a server or a cluster's replica gone: 1006, or 1001 going away) and a refusal for
  // capacity (1013, or a refusal before the upgrade, which a browser cannot read: /readyz tells) are tried
  // again by themselves, after a pause that doubles up to 10 s; any other close waits for the button.
  let retryTimer = null, retryPause = 0.5, opened = false;

  function retry(text) {
    const seconds = retryPause;
    retryPause = Math.min(2 * retryPause, 10);
    setState(`${text}: trying again in ${seconds} s…`, "wait");
    retryTimer = setTimeout(() => { retryTimer = null; stats.reconnects++; connect(true); }, seconds * 1000);
  }

  async function closed(e) {
    const why = stats.lastError ? `: ${stats.lastError}` : "";
    if (e.code === 1013) {
      stats.atCapacity++;
      retry("at capacity, try again");
    } else if (!opened && e.code === 1006) {
      let busy = false;
      try {
        busy = (await fetch("/readyz", { cache: "no-store" })).status === 503;
      } catch (_) { /* the server cannot be reached at all */ }
      if (busy) stats.atCapacity++;
      retry(busy ? "at capacity, try again" : "cannot connect");
    } else if (e.code === 1006 || e.code === 1001) {
      retry(e.code === 1006 ? "connection lost" : `the server went away (1001${why})`);
    } else {
      setState(e.code === 1000 ? "disconnected" : `disconnected (${e.code}${why})`, "down");
    }
  }

  function connect(again) {
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    if (again !== true) retryPause = 0.5;
    reset();
    opened = false;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/live" +
      (token ? "?token=" + encodeURIComponent(token) : "");
    ws = new WebSocket(url, ["lipsync.v1"]);
    ws.binaryType = "arraybuffer";
    setState("connecting…");
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({
        type: "start", character: select.value || "alice", audio: { format: "s16le", rate: RATE, channels: 1 },
        video: { codec: hasWebCodecs ? "h264" : "jpeg" },
      }));
    };
    ws.onmessage = (e) => (typeof e.data === "string" ? onText(JSON.parse(e.data)) : onFrame(e.data));
    ws.onclose = closed;
  }

  function reset() {
    if (ws) { ws.onclose = null; ws.close(); }
    if (decoder && decoder.state !== "closed") decoder.close();
    decoder = null; waitingForKey = true;
    for (const f of queue) closeImage(f.image);
    queue = []; meta.clear(); stopAudio();
  }

  function onText(m) {
    if (m.type === "ready") {
      canvas.width = m.width; canvas.height = m.height;
      stats.codec = m.codec; stats.lastError = null; stats.replica = m.replica || null; retryPause = 0.5;
      if (m.codec !== "jpeg") {
        decoder = new VideoDecoder({ output: onDecoded, error: (e) => { stats.lastError = String(e); } });
        decoder.configure({ codec: m.codec, optimizeForLatency: true });
      }
      const where = m.replica ? ` · replica ${m.replica}` : "";
      setState(`live · ${select.value} · ${m.codec === "jpeg" ? "JPEG" : "H.264"}${where}`, "live");
      if (params.get("mic") === "1" && !handsFree) setHandsFree(true);
    } else if (m.type === "stats") {
      stats.underruns = m.underrun_frames;
      if (m.latency_ms) stats.latency = m.latency_ms;
    } else if (m.type === "interrupted") {
      stats.generation = m.generation;
      for (const f of queue) if (f.generation < m.generation) closeImage(f.image);
      queue = queue.filter((f) => f.generation >= m.generation);
      stopAudio();
    } else if (m.type === "error") {
      stats.lastError = m.message;
    }
  }

  function onFrame(buffer) {
    const view = new DataView(buffer);
    const flags = view.getUint8(1), generation = view.getUint32(4, true);
    const index = Number(view.getBigUint64(8, true)), pts = Number(view.getBigUint64(16, true));
    const v = view.getUint32(24, true), a = view.getUint32(28, true);
    if (generation < stats.generation) return;
    stats.framesReceived++;
    const pcm = new Int16Array(buffer.slice(32 + v, 32 + v + a));
    let energy = 0;
    for (let i = 0; i < pcm.length; i++) energy += (pcm[i] / 32768) ** 2;
    const info = { index, generation, time: schedule(pcm), speech: (flags & 2) !== 0, rms: Math.sqrt(energy / pcm.length) };
    const video = new Uint8Array(buffer, 32, v);
    if (flags & 4) {
      createImageBitmap(new Blob([video], { type: "image/jpeg" })).then((image) => enqueue(info, image));
    } else if (decoder) {
      const key = (flags & 1) !== 0;
      if (waitingForKey && !key) return;
      waitingForKey = false;
      meta.set(pts, info);
      decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: pts, data: video }));
    }
  }

  function onDecoded(frame) {
    const info = meta.get(frame.timestamp);
    meta.delete(frame.timestamp);
    if (!info) { frame.close(); return; }
    enqueue(info, frame);
  }

  function enqueue(info, image) {
    stats.framesDecoded++;
    if (info.generation < stats.generation) { closeImage(image); return; }
    queue.push({ ...info, image });
  }

  function closeImage(image) { if (image && image.close) image.close(); }

  // The frames' audio, back to back on the playback clock; a frame is shown when its audio starts playing.
  function schedule(pcm) {
    if (!playCtx) playCtx = new AudioContext();
    const now = playCtx.currentTime;
    if (nextTime < now + 0.01) nextTime = now + JITTER;  // first audio, or the stream ran dry: rebuffer
    const buffer = playCtx.createBuffer(1, pcm.length, RATE);
    const out = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
    const source = playCtx.createBufferSource();
    source.buffer = buffer;
    source.connect(playCtx.destination);
    source.start(nextTime);
    sources.push(source);
    source.onended = () => { sources = sources.filter((s) => s !== source); };
    const at = nextTime;
    nextTime += pcm.length / RATE;
    return at;
  }

  function stopAudio() {
    for (const s of sources) { try { s.stop(); } catch (e) { /* already ended */ } }
    sources = []; nextTime = 0;
  }

  function draw() {
    requestAnimationFrame(draw);
    if (!playCtx) return;
    $("start").hidden = playCtx.state !== "suspended";
    const now = playCtx.currentTime;
    let shown = null;
    while (queue.length && queue[0].time <= now) {
      if (shown) closeImage(shown.image);
      shown = queue.shift();
    }
    if (!shown) return;
    paint.drawImage(shown.image, 0, 0, canvas.width, canvas.height);
    closeImage(shown.image);
    stats.framesShown++;
    stats[shown.speech ? "speechFramesShown" : "idleFramesShown"]++;
    stats.lastShownIndex = shown.index; stats.lastShownSpeech = shown.speech; stats.lastShownRms = shown.rms;
    const t = performance.now();
    shownTimes.push(t);
    shownTimes = shownTimes.filter((s) => t - s < 1000);
    stats.fps = shownTimes.length;
    stats.bufferMs = Math.max(0, (nextTime - now) * 1000);
  }

  function overlay() {
    const l = stats.latency;
    $("fps").textContent = stats.fps;
    $("underruns").textContent = stats.underruns;
    $("buffer").textContent = Math.round(stats.bufferMs);
    if (l) {
      $("latency").textContent = Math.round(l.total + stats.bufferMs);
      $("parts").textContent = `look-ahead ${l.lookahead} · queue ${l.queueing} · model ${l.inference} · ` +
        `composite ${l.composite} · encode ${l.encode} · playout ${Math.round(stats.bufferMs)}`;
    }
  }

  // Sending audio: 20 ms messages of s16le at 16 kHz.
  function send(samples) {
    for (let i = 0; i < samples.length; i++) {
      outgoing.push(samples[i]);
      if (outgoing.length === CHUNK) {
        const out = new Int16Array(CHUNK);
        for (let j = 0; j < CHUNK; j++) out[j] = Math.max(-32768, Math.min(32767, Math.round(outgoing[j] * 32767)));
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(out.buffer);
        outgoing = []; outgoingCount++;
      }
    }
  }

  function flush() {
    outgoing = [];
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "flush" }));
  }

  async function openMicrophone() {
    if (capture) return capture;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const context = new AudioContext({ sampleRate: RATE });  // the browser resamples the microphone to 16 kHz
    await context.audioWorklet.addModule("/static/worklet.js");
    const node = new AudioWorkletNode(context, "lipsync-capture");
    context.createMediaStreamSource(stream).connect(node);
    const mute = context.createGain();
    mute.gain.value = 0;
    node.connect(mute).connect(context.destination);
    node.port.onmessage = (e) => { if (talking) send(e.data); };
    capture = { context, stream };
    return capture;
  }

  async function startTalking() {
    try {
      await openMicrophone();
      if (playCtx && playCtx.state === "suspended") playCtx.resume();
      talking = true;
      $("talk").classList.add("on");
      $("talk-label").textContent = handsFree ? "Listening (double-click to stop)" : "Talking…";
    } catch (e) {
      stats.lastError = "microphone: " + e.message;
      $("hint").textContent = `The microphone cannot be used here (${e.message}); play the sample or drop a file.`;
    }
  }

  function stopTalking() {
    if (!talking || handsFree) return;
    talking = false;
    $("talk").classList.remove("on");
    $("talk-label").textContent = "Hold to talk";
    flush();
  }

  function setHandsFree(on) {
    handsFree = on;
    if (on) startTalking();
    else { talking = false; $("talk").classList.remove("on"); $("talk-label").textContent = "Hold to talk"; flush(); }
  }

  // A file or the sample, decoded and resampled to 16 kHz in the page, sent at real-time pace.
  async function playBuffer(encoded) {
    stopFile();
    if (!playCtx) playCtx = new AudioContext();
    playCtx.resume();
    const decoded = await playCtx.decodeAudioData(encoded);
    const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * RATE), RATE);
    const source = offline.createBufferSource();
    source.buffer = decoded;
    source.connect(offline.destination);
    source.start();
    const samples = (await offline.startRendering()).getChannelData(0);
    const started = performance.now(), step = 640;
    let sent = 0;
    filePlayer = setInterval(() => {
      const due = Math.min(samples.length, Math.floor(((performance.now() - started) / 1000) * RATE) + step);
      if (due > sent) { send(samples.subarray(sent, due)); sent = due; }
      if (sent >= samples.length) { stopFile(); flush(); }
    }, 20);
  }

  function stopFile() { if (filePlayer) { clearInterval(filePlayer); filePlayer = null; } }

  async function playSample() {
    const r = await fetch("/v1/samples/hello.wav" + (token ? "?token=" + encodeURIComponent(token) : ""));
    playBuffer(await r.arrayBuffer());
  }

  // For monitoring and tests: the mean luminance of a grid of cells over a region of what is shown.
  function regionSample(x, y, w, h, grid = 8) {
    const data = paint.getImageData(x, y, w, h).data;
    const cells = new Array(grid * grid).fill(0), counts = new Array(grid * grid).fill(0);
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const k = 4 * (j * w + i), c = Math.floor((j * grid) / h) * grid + Math.floor((i * grid) / w);
        cells[c] += 0.299 * data[k] + 0.587 * data[k + 1] + 0.114 * data[k + 2];
        counts[c]++;
      }
    }
    return { index: stats.lastShownIndex, speech: stats.lastShownSpeech, rms: stats.lastShownRms,
             cells: cells.map((v, c) => v / counts[c]) };
  }

  const talk = $("talk");
  talk.addEventListener("pointerdown", () => { if (!handsFree) startTalking(); });
  for (const ev of ["pointerup", "pointerleave"]) talk.addEventListener(ev, stopTalking);
  talk.addEventListener("dblclick", () => setHandsFree(!handsFree));
  document.addEventListener("keydown", (e) => { if (e.code === "Space" && !e.repeat && !handsFree) { e.preventDefault(); startTalking(); } });
  document.addEventListener("keyup", (e) => { if (e.code === "Space") stopTalking(); });
  $("sample").addEventListener("click", playSample);
  $("file").addEventListener("change", async (e) => { if (e.target.files[0]) playBuffer(await e.target.files[0].arrayBuffer()); });
  $("interrupt").addEventListener("click", () => {
    stopFile(); outgoing = [];
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "interrupt" }));
  });
  $("reconnect").addEventListener("click", () => connect());
  $("start-button").addEventListener("click", () => { if (playCtx) playCtx.resume(); });
  select.addEventListener("change", () => connect());
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", async (e) => {
    e.preventDefault(); stage.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) playBuffer(await file.arrayBuffer());
  });

  loadCharacters().then(() => connect(), (e) => setState("cannot list characters: " + e.message, "down"));
  requestAnimationFrame(draw);
  setInterval(overlay, 250);
})();
