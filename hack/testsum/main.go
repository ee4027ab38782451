// Command testsum reads `go test -json` on standard input and prints what a
// person wants from a long test run: one line per package as it finishes
// (as go test prints it), the whole output of every failing test, a
// progress line whenever 15 seconds pass without one, and a closing count
// ("N passed, N failed, N skipped"). It exits non-zero when anything
// failed, a package did not build, or the input ended early.
//
//	go test -json ./... | go run ./hack/testsum
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string
}

type pkgState struct {
	started time.Time
	done    bool
	// output of each test (and "" for the package itself), kept until the
	// test passes.
	output map[string]*strings.Builder
}

type summary struct {
	mu                      sync.Mutex
	out                     io.Writer
	start                   time.Time
	lastPrint               time.Time
	pkgs                    map[string]*pkgState
	order                   []string
	passed, failed, skipped int
	failedTests             []string
	skippedTests            []string
	failedPkgs, buildFailed int
	buildOutput             map[string]*strings.Builder
}

func newSummary(out io.Writer, now time.Time) *summary {
	return &summary{out: out, start: now, lastPrint: now, pkgs: map[string]*pkgState{}, buildOutput: map[string]*strings.Builder{}}
}

func (s *summary) printf(now time.Time, format string, args ...any) {
	fmt.Fprintf(s.out, format, args...)
	s.lastPrint = now
}

func (s *summary) pkg(name string, now time.Time) *pkgState {
	p, ok := s.pkgs[name]
	if !ok {
		p = &pkgState{started: now, output: map[string]*strings.Builder{}}
		s.pkgs[name] = p
		s.order = append(s.order, name)
	}
	return p
}

func (s *summary) handle(e event, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Action {
	case "build-output":
		b := s.buildOutput[e.ImportPath]
		if b == nil {
			b = &strings.Builder{}
			s.buildOutput[e.ImportPath] = b
		}
		b.WriteString(e.Output)
		return
	case "build-fail":
		s.buildFailed++
		if b := s.buildOutput[e.ImportPath]; b != nil {
			s.printf(now, "%s", b.String())
		}
		return
	}
	if e.Package == "" {
		return
	}
	p := s.pkg(e.Package, now)
	switch e.Action {
	case "output":
		b := p.output[e.Test]
		if b == nil {
			b = &strings.Builder{}
			p.output[e.Test] = b
		}
		b.WriteString(e.Output)
	case "pass", "fail", "skip":
		if e.Test != "" {
			switch e.Action {
			case "pass":
				s.passed++
			case "fail":
				s.failed++
				s.failedTests = append(s.failedTests, e.Package+"."+e.Test)
				if b := p.output[e.Test]; b != nil && !strings.Contains(e.Test, "/") {
					s.printf(now, "%s", b.String())
				}
			case "skip":
				s.skipped++
				s.skippedTests = append(s.skippedTests, e.Package+"."+e.Test)
			}
			if !strings.Contains(e.Test, "/") || e.Action == "pass" {
				delete(p.output, e.Test)
			}
			return
		}
		p.done = true
		pkgOut := ""
		if b := p.output[""]; b != nil {
			pkgOut = b.String()
		}
		switch e.Action {
		case "fail":
			s.failedPkgs++
			// Tests that never ended: the binary died under them (a
			// panic in a goroutine, a timeout, an os.Exit); what they
			// printed says why.
			var cut []string
			for name := range p.output {
				if name != "" && !strings.Contains(name, "/") {
					cut = append(cut, name)
				}
			}
			sort.Strings(cut)
			for _, name := range cut {
				s.printf(now, "%s", p.output[name].String())
				s.failed++
				s.failedTests = append(s.failedTests, e.Package+"."+name+" (did not finish)")
			}
			// The package's own output (a panic, a TestMain failure, the
			// go test FAIL lines) says why.
			s.printf(now, "%s", pkgOut)
			if !strings.Contains(pkgOut, "FAIL\t"+e.Package) {
				s.printf(now, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
		case "skip":
			s.printf(now, "?   \t%s\t[no test files]\n", e.Package)
		default:
			s.printf(now, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
		}
		p.output = nil
	}
}

// tick prints a progress line when nothing was printed for quiet.
func (s *summary) tick(now time.Time, quiet time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPrint) < quiet {
		return
	}
	var running []string
	done := 0
	for _, name := range s.order {
		p := s.pkgs[name]
		if p.done {
			done++
			continue
		}
		running = append(running, fmt.Sprintf("%s (%s)", strings.TrimPrefix(name, "github.com/mediafleet/mediafleet/"), now.Sub(p.started).Round(time.Second)))
	}
	sort.Strings(running)
	what := "compiling"
	if len(running) > 0 {
		what = "running " + strings.Join(running, ", ")
	}
	s.printf(now, "[test %s] %d packages done, %d tests passed, %d failed; %s\n",
		now.Sub(s.start).Round(time.Second), done, s.passed, s.failed, what)
}

// finish prints the closing lines and says whether the run passed.
func (s *summary) finish(now time.Time, inputErr error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var unfinished []string
	for _, name := range s.order {
		if !s.pkgs[name].done {
			unfinished = append(unfinished, name)
		}
	}
	if len(s.skippedTests) > 0 {
		s.printf(now, "skipped: %s\n", strings.Join(s.skippedTests, ", "))
	}
	if len(s.failedTests) > 0 {
		s.printf(now, "failed: %s\n", strings.Join(s.failedTests, ", "))
	}
	if len(unfinished) > 0 {
		s.printf(now, "never finished: %s\n", strings.Join(unfinished, ", "))
	}
	if s.buildFailed > 0 {
		s.printf(now, "%d packages did not build\n", s.buildFailed)
	}
	if inputErr != nil {
		s.printf(now, "reading go test -json: %v\n", inputErr)
	}
	s.printf(now, "test run took %s\n", now.Sub(s.start).Round(time.Second))
	s.printf(now, "%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
	return s.failed == 0 && s.failedPkgs == 0 && s.buildFailed == 0 && len(unfinished) == 0 && inputErr == nil
}

func main() {
	s := newSummary(os.Stdout, time.Now())
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				s.tick(now, 15*time.Second)
			}
		}
	}()
	err := process(os.Stdin, s)
	close(stop)
	if !s.finish(time.Now(), err) {
		os.Exit(1)
	}
}

// process feeds every event of r to s. Lines that are not JSON (a
// vet or build message printed before the run) are passed through.
func process(r io.Reader, s *summary) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			s.mu.Lock()
			s.printf(time.Now(), "%s\n", line)
			s.mu.Unlock()
			continue
		}
		s.handle(e, time.Now())
	}
	return sc.Err()
}
