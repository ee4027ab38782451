package rtc

import (
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
)

// fanChunk is the fewest viewers worth handing to another core.
const fanChunk = 32

// fanout writes a feed's packets to its viewers. Up to fanChunk viewers are
// written by the feed's own goroutine; a busy feed splits its viewers into
// one chunk per core, written in parallel by helpers that live as long as
// the feed (a quiet feed starts none). Every packet is written to every
// viewer before the next is read, so each viewer gets packets in order and
// the packet's buffer can be reused.
type fanout struct {
	log   *slog.Logger
	batch *batchConn // nil without a UDP mux
	tasks chan fanTask
	n     int
	wg    sync.WaitGroup
}

type fanTask struct {
	downs []*DownTrack
	s     sample
	done  *sync.WaitGroup
}

func newFanout(log *slog.Logger, batch *batchConn) *fanout { return &fanout{log: log, batch: batch} }

// write sends one packet to downs, as one round of batched writes on the
// UDP mux's socket.
func (f *fanout) write(downs []*DownTrack, s sample) {
	n := len(downs)
	if f.batch != nil && n > 1 {
		f.batch.begin()
		defer f.batch.end()
	}
	helpers := min(runtime.GOMAXPROCS(0)-1, n/fanChunk)
	if helpers <= 0 {
		f.writeAll(downs, s)
		return
	}
	f.grow(helpers)
	per := (n + helpers) / (helpers + 1)
	var done sync.WaitGroup
	for i := per; i < n; i += per {
		done.Add(1)
		f.tasks <- fanTask{downs: downs[i:min(i+per, n)], s: s, done: &done}
	}
	f.writeAll(downs[:per], s)
	done.Wait()
}

func (f *fanout) writeAll(downs []*DownTrack, s sample) {
	for _, d := range downs {
		if err := d.offer(s); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			f.log.Debug("forward", "err", err)
		}
	}
}

// grow starts helpers up to n.
func (f *fanout) grow(n int) {
	if f.tasks == nil {
		f.tasks = make(chan fanTask, runtime.GOMAXPROCS(0))
	}
	for ; f.n < n; f.n++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for t := range f.tasks {
				f.writeAll(t.downs, t.s)
				t.done.Done()
			}
		}()
	}
}

// stop ends the helpers (the feed ended).
func (f *fanout) stop() {
	if f.tasks != nil {
		close(f.tasks)
		f.wg.Wait()
	}
}
