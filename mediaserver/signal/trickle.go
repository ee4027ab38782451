package signal

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"
)

// TrickleFrag is a parsed application/trickle-ice-sdpfrag body (RFC 8840).
type TrickleFrag struct {
	Ufrag, Pwd      string
	Candidates      []webrtc.ICECandidateInit
	EndOfCandidates bool
}

// ParseTrickleFrag parses an SDP fragment: session-level ice-ufrag/ice-pwd,
// m= lines with a=mid, and a=candidate / a=end-of-candidates lines. Lines it
// does not need are ignored; malformed ones are errors.
func ParseTrickleFrag(body []byte) (*TrickleFrag, error) {
	f := &TrickleFrag{}
	var mid *string
	mline := -1
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), MaxSDPBytes)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return nil, fmt.Errorf("line %d: not an SDP line: %q", lineNo, truncate(line, 40))
		}
		switch {
		case strings.HasPrefix(line, "m="):
			mline++
			mid = nil
		case strings.HasPrefix(line, "a=mid:"):
			v := strings.TrimPrefix(line, "a=mid:")
			if v == "" {
				return nil, fmt.Errorf("line %d: empty mid", lineNo)
			}
			mid = &v
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			f.Ufrag = strings.TrimPrefix(line, "a=ice-ufrag:")
		case strings.HasPrefix(line, "a=ice-pwd:"):
			f.Pwd = strings.TrimPrefix(line, "a=ice-pwd:")
		case strings.HasPrefix(line, "a=end-of-candidates"):
			f.EndOfCandidates = true
		case strings.HasPrefix(line, "a=candidate:"):
			cand := strings.TrimPrefix(line, "a=")
			if len(strings.Fields(cand)) < 8 {
				return nil, fmt.Errorf("line %d: candidate has fewer than 8 fields", lineNo)
			}
			init := webrtc.ICECandidateInit{Candidate: cand}
			if mid != nil {
				m := *mid
				init.SDPMid = &m
			}
			if mline >= 0 {
				idx := uint16(mline)
				init.SDPMLineIndex = &idx
			}
			f.Candidates = append(f.Candidates, init)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read fragment: %w", err)
	}
	if lineNo == 0 {
		return nil, fmt.Errorf("empty fragment")
	}
	return f, nil
}

// FormatTrickleFrag writes a fragment for candidates (used by clients and
// tests).
func FormatTrickleFrag(ufrag, pwd string, mid string, cands []string) string {
	var b strings.Builder
	if ufrag != "" {
		b.WriteString("a=ice-ufrag:" + ufrag + "\r\n")
	}
	if pwd != "" {
		b.WriteString("a=ice-pwd:" + pwd + "\r\n")
	}
	b.WriteString("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")
	b.WriteString("a=mid:" + mid + "\r\n")
	for _, c := range cands {
		b.WriteString("a=" + strings.TrimPrefix(c, "a=") + "\r\n")
	}
	return b.String()
}
