// Injected into lipsync agent's page by tests/test_pipecat_agent.py and scripts/measure_agent.py: for every video
// frame the browser presents (requestVideoFrameCallback), its time and a grid of the mouth region's mean levels;
// every 10 ms, the level of the audio received and of the microphone; each interruption the agent reports.
// Times are performance.now() milliseconds.
(([x, y, w, h]) => {
  const video = document.querySelector("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth || 1280;
  canvas.height = video.videoHeight || 720;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  const audio = new AudioContext();
  const analyser = (stream) => {
    const a = audio.createAnalyser();
    a.fftSize = 512;
    audio.createMediaStreamSource(stream).connect(a);
    return a;
  };
  const received = analyser(video.srcObject), microphone = analyser(window.lipsync.microphone());
  const buffer = new Float32Array(512);
  const level = (a) => {
    a.getFloatTimeDomainData(buffer);
    let s = 0;
    for (const v of buffer) s += v * v;
    return Math.sqrt(s / buffer.length);
  };
  const probe = window.lipsyncProbe = { frames: [], audio: [], interruptions: [] };
  let seen = window.lipsync.server.interruptions;
  setInterval(() => {
    const now = performance.now();
    probe.audio.push([now, level(received), level(microphone)]);
    if (window.lipsync.server.interruptions > seen) {
      seen = window.lipsync.server.interruptions;
      probe.interruptions.push(now);
    }
  }, 10);
  const GX = 8, GY = 6;
  const onFrame = (now, meta) => {
    g.drawImage(video, 0, 0, canvas.width, canvas.height);
    const d = g.getImageData(x, y, w, h).data;
    const cells = new Array(GX * GY).fill(0), counts = new Array(GX * GY).fill(0);
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) {
      const k = Math.floor(j * GY / h) * GX + Math.floor(i * GX / w), p = (j * w + i) * 4;
      cells[k] += (d[p] + d[p + 1] + d[p + 2]) / 3;
      counts[k]++;
    }
    probe.frames.push([meta.expectedDisplayTime || now, cells.map((c, k) => c / counts[k]), meta.presentedFrames]);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
})
