package rtc

import (
	"errors"
	"fmt"
	"slices"

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
	var keys []string
	for _, a := range d.Attributes {
		if a.IsICECandidate() {
			keys = append(keys, "candidate:"+a.Value)
		}
	}
	for _, m := range d.MediaDescriptions {
		for _, a := range m.Attributes {
			if a.IsICECandidate() {
				keys = append(keys, "candidate:"+a.Value)
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if fresh, ok := s.countCandidates(keys); !ok {
		s.engine.metrics.ICECandidatesAdded.WithLabelValues("refused").Add(float64(fresh))
		return fmt.Errorf("%w: the description carries %d new candidates; at most %d per session (MAX_ICE_CANDIDATES)",
			ErrCandidateLimit, fresh, s.engine.cfg.MaxICECandidates)
	}
	return nil
}

// countCandidates counts the candidates among keys the session has not
// seen (a browser repeats its candidates in every m-section and in every
// answer of a renegotiation: each counts once) and keeps them when the
// session stays within MAX_ICE_CANDIDATES. It returns how many were new.
func (s *Session) countCandidates(keys []string) (int, bool) {
	s.candMu.Lock()
	defer s.candMu.Unlock()
	if s.candSeen == nil {
		s.candSeen = map[string]struct{}{}
	}
	var fresh []string
	for _, k := range keys {
		if _, ok := s.candSeen[k]; !ok && !slices.Contains(fresh, k) {
			fresh = append(fresh, k)
		}
	}
	if len(s.candSeen)+len(fresh) > s.engine.cfg.MaxICECandidates {
		return len(fresh), false
	}
	for _, k := range fresh {
		s.candSeen[k] = struct{}{}
	}
	s.candidates.Store(int32(len(s.candSeen)))
	return len(fresh), true
}

// forgetCandidate drops a candidate that could not be added.
func (s *Session) forgetCandidate(key string) {
	s.candMu.Lock()
	defer s.candMu.Unlock()
	delete(s.candSeen, key)
	s.candidates.Store(int32(len(s.candSeen)))
}

// simulcastMids lists the m-sections of a description that carry
// a=simulcast, by mid.
func simulcastMids(raw string) map[string]bool {
	out := map[string]bool{}
	var d sdp.SessionDescription
	if d.UnmarshalString(raw) != nil {
		return out
	}
	for _, m := range d.MediaDescriptions {
		if _, ok := m.Attribute("simulcast"); !ok {
			continue
		}
		if mid, ok := m.Attribute("mid"); ok {
			out[mid] = true
		}
	}
	return out
}
