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
// carries the room's published tracks. A WHEP viewer may cap the simulcast
// layer it gets: ?layer=q|h|f on the POST, and later
//
//	POST   /whep/{room}/{id}/layer?max=q|h|f[&feed=ID]   204 No Content
//
// (l/m/h and 0/1/2 name the same ranks; without feed, every feed). The
// viewer moves at the next keyframe of that layer; its sequence numbers
// and timestamps stay continuous. The answer always holds every server
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
//	  {"type":"layer","feed":"...","max":"h"}        cap the simulcast layer of one
//	                                                 feed ("feed" left out: all) at q, h or f
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
// candidate-limit, bad-layer. A protocol error never closes the session; a client
// that stops reading (its 256-message queue stays full for 1s) is
// disconnected.
package signal
