package rtc

import (
	"slices"
	"sync"
	"sync/atomic"
)

// cowList is a slice read on every packet without a lock and changed
// rarely: each change stores a fresh copy.
type cowList[T comparable] struct {
	mu sync.Mutex // serialises changes
	p  atomic.Pointer[[]T]
}

// load is the current slice; callers only read it.
func (c *cowList[T]) load() []T {
	if p := c.p.Load(); p != nil {
		return *p
	}
	return nil
}

// change stores what f makes of a copy of the current slice and returns it.
func (c *cowList[T]) change(f func([]T) []T) []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := f(slices.Clone(c.load()))
	c.p.Store(&next)
	return next
}

// remove drops x.
func (c *cowList[T]) remove(x T) []T {
	return c.change(func(s []T) []T { return slices.DeleteFunc(s, func(y T) bool { return y == x }) })
}
