// Package mediaproc runs the mediaserver as a real process for tests and
// benchmarks: it builds the binary once per test binary (per build flags),
// starts it on loopback with free ports, waits until it is ready, keeps
// its JSON log lines and its exit code, and kills it when the test ends.
package mediaproc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Build says how the binary is built.
type Build struct {
	Race bool     // -race
	Tags []string // e.g. faultinject
}

func (b Build) key() string { return fmt.Sprintf("%v/%s", b.Race, strings.Join(b.Tags, ",")) }

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary builds ./cmd/mediaserver of this module once per Build and
// returns its path.
func Binary(tb testing.TB, b Build) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[b.key()]; ok {
		return p
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	dir, err := os.MkdirTemp("", "mediaserver-bin")
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "mediaserver")
	args := []string{"build", "-o", bin}
	if b.Race {
		args = append(args, "-race")
	}
	if len(b.Tags) > 0 {
		args = append(args, "-tags", strings.Join(b.Tags, ","))
	}
	cmd := exec.Command("go", append(args, "./cmd/mediaserver")...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build the mediaserver: %v\n%s", err, out)
	}
	built[b.key()] = bin
	return bin
}

// FreePort is a TCP port free on loopback now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options of one process.
type Options struct {
	// Env is added after the defaults (PORT, ADMIN_PORT on free ports,
	// LOG_FORMAT=json, LOG_LEVEL=info): a variable given here wins.
	Env []string
	// Args replace the default flags (-listen-host=127.0.0.1 -ice-loopback
	// -ice-interfaces=lo) when set.
	Args []string
	// Token is the process's ADMIN_TOKEN ("" for none: loopback-only).
	Token string
}

// Proc is one running mediaserver.
type Proc struct {
	Cmd             *exec.Cmd
	Port, AdminPort int
	// URL and AdminURL are http://127.0.0.1:port of the two listeners.
	URL, AdminURL string
	Token         string

	mu       sync.Mutex
	logs     []map[string]any
	exited   chan struct{}
	exitCode int
}

// Start runs bin and waits (up to 30 s) for /readyz to answer 200.
func Start(tb testing.TB, bin string, opts Options) *Proc {
	tb.Helper()
	p := StartNoWait(tb, bin, opts)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.AdminURL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			tb.Fatalf("mediaserver exited (%d) before it was ready; log: %v", p.ExitCode(), p.Messages())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mediaserver not ready after 30 s; log: %v", p.Messages())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartNoWait runs bin without waiting for it to be ready.
func StartNoWait(tb testing.TB, bin string, opts Options) *Proc {
	tb.Helper()
	p := &Proc{Port: FreePort(tb), AdminPort: FreePort(tb), Token: opts.Token, exited: make(chan struct{})}
	for p.AdminPort == p.Port {
		p.AdminPort = FreePort(tb)
	}
	p.URL, p.AdminURL = fmt.Sprintf("http://127.0.0.1:%d", p.Port), fmt.Sprintf("http://127.0.0.1:%d", p.AdminPort)
	args := opts.Args
	if args == nil {
		args = []string{"-listen-host=127.0.0.1", "-ice-loopback", "-ice-interfaces=lo"}
	}
	p.Cmd = exec.Command(bin, args...)
	env := append(os.Environ(), "PORT="+strconv.Itoa(p.Port), "ADMIN_PORT="+strconv.Itoa(p.AdminPort), "LOG_FORMAT=json", "LOG_LEVEL=info")
	if opts.Token != "" {
		env = append(env, "ADMIN_TOKEN="+opts.Token)
	}
	p.Cmd.Env = append(env, opts.Env...)
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.Cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				p.mu.Lock()
				p.logs = append(p.logs, m)
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		<-logsDone
		err := p.Cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.mu.Lock()
			p.exitCode = ee.ExitCode()
			p.mu.Unlock()
		}
		close(p.exited)
	}()
	tb.Cleanup(func() { _ = p.Cmd.Process.Kill(); <-p.exited })
	return p
}

// Exited closes when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitCode is the exit code once Exited is closed.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitCode
}

// Logs are the JSON log lines so far.
func (p *Proc) Logs() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.logs...)
}

// Messages are the msg fields of the log lines so far.
func (p *Proc) Messages() []string {
	var out []string
	for _, m := range p.Logs() {
		if s, ok := m["msg"].(string); ok {
			out = append(out, s)
		}
	}
	return out
}
