package controllers

import (
	"maps"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// perMediaService is reconciler memory kept per MediaService: each owner
// of such state (the autoscaler's recommendations, the deletion-cost
// ledger) embeds one, so that every piece is pruned the same way when its
// MediaService goes.
type perMediaService[V any] struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*V
}

// with runs f on key's value (made on first use) under the lock.
func (p *perMediaService[V]) with(key types.NamespacedName, f func(*V)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[types.NamespacedName]*V{}
	}
	v := p.m[key]
	if v == nil {
		v = new(V)
		p.m[key] = v
	}
	f(v)
}

// forget drops key's value (its MediaService is gone, or the feature off).
func (p *perMediaService[V]) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, key)
}

// keys lists the MediaServices with a value.
func (p *perMediaService[V]) keys() []types.NamespacedName {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Keys(p.m))
}
