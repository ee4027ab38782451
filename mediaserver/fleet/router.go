package fleet

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// RoomPath is the admin endpoint answering whether a pod holds a room
// (200) or not (404).
const RoomPath = "/rooms/"

// probeDepth is how many members, in rank order, are asked whether they
// already hold a room: a room stays with the pod that has it, and adding a
// member only ever puts it in front of the others.
const probeDepth = 3

// ErrNoOwner means no member can take the room now.
var ErrNoOwner = errors.New("no pod can own this room now")

// Router says where a room is served.
type Router struct {
	Self    string // this pod's name
	Members *Members
	// Local reports how many sessions the room has on this pod.
	Local func(room string) int
	// SelfReady reports whether this pod can take sessions now. The list
	// the operator delivered may lag behind the pod's own readiness (it is
	// rebuilt when the kubelet reports the pod ready): the pod's own word
	// wins for itself, so that a ready pod never refuses a room it would
	// own. Nil means the list is trusted as it is.
	SelfReady func() bool
	// Token is the admin token the other pods' admin ports want.
	Token string
	HTTP  *http.Client
}

// withSelf returns members with this pod's own readiness in place of what
// the list says about it, adding it when the list predates it.
func (r *Router) withSelf(members []statusapi.Member) []statusapi.Member {
	if r.SelfReady == nil {
		return members
	}
	ready := r.SelfReady()
	out := make([]statusapi.Member, 0, len(members)+1)
	found := false
	for _, m := range members {
		if m.Name == r.Self {
			found = true
			m.Ready, m.Draining = ready, m.Draining && !ready
		}
		out = append(out, m)
	}
	if !found {
		out = append(out, statusapi.Member{Name: r.Self, Ready: ready})
	}
	return out
}

// Route returns the signalling address (host:port) of the pod serving room,
// or "" when it is this pod. Without a member list every room is local.
func (r *Router) Route(ctx context.Context, room string) (string, error) {
	mb := r.Members.Current()
	if mb.Generation == 0 || r.Local(room) > 0 {
		return "", nil
	}
	members := r.withSelf(mb.Members)
	ranked := Rank(room, members)
	for i, m := range ranked {
		if i >= probeDepth {
			break
		}
		if m.Name == r.Self || m.AdminAddress == "" {
			continue
		}
		if r.holds(ctx, m, room) {
			return m.Address, nil
		}
	}
	owner, ok := Owner(room, members)
	if !ok {
		return "", ErrNoOwner
	}
	if owner.Name == r.Self {
		return "", nil
	}
	return owner.Address, nil
}

// holds asks a member whether it has room (a short timeout: an unreachable
// member holds nothing we can reach anyway).
func (r *Router) holds(ctx context.Context, m statusapi.Member, room string) bool {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.AdminAddress+RoomPath+url.PathEscape(room), nil)
	if err != nil {
		return false
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
