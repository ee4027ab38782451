// mediafleet demo page: WHIP publish, WHEP watch, WebSocket rooms.
// Plain JavaScript; window.mediafleet exposes the state for tests.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  mode: '', // publish | watch | join
  status: 'idle', // idle | connecting | connected | error | closed
  error: '',
  pc: null,
  ws: null,
  resource: '', // WHIP/WHEP session URL
  local: null, // local MediaStream
  stats: {}, // per track label: {width, height, kbps, fps, lossPct, rttMs}
  prevBytes: {},
  timer: null,
};
window.mediafleet = state;

function say(text, kind) {
  const m = $('message');
  m.textContent = text;
  m.className = kind || '';
}

function fail(text) {
  state.status = 'error';
  state.error = text;
  say(text, 'error');
  setBusy(false);
}

function setBusy(busy) {
  for (const id of ['publish', 'watch', 'join']) $(id).disabled = busy;
  $('leave').disabled = !busy;
}

function authHeaders() {
  const t = $('token').value.trim();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

// describeHTTP turns a signalling answer into a message a person understands.
async function describeHTTP(resp) {
  const body = (await resp.text()).trim();
  const retry = resp.headers.get('Retry-After');
  switch (resp.status) {
    case 401: return 'Token refused: ' + body;
    case 403: return 'This page\'s origin is not allowed by the server.';
    case 404: return 'Nothing is published in this room yet' + (retry ? ' (retry in ' + retry + ' s)' : '') + '.';
    case 503: return (body.includes('draining') ? 'The server is draining'
      : body.includes('session limit') ? 'The room is full (session limit reached)'
        : 'The service cannot take this room right now (' + body + ')') +
      (retry ? '; retry in ' + retry + ' s' : '') + '.';
    default: return 'Server answered ' + resp.status + ': ' + body;
  }
}

function videoTile(id, label, stream, muted) {
  let fig = document.querySelector('figure[data-id="' + CSS.escape(id) + '"]');
  if (!fig) {
    fig = document.createElement('figure');
    fig.dataset.id = id;
    const v = document.createElement('video');
    v.autoplay = true;
    v.playsInline = true;
    v.muted = muted;
    const cap = document.createElement('figcaption');
    cap.textContent = label;
    fig.append(v, cap);
    $('videos').append(fig);
  }
  const v = fig.querySelector('video');
  if (v.srcObject !== stream) v.srcObject = stream;
  v.play().catch(() => {});
  return v;
}

function removeTile(id) {
  const fig = document.querySelector('figure[data-id="' + CSS.escape(id) + '"]');
  if (fig) fig.remove();
}

function waitGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, ms);
  });
}

// parseLinks reads the ICE servers a WHIP/WHEP response announces
// (RFC 9725: Link: <turn:host:port?transport=udp>; rel="ice-server";
// username="..."; credential="...").
function parseLinks(header) {
  const out = [];
  if (!header) return out;
  for (const m of header.matchAll(/<([^>]+)>([^<]*)/g)) {
    const params = {};
    for (const p of m[2].matchAll(/([\w-]+)="([^"]*)"/g)) params[p[1]] = p[2];
    if (params.rel !== 'ice-server') continue;
    const server = { urls: m[1] };
    if (params.username !== undefined) { server.username = params.username; server.credential = params.credential; }
    out.push(server);
  }
  return out;
}

// relayOnly: ?relay=1 makes the page use TURN relays only (what a client
// behind a firewall that passes only the TURN server's port ends up with).
const relayOnly = new URLSearchParams(location.search).get('relay') === '1';

// iceServers asks the server which STUN and TURN servers to use (an
// authenticated OPTIONS on the WHIP/WHEP path: TURN credentials are given
// only to callers who may publish or watch).
async function iceServers(kind) {
  try {
    const resp = await fetch('/' + kind + '/' + encodeURIComponent($('room').value), { method: 'OPTIONS', headers: authHeaders() });
    return parseLinks(resp.headers.get('Link'));
  } catch (e) {
    return [];
  }
}

function newPC(servers) {
  const config = { bundlePolicy: 'max-bundle', iceServers: servers || [] };
  if (relayOnly) config.iceTransportPolicy = 'relay';
  const pc = new RTCPeerConnection(config);
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'connected') {
      state.status = 'connected';
      say('Connected (' + state.mode + ') to room ' + $('room').value + '.');
    } else if (pc.connectionState === 'failed') {
      fail('The media connection failed (ICE). Check that UDP reaches the server.');
    }
  });
  return pc;
}

// insecureMessage explains why a page on plain http to another host gets no
// camera at all: browsers offer getUserMedia only in a secure context.
function insecureMessage() {
  return 'This page is not a secure context (' + location.protocol + '//' + location.host + '), so the browser ' +
    'offers no camera or microphone. Open it over HTTPS (spec.signaling.tls), or through ' +
    'http://localhost (kubectl port-forward svc/NAME 8080:8080). Watching works either way.';
}

async function camera() {
  if (!window.isSecureContext || !navigator.mediaDevices) throw new Error(insecureMessage());
  try {
    return await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
  } catch (e) {
    throw new Error('Camera or microphone refused: ' + e.message);
  }
}

// The simulcast layers the page publishes, lowest first.
const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 700000 },
  { rid: 'f', maxBitrate: 2000000 },
];

// Bounded retries of refusals that say when to come back (503 with
// Retry-After: a full, draining or not yet routable pod).
const MAX_RETRIES = 3;
const MAX_RETRY_WAIT_S = 5;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function retryDelayMs(retryAfter) {
  const n = parseInt(retryAfter, 10);
  return 1000 * Math.min(Number.isFinite(n) && n >= 0 ? n : 1, MAX_RETRY_WAIT_S);
}

// whip/whep: offer, POST, answer. The server's answer holds every candidate.
async function httpSession(kind, pc) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitGathering(pc, 2000);
  let resp;
  for (let attempt = 0; ; attempt++) {
    resp = await fetch('/' + kind + '/' + encodeURIComponent($('room').value), {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/sdp' }, authHeaders()),
      body: pc.localDescription.sdp,
    });
    const retry = resp.headers.get('Retry-After');
    if (resp.status !== 503 || retry === null || attempt >= MAX_RETRIES) break;
    state.retries = (state.retries || 0) + 1;
    say('The server asked to retry in ' + retry + ' s (' + (await resp.text()).trim() + '); retrying…', 'warn');
    await sleep(retryDelayMs(retry));
  }
  if (resp.status !== 201) throw new Error(await describeHTTP(resp));
  state.resource = new URL(resp.headers.get('Location'), location.href).toString();
  await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
}

async function publish() {
  start('publish');
  try {
    state.local = await camera();
    videoTile('local', 'you (publishing)', state.local, true);
    const pc = state.pc = newPC(await iceServers('whip'));
    for (const t of state.local.getTracks()) {
      // Video goes out as three simulcast layers (RFC 8853 rids): the
      // server gives each viewer the one its link and its cap allow.
      const init = { direction: 'sendonly', streams: [state.local] };
      if (t.kind === 'video') init.sendEncodings = SIMULCAST;
      pc.addTransceiver(t, init);
    }
    await httpSession('whip', pc);
  } catch (e) { fail(e.message); }
}

async function watch() {
  start('watch');
  try {
    const pc = state.pc = newPC(await iceServers('whep'));
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const remote = new MediaStream();
    pc.addEventListener('track', (ev) => {
      remote.addTrack(ev.track);
      videoTile('watch', 'room ' + $('room').value, remote, false);
    });
    await httpSession('whep', pc);
    $('layer').disabled = false;
  } catch (e) { fail(e.message); }
}

// capLayer asks the server to cap the simulcast layer this viewer gets
// (auto: the best its bandwidth allows).
async function capLayer() {
  if (!state.resource || state.mode !== 'watch') return;
  const max = $('layer').value === 'auto' ? 'f' : $('layer').value;
  const resp = await fetch(state.resource + '/layer?max=' + encodeURIComponent(max), { method: 'POST', headers: authHeaders() });
  if (resp.status !== 204) fail(await describeHTTP(resp));
  else say('Layer capped at ' + max + '; the picture changes at the next keyframe.');
}

// join: the server offers (and re-offers as tracks come and go); we answer.
async function join() {
  start('join');
  try {
    state.local = await camera();
    videoTile('local', 'you', state.local, true);
  } catch (e) { fail(e.message); return; }
  connectRoom(0);
}

// connectRoom opens the WebSocket; a join refused with retryAfter (no pod
// can take the room yet) is tried again on a new connection, bounded.
function connectRoom(attempt) {
  state.status = 'connecting';
  if (state.pc) state.pc.close();
  const pc = state.pc = newPC();
  const pending = [];
  let added = false;
  let joined = false;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = $('token').value.trim();
  const ws = state.ws = new WebSocket(proto + '//' + location.host + '/ws' + (token ? '?token=' + encodeURIComponent(token) : ''));
  const send = (m) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m)); };
  pc.addEventListener('icecandidate', (ev) => { if (ev.candidate) send({ type: 'candidate', candidate: ev.candidate.toJSON() }); });
  pc.addEventListener('track', (ev) => {
    const stream = ev.streams[0] || new MediaStream([ev.track]);
    videoTile(stream.id, 'participant ' + stream.id.slice(-8), stream, false);
    stream.addEventListener('removetrack', () => { if (stream.getTracks().length === 0) removeTile(stream.id); });
  });
  ws.addEventListener('open', () => send({ type: 'join', room: $('room').value }));
  ws.addEventListener('error', () => { if (state.ws === ws) fail('The WebSocket failed (token refused, origin not allowed or server unreachable).'); });
  ws.addEventListener('close', () => { if (state.ws === ws && state.status !== 'error' && state.mode === 'join') { state.status = 'closed'; } });
  ws.addEventListener('message', async (ev) => {
    const m = JSON.parse(ev.data);
    switch (m.type) {
      case 'joined':
        joined = true;
        // TURN servers and credentials for this session (before the
        // server's offer, so that gathering uses them).
        if (m.iceServers && m.iceServers.length) {
          const config = pc.getConfiguration();
          config.iceServers = m.iceServers.map((x) => ({ urls: x.urls, username: x.username, credential: x.credential }));
          if (relayOnly) config.iceTransportPolicy = 'relay';
          pc.setConfiguration(config);
        }
        say('Joined room ' + m.room + '; negotiating…');
        break;
      case 'offer':
        await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
        if (!added) { // publish into the server's recvonly m-lines
          for (const t of state.local.getTracks()) pc.addTrack(t, state.local);
          added = true;
        }
        while (pending.length) await pc.addIceCandidate(pending.shift());
        await pc.setLocalDescription(await pc.createAnswer());
        send({ type: 'answer', sdp: pc.localDescription.sdp });
        break;
      case 'candidate':
        if (pc.remoteDescription) await pc.addIceCandidate(m.candidate); else pending.push(m.candidate);
        break;
      case 'draining':
        say('The server is draining; reconnect in ' + m.retryAfter + ' s (you will land on another pod).', 'warn');
        break;
      case 'error':
        if (m.retryAfter && !joined && attempt < MAX_RETRIES && (m.code === 'unavailable' || m.code === 'draining')) {
          state.retries = (state.retries || 0) + 1;
          say('The server asked to retry in ' + m.retryAfter + ' s (' + m.message + '); retrying…', 'warn');
          ws.close();
          await sleep(retryDelayMs(m.retryAfter));
          if (state.ws === ws && state.mode === 'join') connectRoom(attempt + 1);
          break;
        }
        if (m.code === 'full') fail('The room is full (session limit reached); retry later.');
        else if (m.code === 'draining') fail('The server is draining; retry in a few seconds.');
        else say('Server error ' + m.code + ': ' + m.message, 'error');
        break;
      case 'closed':
        state.status = 'closed';
        say('The session ended (' + m.reason + ').', 'warn');
        break;
    }
  });
}

function start(mode) {
  leave(true);
  state.mode = mode;
  state.status = 'connecting';
  state.error = '';
  say('Connecting…');
  setBusy(true);
  state.timer = setInterval(collectStats, 1000);
}

function leave(quiet) {
  clearInterval(state.timer);
  if (state.resource) {
    fetch(state.resource, { method: 'DELETE', headers: authHeaders() }).catch(() => {});
    state.resource = '';
  }
  if (state.ws) { try { state.ws.send(JSON.stringify({ type: 'leave' })); } catch (e) {} state.ws.close(); state.ws = null; }
  if (state.pc) { state.pc.close(); state.pc = null; }
  if (state.local) { state.local.getTracks().forEach((t) => t.stop()); state.local = null; }
  $('videos').replaceChildren();
  $('stats').querySelector('tbody').replaceChildren();
  $('layer').disabled = true;
  state.stats = {};
  state.prevBytes = {};
  if (!quiet) { state.status = 'idle'; say('Left.'); setBusy(false); }
}

async function collectStats() {
  const pc = state.pc;
  if (!pc) return;
  const report = await pc.getStats();
  let rtt = null;
  report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime * 1000;
  });
  const rows = {};
  report.forEach((s) => {
    if ((s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp') || !s.kind) return;
    const dir = s.type === 'inbound-rtp' ? 'in' : 'out';
    const key = dir + ' ' + s.kind + ' ' + (s.ssrc >>> 0).toString(16);
    const bytes = dir === 'in' ? s.bytesReceived : s.bytesSent;
    const prev = state.prevBytes[key];
    state.prevBytes[key] = { bytes, t: s.timestamp };
    const kbps = prev ? ((bytes - prev.bytes) * 8) / (s.timestamp - prev.t) : 0;
    let lossPct = null;
    if (dir === 'in' && s.packetsReceived !== undefined) {
      const total = s.packetsReceived + (s.packetsLost || 0);
      lossPct = total ? (100 * (s.packetsLost || 0)) / total : 0;
    }
    rows[key] = {
      width: s.frameWidth || 0,
      height: s.frameHeight || 0,
      kbps: Math.round(kbps),
      fps: s.framesPerSecond || 0,
      framesDecoded: s.framesDecoded || 0,
      lossPct,
      rttMs: rtt === null ? null : Math.round(rtt),
    };
  });
  state.stats = rows;
  const body = $('stats').querySelector('tbody');
  body.replaceChildren(...Object.entries(rows).map(([k, r]) => {
    const tr = document.createElement('tr');
    for (const v of [k, r.width ? r.width + '×' + r.height : '–', r.kbps + ' kbit/s', r.fps ? r.fps.toFixed(0) + ' fps' : '–',
      r.lossPct === null ? '–' : r.lossPct.toFixed(1) + ' %', r.rttMs === null ? '–' : r.rttMs + ' ms']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

$('publish').addEventListener('click', publish);
$('watch').addEventListener('click', watch);
$('join').addEventListener('click', join);
$('leave').addEventListener('click', () => leave(false));
$('layer').addEventListener('change', () => capLayer().catch((e) => fail(e.message)));
window.addEventListener('pagehide', () => leave(true));

// ?room=x&token=y&mode=publish|watch|join starts at once (links, tests).
const params = new URLSearchParams(location.search);
if (params.get('room')) $('room').value = params.get('room');
if (params.get('token')) $('token').value = params.get('token');
if (!window.isSecureContext) say(insecureMessage(), 'warn');
const auto = { publish, watch, join }[params.get('mode')];
if (auto) auto();
