// Package registry keeps the live sessions of a mediaserver. Sharded splits
// them over 32 RWMutex-guarded maps chosen by FNV-1a of the id, so that a
// slow close, a reap or a listing holds one shard at a time; Locked is the
// single-mutex baseline the benchmarks compare it with.
package registry

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrExists is returned when an id is already registered.
var ErrExists = errors.New("session id already registered")

// ErrFull is returned when the registry holds its limit.
var ErrFull = errors.New("session limit reached")

// Registry is a concurrent map of sessions by id.
type Registry[V any] interface {
	// Add registers v under id unless the id exists or limit (> 0) entries
	// are already registered.
	Add(id string, v V, limit int) error
	Get(id string) (V, bool)
	// Remove deletes id and returns what it held.
	Remove(id string) (V, bool)
	Len() int
	// Range calls fn for a snapshot of each shard, without holding any lock
	// while fn runs; fn returning false stops the walk.
	Range(fn func(id string, v V) bool)
}

// ShardCount is the number of shards of Sharded.
const ShardCount = 32

type shard[V any] struct {
	mu sync.RWMutex
	m  map[string]V
	_  [96]byte // one shard per 128 bytes: neighbouring locks never share a cache line
}

// Sharded is the production registry.
type Sharded[V any] struct {
	shards [ShardCount]shard[V]
	n      atomic.Int64
}

// NewSharded returns an empty sharded registry.
func NewSharded[V any]() *Sharded[V] {
	r := &Sharded[V]{}
	for i := range r.shards {
		r.shards[i].m = make(map[string]V)
	}
	return r
}

// fnv1a is the 32-bit FNV-1a hash, inlined to avoid an allocation per call.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func (r *Sharded[V]) shardOf(id string) *shard[V] { return &r.shards[fnv1a(id)%ShardCount] }

// Add implements Registry. The limit is enforced with a compare-and-swap
// reservation so that it holds across shards without a global lock.
func (r *Sharded[V]) Add(id string, v V, limit int) error {
	for {
		n := r.n.Load()
		if limit > 0 && n >= int64(limit) {
			return ErrFull
		}
		if r.n.CompareAndSwap(n, n+1) {
			break
		}
	}
	s := r.shardOf(id)
	s.mu.Lock()
	if _, ok := s.m[id]; ok {
		s.mu.Unlock()
		r.n.Add(-1)
		return ErrExists
	}
	s.m[id] = v
	s.mu.Unlock()
	return nil
}

// Get implements Registry.
func (r *Sharded[V]) Get(id string) (V, bool) {
	s := r.shardOf(id)
	s.mu.RLock()
	v, ok := s.m[id]
	s.mu.RUnlock()
	return v, ok
}

// Remove implements Registry.
func (r *Sharded[V]) Remove(id string) (V, bool) {
	s := r.shardOf(id)
	s.mu.Lock()
	v, ok := s.m[id]
	if ok {
		delete(s.m, id)
	}
	s.mu.Unlock()
	if ok {
		r.n.Add(-1)
	}
	return v, ok
}

// Len implements Registry.
func (r *Sharded[V]) Len() int { return int(r.n.Load()) }

// Range implements Registry.
func (r *Sharded[V]) Range(fn func(id string, v V) bool) {
	type kv struct {
		id string
		v  V
	}
	var buf []kv
	for i := range r.shards {
		s := &r.shards[i]
		buf = buf[:0]
		s.mu.RLock()
		for id, v := range s.m {
			buf = append(buf, kv{id, v})
		}
		s.mu.RUnlock()
		for _, e := range buf {
			if !fn(e.id, e.v) {
				return
			}
		}
	}
}

// Locked is a registry behind one mutex: the benchmark baseline.
type Locked[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

// NewLocked returns an empty single-mutex registry.
func NewLocked[V any]() *Locked[V] { return &Locked[V]{m: make(map[string]V)} }

// Add implements Registry.
func (r *Locked[V]) Add(id string, v V, limit int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id]; ok {
		return ErrExists
	}
	if limit > 0 && len(r.m) >= limit {
		return ErrFull
	}
	r.m[id] = v
	return nil
}

// Get implements Registry.
func (r *Locked[V]) Get(id string) (V, bool) {
	r.mu.RLock()
	v, ok := r.m[id]
	r.mu.RUnlock()
	return v, ok
}

// Remove implements Registry.
func (r *Locked[V]) Remove(id string) (V, bool) {
	r.mu.Lock()
	v, ok := r.m[id]
	delete(r.m, id)
	r.mu.Unlock()
	return v, ok
}

// Len implements Registry.
func (r *Locked[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// Range implements Registry.
func (r *Locked[V]) Range(fn func(id string, v V) bool) {
	r.mu.RLock()
	snap := make(map[string]V, len(r.m))
	for k, v := range r.m {
		snap[k] = v
	}
	r.mu.RUnlock()
	for k, v := range snap {
		if !fn(k, v) {
			return
		}
	}
}
