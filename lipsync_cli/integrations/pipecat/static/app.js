// lipsync agent's page: the microphone to the agent over WebRTC, the character's video and voice back on the
// first <video> element. window.lipsync.stats is refreshed from getStats() twice a second; window.lipsync.server
// holds what the agent says about each turn (its data channel messages, the last ones in server.log);
// connection() and microphone() give the RTCPeerConnection and the microphone's stream to tools that measure.
// ?autoconnect=1 connects at load; ?token=... is passed on to the agent as a bearer token.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const token = query.get("token");
  const stats = { state: "new", frames_decoded: 0, fps: 0, audio_bytes_received: 0, rtt_ms: null };
  const server = { turns: 0, interruptions: 0, vad_wait_ms: null, first_frame_ms: null, latency: null, log: [] };
  let pc = null, channel = null, microphone = null, timer = null, previous = null, ticks = 0, jitterMs = null;

  window.lipsync = { stats, server, connect, disconnect, interrupt, setMuted,
                     connection: () => pc, microphone: () => microphone };

  function setState(state) {
    stats.state = state;
    $("state").textContent = state;
    $("state-dot").className = "dot" + (state === "connected" ? " live" : /failed|closed|error|refused/.test(state)
      ? " down" : "");
  }

  function waitForCandidates(connection, ms) {
    if (connection.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (connection.iceGatheringState === "complete") { clearTimeout(t); resolve(); } };
      const t = setTimeout(resolve, ms);
      connection.addEventListener("icegatheringstatechange", done);
    });
  }

  async function connect() {
    if (pc) return;
    setState("asking for the microphone");
    try {
      microphone = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    } catch (e) {
      setState("no microphone: " + e.message);
      return;
    }
    setState("connecting");
    pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver(microphone.getAudioTracks()[0], { direction: "sendrecv" });  // the agent's audio is first
    pc.addTransceiver("video", { direction: "recvonly" });  // then its video
    channel = pc.createDataChannel("lipsync", { ordered: true });
    channel.onmessage = (e) => heard(e.data);
    const remote = new MediaStream();
    pc.ontrack = (e) => {
      const stream = e.streams[0] || remote;
      if (!e.streams[0]) remote.addTrack(e.track);
      const video = $("remote");
      if (video.srcObject !== stream) {
        video.srcObject = stream;
        video.play().catch(() => { $("start").hidden = false; });
      }
      $("idle").hidden = true;
    };
    pc.onconnectionstatechange = () => {
      if (!pc) return;
      setState(pc.connectionState);
      if (pc.connectionState === "failed" || pc.connectionState === "closed") teardown(pc.connectionState);
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForCandidates(pc, 3000);
      const response = await fetch("/api/offer", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" },
                               token ? { Authorization: "Bearer " + token } : {}),
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || response.statusText);
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    } catch (e) {
      teardown("refused: " + e.message);
      return;
    }
    $("connect").textContent = "Disconnect";
    $("connect").classList.add("on");
    $("mute").disabled = $("interrupt").disabled = false;
    previous = null;
    timer = setInterval(tick, 500);
  }

  function teardown(state) {
    clearInterval(timer);
    timer = null;
    if (pc) pc.close();
    pc = channel = null;
    if (microphone) microphone.getTracks().forEach((t) => t.stop());
    microphone = null;
    setState(state);
    $("connect").textContent = "Connect";
    $("connect").classList.remove("on");
    $("mute").disabled = $("interrupt").disabled = true;
    $("mute").classList.remove("on");
    $("mute").textContent = "Mute";
  }

  function disconnect() { teardown("closed"); }

  function send(message) {
    if (channel && channel.readyState === "open") channel.send(typeof message === "string" ? message
      : JSON.stringify(message));
  }

  function interrupt() { send({ type: "lipsync-interrupt" }); }

  function setMuted(muted) {
    if (!microphone) return;
    microphone.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    $("mute").classList.toggle("on", muted);
    $("mute").textContent = muted ? "Unmute" : "Mute";
  }

  function heard(data) {
    let m;
    try { m = JSON.parse(data); } catch (e) { return; }
    if (m.type === "lipsync-turn") { server.turns = m.turn; server.vad_wait_ms = m.vad_wait_ms; }
    else if (m.type === "lipsync-reply") server.first_frame_ms = m.first_frame_ms;
    else if (m.type === "lipsync-latency") server.latency = m;
    else if (m.type === "lipsync-interrupted") server.interruptions = m.count;
    else return;
    server.log.push(Object.assign({ t: performance.now() }, m));  // the last 200 messages, with their arrival
    if (server.log.length > 200) server.log.shift();
    show();
  }

  async function tick() {
    if (!pc) return;
    if (ticks++ % 2 === 0) send("ping");  // the agent's transport counts a silent channel as gone after 3 s
    const reports = await pc.getStats();
    let video = null, audio = null, pair = null;
    reports.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") video = r;
      else if (r.type === "inbound-rtp" && r.kind === "audio") audio = r;
      else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
    });
    const now = performance.now();
    if (video) {
      const decoded = video.framesDecoded || 0;
      if (previous && now > previous.t) stats.fps = Math.round((decoded - previous.decoded) / (now - previous.t) * 1e4) / 10;
      previous = { t: now, decoded };
      stats.frames_decoded = decoded;
      if (video.jitterBufferEmittedCount) jitterMs = Math.round(video.jitterBufferDelay / video.jitterBufferEmittedCount * 1000);
    }
    if (audio) stats.audio_bytes_received = audio.bytesReceived || 0;
    if (pair && pair.currentRoundTripTime !== undefined) stats.rtt_ms = Math.round(pair.currentRoundTripTime * 1000);
    if (pc) stats.state = pc.connectionState;
    show();
  }

  function show() {
    const dash = (v) => (v === null || v === undefined ? "–" : v);
    const replyMs = server.vad_wait_ms !== null && server.first_frame_ms !== null
      ? server.vad_wait_ms + server.first_frame_ms : null;
    $("reply").textContent = dash(replyMs);
    const l = server.latency;
    $("parts").textContent = `VAD ${dash(server.vad_wait_ms)} · first frame ${dash(server.first_frame_ms)} · ` +
      `look-ahead ${l ? Math.round(l.lookahead) : "–"} · model ${l ? Math.round(l.inference) : "–"}`;
    $("fps").textContent = dash(stats.fps);
    $("rtt").textContent = dash(stats.rtt_ms);
    $("jitter").textContent = dash(jitterMs);
    $("turns").textContent = server.turns;
    $("interruptions").textContent = server.interruptions;
  }

  $("connect").onclick = () => (pc ? disconnect() : connect());
  $("mute").onclick = () => setMuted(!$("mute").classList.contains("on"));
  $("interrupt").onclick = interrupt;
  $("start-button").onclick = () => { $("remote").play(); $("start").hidden = true; };
  setState("not connected");
  if (query.get("autoconnect") === "1") connect();
})();
