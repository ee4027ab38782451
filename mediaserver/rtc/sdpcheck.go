package rtc

import (
	"errors"
	"fmt"

	"github.com/pion/sdp/v3"
)

// ErrNoMedia: an offer with no media section would hold a session slot
// with nothing to carry until the connect timeout.
var ErrNoMedia = errors.New("the offer has no media section (no m= line)")

// maxMediaSections bounds the m-lines of one remote description (a WHIP
// publisher has two, a room participant a few per other participant).
const maxMediaSections = 64

// checkRemoteSDP reads a remote description before pion does and counts
// the ICE candidates it carries: every one is a peer address the server
// will send connectivity checks to, so they count toward the session's
// candidate limit like trickled ones (the offer's candidates must not
// bypass MAX_ICE_CANDIDATES). wantMedia refuses a description without
// media.
func (s *Session) checkRemoteSDP(raw string, wantMedia bool, bad error) error {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(raw); err != nil {
		return fmt.Errorf("%w: %v", bad, err)
	}
	if wantMedia && len(d.MediaDescriptions) == 0 {
		return fmt.Errorf("%w: %w", bad, ErrNoMedia)
	}
	if len(d.MediaDescriptions) > maxMediaSections {
		return fmt.Errorf("%w: %d media sections; at most %d", bad, len(d.MediaDescriptions), maxMediaSections)
	}
	n := 0
	for _, a := range d.Attributes {
		if a.IsICECandidate() {
			n++
		}
	}
	for _, m := range d.MediaDescriptions {
		for _, a := range m.Attributes {
			if a.IsICECandidate() {
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	if total := s.candidates.Add(int32(n)); int(total) > s.engine.cfg.MaxICECandidates {
		s.candidates.Add(-int32(n))
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("refused").Add(float64(n))
		return fmt.Errorf("%w: the description carries %d candidates; at most %d per session (MAX_ICE_CANDIDATES)",
			ErrCandidateLimit, n, s.engine.cfg.MaxICECandidates)
	}
	return nil
}
