package signal

import "testing"

// FuzzDecodeMessage: any input decodes or fails with a protocol error,
// never panics, and a decoded message is valid for its type.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{`{"type":"join","room":"demo"}`, `{"type":"answer","sdp":"v=0"}`,
		`{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 1 typ host"}}`, `{"type":"leave"}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if _, ok := err.(*ProtocolError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		switch m.Type {
		case TypeJoin:
			if !ValidRoom(m.Room) {
				t.Fatalf("join with invalid room %q accepted", m.Room)
			}
		case TypeAnswer:
			if m.SDP == "" || len(m.SDP) > MaxSDPBytes {
				t.Fatalf("answer with sdp of %d bytes accepted", len(m.SDP))
			}
		case TypeCandidate:
			if m.Candidate == nil {
				t.Fatal("candidate without candidate accepted")
			}
		case TypeLeave:
		default:
			t.Fatalf("type %q accepted", m.Type)
		}
	})
}

// FuzzParseTrickleFrag: any body parses or errors, never panics; parsed
// candidates start with "candidate:".
func FuzzParseTrickleFrag(f *testing.F) {
	f.Add([]byte("a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"))
	f.Add([]byte("a=end-of-candidates\r\n"))
	f.Add([]byte("m=\r\nm=\r\na=mid:1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		frag, err := ParseTrickleFrag(data)
		if err != nil {
			return
		}
		for _, c := range frag.Candidates {
			if len(c.Candidate) < len("candidate:") || c.Candidate[:10] != "candidate:" {
				t.Fatalf("candidate %q", c.Candidate)
			}
		}
	})
}
