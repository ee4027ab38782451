package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"io"
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
	// Info says what this pod knows of a room it owns (nil: nothing).
	Info func(room string) RoomInfo
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
	loc, err := r.Locate(ctx, room)
	return loc.Addr, err
}

// RoomInfo is what a pod says of a room it owns (GET /rooms/{room}).
type RoomInfo struct {
	Sessions int `json:"sessions"`
	// Full: the owner takes no more sessions now.
	Full bool `json:"full,omitempty"`
	// Broadcast: the room's viewers are served by relay pods first.
	Broadcast bool `json:"broadcast,omitempty"`
}

// Location is where a room is owned.
type Location struct {
	Addr string // signalling address; "" when this pod owns it
	Name string // the owner's pod name ("" without a member list)
	RoomInfo
}

// Locate says which pod owns room and what it says of it (a room no pod
// holds yet is new: its owner-to-be has taken nothing of it).
func (r *Router) Locate(ctx context.Context, room string) (Location, error) {
	mb := r.Members.Current()
	if mb.Generation == 0 || r.Local(room) > 0 {
		loc := Location{Name: r.Self}
		if r.Info != nil {
			loc.RoomInfo = r.Info(room)
		}
		return loc, nil
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
		if info, ok := r.holds(ctx, m, room); ok {
			return Location{Addr: m.Address, Name: m.Name, RoomInfo: info}, nil
		}
	}
	owner, ok := Owner(room, members)
	if !ok {
		return Location{}, ErrNoOwner
	}
	if owner.Name == r.Self {
		return Location{Name: r.Self}, nil
	}
	return Location{Addr: owner.Address, Name: owner.Name}, nil
}

// RelayPods are the pods that may serve a viewer of room whose owner is
// owner, best first: this pod when it can take sessions, then the ready,
// non-draining members but the owner in the room's rendezvous order (so a
// room's viewers gather on few pods).
func (r *Router) RelayPods(room, owner string) []statusapi.Member {
	mb := r.Members.Current()
	if mb.Generation == 0 {
		return nil
	}
	var out []statusapi.Member
	for _, m := range Rank(room, r.withSelf(mb.Members)) {
		if m.Name == owner || !m.Ready || m.Draining {
			continue
		}
		if m.Name == r.Self {
			out = append([]statusapi.Member{m}, out...)
			continue
		}
		out = append(out, m)
	}
	return out
}

// Member is a member of the list by name.
func (r *Router) Member(name string) (statusapi.Member, bool) {
	for _, m := range r.Members.Current().Members {
		if m.Name == name {
			return m, true
		}
	}
	return statusapi.Member{}, false
}

// MaxRoomInfo bounds a pod's answer about a room.
const MaxRoomInfo = 4 << 10

// holds asks a member whether it owns room (a short timeout: an
// unreachable member holds nothing we can reach anyway).
func (r *Router) holds(ctx context.Context, m statusapi.Member, room string) (RoomInfo, bool) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.AdminAddress+RoomPath+url.PathEscape(room), nil)
	if err != nil {
		return RoomInfo{}, false
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return RoomInfo{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return RoomInfo{}, false
	}
	var info RoomInfo
	_ = json.NewDecoder(io.LimitReader(resp.Body, MaxRoomInfo)).Decode(&info) // an old pod answers without it
	return info, true
}
