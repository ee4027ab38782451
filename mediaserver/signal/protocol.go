package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/rtc"
)

// Message types.
const (
	TypeJoin      = "join"
	TypeJoined    = "joined"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeLeave     = "leave"
	TypeLayer     = "layer"
	TypeDraining  = "draining"
	TypeError     = "error"
	TypeClosed    = "closed"
)

// Error codes of "error" messages.
const (
	CodeBadMessage     = "bad-message"
	CodeUnknownType    = "unknown-type"
	CodeNotJoined      = "not-joined"
	CodeAlreadyJoined  = "already-joined"
	CodeBadRoom        = "bad-room"
	CodeFull           = "full"
	CodeDraining       = "draining"
	CodeBadAnswer      = "bad-answer"
	CodeBadCandidate   = "bad-candidate"
	CodeCandidateLimit = "candidate-limit"
	CodeUnauthorized   = "unauthorized"
	CodeUnavailable    = "unavailable"
	CodeBadLayer       = "bad-layer"
)

// Message is every field any message may carry.
type Message struct {
	Type       string                   `json:"type"`
	Room       string                   `json:"room,omitempty"`
	SDP        string                   `json:"sdp,omitempty"`
	Candidate  *webrtc.ICECandidateInit `json:"candidate,omitempty"`
	SessionID  string                   `json:"sessionId,omitempty"`
	ICEServers []webrtc.ICEServer       `json:"iceServers,omitempty"`
	RetryAfter int                      `json:"retryAfter,omitempty"`
	Code       string                   `json:"code,omitempty"`
	Message    string                   `json:"message,omitempty"`
	Reason     string                   `json:"reason,omitempty"`
	// Feed and Max are the "layer" message's: cap the simulcast layers the
	// client gets of one feed ("" for every feed) at q, h or f.
	Feed string `json:"feed,omitempty"`
	Max  string `json:"max,omitempty"`
}

// MaxSDPBytes bounds an SDP in any message or request body.
const MaxSDPBytes = 64 << 10

var roomPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidRoom reports whether name is an acceptable room name: 1-64 letters,
// digits, '_', '.', '-', starting with a letter or digit.
func ValidRoom(name string) bool { return roomPattern.MatchString(name) }

// ProtocolError is a decoding or validation failure with its error code.
type ProtocolError struct {
	Code string
	Msg  string
}

func (e *ProtocolError) Error() string { return e.Code + ": " + e.Msg }

func protoErr(code, format string, args ...any) error {
	return &ProtocolError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// DecodeMessage parses and validates one client message. Unknown fields are
// refused so that typos surface instead of being ignored.
func DecodeMessage(data []byte) (*Message, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Message
	if err := dec.Decode(&m); err != nil {
		return nil, protoErr(CodeBadMessage, "not a JSON message object: %v", trimErr(err))
	}
	if dec.More() {
		return nil, protoErr(CodeBadMessage, "trailing data after the JSON object")
	}
	switch m.Type {
	case TypeJoin:
		if !ValidRoom(m.Room) {
			return nil, protoErr(CodeBadRoom, "room must be 1-64 letters, digits, '_', '.' or '-'")
		}
	case TypeAnswer:
		if m.SDP == "" {
			return nil, protoErr(CodeBadAnswer, "answer without sdp")
		}
		if len(m.SDP) > MaxSDPBytes {
			return nil, protoErr(CodeBadAnswer, "sdp larger than %d bytes", MaxSDPBytes)
		}
	case TypeCandidate:
		if m.Candidate == nil {
			return nil, protoErr(CodeBadCandidate, "candidate message without candidate")
		}
	case TypeLeave:
	case TypeLayer:
		if _, ok := rtc.RankOf(m.Max); !ok {
			return nil, protoErr(CodeBadLayer, "max must be q, h or f (l, m, h and 0, 1, 2 work too)")
		}
		if len(m.Feed) > 128 {
			return nil, protoErr(CodeBadLayer, "feed id longer than 128 bytes")
		}
	case "":
		return nil, protoErr(CodeBadMessage, "message without type")
	default:
		return nil, protoErr(CodeUnknownType, "unknown message type %q", truncate(m.Type, 32))
	}
	return &m, nil
}

func trimErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	return truncate(err.Error(), 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
