package signal

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeMessage(t *testing.T) {
	cases := []struct {
		in, code string
	}{
		{`{"type":"join","room":"demo"}`, ""},
		{`{"type":"answer","sdp":"v=0"}`, ""},
		{`{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0"}}`, ""},
		{`{"type":"leave"}`, ""},
		{`{"type":"layer","max":"h"}`, ""},
		{`{"type":"layer","feed":"abc/video","max":"Q"}`, ""},
		{`{"type":"layer"}`, CodeBadLayer},
		{`{"type":"layer","max":"ultra"}`, CodeBadLayer},
		{`{"type":"layer","max":"f","feed":"` + strings.Repeat("x", 129) + `"}`, CodeBadLayer},
		{`nope`, CodeBadMessage},
		{`[]`, CodeBadMessage},
		{`{}`, CodeBadMessage},
		{`{"type":"join"}`, CodeBadRoom},
		{`{"type":"join","room":"a/b"}`, CodeBadRoom},
		{`{"type":"join","room":"` + strings.Repeat("r", 65) + `"}`, CodeBadRoom},
		{`{"type":"answer"}`, CodeBadAnswer},
		{`{"type":"candidate"}`, CodeBadCandidate},
		{`{"type":"offer","sdp":"v=0"}`, CodeUnknownType},
		{`{"type":"join","room":"x","bogus":true}`, CodeBadMessage},
		{`{"type":"leave"} {"type":"leave"}`, CodeBadMessage},
	}
	for _, tc := range cases {
		m, err := DecodeMessage([]byte(tc.in))
		if tc.code == "" {
			if err != nil || m == nil {
				t.Errorf("%s: unexpected error %v", tc.in, err)
			}
			continue
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s: error %v, want code %s", tc.in, err, tc.code)
		}
	}
}

func TestParseTrickleFrag(t *testing.T) {
	body := "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
		"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n" +
		"a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n" +
		"a=end-of-candidates\r\n"
	f, err := ParseTrickleFrag([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if f.Ufrag != "EsAw" || f.Pwd != "P2uYro0UCOQ4zxjKXaWCBui1" || !f.EndOfCandidates || len(f.Candidates) != 2 {
		t.Fatalf("parsed %+v", f)
	}
	c := f.Candidates[1]
	if *c.SDPMid != "0" || *c.SDPMLineIndex != 0 || !strings.HasPrefix(c.Candidate, "candidate:3471623853") {
		t.Errorf("candidate %+v", c)
	}
	for _, bad := range []string{"", "garbage", "a=candidate:1 1 udp\r\n", "m=audio 9 X 0\r\na=mid:\r\n"} {
		if _, err := ParseTrickleFrag([]byte(bad)); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

func TestValidRoom(t *testing.T) {
	for room, ok := range map[string]bool{"demo": true, "a.b_c-1": true, "": false, "-x": false, "a b": false, "ü": false} {
		if ValidRoom(room) != ok {
			t.Errorf("ValidRoom(%q) = %v", room, !ok)
		}
	}
}
