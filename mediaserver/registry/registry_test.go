package registry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

func impls() map[string]func() Registry[int] {
	return map[string]func() Registry[int]{
		"sharded": func() Registry[int] { return NewSharded[int]() },
		"locked":  func() Registry[int] { return NewLocked[int]() },
	}
}

func TestBasics(t *testing.T) {
	for name, mk := range impls() {
		t.Run(name, func(t *testing.T) {
			r := mk()
			if err := r.Add("a", 1, 2); err != nil {
				t.Fatal(err)
			}
			if err := r.Add("a", 2, 2); !errors.Is(err, ErrExists) {
				t.Fatalf("duplicate: %v", err)
			}
			if err := r.Add("b", 2, 2); err != nil {
				t.Fatal(err)
			}
			if err := r.Add("c", 3, 2); !errors.Is(err, ErrFull) {
				t.Fatalf("over limit: %v", err)
			}
			if v, ok := r.Get("b"); !ok || v != 2 {
				t.Fatalf("get b = %v %v", v, ok)
			}
			if r.Len() != 2 {
				t.Fatalf("len %d", r.Len())
			}
			if v, ok := r.Remove("a"); !ok || v != 1 {
				t.Fatalf("remove a = %v %v", v, ok)
			}
			if _, ok := r.Remove("a"); ok {
				t.Fatal("removed twice")
			}
			if err := r.Add("c", 3, 2); err != nil {
				t.Fatalf("room freed by remove: %v", err)
			}
			seen := 0
			r.Range(func(string, int) bool { seen++; return true })
			if seen != 2 {
				t.Fatalf("range saw %d", seen)
			}
		})
	}
}

func TestShardSpread(t *testing.T) {
	counts := make([]int, ShardCount)
	for i := 0; i < 32000; i++ {
		counts[fnv1a(fmt.Sprintf("session-%d", i))%ShardCount]++
	}
	for i, c := range counts {
		if c < 700 || c > 1300 {
			t.Errorf("shard %d holds %d of 32000 ids: FNV-1a spread is off", i, c)
		}
	}
}

// TestConcurrentCreateCloseList runs under -race: adds, removes, gets and
// listings from many goroutines, with the limit holding throughout.
func TestConcurrentCreateCloseList(t *testing.T) {
	for name, mk := range impls() {
		t.Run(name, func(t *testing.T) {
			r := mk()
			const limit = 200
			var wg sync.WaitGroup
			var added, removed, full atomic.Int64
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					for i := 0; i < 3000; i++ {
						id := fmt.Sprintf("s-%d-%d", w, rng.IntN(300))
						switch rng.IntN(4) {
						case 0, 1:
							switch err := r.Add(id, i, limit); {
							case err == nil:
								added.Add(1)
							case errors.Is(err, ErrFull):
								full.Add(1)
							}
						case 2:
							if _, ok := r.Remove(id); ok {
								removed.Add(1)
							}
						case 3:
							r.Get(id)
						}
						if n := r.Len(); n > limit {
							t.Errorf("len %d over limit %d", n, limit)
							return
						}
					}
				}(w)
			}
			for l := 0; l < 2; l++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 200; i++ {
						r.Range(func(string, int) bool { return true })
					}
				}()
			}
			wg.Wait()
			if got, want := int64(r.Len()), added.Load()-removed.Load(); got != want {
				t.Fatalf("len %d, want added-removed %d", got, want)
			}
			n := 0
			r.Range(func(string, int) bool { n++; return true })
			if n != r.Len() {
				t.Fatalf("range saw %d, len %d", n, r.Len())
			}
		})
	}
}
