// Rejoinder browser demo: microphone -> native websocket protocol -> jitter-buffered playback.
//
// No build step. The page measures each turn on its own clock
// (performance.now()): the capture time of the user's last speech sample,
// found by mapping speech.stopped.audio_ms onto the page's own sent-audio
// timeline, to the arrival of the first reply audio. The server's
// timings.first_send_ms (arrival of that sample at the server to the first
// reply audio sent) lies inside that interval, so the page's figure is never
// smaller; the difference is capture, network and page time. The "audible"
// figure is ../shared/LATENCY.md's: the first reply audio that begins 100 ms
// above -35 dBFS (clients/reply.py computes the same).
//
// Query parameters: ?pipeline=NAME picks a pipeline, ?rate=16000 forces the
// AudioContext rate, ?url=ws://... overrides the websocket URL. ?aec=0, ?ns=0
// and ?agc=0 turn the browser's echo cancellation, noise suppression and auto
// gain off: controls for testing (tests/clients/test_browser_aec.py), not for use.
//
// For tests, window.rejoinder also keeps the microphone level of each frame
// sent (captureLog) and when each reply played (replyLog), both on the
// AudioContext's sample clock, so echo of the reply in the microphone can be
// measured (docs/benchmarks/browser-aec.md).

const SUPPORTED_RATES = [8000, 16000, 22050, 24000, 44100, 48000];
const FALLBACK_RATE = 48000;
const FRAME_S = 0.02;
const JITTER_S = 0.04;
const POSITION_EVERY_MS = 100;
const ONSET_WINDOW = 10; // 10 ms windows: 100 ms
const ONSET_LEVEL = Math.pow(10, -35 / 10); // -35 dBFS, as mean square
const CHART_TURNS = 20;
const LOG_FRAMES = 3000; // captureLog: the last 60 s of 20 ms frames
const LABELS = {
  echo: "echo (loopback check: plays you back)",
  fused: "fused (one speech model)",
  cascade: "cascade (ASR → LLM → TTS)",
};

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// Everything a test (or a curious user in the console) may read.
const state = (window.rejoinder = {
  status: "idle",
  message: "",
  messageKind: null, // "mic-denied", "server-down", "server-full", "not-ready", "insecure", ...
  sampleRate: null,
  sessionId: null,
  pipelines: [],
  pipeline: null,
  echoCancellation: null,
  noiseSuppression: null,
  autoGainControl: null,
  sentSamples: 0,
  sentFrames: 0,
  playedSamples: 0,
  playedRms: 0,
  playedPeakRms: 0,
  underruns: 0,
  droppedAudioMessages: 0,
  interruptions: 0,
  positionsSent: 0,
  lastLatencyShownMs: null,
  turns: [],
  events: [],
  captureLog: [], // [end of frame (context frames), RMS of the frame sent], one per 20 ms frame
  replyLog: [], // {rid, from, to}: context frames of each reply's first and after its last sample played
});

let ctx = null;
let micStream = null;
let capture = null;
let playback = null;
let ws = null;
let live = false; // session.updated seen: our frames are at the rate the server expects
let currentRid = null;
let frameLog = []; // {endMs, t}: the page's sent-audio timeline against its capture clock
let pendingTurn = null;
const turnsByRid = new Map();
const transcriptLines = new Map();
let lastPositionAt = 0;
let lastPositionMs = -1;

// ---- messages ------------------------------------------------------------
function setStatus(s) {
  state.status = s;
  const el = $("status");
  el.textContent = s;
  el.dataset.state = s;
}

function showMessage(text, kind = "error", info = false) {
  state.message = text;
  state.messageKind = kind;
  const el = $("message");
  el.textContent = text;
  el.dataset.kind = info ? "info" : "error";
  el.hidden = !text;
}

function clearMessage() {
  showMessage("", null);
}

async function probeServer() {
  // A refused websocket upgrade (503 full, 401, 403) looks like any failed
  // socket to a page; /readyz tells "down" from "not ready" from "full".
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    if (r.ok) return { up: true, ready: true };
    return { up: true, ready: false, reason: (await r.text()).trim() };
  } catch (e) {
    return { up: false, ready: false, reason: String(e) };
  }
}

async function explainFailure(hadSession, closeEvent) {
  const p = await probeServer();
  if (!p.up) {
    showMessage("The Rejoinder server is down or unreachable. Start it with `make demo` (or `rejoinder serve`) and press Start again.", "server-down");
  } else if (!p.ready) {
    showMessage(`The server is up but not ready: ${p.reason}. Try again in a moment.`, "not-ready");
  } else if (!hadSession) {
    showMessage("The server refused the connection: it is full (all sessions busy, HTTP 503). Try again in a moment. (A server that requires a token or restricts origins refuses this page too.)", "server-full");
  } else if (closeEvent && closeEvent.code === 1001) {
    showMessage("The server is shutting down. Press Start to reconnect once it is back.", "server-down");
  } else if (closeEvent && closeEvent.code === 1008) {
    showMessage(`The server closed the session: ${closeEvent.reason || "policy"}. Press Start to begin a new one.`, "closed");
  } else {
    showMessage(`Connection lost (code ${closeEvent ? closeEvent.code : "?"}). Press Start to reconnect.`, "closed");
  }
}

// ---- audio setup -----------------------------------------------------------
async function makeContext() {
  const forced = Number(params.get("rate"));
  if (SUPPORTED_RATES.includes(forced)) return new AudioContext({ sampleRate: forced, latencyHint: "interactive" });
  let c = new AudioContext({ latencyHint: "interactive" });
  if (!SUPPORTED_RATES.includes(c.sampleRate)) {
    // The device runs at a rate the protocol does not carry: let the browser
    // convert between the device and a context at a supported rate.
    await c.close();
    c = new AudioContext({ sampleRate: FALLBACK_RATE, latencyHint: "interactive" });
  }
  return c;
}

async function openMicrophone() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("The microphone needs a secure page: open this demo over https:// (or on localhost). See clients/web/README.md.", "insecure");
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: params.get("aec") !== "0",
        noiseSuppression: params.get("ns") !== "0",
        autoGainControl: params.get("agc") !== "0",
        channelCount: 1,
      },
    });
  } catch (e) {
    const name = e && e.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      showMessage("Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and press Start again.", "mic-denied");
    } else if (name === "NotFoundError" || name === "OverconstrainedError") {
      showMessage("No microphone was found. Plug one in and press Start again.", "mic-missing");
    } else if (name === "NotReadableError") {
      showMessage("The microphone is busy or blocked by the system (another app may be using it).", "mic-busy");
    } else {
      showMessage(`Could not open the microphone: ${e}`, "mic-error");
    }
    return null;
  }
}

async function start() {
  $("start").disabled = true;
  clearMessage();
  setStatus("starting");
  const probe = await probeServer();
  if (!probe.up || !probe.ready) {
    await explainFailure(false, null);
    return stop();
  }
  micStream = await openMicrophone();
  if (!micStream) return stop();
  const track = micStream.getAudioTracks()[0];
  const settings = track.getSettings ? track.getSettings() : {};
  state.echoCancellation = settings.echoCancellation ?? null;
  state.noiseSuppression = settings.noiseSuppression ?? null;
  state.autoGainControl = settings.autoGainControl ?? null;
  $("aec").textContent = settings.echoCancellation === false
    ? "echo cancellation is OFF: use headphones, or replies will interrupt themselves"
    : "echo cancellation on";

  ctx = await makeContext();
  state.sampleRate = ctx.sampleRate;
  await ctx.audioWorklet.addModule("capture-worklet.js");
  await ctx.audioWorklet.addModule("playback-worklet.js");
  const source = ctx.createMediaStreamSource(micStream);
  capture = new AudioWorkletNode(ctx, "rejoinder-capture", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { frameSamples: Math.round(ctx.sampleRate * FRAME_S) },
  });
  playback = new AudioWorkletNode(ctx, "rejoinder-playback", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { jitterSamples: Math.round(ctx.sampleRate * JITTER_S) },
  });
  source.connect(capture);
  capture.connect(ctx.destination); // silent output: keeps the capture node pulled
  playback.connect(ctx.destination);
  capture.port.onmessage = (e) => onCaptureFrame(e.data);
  playback.port.onmessage = (e) => onPlaybackStats(e.data);
  await ctx.resume();
  connect();
}

function stop() {
  live = false;
  if (ws) { ws.onclose = null; ws.close(1000); ws = null; }
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  micStream = ctx = capture = playback = null;
  currentRid = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  $("pipeline").disabled = true;
  if (state.status !== "idle") setStatus("stopped");
}

// ---- websocket -------------------------------------------------------------
function connect() {
  const url = params.get("url") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/native`;
  let hadSession = false;
  setStatus("connecting");
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const ev = JSON.parse(e.data);
      if (ev.type === "session.created") hadSession = true;
      onEvent(ev);
    } else {
      onAudio(e.data);
    }
  };
  ws.onclose = (e) => {
    const wasLive = hadSession;
    ws = null;
    stop();
    explainFailure(wasLive, e);
  };
  $("stop").disabled = false;
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function onEvent(ev) {
  state.events.push(ev.type);
  if (state.events.length > 200) state.events.shift();
  switch (ev.type) {
    case "session.created": {
      state.sessionId = ev.session_id;
      state.pipelines = ev.pipelines;
      const want = params.get("pipeline") || state.pipeline || ev.session.pipeline;
      const pipeline = ev.pipelines.includes(want) ? want : ev.session.pipeline;
      if (want && want !== pipeline) showMessage(`Pipeline "${want}" is not available on this server; using ${pipeline}.`, "pipeline", true);
      fillPipelines(ev.pipelines, pipeline);
      const rate = ctx.sampleRate;
      send({ type: "session.update", event_id: "setup", session: { input_sample_rate: rate, output_sample_rate: rate, pipeline } });
      break;
    }
    case "session.updated":
      state.pipeline = ev.session.pipeline;
      $("pipeline").value = state.pipeline;
      if (!live) {
        live = true;
        setStatus("live");
        note(`connected: ${state.pipeline} pipeline, ${ctx.sampleRate} Hz`);
      } else {
        note(`switched to the ${state.pipeline} pipeline`);
      }
      break;
    case "speech.started":
      setStatus("listening");
      break;
    case "speech.stopped":
      setStatus("thinking");
      pendingTurn = newTurn(ev.audio_ms);
      break;
    case "response.started": {
      currentRid = ev.response_id;
      const turn = pendingTurn || newTurn(null);
      pendingTurn = null;
      turn.rid = ev.response_id;
      turn.pipeline = ev.pipeline;
      turn.rate = ev.sample_rate;
      turnsByRid.set(turn.rid, turn);
      state.turns.push(turn);
      break;
    }
    case "transcript.delta":
      addTranscript(ev.response_id, ev.role, ev.delta);
      break;
    case "interrupted":
      state.interruptions++;
      if (playback) playback.port.postMessage({ type: "flush", rid: ev.response_id });
      if (ev.response_id === currentRid) currentRid = null;
      note(`interrupted after ${Math.round(ev.truncated_ms)} ms of reply`);
      break;
    case "response.done": {
      if (playback) playback.port.postMessage({ type: "done", rid: ev.response_id });
      if (ev.response_id === currentRid) currentRid = null;
      const turn = turnsByRid.get(ev.response_id);
      if (turn) {
        turn.status = ev.status;
        turn.timings = ev.timings || {};
        turn.serverFirstSendMs = turn.timings.first_send_ms ?? null;
        if (ev.text && !transcriptLines.has(`${ev.response_id}:assistant`)) addTranscript(ev.response_id, "assistant", ev.text);
        if (!transcriptLines.has(`${ev.response_id}:user`) && !transcriptLines.has(`${ev.response_id}:assistant`)) {
          note(`turn ${turn.n}: ${ev.status}, no transcript (${turn.pipeline === "echo" ? "echo plays your audio back" : "audio only"})`);
        }
        showLatency(turn);
      }
      if (state.status !== "listening") setStatus("live");
      break;
    }
    case "error":
      if (ev.code === "overloaded") showMessage("The server is overloaded right now; replies may fail. Try again shortly.", "overloaded");
      else if (ev.fatal) showMessage(`The server ended the session: ${ev.message}`, "fatal");
      else if (ev.event_id === "setup" || ev.code === "unknown_pipeline") showMessage(`Settings refused: ${ev.message}`, "config");
      else note(`server: ${ev.code}: ${ev.message}`);
      break;
  }
}

function newTurn(audioMs) {
  return {
    n: state.turns.length + 1,
    speechEndAudioMs: audioMs,
    tSpeechEnd: audioMs == null ? null : captureTimeOf(audioMs),
    rid: null, pipeline: null, rate: null,
    tFirstAudio: null, tAudible: null,
    latencyMs: null, audibleMs: null, serverFirstSendMs: null,
    timings: null, status: null,
    onset: { windows: [], fill: 0, sumSq: 0, t: null, scan: 0 },
  };
}

function captureTimeOf(audioMs) {
  // The sample at audioMs on the sent timeline was captured when the frame
  // holding it reached the page, minus the rest of that frame.
  const f = frameLog.find((x) => x.endMs >= audioMs);
  if (!f) return frameLog.length ? frameLog[frameLog.length - 1].t : null;
  return f.t - (f.endMs - audioMs);
}

function fillPipelines(names, selected) {
  const sel = $("pipeline");
  sel.innerHTML = "";
  for (const name of names) {
    const o = document.createElement("option");
    o.value = name;
    o.textContent = LABELS[name] || name;
    sel.appendChild(o);
  }
  sel.value = selected;
  sel.disabled = false;
}

// ---- audio in and out ------------------------------------------------------
function onCaptureFrame(msg) {
  const t = performance.now();
  $("level").firstElementChild.style.width = `${Math.min(100, Math.sqrt(msg.rms) * 220)}%`;
  if (!live || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(msg.pcm);
  state.sentSamples += msg.samples;
  state.sentFrames++;
  state.captureLog.push([msg.endFrame, msg.rms]);
  if (state.captureLog.length > LOG_FRAMES) state.captureLog.splice(0, state.captureLog.length - LOG_FRAMES);
  frameLog.push({ endMs: (state.sentSamples * 1000) / ctx.sampleRate, t });
  if (frameLog.length > 3000) frameLog = frameLog.slice(-1500); // keep ~30 s
}

function onAudio(buf) {
  const t = performance.now();
  const view = new DataView(buf);
  if (buf.byteLength < 16 || view.getUint8(0) !== 1) return;
  const rid = view.getUint32(4, true);
  if (rid !== currentRid) { state.droppedAudioMessages++; return; } // in flight after an interruption
  const pcm = new Int16Array(buf, 16, (buf.byteLength - 16) >> 1);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  const turn = turnsByRid.get(rid);
  if (turn) {
    if (turn.tFirstAudio === null) {
      turn.tFirstAudio = t;
      if (turn.tSpeechEnd !== null) turn.latencyMs = t - turn.tSpeechEnd;
      setStatus("speaking");
      showLatency(turn);
    }
    trackOnset(turn, samples, t);
  }
  playback.port.postMessage({ type: "audio", rid, samples }, [samples.buffer]);
}

function trackOnset(turn, samples, t) {
  // LATENCY.md: the first reply audio that begins 100 ms whose RMS is above
  // -35 dBFS, starting on a loud 10 ms window with at least half of its
  // windows loud (so a click does not count), as clients/reply.py.
  const o = turn.onset;
  if (turn.tAudible !== null) return;
  const win = Math.round((turn.rate || ctx.sampleRate) / 100);
  for (let i = 0; i < samples.length; i++) {
    if (o.fill === 0) o.t = t;
    o.sumSq += samples[i] * samples[i];
    if (++o.fill === win) {
      o.windows.push({ ms: o.sumSq / win, t: o.t });
      o.fill = 0;
      o.sumSq = 0;
    }
  }
  for (; o.scan + ONSET_WINDOW <= o.windows.length; o.scan++) {
    let loud = 0;
    let sum = 0;
    for (let k = 0; k < ONSET_WINDOW; k++) {
      loud += o.windows[o.scan + k].ms > ONSET_LEVEL ? 1 : 0;
      sum += o.windows[o.scan + k].ms;
    }
    const first = o.windows[o.scan].ms > ONSET_LEVEL;
    if (first && sum / ONSET_WINDOW > ONSET_LEVEL && loud >= ONSET_WINDOW / 2) {
      turn.tAudible = o.windows[o.scan].t;
      if (turn.tSpeechEnd !== null) turn.audibleMs = turn.tAudible - turn.tSpeechEnd;
      o.windows = [];
      showLatency(turn);
      return;
    }
  }
}

function onPlaybackStats(s) {
  state.playedSamples = s.played;
  state.playedRms = s.played ? Math.sqrt(s.sumSq / s.played) : 0;
  state.playedPeakRms = s.peakRms;
  state.underruns = s.underruns;
  if (s.rid !== null && s.ridFrom !== null) {
    const last = state.replyLog[state.replyLog.length - 1];
    if (last && last.rid === s.rid) last.to = s.ridTo;
    else state.replyLog.push({ rid: s.rid, from: s.ridFrom, to: s.ridTo });
    if (state.replyLog.length > 200) state.replyLog.shift();
  }
  // playback.position: every ~100 ms while a reply plays (and once at its end).
  const now = performance.now();
  if (s.rid !== null && s.rid === currentRid && s.ridPlayed > 0 && now - lastPositionAt >= POSITION_EVERY_MS) {
    const playedMs = Math.round((s.ridPlayed * 10000) / ctx.sampleRate) / 10;
    if (playedMs !== lastPositionMs) {
      send({ type: "playback.position", response_id: s.rid, played_ms: playedMs });
      state.positionsSent++;
      lastPositionAt = now;
      lastPositionMs = playedMs;
    }
  }
  if (state.status === "speaking" && s.buffered === 0 && currentRid === null) setStatus("live");
}

// ---- display ---------------------------------------------------------------
function note(text) {
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = text;
  $("transcript").appendChild(p);
  p.scrollIntoView({ block: "nearest" });
}

function addTranscript(rid, role, delta) {
  const key = `${rid}:${role}`;
  let p = transcriptLines.get(key);
  if (!p) {
    p = document.createElement("p");
    p.className = role;
    transcriptLines.set(key, p);
    $("transcript").appendChild(p);
  }
  p.textContent += delta;
  p.scrollIntoView({ block: "nearest" });
}

function showLatency(turn) {
  if (turn.latencyMs === null) return;
  const shown = Math.round(turn.latencyMs);
  state.lastLatencyShownMs = shown;
  turn.shownMs = shown;
  $("latency").textContent = `${shown} ms`;
  const parts = [`turn ${turn.n}, ${turn.pipeline}`];
  if (turn.audibleMs !== null) parts.push(`audible at ${Math.round(turn.audibleMs)} ms`);
  if (turn.serverFirstSendMs !== null) parts.push(`server first send ${Math.round(turn.serverFirstSendMs)} ms`);
  if (turn.timings && turn.timings.endpoint_ms != null) parts.push(`endpoint ${Math.round(turn.timings.endpoint_ms)} ms`);
  $("latency-detail").textContent = parts.join(" · ");
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 18;
  g.clearRect(0, 0, W, H);
  const turns = state.turns.filter((t) => t.latencyMs !== null).slice(-CHART_TURNS);
  const top = Math.max(1000, ...turns.map((t) => t.latencyMs));
  const y = (ms) => H - pad - ((H - 2 * pad) * Math.max(0, ms)) / top;
  g.strokeStyle = "#e4e7ec";
  g.fillStyle = "#667085";
  g.font = "11px system-ui, sans-serif";
  for (const ms of [0, 500, 1000, 1500, 2000, 3000, 4000].filter((v) => v <= top)) {
    g.beginPath(); g.moveTo(30, y(ms)); g.lineTo(W, y(ms)); g.stroke();
    g.fillText(`${ms}`, 0, y(ms) + 4);
  }
  const bw = (W - 40) / CHART_TURNS;
  turns.forEach((t, i) => {
    const x = 36 + i * bw;
    g.fillStyle = t.status === "interrupted" ? "#98a2b3" : "#2f6fed";
    g.fillRect(x, y(t.latencyMs), bw * 0.7, H - pad - y(t.latencyMs));
    if (t.serverFirstSendMs !== null) {
      g.fillStyle = "#f79009";
      g.fillRect(x - 1, y(t.serverFirstSendMs) - 1, bw * 0.7 + 2, 3);
    }
  });
  g.fillStyle = "#667085";
  g.fillText("ms · bars: page-measured latency · orange: server first send", 36, H - 3);
}

$("start").addEventListener("click", () => start().catch((e) => { showMessage(`Could not start: ${e}`, "start-error"); stop(); }));
$("stop").addEventListener("click", () => { stop(); setStatus("stopped"); });
$("pipeline").addEventListener("change", (e) => send({ type: "session.update", session: { pipeline: e.target.value } }));
drawChart();
probeServer().then((p) => {
  if (!p.up) showMessage("The Rejoinder server is down or unreachable. Start it with `make demo` (or `rejoinder serve`) and reload.", "server-down");
  else if (!p.ready) showMessage(`The server is up but not ready: ${p.reason}.`, "not-ready");
});
