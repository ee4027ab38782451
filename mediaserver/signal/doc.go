// Package signal serves the mediaserver's public signalling: WHIP, WHEP and
// WebSocket rooms.
//
// # WHIP (RFC 9725) and WHEP
//
//	POST   /whip/{room}        Content-Type: application/sdp, body: offer
//	                           201 Created, body: answer, Location: /whip/{room}/{id}
//	PATCH  /whip/{room}/{id}   Content-Type: application/trickle-ice-sdpfrag
//	                           204 No Content (candidates added)
//	DELETE /whip/{room}/{id}   200 OK (session ended)
//
// WHEP is the same under /whep/: the offer is recvonly and the answer
// carries the room's published tracks. The answer always holds every server
// candidate (gathering completes first), so clients need no server trickle.
// STUN and TURN servers are announced in Link headers (rel="ice-server").
//
// Errors are plain text with a status: 400 malformed SDP or candidate,
// 401 missing or wrong bearer token, 403 origin not allowed, 404 unknown
// session or nothing published in the room, 413 body too large, 415 wrong
// Content-Type, 422 candidate limit reached, 503 + Retry-After when the pod
// is full or draining.
//
// # WebSocket rooms
//
// GET /ws upgrades to a WebSocket (a bearer token may come as
// Authorization header or ?token=). Every message is one JSON object with a
// "type". The server is always the offerer: it renegotiates whenever a
// track joins or leaves the room.
//
//	client → server
//	  {"type":"join","room":"demo"}                  first message, once
//	  {"type":"answer","sdp":"v=0..."}               answer to the last offer
//	  {"type":"candidate","candidate":{"candidate":"candidate:...","sdpMid":"0","sdpMLineIndex":0}}
//	  {"type":"leave"}                               ends the session
//	server → client
//	  {"type":"joined","sessionId":"...","room":"demo","iceServers":[...]}
//	  {"type":"offer","sdp":"v=0..."}                 answer it with "answer"
//	  {"type":"candidate","candidate":{...}}           trickle ICE
//	  {"type":"draining","retryAfter":5}              the pod is shutting down
//	  {"type":"error","code":"...","message":"..."}   see the codes below
//	  {"type":"closed","reason":"..."}                the session ended
//
// The server's first offer carries one recvonly audio and one recvonly
// video m-line: a participant that wants to publish adds its tracks before
// answering. Error codes: bad-message, unknown-type, not-joined,
// already-joined, bad-room, full, draining, bad-answer, bad-candidate,
// candidate-limit. A protocol error never closes the session; a client
// that stops reading (its 256-message queue stays full for 1s) is
// disconnected.
package signal
