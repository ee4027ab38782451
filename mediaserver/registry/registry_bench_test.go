package registry

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// benchMix runs a parallel mix where readPct of operations are Gets and the
// rest alternate Add/Remove, over a registry pre-filled with 1,000 ids.
func benchMix(b *testing.B, r Registry[int], readPct int) {
	const n = 1000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("session-%08x", i*2654435761)
		_ = r.Add(ids[i], i, 0)
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1) * 7919
		for pb.Next() {
			i++
			id := ids[i%n]
			if int(i%100) < readPct {
				r.Get(id)
			} else if v, ok := r.Remove(id); ok {
				_ = r.Add(id, v, 0)
			}
		}
	})
}

func BenchmarkRegistry(b *testing.B) {
	for _, mix := range []struct {
		name string
		read int
	}{{"read90", 90}, {"write50", 50}, {"write90", 10}} {
		b.Run("sharded/"+mix.name, func(b *testing.B) { benchMix(b, NewSharded[int](), mix.read) })
		b.Run("locked/"+mix.name, func(b *testing.B) { benchMix(b, NewLocked[int](), mix.read) })
	}
}
