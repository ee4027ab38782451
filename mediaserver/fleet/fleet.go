// Package fleet decides which pod of a MediaService owns a room:
// rendezvous (highest-random-weight) hashing of the room name over the
// members the operator delivered, so that adding or removing a pod moves
// only the rooms it must. It also keeps the latest member list, refusing a
// stale one.
//
// Router says where a room is served (probing the members that may already
// hold it); Forwarder carries signalling for a room another pod owns to
// that pod (a reverse proxy for WHIP/WHEP, a relay for WebSockets), so
// that clients keep one public URL.
package fleet

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// ErrStale is returned for a member list older than the one held.
var ErrStale = errors.New("stale membership generation")

// MaxGenerationAhead bounds how far ahead of this pod's clock a member
// list's generation may be. The operator's generations are its clock in
// nanoseconds, so one from further ahead cannot be the operator's: taking
// it would let whoever sent it lock out every later list.
const MaxGenerationAhead = 24 * time.Hour

// MaxMembers bounds a member list (a MediaService has at most 1000 pods).
const MaxMembers = 1000

// Members holds the latest member list.
type Members struct {
	mu  sync.RWMutex
	cur statusapi.Membership
}

// Update replaces the list unless it is older than the one held, or its
// generation is further ahead of now than MaxGenerationAhead.
func (m *Members) Update(next statusapi.Membership, now time.Time) error {
	if next.APIVersion != statusapi.APIVersion {
		return fmt.Errorf("membership apiVersion %q, want %q", next.APIVersion, statusapi.APIVersion)
	}
	if next.Generation <= 0 {
		return errors.New("membership generation must be positive")
	}
	if limit := now.Add(MaxGenerationAhead).UnixNano(); next.Generation > limit {
		return fmt.Errorf("membership generation %d is more than %s ahead of this pod's clock (%d)", next.Generation, MaxGenerationAhead, now.UnixNano())
	}
	if len(next.Members) > MaxMembers {
		return fmt.Errorf("membership lists %d members; at most %d", len(next.Members), MaxMembers)
	}
	seen := map[string]bool{}
	for _, mb := range next.Members {
		if mb.Name == "" || mb.Address == "" {
			return errors.New("every member needs a name and an address")
		}
		if seen[mb.Name] {
			return fmt.Errorf("member %q listed twice", mb.Name)
		}
		seen[mb.Name] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if next.Generation < m.cur.Generation {
		return fmt.Errorf("%w: %d < %d", ErrStale, next.Generation, m.cur.Generation)
	}
	m.cur = next
	return nil
}

// Current returns the list held (generation 0: none yet).
func (m *Members) Current() statusapi.Membership {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cur
}

// score is the rendezvous weight of (room, member): a 64-bit FNV-1a of both,
// finished with a mixer so that close names spread.
func score(room, member string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(room); i++ {
		h ^= uint64(room[i])
		h *= 1099511628211
	}
	h ^= 0xff
	h *= 1099511628211
	for i := 0; i < len(member); i++ {
		h ^= uint64(member[i])
		h *= 1099511628211
	}
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Rank orders members by their weight for room, highest first. A room's
// existing owner is found by asking members in this order: adding a member
// only ever puts it in front.
func Rank(room string, members []statusapi.Member) []statusapi.Member {
	out := append([]statusapi.Member(nil), members...)
	sort.Slice(out, func(i, j int) bool {
		si, sj := score(room, out[i].Name), score(room, out[j].Name)
		if si != sj {
			return si > sj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Owner is the member that should own a new room: the highest-ranked ready,
// non-draining member. False when none qualifies.
func Owner(room string, members []statusapi.Member) (statusapi.Member, bool) {
	var best statusapi.Member
	var bestScore uint64
	found := false
	for _, m := range members {
		if !m.Ready || m.Draining {
			continue
		}
		s := score(room, m.Name)
		if !found || s > bestScore || (s == bestScore && m.Name < best.Name) {
			best, bestScore, found = m, s, true
		}
	}
	return best, found
}
