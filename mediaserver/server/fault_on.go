//go:build faultinject

package server

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
)

// Fault injection for tests and the end-to-end suite, compiled only with
// -tags faultinject:
//
//	POST /debug/fault/leak?n=200   start n goroutines that block until released
//	POST /debug/fault/leak?release=1   release them
//	POST /debug/fault/alloc?mb=256     allocate and hold mb MiB (pages touched),
//	                                   16 MiB at a time: a pod past its memory
//	                                   limit is OOM-killed before it answers
var fault struct {
	mu      sync.Mutex
	release chan struct{}
	n       int
	held    [][]byte
}

func faultRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /debug/fault/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
		if err != nil || mb <= 0 || mb > 8192 {
			http.Error(w, "mb must be 1..8192", http.StatusBadRequest)
			return
		}
		fault.mu.Lock()
		defer fault.mu.Unlock()
		for left := mb; left > 0; left -= 16 {
			b := make([]byte, min(left, 16)<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1 // touch every page: resident, counted by the cgroup
			}
			fault.held = append(fault.held, b)
		}
		fmt.Fprintf(w, "holding %d MiB more\n", mb)
	})
	mux.HandleFunc("POST /debug/fault/leak", func(w http.ResponseWriter, r *http.Request) {
		fault.mu.Lock()
		defer fault.mu.Unlock()
		if r.URL.Query().Get("release") != "" {
			if fault.release != nil {
				close(fault.release)
				fault.release = nil
			}
			released := fault.n
			fault.n = 0
			fmt.Fprintf(w, "released %d goroutines\n", released)
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n <= 0 || n > 100000 {
			http.Error(w, "n must be 1..100000", http.StatusBadRequest)
			return
		}
		if fault.release == nil {
			fault.release = make(chan struct{})
		}
		ch := fault.release
		for i := 0; i < n; i++ {
			go leakedGoroutine(ch)
		}
		fault.n += n
		fmt.Fprintf(w, "leaking %d goroutines\n", fault.n)
	})
}

// leakedGoroutine is the creation site the leak detector should name.
func leakedGoroutine(release <-chan struct{}) { <-release }
