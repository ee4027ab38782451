package rtc

import (
	"strings"

	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// isKeyframe says whether an RTP payload starts a keyframe, for the codecs
// a layer switch can wait for (VP8, VP9, H.264). Other codecs never switch
// layers mid-stream.
func isKeyframe(mime string, payload []byte) bool {
	switch {
	case strings.EqualFold(mime, webrtc.MimeTypeVP8):
		var p codecs.VP8Packet
		b, err := p.Unmarshal(payload)
		// The start of partition 0 of a frame whose first byte says
		// "key frame" (bit 0 of the VP8 frame tag is 0).
		return err == nil && p.S == 1 && p.PID == 0 && len(b) > 0 && b[0]&0x01 == 0
	case strings.EqualFold(mime, webrtc.MimeTypeVP9):
		var p codecs.VP9Packet
		_, err := p.Unmarshal(payload)
		return err == nil && p.B && !p.P && p.SID == 0
	case strings.EqualFold(mime, webrtc.MimeTypeH264):
		return h264Keyframe(payload)
	}
	return false
}

// h264Keyframe finds an SPS or IDR NAL unit: single, in a STAP-A, or the
// first fragment of an FU-A.
func h264Keyframe(p []byte) bool {
	if len(p) < 1 {
		return false
	}
	switch nal := p[0] & 0x1f; nal {
	case 5, 7:
		return true
	case 24: // STAP-A: 16-bit sizes, then NAL units
		for i := 1; i+2 < len(p); {
			size := int(p[i])<<8 | int(p[i+1])
			i += 2
			if size == 0 || i+size > len(p) {
				return false
			}
			if t := p[i] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += size
		}
	case 28: // FU-A: the start bit and the fragmented unit's type
		return len(p) > 1 && p[1]&0x80 != 0 && (p[1]&0x1f == 5 || p[1]&0x1f == 7)
	}
	return false
}
